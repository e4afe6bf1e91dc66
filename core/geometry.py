"""The shape of a convolution layer (``docs/arithmetic.md`` A12-A13).

A convolution layer is stored like a Linear one: a weight matrix of ``out_channels`` rows and
``in_channels * kernel_height * kernel_width`` columns (PyTorch's ``weight.reshape(O, -1)``), one
bias per output channel. :class:`ConvGeometry` holds what that matrix does not: the input map's
size, the kernel, stride and zero padding, and the 2 x 2 pooling window that may end the layer.
Activation tensors are flattened channel-major (PyTorch's ``Flatten`` of NCHW).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["MAX_KERNEL", "MAX_MAP", "POOLS", "STRIDES", "ConvGeometry", "conv_size", "im2col",
           "max_pool", "mean_pool", "patch_batch", "sum_pool"]

#: Pooling kinds after a convolution (A13): a 2 x 2 window with stride 2.
POOLS = ("max", "avg")
#: Strides a convolution may have (the same along both axes).
STRIDES = (1, 2)
#: The largest kernel side and feature-map side the project accepts.
MAX_KERNEL = 11
MAX_MAP = 256


def conv_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """A12: ``floor((size + 2 padding - kernel) / stride) + 1`` (0 when the kernel does not fit)."""
    span = size + 2 * padding - kernel
    return span // stride + 1 if span >= 0 else 0


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be {low}..{high}, not {value!r}")
    return value


@dataclass(frozen=True)
class ConvGeometry:
    """A convolution layer's input map, kernel, stride, padding and pooling.

    Attributes
    ----------
    in_channels, in_height, in_width : int
        The input tensor ``C x H x W`` (1..:data:`MAX_MAP` each side).
    kernel_height, kernel_width : int
        ``kh x kw``, 1..:data:`MAX_KERNEL`.
    stride : int
        One of :data:`STRIDES`.
    padding : int
        Zero padding on every side, ``0 .. min(kh, kw) - 1``.
    pool : str or None
        ``"max"``, ``"avg"`` (A13) or ``None``.
    """

    in_channels: int
    in_height: int
    in_width: int
    kernel_height: int
    kernel_width: int
    stride: int = 1
    padding: int = 0
    pool: str | None = None

    def __post_init__(self):
        _check_int("in_channels", self.in_channels, 1, 4096)
        _check_int("in_height", self.in_height, 1, MAX_MAP)
        _check_int("in_width", self.in_width, 1, MAX_MAP)
        _check_int("kernel_height", self.kernel_height, 1, MAX_KERNEL)
        _check_int("kernel_width", self.kernel_width, 1, MAX_KERNEL)
        if self.stride not in STRIDES or isinstance(self.stride, bool):
            raise ValueError(f"stride must be one of {', '.join(map(str, STRIDES))}, "
                             f"not {self.stride!r}")
        _check_int("padding", self.padding, 0, min(self.kernel_height, self.kernel_width) - 1)
        if self.pool is not None and self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)} or None, not {self.pool!r}")
        if self.conv_height < 1 or self.conv_width < 1:
            raise ValueError(f"a {self.kernel_height}x{self.kernel_width} kernel with padding "
                             f"{self.padding} does not fit a {self.in_height}x{self.in_width} map")
        if self.pool is not None and (self.conv_height < 2 or self.conv_width < 2):
            raise ValueError(f"2x2 pooling needs a map of at least 2x2, and the convolution "
                             f"gives {self.conv_height}x{self.conv_width}")

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def columns(self) -> int:
        """Columns of the weight matrix: ``C x kh x kw``."""
        return self.in_channels * self.kernel_height * self.kernel_width

    @property
    def taps(self) -> int:
        """Kernel positions per input channel: ``kh x kw``."""
        return self.kernel_height * self.kernel_width

    @property
    def conv_height(self) -> int:
        return conv_size(self.in_height, self.kernel_height, self.stride, self.padding)

    @property
    def conv_width(self) -> int:
        return conv_size(self.in_width, self.kernel_width, self.stride, self.padding)

    @property
    def out_height(self) -> int:
        """The output map's height, after pooling (floor mode)."""
        return self.conv_height // 2 if self.pool else self.conv_height

    @property
    def out_width(self) -> int:
        return self.conv_width // 2 if self.pool else self.conv_width

    @property
    def input_size(self) -> int:
        """Activations in: ``C x H x W``."""
        return self.in_channels * self.in_height * self.in_width

    def output_size(self, out_channels: int) -> int:
        """Activations out for ``out_channels`` channels, after pooling."""
        return out_channels * self.out_height * self.out_width

    def describe(self, out_channels: int) -> str:
        pool = f", {self.pool} pool" if self.pool else ""
        return (f"conv {self.in_channels}x{self.in_height}x{self.in_width} -> "
                f"{out_channels}x{self.out_height}x{self.out_width} "
                f"({self.kernel_height}x{self.kernel_width}, stride {self.stride}, "
                f"padding {self.padding}{pool})")

    # -- serialization ---------------------------------------------------------------------------

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict) -> ConvGeometry:
        if not isinstance(entry, dict):
            raise ValueError(f"a convolution's geometry must be a mapping, not {entry!r}")
        names = set(cls.__dataclass_fields__)
        unknown = set(entry) - names
        missing = {"in_channels", "in_height", "in_width", "kernel_height",
                   "kernel_width"} - set(entry)
        if unknown or missing:
            raise ValueError(f"a convolution's geometry has unknown fields {sorted(unknown)} or "
                             f"lacks {sorted(missing)}")
        return cls(**entry)


# -- array helpers (any dtype: the float model and the integer reference share them) -------------

def im2col(x: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
    """The input patches of A12: shape ``(n, conv_height * conv_width, columns)``.

    ``x`` has shape ``(n, C * H * W)`` (channel-major); row ``y * conv_width + x`` of a sample
    holds the inputs ``in[c, y s + dy - p, x s + dx - p]`` at column ``(c kh + dy) kw + dx``, 0
    where the position is padding. The dtype is kept (integers stay integers).
    """
    g = geometry
    x = np.asarray(x)
    n = len(x)
    maps = x.reshape(n, g.in_channels, g.in_height, g.in_width)
    if g.padding:
        p = g.padding
        maps = np.pad(maps, ((0, 0), (0, 0), (p, p), (p, p)))
    windows = sliding_window_view(maps, (g.kernel_height, g.kernel_width), axis=(2, 3))
    windows = windows[:, :, ::g.stride, ::g.stride][:, :, :g.conv_height, :g.conv_width]
    # (n, C, Hc, Wc, kh, kw) -> (n, Hc, Wc, C, kh, kw)
    patches = windows.transpose(0, 2, 3, 1, 4, 5)
    return patches.reshape(n, g.conv_height * g.conv_width, g.columns)


def patch_batch(geometry: ConvGeometry, *, values: int = 1 << 22) -> int:
    """Samples per :func:`im2col` call that keep a patch array near ``values`` entries."""
    per_sample = geometry.conv_height * geometry.conv_width * geometry.columns
    return max(1, values // max(per_sample, 1))


def _windows(maps: np.ndarray) -> np.ndarray:
    """The 2 x 2, stride-2 windows of ``(n, O, Hc, Wc)`` maps (floor mode):
    ``(n, O, Ho, Wo, 4)``."""
    n, channels, height, width = maps.shape
    h, w = height // 2, width // 2
    cropped = maps[:, :, :2 * h, :2 * w]
    return cropped.reshape(n, channels, h, 2, w, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, channels, h, w, 4)


def max_pool(maps: np.ndarray) -> np.ndarray:
    """A13 max pooling of ``(n, O, Hc, Wc)`` maps, dtype kept."""
    return _windows(np.asarray(maps)).max(axis=-1)


def mean_pool(maps: np.ndarray) -> np.ndarray:
    """The float model's average pooling (``AvgPool2d(2)``) of float maps, dtype kept."""
    maps = np.asarray(maps)
    return _windows(maps).mean(axis=-1, dtype=maps.dtype)


def sum_pool(maps: np.ndarray) -> np.ndarray:
    """The sum of each 2 x 2 window, int64 (A13's average before its rounding)."""
    return _windows(np.asarray(maps)).astype(np.int64).sum(axis=-1)
