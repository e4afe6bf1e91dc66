"""LQ-Nets: learned quantizers for weights and activations (Zhang et al., ECCV 2018).

A ``K``-bit quantizer has a basis ``v`` of ``K`` reals; its levels are ``v^T e`` for the codes
``e`` in ``{-1, +1}^K`` (weights: one basis per output row) or ``{0, 1}^K`` (activations after a
ReLU: one basis per layer, so 0 is a level). A value goes to its nearest level. Training is
the paper's QEM: in the forward pass every value is assigned its nearest level's code ``B``,
then the basis is refit by least squares, ``v = (B^T B + r I)^-1 B^T x``, and kept as a moving
average (``v <- 0.9 v + 0.1 v_new``, as the public code); gradients pass straight through
(for activations, not above the top level).

The same modules with ``learn=False`` are the uniform baseline: a fixed basis ``c * 2^i`` has
evenly spaced levels, so ``uniform`` and ``lq`` differ only in whether the levels learn.

- :class:`WeightQuantizer`: per-row bases over a layer's surviving weights (pruned weights stay
  exactly 0 and out of the fit);
- :class:`ActivationQuantizer`: one basis for a layer's output;
- :class:`QuantizedLinear`: latent float weights, quantized in the forward pass;
- :func:`quantized_network`, :func:`export`: the network to fine-tune, and its result as codebook
  indices, per-row bases and activation levels (``docs/arithmetic.md`` A9-A10).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from core.levels import basis_codebook, code_matrix, midpoints, nearest_level

from .train import conv_forward, geometry_of, matrix

__all__ = ["ACTIVATION_QUANTIZERS", "WEIGHT_QUANTIZERS", "ActivationQuantizer", "FixedLevels",
           "QuantizedLinear", "WeightQuantizer", "export", "quantized_network"]

#: Weight quantizers with one basis per row (``--quantizer``).
WEIGHT_QUANTIZERS = ("lq", "uniform")
#: Activation quantizers (``--activation-quantizer``); ``none`` keeps the integer
#: requantization of ``docs/arithmetic.md`` A6-A7.
ACTIVATION_QUANTIZERS = ("none", "lq", "uniform")

#: Moving-average weight of the old basis (the public code's 0.9).
_MOMENTUM = 0.9
#: The public code's scale of a first basis: the 0.75 quantile of a standard normal.
_NORM_PPF_0_75 = 0.6745
#: Ridge of the least-squares refit, relative to the number of values fitted.
_RIDGE = 1e-4
#: QEM iterations run on the initial weights before training, so that it starts from a fit.
_WARM_UP = 10


def _check_bits(name: str, bits, high: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= high:
        raise ValueError(f"{name} must be 1..{high}, not {bits!r}")


def _levels_and_codes(basis: torch.Tensor, signed: bool):
    """Ascending levels ``(..., 2**K)`` of ``basis`` ``(..., K)`` and the code of each, as rows
    of ``{-1, 1}`` or ``{0, 1}``: ``(..., 2**K, K)``."""
    codes = torch.from_numpy(code_matrix(basis.shape[-1], signed)).to(basis.dtype)
    levels = basis @ codes.T
    levels, order = torch.sort(levels, dim=-1, stable=True)
    return levels, codes[order]


def _assign(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Position of each value's nearest level (ties upward) in the ascending ``levels``; rows of
    ``x`` go with rows of ``levels`` (or one row of levels serves all)."""
    middle = (levels[..., :-1] + levels[..., 1:]) / 2
    if middle.dim() == 1:
        return torch.bucketize(x, middle, right=True)
    # At most 15 midpoints a row: counting those passed is faster than a batched search.
    return (x[..., None] >= middle[:, None, :]).sum(dim=-1)


class _StraightThrough(torch.autograd.Function):
    """Forward the quantized value; pass the gradient where ``pass_mask`` is set."""

    @staticmethod
    def forward(ctx, x, quantized, pass_mask):
        ctx.save_for_backward(pass_mask)
        return quantized

    @staticmethod
    def backward(ctx, grad):
        (pass_mask,) = ctx.saved_tensors
        return grad * pass_mask, None, None


class WeightQuantizer(nn.Module):
    """Per-row signed binary bases for a ``(rows, columns)`` weight matrix.

    Parameters
    ----------
    weight : torch.Tensor
        The initial (pruned) float weights; they set the first bases.
    mask : torch.Tensor
        1 for a surviving weight, 0 for a pruned one (always quantized to exactly 0).
    bits : int
        ``K``, 1..4.
    learn : bool
        QEM updates in training mode (``lq``); ``False`` keeps the uniform first basis
        (``uniform``).
    """

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor, bits: int, *, learn: bool):
        super().__init__()
        _check_bits("bits", bits, 4)
        self.bits, self.learn = int(bits), bool(learn)
        self.register_buffer("mask", mask.detach().to(torch.float32))
        self.register_buffer("basis", self._uniform_basis(weight.detach()))
        if learn:
            for _ in range(_WARM_UP):
                self.basis.copy_(self._refit(weight.detach()))

    def _uniform_basis(self, weight: torch.Tensor) -> torch.Tensor:
        """``v_i = c_r 2^i``: evenly spaced levels ``+-c_r, +-3 c_r, ...`` reaching the row's
        largest surviving magnitude (zero rows get a tiny basis, never a zero one)."""
        largest = (weight.abs() * self.mask).amax(dim=1)
        step = largest / (2 ** self.bits - 1)
        step = torch.where(step > 0, step, torch.full_like(step, 1e-8))
        powers = 2.0 ** torch.arange(self.bits, dtype=torch.float32)
        return step[:, None] * powers[None, :]

    def _refit(self, weight: torch.Tensor) -> torch.Tensor:
        """One QEM step: codes of the nearest levels, then the row-wise ridge least squares."""
        levels, codes = _levels_and_codes(self.basis, signed=True)
        position = _assign(weight, levels)
        rows = torch.arange(weight.shape[0])[:, None]
        b = codes[rows, position] * self.mask[..., None]              # (rows, columns, K)
        gram = b.transpose(1, 2) @ b                                 # (rows, K, K)
        count = self.mask.sum(dim=1).clamp(min=1.0)
        gram = gram + (_RIDGE * count)[:, None, None] * torch.eye(self.bits)
        rhs = (b * (weight * self.mask)[..., None]).sum(dim=1)         # (rows, K)
        fitted = torch.linalg.solve(gram, rhs)
        # A row with no surviving weight keeps its basis (the fit has nothing to go on).
        return torch.where(self.mask.sum(dim=1, keepdim=True) > 0, fitted, self.basis)

    def quantize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(quantized weights, position of each weight's level)``, pruned weights 0."""
        levels, _ = _levels_and_codes(self.basis, signed=True)
        position = _assign(weight.detach(), levels)
        return torch.gather(levels, 1, position) * self.mask, position

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training and self.learn:
            with torch.no_grad():
                fitted = self._refit(weight.detach())
                self.basis.mul_(_MOMENTUM).add_((1 - _MOMENTUM) * fitted)
        quantized, _ = self.quantize(weight)
        return _StraightThrough.apply(weight, quantized, self.mask)


class ActivationQuantizer(nn.Module):
    """One unsigned binary basis for a layer's output after its ReLU (levels from 0 up).

    The first basis is the public code's ``v_i = 0.6745 * 2 / (2^K - 1) * 2^i``, which assumes a
    unit-scale input (the public code quantizes after batch normalisation); without one, it is
    multiplied by ``scale``, the standard deviation of the layer's pre-activation outputs.
    """

    def __init__(self, bits: int, scale: float, *, learn: bool):
        super().__init__()
        _check_bits("activation_bits", bits, 4)
        self.bits, self.learn = int(bits), bool(learn)
        scale = float(scale) if scale > 0 else 1.0
        powers = 2.0 ** torch.arange(self.bits, dtype=torch.float32)
        self.register_buffer(
            "basis", scale * _NORM_PPF_0_75 * 2 / (2 ** self.bits - 1) * powers)

    def levels(self) -> torch.Tensor:
        return _levels_and_codes(self.basis, signed=False)[0]

    def _refit(self, x: torch.Tensor) -> torch.Tensor:
        levels, codes = _levels_and_codes(self.basis, signed=False)
        b = codes[_assign(x.reshape(-1), levels)]                    # (n, K)
        gram = b.T @ b + _RIDGE * len(b) * torch.eye(self.bits)
        fitted = torch.linalg.solve(gram, b.T @ x.reshape(-1))
        # Levels stay >= 0 (0 is level 0, A10): a negative basis value would add a level below.
        return fitted.clamp(min=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.learn:
            with torch.no_grad():
                self.basis.mul_(_MOMENTUM).add_((1 - _MOMENTUM) * self._refit(x.detach()))
        levels = self.levels()
        quantized = levels[_assign(x.detach(), levels)]
        return _StraightThrough.apply(x, quantized, (x <= levels[-1]).to(x.dtype))


class FixedLevels(nn.Module):
    """Stored activation levels (``CompressedLayer.activation_levels``) as a module: each value
    to its nearest level, ties upward (the float rule of ``docs/arithmetic.md`` A10)."""

    def __init__(self, levels: np.ndarray):
        super().__init__()
        levels = np.asarray(levels, dtype=np.float32)
        self.register_buffer("levels", torch.from_numpy(levels.copy()))
        self.register_buffer("midpoints", torch.from_numpy(midpoints(levels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.levels[torch.bucketize(x.double(), self.midpoints, right=True)]


class QuantizedLinear(nn.Module):
    """A Linear (or Conv2d) layer whose latent float weights are quantized by a
    :class:`WeightQuantizer` in every forward pass (trained through the straight-through
    gradient). A convolution's kernel is quantized as its matrix ``O x (C kh kw)``: one basis
    per output channel (A9, A12)."""

    def __init__(self, linear: nn.Module, quantizer: WeightQuantizer):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())
        self.quantizer = quantizer
        self.geometry = geometry_of(linear)

    def quantized_weight(self) -> torch.Tensor:
        return self.quantizer(matrix(self.weight)).reshape(self.weight.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.geometry is not None:
            return conv_forward(x, self.quantized_weight(), self.bias, self.geometry)
        return nn.functional.linear(x, self.quantized_weight(), self.bias)


def quantized_network(linears: Sequence[nn.Linear], relus: Sequence[bool],
                      masks: Sequence[np.ndarray], x_sample: np.ndarray, *, weight: str | None,
                      bits: Sequence[int], activation: str, activation_bits: int):
    """The network to fine-tune: ``Flatten``, then each layer (a :class:`QuantizedLinear` when
    ``weight`` is ``lq`` or ``uniform``, else the float layer), its ReLU, and after each hidden
    ReLU an :class:`ActivationQuantizer` unless ``activation`` is ``none``.

    ``x_sample`` (float features) sets the activation quantizers' first scale.
    Returns ``(network, quantized linears, activation quantizers)``.
    """
    if weight is not None and weight not in WEIGHT_QUANTIZERS:
        raise ValueError(f"quantizer must be one of {', '.join(WEIGHT_QUANTIZERS)}, "
                         f"not {weight!r}")
    if activation not in ACTIVATION_QUANTIZERS:
        raise ValueError(f"activation_quantizer must be one of "
                         f"{', '.join(ACTIVATION_QUANTIZERS)}, not {activation!r}")
    if activation != "none":
        for i, relu in enumerate(relus[:-1]):
            if not relu:
                raise ValueError(f"activation_quantizer {activation} needs a ReLU after every "
                                 f"hidden layer (its levels are v^T e, e in {{0,1}}^K, from 0; "
                                 f"docs/arithmetic.md A10), and layer {i} has none")
    # The frame of compress.train.canonical_sequential (Unflatten to a first convolution's maps,
    # pooling after the ReLU and its quantizer, Flatten after the last convolution).
    geometries = [geometry_of(linear) for linear in linears]
    first = geometries[0]
    layers: list[nn.Module] = [
        nn.Flatten() if first is None else
        nn.Unflatten(1, (first.in_channels, first.in_height, first.in_width))]
    last_conv = max((i for i, g in enumerate(geometries) if g is not None), default=-1)
    quantized, activations = [], []
    x = layers[0](torch.from_numpy(np.asarray(x_sample, dtype=np.float32))
                  .reshape(len(x_sample), -1))
    for i, (linear, relu, mask) in enumerate(zip(linears, relus, masks)):
        layer = linear
        if weight is not None:
            quantizer = WeightQuantizer(matrix(linear.weight), torch.from_numpy(matrix(mask)),
                                        bits[i], learn=weight == "lq")
            layer = QuantizedLinear(linear, quantizer)
            quantized.append(layer)
        tail: list[nn.Module] = [layer]
        with torch.no_grad():
            x = layer.eval()(x)
        if relu:
            tail.append(nn.ReLU())
        if activation != "none" and i < len(linears) - 1:
            quantizer = ActivationQuantizer(activation_bits, float(x.std()),
                                            learn=activation == "lq")
            tail.append(quantizer)
            activations.append(quantizer)
        if geometries[i] is not None and geometries[i].pool is not None:
            tail.append(nn.MaxPool2d(2) if geometries[i].pool == "max" else nn.AvgPool2d(2))
        if i == last_conv:
            tail.append(nn.Flatten())
        with torch.no_grad():
            for module in tail[1:]:
                x = module.eval()(x)
        layers += tail
    return nn.Sequential(*layers), quantized, activations


def export(layer: QuantizedLinear) -> tuple[np.ndarray, np.ndarray]:
    """``(index, basis)`` of a fine-tuned layer: the basis rounded to float16 (as the artifact
    stores it), and index 0 for a pruned weight, else the entry of the weight's nearest level
    in its row's codebook :func:`core.levels.basis_codebook` of that basis."""
    # The artifact stores the basis in float16: the indices are those of the rounded levels.
    basis = layer.quantizer.basis.detach().numpy().astype(np.float16).astype(np.float32)
    codebook = basis_codebook(basis)
    weight = matrix(layer.weight.detach().numpy())                 # A12: O x C kh kw
    mask = layer.quantizer.mask.numpy().astype(bool)
    index = np.zeros(weight.shape, dtype=np.int64)
    for r in range(weight.shape[0]):
        index[r] = 1 + nearest_level(weight[r], codebook[r, 1:])
    return np.where(mask, index, 0), basis
