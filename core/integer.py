"""Integer quantization of a compressed model: the data of ``docs/arithmetic.md`` (rules A1-A10).

:func:`quantize_model` calibrates scales on float data and puts every layer on the integer grid:
a codebook of signed ``weight_bits``-bit integers (index 0 stays exactly 0), int32 biases at the
accumulator's scale, a requantization multiplier and shift, and the accumulator width that
provably cannot overflow. The result is stored in the artifact (format version 2), so one file
carries everything the integer reference (``sim``) and the hardware (``accel``) need.

Floating point is used here, at calibration, and nowhere on the integer path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from .levels import midpoints, quantize_to_levels

__all__ = [
    "MAX_ACCUMULATOR_BITS",
    "LEVEL_COUNTS",
    "MAX_CODE_BITS",
    "MAX_SHIFT",
    "MULTIPLIER_BITS",
    "IntegerLayer",
    "latent_integer_bias",
    "accumulator_bound",
    "accumulator_width",
    "activation_range",
    "activation_thresholds",
    "quantize_model",
    "requantization_parameters",
]

#: A6: the multiplier is an unsigned integer below ``2 ** MULTIPLIER_BITS``.
MULTIPLIER_BITS = 15
#: A6: the largest right shift.
MAX_SHIFT = 62
#: A10: the widest code of a threshold activation (``2 ** 4`` levels).
MAX_CODE_BITS = 4
#: A10: the level counts a threshold activation may have, ``2**K`` for ``K = 1 ..
#: MAX_CODE_BITS``.
LEVEL_COUNTS = tuple(1 << bits for bits in range(1, MAX_CODE_BITS + 1))
#: A5/A6: ``acc * multiplier + round`` must fit in a signed 64-bit integer.
MAX_ACCUMULATOR_BITS = 63 - MULTIPLIER_BITS - 1
_BIAS_BITS = 32


def _check_bits(name: str, bits, low: int = 2, high: int = 16) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not low <= bits <= high:
        raise ValueError(f"{name} must be {low}..{high}, not {bits!r}")


def activation_range(bits: int, signed: bool) -> tuple[int, int]:
    """A1: the integer range ``(lo, hi)`` of a ``bits``-wide activation tensor."""
    _check_bits("activation_bits", bits)
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _largest_magnitude(bits: int, signed: bool) -> int:
    """A5: ``X``, the largest |activation| of a tensor."""
    lo, hi = activation_range(bits, signed)
    return max(hi, -lo)


def accumulator_bound(codebook: np.ndarray, index: np.ndarray, bias: np.ndarray,
                      activation_bits: int, input_signed: bool) -> int:
    """A5: ``max_r (|bias[r]| + X * sum_c |w[r, c]|)``, an exact Python int.

    ``codebook`` is one codebook (A3) or one per row, shape ``(rows, K)`` (A9).
    """
    x_max = _largest_magnitude(activation_bits, input_signed)
    # |w| < 2**15 and X <= 2**15, so int64 row sums are exact for any layer that fits in memory.
    magnitude = np.abs(np.asarray(codebook, dtype=np.int64))
    index = np.asarray(index)
    weights = magnitude[index] if magnitude.ndim == 1 else \
        np.take_along_axis(magnitude, index.astype(np.intp), axis=1)
    row_sums = weights.sum(axis=1, dtype=np.int64)
    bias = np.asarray(bias, dtype=np.int64)
    return int(np.max(np.abs(bias) + x_max * row_sums, initial=0))


def accumulator_width(bound: int) -> int:
    """A5: the smallest two's-complement width holding ``-bound .. bound``."""
    if bound < 0:
        raise ValueError(f"bound must be >= 0, not {bound!r}")
    return int(bound).bit_length() + 1


def requantization_parameters(real_multiplier: float) -> tuple[int, int]:
    """A6: ``(multiplier, shift)`` with ``multiplier * 2**-shift ~= real_multiplier``.

    The multiplier is normalised to ``2**14 <= multiplier < 2**15`` unless the shift would pass
    :data:`MAX_SHIFT`. Raises ValueError for a negative, non-finite or too large factor.
    """
    if not math.isfinite(real_multiplier) or real_multiplier < 0:
        raise ValueError(f"requantization factor must be finite and >= 0, "
                         f"not {real_multiplier!r}")
    if real_multiplier == 0:
        return 0, 0
    top = 1 << MULTIPLIER_BITS
    mantissa, exponent = math.frexp(real_multiplier)   # real = mantissa * 2**exponent, [0.5, 1)
    shift = MULTIPLIER_BITS - exponent
    if shift < 0:
        raise ValueError(f"requantization factor {real_multiplier:.6g} is too large "
                         f"(must be < 2**{MULTIPLIER_BITS}): the layer's output scale is far "
                         "smaller than its accumulator's")
    if shift > MAX_SHIFT:
        return int(round(math.ldexp(real_multiplier, MAX_SHIFT))), MAX_SHIFT
    multiplier = int(round(math.ldexp(mantissa, MULTIPLIER_BITS)))
    if multiplier == top:               # rounding carried into the next power of two
        if shift == 0:                  # M in [2**15 - 0.5, 2**15): the largest multiplier
            return top - 1, 0
        multiplier //= 2
        shift -= 1
    return multiplier, shift


@dataclass(frozen=True)
class IntegerLayer:
    """The integer data of one layer (``docs/arithmetic.md``).

    Attributes
    ----------
    codebook : numpy.ndarray
        int32, shape ``(K,)``: signed ``weight_bits``-bit values, ``codebook[0] == 0`` (A2).
    bias : numpy.ndarray
        int32, shape ``(out_features,)``, at the accumulator's scale (A4).
    weight_bits, activation_bits : int
        ``B`` and ``A``, each 2..16.
    input_signed : bool
        Whether the layer's input tensor is signed (A1).
    accumulator_bits : int
        At least the width derived from the bound (A5), at most :data:`MAX_ACCUMULATOR_BITS`.
    multiplier, shift : int
        Requantization (A6); both 0 for the logits layer.
    logits : bool
        True for the last layer, which emits its accumulator (A8).
    input_scale, weight_scale, output_scale : float
        Real scales, for information and for converting float inputs; not used by the
        integer path.
    thresholds, levels : numpy.ndarray or None
        A10: the threshold activation that replaces A6-A7 on a hidden layer with a ReLU:
        int64 ``thresholds`` (``2**K - 1``, non-decreasing, within ``+-2**(accumulator_bits
        - 1)``) and int32 ``levels`` (``2**K``, non-decreasing, ``levels[0] == 0``, unsigned
        ``activation_bits``-wide); ``None`` (both) for A6-A7. ``multiplier`` and ``shift`` are
        then 0.

    A 2-D ``codebook`` of shape ``(out_features, K)`` is one codebook per row (A9).
    """

    codebook: np.ndarray
    bias: np.ndarray
    weight_bits: int
    activation_bits: int
    input_signed: bool
    accumulator_bits: int
    multiplier: int
    shift: int
    logits: bool
    input_scale: float = 1.0
    weight_scale: float = 1.0
    output_scale: float = 1.0
    thresholds: np.ndarray | None = None
    levels: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "codebook", _exact_int32("codebook", self.codebook))
        object.__setattr__(self, "bias", _exact_int32("bias", self.bias))
        _check_bits("weight_bits", self.weight_bits)
        _check_bits("activation_bits", self.activation_bits)
        if self.codebook.ndim not in (1, 2) or self.codebook.shape[-1] == 0:
            raise ValueError(f"codebook must be a non-empty 1-D array (A2) or one row per output "
                             f"(A9), not shape {self.codebook.shape}")
        zeros = self.codebook[..., 0]
        if np.any(zeros != 0):
            raise ValueError(f"codebook[0] must be 0 (the pruned weight), not "
                             f"{zeros[zeros != 0].flat[0]}")
        limit = (1 << (self.weight_bits - 1)) - 1
        if np.abs(self.codebook.astype(np.int64)).max() > limit:
            raise ValueError(f"codebook values must be -{limit}..{limit} for weight_bits="
                             f"{self.weight_bits}, found {self.codebook.min()}.."
                             f"{self.codebook.max()}")
        if self.bias.ndim != 1:
            raise ValueError(f"bias must be 1-D, not shape {self.bias.shape}")
        _check_bits("accumulator_bits", self.accumulator_bits, 1, MAX_ACCUMULATOR_BITS)
        self._check_threshold_activation()
        if self.logits:
            if self.multiplier != 0 or self.shift != 0:
                raise ValueError("the logits layer has no requantization: multiplier and shift "
                                 f"must be 0, not {self.multiplier!r} and {self.shift!r}")
        else:
            if not 0 <= self.multiplier < (1 << MULTIPLIER_BITS):
                raise ValueError(f"multiplier must be 0..{(1 << MULTIPLIER_BITS) - 1}, "
                                 f"not {self.multiplier!r}")
            if not 0 <= self.shift <= MAX_SHIFT:
                raise ValueError(f"shift must be 0..{MAX_SHIFT}, not {self.shift!r}")
        for name in ("input_scale", "weight_scale", "output_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, not {value!r}")

    def _check_threshold_activation(self) -> None:
        """A10's data, when present: shapes, order and ranges."""
        if (self.thresholds is None) != (self.levels is None):
            raise ValueError("thresholds and levels go together (A10): give both or neither")
        if self.thresholds is None:
            return
        thresholds = np.asarray(self.thresholds)
        levels = _exact_int32("levels", self.levels)
        if not np.issubdtype(thresholds.dtype, np.integer):
            raise ValueError(f"thresholds must hold integers, not dtype {thresholds.dtype}")
        thresholds = np.ascontiguousarray(thresholds, dtype=np.int64)
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "levels", levels)
        if self.logits:
            raise ValueError("the logits layer has no threshold activation (A8, A10)")
        if levels.ndim != 1 or len(levels) not in LEVEL_COUNTS:
            counts = ", ".join(map(str, LEVEL_COUNTS))
            raise ValueError(f"levels must be a 1-D array of {counts} "
                             f"values (2**K, K = 1..{MAX_CODE_BITS}), not shape {levels.shape}")
        if thresholds.shape != (len(levels) - 1,):
            raise ValueError(f"thresholds must have {len(levels) - 1} values for {len(levels)} "
                             f"levels, not shape {thresholds.shape}")
        if np.any(np.diff(thresholds) < 0):
            raise ValueError(f"thresholds must be ascending (non-decreasing), not "
                             f"{thresholds.tolist()}")
        if np.any(np.diff(levels) < 0) or levels[0] != 0:
            raise ValueError(f"levels must be ascending (non-decreasing) from levels[0] = 0, not "
                             f"{levels.tolist()}")
        top = (1 << self.activation_bits) - 1
        if levels[-1] > top:
            raise ValueError(f"levels must fit the {self.activation_bits}-bit unsigned output "
                             f"range 0..{top}, found {levels[-1]}")
        reach = 1 << (self.accumulator_bits - 1)
        if thresholds.min() < -reach or thresholds.max() > reach:
            raise ValueError(f"thresholds must be -{reach}..{reach} for accumulator_bits="
                             f"{self.accumulator_bits}, found {thresholds.min()}.."
                             f"{thresholds.max()}")
        if self.multiplier != 0 or self.shift != 0:
            raise ValueError("a threshold activation has no requantization (A10): multiplier and "
                             f"shift must be 0, not {self.multiplier!r} and {self.shift!r}")

    @property
    def code_bits(self) -> int | None:
        """A10's ``K``, or ``None`` for a layer that requantizes (A6-A7)."""
        return None if self.levels is None else int(len(self.levels)).bit_length() - 1

    @property
    def per_row(self) -> bool:
        """Whether the layer has one codebook per row (A9)."""
        return self.codebook.ndim == 2

    def input_range(self) -> tuple[int, int]:
        return activation_range(self.activation_bits, self.input_signed)

    def check_against(self, index: np.ndarray) -> None:
        """Raise ValueError unless this data fits the layer's index matrix (shapes, A5 width)."""
        if len(self.bias) != index.shape[0]:
            raise ValueError(f"integer bias has {len(self.bias)} entries, the layer has "
                             f"{index.shape[0]} rows")
        if self.per_row and self.codebook.shape[0] != index.shape[0]:
            raise ValueError(f"the integer codebook has {self.codebook.shape[0]} rows, the layer "
                             f"{index.shape[0]} (A9)")
        entries = self.codebook.shape[-1]
        if index.size and index.max() >= entries:
            raise ValueError(f"index values reach {index.max()} but the integer codebook has "
                             f"{entries} entries")
        needed = accumulator_width(accumulator_bound(
            self.codebook, index, self.bias, self.activation_bits, self.input_signed))
        if self.accumulator_bits < needed:
            raise ValueError(f"accumulator_bits is {self.accumulator_bits} but the layer's "
                             f"weights need {needed} (docs/arithmetic.md A5)")


def activation_thresholds(levels: np.ndarray, accumulator_scale: float,
                          accumulator_bits: int) -> np.ndarray:
    """A10: integer thresholds equal to the float rule ``acc * s_acc >= tau_j``.

    ``thresholds[j] = clamp(ceil(tau_j / s_acc), -2**(W-1), 2**(W-1))`` for the midpoints
    ``tau_j`` of the ascending float32 ``levels`` and ``W = accumulator_bits``, computed in
    exact rational arithmetic (never a float division), so that for every accumulator value
    ``|acc| <= 2**(W-1) - 1`` the comparison with the integer threshold and the comparison of
    the real value ``acc * s_acc`` with ``tau_j`` agree. Returns int64.
    """
    if not (math.isfinite(accumulator_scale) and accumulator_scale > 0):
        raise ValueError(f"accumulator_scale must be finite and > 0, not {accumulator_scale!r}")
    reach = 1 << (accumulator_bits - 1)
    scale = Fraction(accumulator_scale)
    out = []
    for tau in midpoints(np.asarray(levels, dtype=np.float32)).tolist():
        ratio = Fraction(tau) / scale
        out.append(min(max(math.ceil(ratio), -reach), reach))
    return np.asarray(out, dtype=np.int64)


def _threshold_activation(levels: np.ndarray, activation_bits: int, accumulator_scale: float,
                          accumulator_bits: int):
    """A10's calibration: ``(thresholds, integer levels, output scale)``."""
    levels = np.asarray(levels, dtype=np.float32)
    top = (1 << activation_bits) - 1
    scale_out = _scale(float(levels[-1]), top)
    integer_levels = np.clip(np.rint(levels.astype(np.float64) / scale_out), 0, top)
    thresholds = activation_thresholds(levels, accumulator_scale, accumulator_bits)
    return thresholds, integer_levels.astype(np.int64), scale_out


def _exact_int32(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"{name} must hold integers, not dtype {array.dtype}")
    info = np.iinfo(np.int32)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"{name} must fit in int32, found {array.min()}..{array.max()}")
    return np.ascontiguousarray(array, dtype=np.int32)


def _scale(largest: float, levels: int) -> float:
    """Real scale mapping ``largest`` to ``levels``; 1.0 for an identically zero tensor."""
    return float(largest) / levels if largest > 0 else 1.0


def _input_scale(x: np.ndarray, levels: int) -> float:
    """A1: the input scale. Features on a grid (pixels ``k / 16``, ``k / 255``) that fits in
    ``levels`` steps keep their grid step, so the integer input is exact; others map
    ``max|x|`` to ``levels``."""
    magnitude = np.abs(x)
    positive = magnitude[magnitude > 0]
    if positive.size:
        step = float(positive.min())
        ratio = magnitude / step
        if ratio.max() <= levels + 1e-6 and np.abs(ratio - np.rint(ratio)).max() < 1e-4:
            return step
    return _scale(magnitude.max(), levels)


def latent_integer_bias(bias: np.ndarray, input_scale: float, weight_scale: float) -> np.ndarray:
    """A4: ``rint(b / (s_in * s_w))`` (int64) of float biases; ``ValueError`` beyond int32.
    Calibration uses it, and the artifact reader for a latent layer (A11), which stores no
    integer bias: the same expression on the same float64 values gives the same integers."""
    accumulator_scale = input_scale * weight_scale
    values = np.rint(np.asarray(bias).astype(np.float64) / accumulator_scale)
    if np.abs(values).max(initial=0) > (1 << (_BIAS_BITS - 1)) - 1:
        raise ValueError(f"a bias of {np.abs(bias).max():.6g} is {np.abs(values).max():.4g} at "
                         f"the accumulator's scale {accumulator_scale:.4g}, beyond int32 "
                         "(docs/arithmetic.md A4)")
    return values.astype(np.int64)


def quantize_model(model, x_calibration: np.ndarray, *, weight_bits: int = 8,
                   activation_bits: int = 8, input_signed: bool | None = None):
    """Put a :class:`~core.artifact.CompressedModel` on the integer grid.

    Parameters
    ----------
    model : CompressedModel
        The float shared-weight model.
    x_calibration : numpy.ndarray
        Float features, shape ``(n, in_features)``, ``n >= 1`` (a slice of the training set).
    weight_bits, activation_bits : int
        ``B`` (codebook value width) and ``A`` (activation width), each 2..16.
    input_signed : bool, optional
        Whether the network input is signed (A1); default: whether any calibration feature
        is negative.

    Returns
    -------
    CompressedModel
        A copy whose layers carry :class:`IntegerLayer` data (``layer.integer``).

    Raises
    ------
    ValueError
        Bad widths or calibration data, a bias outside int32 (A4), an accumulator wider than
        :data:`MAX_ACCUMULATOR_BITS` (A5) or a requantization factor of 2**15 or more (A6).
    """
    _check_bits("weight_bits", weight_bits)
    _check_bits("activation_bits", activation_bits)
    x = np.asarray(x_calibration)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"calibration data must have shape (n_samples, {model.in_features}) "
                         f"with n_samples >= 1, not {x.shape}")
    x = x.reshape(len(x), -1).astype(np.float64)
    if x.shape[1] != model.in_features:
        raise ValueError(f"calibration data has {x.shape[1]} features, the model takes "
                         f"{model.in_features}")
    if not np.isfinite(x).all():
        raise ValueError("calibration data must be finite; it holds NaN or inf")
    if input_signed is None:
        input_signed = bool(x.min() < 0)
    elif not input_signed and x.min() < 0:
        raise ValueError("input_signed is False but the calibration data has negative features")

    unsigned_levels = (1 << activation_bits) - 1
    signed_levels = (1 << (activation_bits - 1)) - 1
    weight_levels = (1 << (weight_bits - 1)) - 1

    signed = bool(input_signed)
    scale_in = _input_scale(x, signed_levels if signed else unsigned_levels)
    activations = x                      # float activations of the shared-weight model
    layers = []
    for i, layer in enumerate(model.layers):
        where = f"layer {i} ({layer.out_features}x{layer.in_features})"
        last = i == len(model.layers) - 1
        latents = getattr(layer, "latents", None)
        if latents is not None:                     # A11: s_w is the step, the codebook the latents
            from .latents import latent_codebook

            scale_w = latents.weight.step
            codebook = latent_codebook(latents.weight.values)[0]
            if np.abs(codebook).max() > weight_levels:
                raise ValueError(f"{where}: its latents reach {np.abs(codebook).max()}, beyond "
                                 f"weight_bits={weight_bits} (at most {weight_levels}; "
                                 "docs/arithmetic.md A11)")
        else:
            centroids = layer.codebook.astype(np.float64)        # (K,), or (rows, K): A9
            scale_w = _scale(np.abs(centroids).max(), weight_levels)
            codebook = np.rint(centroids / scale_w).astype(np.int64)
            codebook[..., 0] = 0
        learned = getattr(layer, "activation_levels", None)
        if learned is not None and (last or not layer.relu):
            raise ValueError(f"{where}: a learned activation quantizer needs a hidden layer "
                             "followed by a ReLU (docs/arithmetic.md A10)")
        accumulator_scale = scale_in * scale_w
        try:
            bias = latent_integer_bias(layer.bias, scale_in, scale_w)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        width = accumulator_width(accumulator_bound(codebook, layer.index, bias,
                                                    activation_bits, signed))
        if width > MAX_ACCUMULATOR_BITS:
            raise ValueError(f"{where} needs a {width}-bit accumulator; at most "
                             f"{MAX_ACCUMULATOR_BITS} bits are supported (docs/arithmetic.md "
                             "A5): use fewer weight_bits or activation_bits")
        # A12: a convolution's maps, (n, O, H_c, W_c); scales are taken before pooling (A13).
        activations = layer.affine(activations, np.float64)
        if layer.relu:
            activations = np.maximum(activations, 0.0)
        thresholds = integer_levels = None
        if last:
            multiplier = shift = 0
            scale_out = accumulator_scale
            out_signed = signed
        elif learned is not None:                     # A10: thresholds and a level table
            activations = quantize_to_levels(activations, learned).astype(np.float64)
            out_signed, multiplier, shift = False, 0, 0
            thresholds, integer_levels, scale_out = _threshold_activation(
                learned, activation_bits, accumulator_scale, width)
        else:
            out_signed = not layer.relu
            scale_out = _scale(np.abs(activations).max(),
                               signed_levels if out_signed else unsigned_levels)
            try:
                multiplier, shift = requantization_parameters(accumulator_scale / scale_out)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
        integer = IntegerLayer(
            codebook=codebook, bias=bias, weight_bits=weight_bits,
            activation_bits=activation_bits, input_signed=signed, accumulator_bits=width,
            multiplier=multiplier, shift=shift, logits=last, input_scale=scale_in,
            weight_scale=scale_w, output_scale=scale_out, thresholds=thresholds,
            levels=integer_levels)
        layers.append(replace(layer, integer=integer))
        activations = layer.pool(activations)
        signed, scale_in = out_signed, scale_out
    # type(model): the artifact module sits above this one and imports it, not the reverse
    return type(model)(layers, dict(model.metadata))
