"""Random fuzz cases for the engine: a model, engine options, inputs and a reload, from a seed.

:func:`random_case` builds the :class:`FuzzCase` of a seed (deterministic): a random quantized
model, legal by the artifact's own validation (it is built as
:class:`~core.integer.IntegerLayer` data, checked by :class:`~core.artifact.
CompressedModel` and round-tripped through the file format), random engine options, a stream of
random and extreme inputs, and a second model of the same shapes that fits the same engine (a
mid-stream reload through the write port). :func:`shape_string` names a model's shape. Nothing
is simulated here: ``python -m accel.fuzz`` runs the cases.

Dimensions (over seeds): 1 to 4 drawn layers (up to 8 with factorized ones, below), widths 1
to 300 (mostly small; a convolutional case's, below, are its own); signed and unsigned network
inputs; hidden layers with and without ReLU, networks ending in a ReLU (A8); index bits
1 to 8 (``python -m compress --bits``) with full and partial codebooks, single-sign codebooks,
zero codebook values behind nonzero indices; weight bits 2 to 16 per layer; activation bits 2
to 16 (``--activation-bits``, :class:`IntegerLayer`); biases zero, tiny or up to int32, of one
sign or mixed; accumulators from 1 to 40+ bits, stored at the derived width or wider (up to
:data:`~core.integer.MAX_ACCUMULATOR_BITS`, A5); densities 1 % to 100 %, empty layers,
all-zero rows and columns; requantization multipliers 0 .. 2**15 - 1 and shifts 0 .. 62,
calibrated, all-zero outputs, saturating, shift 0 (A6); engine ``n_pes`` 1 to 16 (rarely up to
64, often more PEs than a layer has rows), ``lanes`` 1 to 4, ``input_lanes`` 1 to 16, ``banks``
1 to 8, ``queue_depth`` :data:`~accel.planning.plan.MIN_QUEUE_DEPTH` to 64 (rarely deeper),
``zero_run_bits`` 1 to 8, rows balanced on calibration inputs or interleaved. LQ-Nets layers
(``docs/arithmetic.md`` A9-A10), drawn from a second random stream of the seed so that the
draws above stay those of earlier versions: per-row codebooks (about 30 % of the layers), and
threshold activations of 1 to 4 code bits on about 35 % of the hidden layers with a ReLU
(thresholds spread over the reachable sums, at the ends of the stored range, or repeated;
levels anywhere in the output range, repeated ones included). TRP's factorized layers
(issue 23), from a third stream: each drawn layer is, with probability :data:`FACTORED`, preceded
by a rank layer (1 to ``min(in, out)`` outputs, zero bias, no ReLU, so the drawn layer takes
signed inputs), up to twice ``MAX_LAYERS`` layers in all. EPR's latent layers (issue 24, A11),
from a fourth stream: a drawn layer (not a wide, per-row or threshold one) is, with probability
:data:`LATENT`, made a latent layer: latents of any spread up to the ±127 clamp on its index
pattern, any step and bias step, its integer data derived as A11 says, and its artifact in
format version 4. Convolutional networks (issue 25, A12-A13), from a fifth stream: with
probability :data:`CONV` a case is 1 to 3 convolutions, then 1 or 2 Linear layers (at most
``MAX_LAYERS`` drawn layers in all; the last, Linear, gives the logits); input maps of 1 to 32
channels and 1 x 1 to 32 x 32 positions, square or not (mostly at most 8 channels of 2 x 2 to
12 x 12; 13 x 13 to 32 x 32 maps of 1 or 2 channels, 17 to 32 channels of maps of at most
6 x 6, 1 x 1 maps of any channels); output channels 1 to 32 (mostly at most 8; 17 or more only
on maps of at most 64 positions; the last convolution's output at most 4,096 packed columns,
:class:`~accel.planning.conv.MapFields`); kernel sides 1 to 7
(:data:`~accel.planning.plan.MAX_ENGINE_KERNEL`), drawn apart (mostly at most about half the
map), at most the padded map and cut down where ``C H W kh kw`` would pass 60,000; stride 1
and 2; padding 0 to ``min(kh, kw) - 1``, "same" in half the layers (less where the map would
pass 32 x 32); no pooling, or 2 x 2 max or average pooling (A13) where the convolution's map is
2 x 2 or more; with and without ReLU; every layer's data drawn
as above (index and weight bits, codebooks, densities 1 % to 100 % and empty, biases,
requantization, accumulators, per-row codebooks, threshold activations, latent layers), the
Linear layers after the convolutions (at most 64 wide, at most 65,536 weights) factorized as
above; a convolution's dense multiply-accumulates per image at most 400,000 (fewer output
channels where they would pass it); wide cases (as above) whose first convolution has 17 to 32
input channels and a kernel of at least 3 x 3. The reload keeps each convolution's geometry.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.artifact import CompressedLayer, CompressedModel, load
from core.geometry import ConvGeometry, conv_size
from core.integer import (MAX_ACCUMULATOR_BITS, MAX_SHIFT, MULTIPLIER_BITS, IntegerLayer,
                              accumulator_bound, accumulator_width, activation_range,
                              latent_integer_bias, requantization_parameters)
from core.latents import LATENT_LIMIT, LatentCode, LayerLatents, latent_codebook
from accel.planning.conv import MapFields
from accel.planning.plan import MAX_ENGINE_KERNEL, MIN_QUEUE_DEPTH, EnginePlan

__all__ = ["ACTIVATION_BITS", "BANKS", "CHANNELS", "CONV", "CONV_LAYERS", "CONV_LINEAR_LAYERS",
           "FACTORED", "LATENT", "INDEX_BITS", "INPUT_LANES", "KERNEL", "LANES", "MAP_SIDE",
           "MAX_LAYERS", "MAX_WIDTH", "N_PES", "QUEUE_DEPTH", "RARE_MAX_PES",
           "RARE_MAX_QUEUE_DEPTH", "STRIDES", "WEIGHT_BITS", "ZERO_RUN_BITS", "FuzzCase",
           "random_case", "shape_string"]

#: Ranges fuzzed; the unit tests check that random_case reaches both ends of each.
MAX_LAYERS = 4
#: Probability that a drawn layer is factorized as TRP exports it: a rank layer before it.
FACTORED = 0.2
#: Probability that a drawn layer is an EPR latent layer (A11).
LATENT = 0.2
MAX_WIDTH = 300
INDEX_BITS = (1, 8)            # python -m compress --bits 1..8
WEIGHT_BITS = (2, 16)          # IntegerLayer, --weight-bits
ACTIVATION_BITS = (2, 16)      # IntegerLayer, --activation-bits
N_PES = (1, 16)
RARE_MAX_PES = 64
LANES = (1, 4)
INPUT_LANES = (1, 16)
BANKS = (1, 8)
QUEUE_DEPTH = (MIN_QUEUE_DEPTH, 64)
RARE_MAX_QUEUE_DEPTH = 4096
ZERO_RUN_BITS = (1, 8)
#: Probability that a case is convolutional (issue 25; a fifth stream of the seed decides).
CONV = 0.3
CONV_LAYERS = (1, 3)           # convolutions, then
CONV_LINEAR_LAYERS = (1, 2)    # Linear layers (the last gives the logits); MAX_LAYERS in all
KERNEL = (1, MAX_ENGINE_KERNEL)                 # each side, drawn apart
STRIDES = (1, 2)
CHANNELS = (1, 32)             # input and output channels
MAP_SIDE = (1, 32)             # feature maps 1 x 1 .. 32 x 32 (mostly at most 12 x 12)
_BIAS_LIMIT = (1 << 31) - 1
_MULTIPLIER_MAX = (1 << MULTIPLIER_BITS) - 1
#: Kernel sides, by weight.
_KERNEL_SIDES = {1: 0.14, 2: 0.1, 3: 0.3, 4: 0.08, 5: 0.18, 6: 0.06, 7: 0.14}
#: A convolution's ``C x H x W x kh x kw`` at most (its tap walk's clocks per image grow with
#: it): a 32 x 32 map of one channel under a 7 x 7 kernel, 32 channels of 6 x 6 maps; larger
#: kernels are cut down to it.
_CONV_WORK = 60_000
#: A convolution's multiply-accumulates per image when dense, ``C x H x W x kh x kw x O``, at
#: most (its entries' clocks grow with them); more output channels are cut down to it.
_CONV_MACS = 400_000
#: Packed columns (:class:`~accel.planning.conv.MapFields`) of the last convolution's output
#: at most: the columns of the Linear layer after it.
_MAX_PACKED = 4096
#: Weights of a Linear layer after the convolutions at most.
_MAX_TAIL_WEIGHTS = 1 << 16


@dataclass
class FuzzCase:
    """One fuzz case: a model, the engine built for it, a stream of inputs, a reload.

    Attributes
    ----------
    seed : int
        ``random_case(seed, ...)`` rebuilds it.
    model : CompressedModel
        The model the engine is generated for.
    options : dict
        :meth:`EnginePlan.from_model` keywords (``n_pes``, ``lanes``, ``input_lanes``,
        ``queue_depth``, ``banks``, ``zero_run_bits``), without ``calibration``.
    calibration : numpy.ndarray or None
        Integer inputs balancing the rows over the PEs, or None (rows interleaved).
    plan : EnginePlan
        ``EnginePlan.from_model(model, **options, calibration=calibration)``.
    x : numpy.ndarray
        int64 ``(n, in_features)`` network inputs: random rows and extremes.
    reload_model : CompressedModel or None
        A model of the same shapes that fits ``plan`` (:meth:`EnginePlan.write_image`).
    reload_at : int or None
        Image index from which ``reload_model`` runs.
    idle, backpressure : float
        Suggested stall probabilities for the checked run.
    profile : dict
        What was drawn (modes of biases, requantization, densities), for the report.
    """

    seed: int
    model: CompressedModel
    options: dict
    calibration: np.ndarray | None
    plan: EnginePlan
    x: np.ndarray
    reload_model: CompressedModel | None
    reload_at: int | None
    idle: float
    backpressure: float
    profile: dict = field(default_factory=dict)


# -- random draws ----------------------------------------------------------------------------

def _pick(rng, choices: dict):
    """A key of ``choices`` (key -> weight)."""
    keys = list(choices)
    weights = np.array([choices[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=weights / weights.sum()))]


def _uniform(rng, low: int, high: int) -> int:
    return int(rng.integers(low, high + 1))


def _width(rng, max_width: int) -> int:
    kind = _pick(rng, {"one": 0.06, "small": 0.64, "medium": 0.2, "large": 0.1})
    width = {"one": 1, "small": _uniform(rng, 1, 16), "medium": _uniform(rng, 17, 100),
             "large": _uniform(rng, 101, MAX_WIDTH)}[kind]
    return max(1, min(width, max_width))


def _density(rng) -> tuple[str, float]:
    kind = _pick(rng, {"empty": 0.04, "dense": 0.12, "sparse": 0.84})
    if kind == "empty":
        return kind, 0.0
    if kind == "dense":
        return kind, 1.0
    return kind, float(np.exp(rng.uniform(np.log(0.01), 0.0)))


def _codebook(rng, index_bits: int, weight_bits: int) -> tuple[np.ndarray, str]:
    size = 1 << index_bits
    if rng.random() < 0.25:
        size = _uniform(rng, 1, size)           # fewer shared values than the index allows
    limit = (1 << (weight_bits - 1)) - 1
    sign = _pick(rng, {"mixed": 0.6, "positive": 0.2, "negative": 0.2})
    low, high = {"mixed": (-limit, limit), "positive": (1, limit),
                 "negative": (-limit, -1)}[sign]
    codebook = rng.integers(low, high + 1, size).astype(np.int64)
    if size > 1 and rng.random() < 0.5:          # the extremes of the value range
        ends = {"mixed": [-limit, limit], "positive": [limit], "negative": [-limit]}[sign]
        codebook[rng.integers(1, size, len(ends))] = ends
    if size > 2 and rng.random() < 0.1:          # a zero value behind a nonzero index
        codebook[_uniform(rng, 1, size - 1)] = 0
    codebook[0] = 0
    return codebook, sign


def _per_row_codebook(rng, rows: int, size: int, weight_bits: int) -> np.ndarray:
    """A9: ``rows`` codebooks of ``size`` entries each (one sign per row, or mixed)."""
    limit = (1 << (weight_bits - 1)) - 1
    codebook = rng.integers(-limit, limit + 1, (rows, size)).astype(np.int64)
    signs = rng.choice([-1, 1, 0], rows)            # 0: mixed
    codebook = np.where(signs[:, None] == 0, codebook, np.abs(codebook) * signs[:, None])
    if size > 1 and rng.random() < 0.4:
        codebook[rng.integers(0, rows), rng.integers(1, size)] = limit
    codebook[:, 0] = 0
    return codebook


def _threshold_activation(rng, bound: int, accumulator_bits: int, activation_bits: int,
                          code_bits: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A10: sorted thresholds within ``+-2**(W-1)`` and sorted levels from 0."""
    count = 1 << code_bits
    reach = 1 << (accumulator_bits - 1)
    kind = _pick(rng, {"reachable": 0.6, "ends": 0.15, "repeated": 0.15, "wide": 0.1})
    if kind == "ends":
        thresholds = rng.choice([-reach, reach, 0, 1, -1], count - 1)
    elif kind == "wide":
        thresholds = rng.integers(-reach, reach + 1, count - 1)
    else:
        span = max(1, bound)
        thresholds = rng.integers(-span // 4, span + 1, count - 1)
        if kind == "repeated":
            thresholds[:] = thresholds[0]
    top = (1 << activation_bits) - 1
    levels = np.sort(rng.integers(0, top + 1, count))
    if rng.random() < 0.3:
        levels[-1] = top
    levels[0] = 0
    return np.sort(thresholds).astype(np.int64), levels.astype(np.int64), kind


def _index(rng, out_features: int, in_features: int, codebook_size: int,
           density: float) -> tuple[np.ndarray, dict]:
    info = {}
    if codebook_size <= 1:
        return np.zeros((out_features, in_features), dtype=np.int64), info
    index = rng.integers(1, codebook_size, (out_features, in_features))
    index[rng.random(index.shape) >= density] = 0
    if density > 0 and not index.any():          # empty layers only when drawn as such
        index[rng.integers(0, out_features), rng.integers(0, in_features)] = \
            rng.integers(1, codebook_size)
    if rng.random() < 0.2:
        fraction = rng.uniform(0, 0.6)
        index[rng.random(out_features) < fraction, :] = 0
        info["zero_rows"] = round(float(fraction), 2)
    if rng.random() < 0.2:
        fraction = rng.uniform(0, 0.6)
        index[:, rng.random(in_features) < fraction] = 0
        info["zero_columns"] = round(float(fraction), 2)
    if rng.random() < 0.05 and out_features > 1:  # one long column: long zero runs and padding
        index[:, _uniform(rng, 0, in_features - 1)] = 0
        index[-1, 0] = _uniform(rng, 1, codebook_size - 1)
    return index.astype(np.int64), info


def _bias(rng, out_features: int) -> tuple[np.ndarray, str]:
    kind = _pick(rng, {"zero": 0.12, "tiny": 0.13, "random": 0.6, "int32": 0.15})
    if kind == "zero":
        return np.zeros(out_features, dtype=np.int64), kind
    bits = {"tiny": 2, "random": _uniform(rng, 1, 31), "int32": 31}[kind]
    top = min((1 << bits) - 1, _BIAS_LIMIT)
    sign = _pick(rng, {"mixed": 0.6, "positive": 0.2, "negative": 0.2})
    magnitude = rng.integers(0, top + 1, out_features, dtype=np.int64)
    if kind == "int32" and out_features:
        magnitude[rng.integers(0, out_features)] = top
    if sign == "mixed":
        values = magnitude * rng.choice([-1, 1], out_features)
    else:
        values = magnitude if sign == "positive" else -magnitude
    return values.astype(np.int64), kind


def _requantization(rng, bound: int, output_hi: int) -> tuple[int, int, str]:
    """A6: ``(multiplier, shift)`` over their whole range, by mode."""
    kind = _pick(rng, {"calibrated": 0.48, "random": 0.2, "zero-output": 0.08,
                       "saturate": 0.08, "shift0": 0.08, "multiplier0": 0.03, "unit": 0.05})
    if kind == "calibrated":                      # about the output range, over or under a bit
        gain = float(np.exp(rng.uniform(np.log(0.25), np.log(16.0))))
        real = min(gain * output_hi / max(bound, 1), _MULTIPLIER_MAX)
        multiplier, shift = requantization_parameters(real)
    elif kind == "random":
        multiplier, shift = _uniform(rng, 0, _MULTIPLIER_MAX), _uniform(rng, 0, MAX_SHIFT)
    elif kind == "zero-output":                   # |acc * M| < 2**(shift - 1): all outputs 0
        multiplier = _uniform(rng, 1, _MULTIPLIER_MAX)
        shift = min(MAX_SHIFT, (bound * multiplier).bit_length() + _uniform(rng, 1, 3))
    elif kind == "saturate":                      # heavy saturation, the largest multiplier
        multiplier = _MULTIPLIER_MAX if rng.random() < 0.4 else \
            _uniform(rng, 1 << 13, _MULTIPLIER_MAX)
        shift = _uniform(rng, 0, 3)
    elif kind == "shift0":
        multiplier, shift = _uniform(rng, 0, _MULTIPLIER_MAX), 0
    elif kind == "multiplier0":
        multiplier, shift = 0, _uniform(rng, 0, MAX_SHIFT)
    else:                                         # the identity, then the clamp (A7)
        multiplier, shift = 1, 0
    return int(multiplier), int(shift), kind


def _layer(rng, out_features, in_features, *, index_bits, weight_bits, activation_bits,
           input_signed, relu, logits, wide_accumulator, codebook=None, density=None,
           index=None, bias=None, accumulator_bits=None, learned=None, per_row=None,
           code_bits=None, geometry=None):
    """A CompressedLayer with integer data; the given parts are taken, the others drawn.

    ``learned``: the random stream of the LQ-Nets draws (A9-A10), or None for none; ``per_row``
    and ``code_bits`` (0: no threshold activation) force them, for a reload that must match its
    engine. ``geometry``: a convolution's (A12-A13), whose weight matrix is ``out_features`` (its
    output channels) by ``in_features`` (``geometry.columns``); None for a Linear layer."""
    info = {}
    if codebook is None:
        codebook, info["codebook"] = _codebook(rng, index_bits, weight_bits)
    if learned is not None:
        if per_row is None:
            per_row = bool(learned.random() < 0.3)
        if code_bits is None and relu and not logits and learned.random() < 0.35:
            code_bits = _uniform(learned, 1, 4)
    if per_row and codebook.ndim == 1:
        codebook = _per_row_codebook(learned, out_features, len(codebook), weight_bits)
        info["per_row"] = True
    if index is None:
        if density is None:
            info["density_kind"], density = _density(rng)
        index, index_info = _index(rng, out_features, in_features, codebook.shape[-1], density)
        info.update(index_info)
    if bias is None:
        bias, info["bias"] = _bias(rng, out_features)
    bound = accumulator_bound(codebook, index, bias, activation_bits, input_signed)
    needed = accumulator_width(bound)
    if needed > MAX_ACCUMULATOR_BITS:            # cannot happen within the fuzzed ranges
        raise AssertionError(f"a {needed}-bit accumulator was drawn")
    if accumulator_bits is None:
        accumulator_bits = needed
        if wide_accumulator:                      # A5: any wider width is legal
            accumulator_bits = _uniform(rng, needed, MAX_ACCUMULATOR_BITS)
    multiplier = shift = 0
    if not logits:
        out_hi = activation_range(activation_bits, not relu)[1]
        multiplier, shift, info["requant"] = _requantization(rng, bound, out_hi)
    thresholds = levels = float_levels = None
    if code_bits:                                 # A10 in place of A6-A7
        multiplier = shift = 0
        thresholds, levels, info["requant"] = _threshold_activation(
            learned, bound, accumulator_bits, activation_bits, code_bits)
        info["code_bits"] = code_bits
        float_levels = (levels * 1e-3).astype(np.float32)
    integer = IntegerLayer(codebook=codebook, bias=bias, weight_bits=weight_bits,
                           activation_bits=activation_bits, input_signed=input_signed,
                           accumulator_bits=accumulator_bits, multiplier=multiplier,
                           shift=shift, logits=logits,
                           weight_scale=float(rng.uniform(1e-4, 1e-2)),
                           thresholds=thresholds, levels=levels)
    layer = CompressedLayer(
        codebook=(codebook * integer.weight_scale).astype(np.float32),
        index=index.astype(np.uint8 if index_bits <= 8 else np.uint16),
        bias=(bias * 1e-6).astype(np.float32), relu=relu, index_bits=index_bits,
        zero_run_bits=_uniform(rng, 1, 8), integer=integer, activation_levels=float_levels,
        geometry=geometry)
    info["needed_accumulator_bits"] = needed
    return layer, info


def _factor(rng, in_features, out_features, *, activation_bits, input_signed, wide_accumulator):
    """The first factor of a factorized layer (TRP, ``compress/lowrank.py``): ``in_features``
    to a rank of 1 .. ``min(in_features, out_features)``, a zero bias, no ReLU (its output is
    signed, A7), any widths and density; the drawn layer follows it from the rank."""
    rank = _uniform(rng, 1, max(1, min(in_features, out_features)))
    layer, info = _layer(rng, rank, in_features, index_bits=_uniform(rng, *INDEX_BITS),
                         weight_bits=_uniform(rng, *WEIGHT_BITS),
                         activation_bits=activation_bits, input_signed=input_signed,
                         relu=False, logits=False, wide_accumulator=wide_accumulator,
                         bias=np.zeros(rank, dtype=np.int64), learned=rng)
    info["factor"] = True
    return layer, info


def _latent(rng, layer, info, *, wide_accumulator):
    """The drawn layer as an EPR latent layer (A11, ``core/latents.py``): latents from a
    discretized logistic of any spread (up to the ±127 clamp, sometimes only its ends) where the
    drawn index is nonzero, so its sparsity (empty rows and columns) stays; a random step;
    bias latents on a bias step of any size. Its integer data is what A11 and A4 make of
    them (the integer codebook is the latents, ``s_w`` the step, the integer biases derived as
    the artifact's reader derives them), with a new accumulator width and requantization."""
    integer = layer.integer
    spread = float(np.exp(rng.uniform(np.log(0.3), np.log(80.0))))
    q = np.clip(np.rint(rng.logistic(0.0, spread, layer.index.shape)), -LATENT_LIMIT,
                LATENT_LIMIT).astype(np.int64)
    if rng.random() < 0.1:                        # only the clamp's ends
        q = np.where(q < 0, -LATENT_LIMIT, LATENT_LIMIT)
    q[layer.index == 0] = 0
    step = float(np.float32(np.exp(rng.uniform(np.log(1e-4), np.log(0.5)))))
    q_bias = np.clip(np.rint(rng.normal(0.0, spread, layer.out_features)), -LATENT_LIMIT,
                     LATENT_LIMIT).astype(np.int64)
    bias_step = float(np.float32(step * np.exp(rng.uniform(np.log(1e-3), np.log(1e3)))))
    latents = LayerLatents(LatentCode(q, step, float(rng.uniform(-3, 4))),
                           LatentCode(q_bias, bias_step, float(rng.uniform(-3, 4))))
    codebook, index, _ = latent_codebook(q)
    weight_bits = max(2, int(np.abs(codebook).max()).bit_length() + 1, integer.weight_bits)
    weight_bits = min(weight_bits, 16)
    bias = latent_integer_bias(latents.bias.decoded(), 1.0, step)
    bound = accumulator_bound(codebook, index, bias, integer.activation_bits,
                              integer.input_signed)
    accumulator_bits = accumulator_width(bound)
    if wide_accumulator:
        accumulator_bits = _uniform(rng, accumulator_bits, MAX_ACCUMULATOR_BITS)
    multiplier = shift = 0
    if not integer.logits:
        out_hi = activation_range(integer.activation_bits, not layer.relu)[1]
        multiplier, shift, info["requant"] = _requantization(rng, bound, out_hi)
    new = IntegerLayer(codebook=codebook, bias=bias, weight_bits=weight_bits,
                       activation_bits=integer.activation_bits,
                       input_signed=integer.input_signed, accumulator_bits=accumulator_bits,
                       multiplier=multiplier, shift=shift, logits=integer.logits,
                       weight_scale=step)
    info = {**info, "latent": True, "needed_accumulator_bits": accumulator_width(bound)}
    return CompressedLayer.from_latents(latents, relu=layer.relu,
                                        zero_run_bits=layer.zero_run_bits, integer=new,
                                        geometry=layer.geometry), info


# -- convolutional cases (issue 25) ---------------------------------------------------------------

def _channels(rng) -> int:
    """Channels of a convolution: mostly 1 to 4, else 5 to 8."""
    return _uniform(rng, 1, 4) if rng.random() < 0.6 else _uniform(rng, 5, 8)


def _input_map(rng, cap: int, wide: bool = False) -> tuple[int, int, int, str]:
    """A convolutional network's input ``C x H x W`` and its kind: mostly maps of 2 x 2 to
    12 x 12 and at most 8 channels; rarely 1 x 1 maps of any channels, 13 x 13 to 32 x 32 maps
    of one or two channels (square 32 x 32 in a third of them), or 17 to 32 channels of maps of
    at most 6 x 6 (always in a ``wide`` case). Every count at most ``cap``."""
    kind = "deep" if wide else _pick(rng, {"one": 0.06, "small": 0.72, "large": 0.11,
                                            "deep": 0.11})
    if kind == "one":
        channels, height, width = _uniform(rng, *CHANNELS), 1, 1
    elif kind == "small":
        channels = _channels(rng)
        height = _uniform(rng, 2, 12)
        width = height if rng.random() < 0.5 else _uniform(rng, 2, 12)
    elif kind == "large":
        channels = _uniform(rng, 1, 2)
        height = MAP_SIDE[1] if rng.random() < 0.5 else _uniform(rng, 13, MAP_SIDE[1])
        width = height if rng.random() < 0.6 else _uniform(rng, 13, MAP_SIDE[1])
    else:
        channels = _uniform(rng, 17, CHANNELS[1])
        height = _uniform(rng, 1, 6)
        width = height if rng.random() < 0.5 else _uniform(rng, 1, 6)
    return min(channels, cap), min(height, cap), min(width, cap), kind


def _conv_geometry(rng, channels: int, height: int, width: int, cap: int,
                   wide: bool = False) -> ConvGeometry:
    """A convolution of a ``channels x height x width`` map (A12-A13): kernel sides 1 to 7 drawn
    apart (mostly at most half the map's side plus one), cut down to :data:`_CONV_WORK` and to
    the padded map; padding none, "same" (``(min(kh, kw) - 1) // 2``) or any of
    ``0 .. min(kh, kw) - 1`` (less where the map would grow past 32 x 32 or ``cap``); stride 1
    or 2 (2 mostly on maps of 4 x 4 or more); a max or average pooling (A13) on 60 % of those
    whose map is 2 x 2 or more (30 % at stride 2). ``wide``: sides of at least 3 and the
    largest padding, so that it keeps ``9 x channels`` columns or more."""
    kh, kw = _pick(rng, _KERNEL_SIDES), _pick(rng, _KERNEL_SIDES)
    if rng.random() < 0.7:              # mostly at most about half the map (not all 1 x 1 out)
        kh, kw = min(kh, height // 2 + 1), min(kw, width // 2 + 1)
    if wide:
        kh, kw = max(kh, 3), max(kw, 3)
    while channels * height * width * kh * kw > _CONV_WORK and max(kh, kw) > 1:
        if kh >= kw:
            kh -= 1
        else:
            kw -= 1
    top = min(kh, kw) - 1
    padding = {"none": 0, "same": top // 2, "any": _uniform(rng, 0, top)}[
        _pick(rng, {"none": 0.3, "same": 0.5, "any": 0.2})]
    if wide:
        padding = top
    kh, kw = min(kh, height + 2 * padding), min(kw, width + 2 * padding)   # fits the map
    # (Stride 2 mostly on maps of 4 x 4 or more: stacks of them would mostly end at 1 x 1.)
    halve = rng.random() < (0.4 if min(height, width) >= 4 else 0.1)
    stride = STRIDES[1] if halve else STRIDES[0]

    def sides(p):
        return conv_size(height, kh, stride, p), conv_size(width, kw, stride, p)

    limit = min(MAP_SIDE[1], cap)
    while padding and max(sides(padding)) > limit and min(sides(padding - 1)) >= 1:
        padding -= 1
    geometry = ConvGeometry(channels, height, width, kh, kw, stride=stride, padding=padding)
    if geometry.conv_height >= 2 and geometry.conv_width >= 2:
        pooled = 0.6 if stride == 1 else 0.3
        pool = _pick(rng, {None: 1 - pooled, "max": pooled / 2, "avg": pooled / 2})
        geometry = ConvGeometry(channels, height, width, kh, kw, stride=stride,
                                padding=padding, pool=pool)
    return geometry


def _conv_shapes(rng, max_layers: int, cap: int,
                 wide: bool = False) -> tuple[list, list[int], str]:
    """A convolutional network's shapes: 1 to 3 convolutions, then 1 or 2 Linear layers, at
    most ``max_layers`` (>= 2) in all. Returns a geometry per layer (None for a Linear one),
    its outputs (a convolution's channels: mostly 1 to 8, 17 to 32 on a few maps of at most
    64 positions), and the input map's kind. Channels, map sides and widths are at most
    ``cap``; a convolution's dense multiply-accumulates at most :data:`_CONV_MACS`; the last
    convolution's packed output (the next layer's columns) at most :data:`_MAX_PACKED`, a
    Linear layer's weights after it at most :data:`_MAX_TAIL_WEIGHTS`. ``wide`` (wide
    arithmetic, A5): the first convolution has 17 to 32 input channels and a kernel of at least
    3 x 3, hundreds of columns (sums of 40 bits and more at 16-bit weights and activations)."""
    n_conv = _uniform(rng, CONV_LAYERS[0], min(CONV_LAYERS[1], max_layers - 1))
    n_linear = _uniform(rng, CONV_LINEAR_LAYERS[0],
                        min(CONV_LINEAR_LAYERS[1], max_layers - n_conv))
    channels, height, width, kind = _input_map(rng, cap, wide)
    geometries, outs = [], []
    for i in range(n_conv):
        g = _conv_geometry(rng, channels, height, width, cap, wide=wide and i == 0)
        if g.conv_height * g.conv_width <= 64 and rng.random() < 0.12:
            out = _uniform(rng, 17, CHANNELS[1])
        else:
            out = _channels(rng)
        out = max(1, min(out, cap, _CONV_MACS // (g.input_size * g.taps)))
        if i == n_conv - 1:
            while out > 1 and MapFields(out, g.out_height, g.out_width).size > _MAX_PACKED:
                out -= 1
        geometries.append(g)
        outs.append(out)
        channels, height, width = out, g.out_height, g.out_width
    columns = channels * height * width
    for _ in range(n_linear):
        size = _pick(rng, {"one": 0.08, "small": 0.72, "medium": 0.2})
        out = {"one": 1, "small": _uniform(rng, 1, 16), "medium": _uniform(rng, 17, 64)}[size]
        out = max(1, min(out, cap, _MAX_TAIL_WEIGHTS // columns))
        geometries.append(None)
        outs.append(out)
        columns = out
    return geometries, outs, kind


def _inputs(rng, n: int, features: int, lo: int, hi: int, extremes_at=()) -> np.ndarray:
    """``n`` rows: random values at random densities, the extremes at each of ``extremes_at``."""
    x = np.zeros((n, features), dtype=np.int64)
    for row in range(n):
        density = 1.0 if rng.random() < 0.15 else float(np.exp(rng.uniform(np.log(0.01), 0)))
        if rng.random() < 0.2:                    # only the ends of the range
            values = rng.choice([lo, hi], features)
        else:
            values = rng.integers(lo, hi + 1, features)
        values[rng.random(features) >= density] = 0
        x[row] = values
    alternating = np.where(np.arange(features) % 2 == 0, lo, hi)
    extremes = [np.zeros(features), np.full(features, lo), np.full(features, hi),
                alternating, np.where(np.arange(features) % 2 == 0, hi, lo)]
    for start in extremes_at:
        for k, row in enumerate(extremes):
            if start + k < n:
                x[start + k] = row
    return x


def _reload_model(rng, model: CompressedModel, plan: EnginePlan, learned=None):
    """A random model of ``model``'s shapes, widths and signedness that fits ``plan``."""
    for attempt in range(12):
        scale = 0.6 ** attempt
        layers = []
        for i, (layer, mine) in enumerate(zip(model.layers, plan.layers)):
            integer = layer.integer
            weight_bits = _uniform(rng, 2, mine.weight_bits)
            codebook, _ = _codebook(rng, layer.index_bits, weight_bits)
            if mine.per_row:
                codebook = _per_row_codebook(learned, layer.out_features, len(codebook),
                                             weight_bits)
            density = min(1.0, layer.density * rng.uniform(0.3, 1.2) * scale) \
                if attempt < 11 else 0.0
            index, _ = _index(rng, layer.out_features, layer.in_features,
                              codebook.shape[-1], density)
            # Biases up to what the engine's accumulator holds (the bound, A5, reached when the
            # row's weights have one sign and the inputs are at the end of their range).
            x_max = max(-integer.input_range()[0], integer.input_range()[1])
            weights = np.take_along_axis(np.abs(codebook), index, axis=1) if mine.per_row \
                else np.abs(codebook)[index]
            rows = weights.sum(axis=1) * x_max
            room = (1 << (mine.accumulator_bits - 1)) - 1 - rows
            if (room < 0).any():
                continue
            bias, _ = _bias(rng, layer.out_features)
            room = np.minimum(room, _BIAS_LIMIT)
            if rng.random() < 0.3:                # right at the bound
                bias = np.where(bias < 0, -room, room)
            bias = np.clip(bias, -room, room)
            new, _ = _layer(rng, layer.out_features, layer.in_features,
                            index_bits=layer.index_bits, weight_bits=weight_bits,
                            activation_bits=integer.activation_bits,
                            input_signed=integer.input_signed, relu=layer.relu,
                            logits=integer.logits, wide_accumulator=False, codebook=codebook,
                            index=index, bias=bias, accumulator_bits=mine.accumulator_bits,
                            learned=learned, per_row=mine.per_row,
                            code_bits=mine.code_bits or 0, geometry=layer.geometry)
            layers.append(new)
        if len(layers) != len(model.layers):
            continue
        other = CompressedModel(layers, {"fuzz": "reload"})
        try:
            plan.write_image(other)
        except ValueError:
            continue
        return other
    raise AssertionError("no reload model fits the plan")          # density 0 always fits


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None
                                         and np.array_equal(a, b))


def _check_artifact(model: CompressedModel) -> None:
    """Save and load ``model``; the loaded file must carry the same integer model."""
    with tempfile.TemporaryDirectory() as folder:
        path = model.save(Path(folder) / "fuzz.dcz")
        loaded = load(path)
    for a, b in zip(model.layers, loaded.layers):
        if not (np.array_equal(a.index, b.index) and a.relu == b.relu
                and a.geometry == b.geometry
                and np.array_equal(a.integer.codebook, b.integer.codebook)
                and _same(a.integer.thresholds, b.integer.thresholds)
                and _same(a.integer.levels, b.integer.levels)
                and np.array_equal(a.integer.bias, b.integer.bias)
                and (a.integer.accumulator_bits, a.integer.multiplier, a.integer.shift)
                == (b.integer.accumulator_bits, b.integer.multiplier, b.integer.shift)):
            raise AssertionError("the artifact did not round-trip")


def random_case(seed: int, *, inputs: int = 200, max_width: int = MAX_WIDTH,
                max_layers: int = MAX_LAYERS, max_pes: int | None = None,
                check_artifact: bool = True, conv: bool | None = None) -> FuzzCase:
    """The fuzz case of ``seed`` (deterministic).

    Parameters
    ----------
    inputs : int
        Images in the stream (at least 1); the extremes (all zero, all ``lo``, all ``hi``,
        alternating) start it and start the reloaded part.
    max_width, max_layers, max_pes : int
        Caps on the drawn shapes and PE count (small values keep a pure-Python simulation
        fast); a case depends on them. A factorized layer counts once in ``max_layers``;
        ``max_width`` also caps a convolution's channels and map sides.
    check_artifact : bool
        Round-trip both models through the file format (the artifact's own validation runs
        either way).
    conv : bool or None
        Whether the case is convolutional: None draws it (probability :data:`CONV`, never
        with ``max_layers`` 1); True or False forces it (a seed whose draw agrees gives the
        same case either way).
    """
    if inputs < 1:
        raise ValueError(f"inputs must be >= 1, not {inputs!r}")
    rng = np.random.default_rng([int(seed), 0xF0221])
    learned = np.random.default_rng([int(seed), 0x1A9])       # the A9-A10 draws (issue 22)
    # Convolutional cases (issue 25), from a fifth stream: the draws of a Linear case stay
    # those of earlier versions.
    shapes = np.random.default_rng([int(seed), 0xC025])
    drawn = bool(shapes.random() < CONV)
    layer_cap = max(1, min(max_layers, MAX_LAYERS))
    convolutional = drawn if conv is None else bool(conv)
    if convolutional and layer_cap < 2:
        if conv:
            raise ValueError("a convolutional case needs max_layers >= 2 (a convolution, then "
                             "the Linear layer of the logits)")
        convolutional = False
    n_layers = _uniform(rng, 1, layer_cap)
    wide = rng.random() < 0.1           # wide arithmetic: 40+ bit accumulators
    widths = [_width(rng, max_width) for _ in range(n_layers + 1)]
    if wide:
        widths[rng.integers(0, n_layers)] = _uniform(rng, min(max_width, 150), max_width)
    activation_bits = _uniform(rng, 13, 16) if wide else _uniform(rng, *ACTIVATION_BITS)
    input_signed = bool(rng.random() < 0.5)
    relus = [bool(rng.random() < 0.65) for _ in range(n_layers - 1)] + [bool(rng.random() < 0.15)]
    wide_accumulator = bool(rng.random() < 0.15)
    # Per drawn layer: a convolution's geometry or None, and its outputs (channels or width).
    geometries, outs, map_kind = [None] * n_layers, widths[1:], None
    if convolutional:
        geometries, outs, map_kind = _conv_shapes(shapes, layer_cap, max_width, wide)
        n_layers = len(geometries)
        relus = [bool(shapes.random() < (0.7 if g is not None else 0.65))
                 for g in geometries[:-1]] + [bool(shapes.random() < 0.15)]
        # The activations between the layers, flat: the input maps, each layer's output.
        widths = [geometries[0].input_size] + [o if g is None else g.output_size(o)
                                               for g, o in zip(geometries, outs)]
    # TRP's factorized layers (issue 23), from a third stream: the draws above and those of an
    # unfactored layer stay those of earlier versions.
    low_rank = np.random.default_rng([int(seed), 0x7A9])
    latent = np.random.default_rng([int(seed), 0xE9])           # EPR's latent layers (issue 24)
    # (Not in a wide case: its wide layer's sums need its full input width. Not a convolution:
    # no Linear layer goes before one.)
    factored = [bool(low_rank.random() < FACTORED) and not wide and g is None
                for g in geometries]
    layers, infos = [], []
    signed = input_signed
    for i in range(n_layers):
        geometry = geometries[i]
        in_features = widths[i] if geometry is None else geometry.columns
        if factored[i]:
            layer, info = _factor(low_rank, widths[i], outs[i],
                                  activation_bits=activation_bits, input_signed=signed,
                                  wide_accumulator=wide_accumulator)
            layers.append(layer)
            infos.append(info)
            in_features, signed = layer.out_features, True
        weight_bits = _uniform(rng, 13, 16) if wide else _uniform(rng, *WEIGHT_BITS)
        index_bits = _uniform(rng, *INDEX_BITS)
        codebook = density = bias = None
        if wide:
            codebook, _ = _codebook(rng, index_bits, weight_bits)
            density = 1.0
            bias = np.full(outs[i], _BIAS_LIMIT, dtype=np.int64)
        layer, info = _layer(rng, outs[i], in_features, index_bits=index_bits,
                             weight_bits=weight_bits, activation_bits=activation_bits,
                             input_signed=signed, relu=relus[i], logits=i == n_layers - 1,
                             wide_accumulator=wide_accumulator, codebook=codebook,
                             density=density, bias=bias, learned=learned, geometry=geometry)
        if geometry is not None:
            info["conv"] = geometry.describe(outs[i])
        if latent.random() < LATENT and not wide and not layer.per_row \
                and not layer.integer.code_bits:
            layer, info = _latent(latent, layer, info, wide_accumulator=wide_accumulator)
        layers.append(layer)
        infos.append(info)
        signed = not relus[i]
    model = CompressedModel(layers, {"fuzz": int(seed)})

    n_pes = _uniform(rng, RARE_MAX_PES // 4 + 1, RARE_MAX_PES) if rng.random() < 0.03 \
        else _uniform(rng, *N_PES)
    if max_pes is not None:
        n_pes = max(1, min(n_pes, max_pes))
    depth_kind = _pick(rng, {"min": 0.25, "range": 0.72, "deep": 0.03})
    queue_depth = {"min": MIN_QUEUE_DEPTH, "range": _uniform(rng, *QUEUE_DEPTH),
                   "deep": _uniform(rng, QUEUE_DEPTH[1] + 1, RARE_MAX_QUEUE_DEPTH)}[depth_kind]
    options = {"n_pes": n_pes, "lanes": _uniform(rng, *LANES),
               "input_lanes": _uniform(rng, *INPUT_LANES), "queue_depth": queue_depth,
               "banks": _uniform(rng, *BANKS), "zero_run_bits": _uniform(rng, *ZERO_RUN_BITS)}
    lo, hi = activation_range(activation_bits, input_signed)
    calibration = None
    if rng.random() < 0.5:
        calibration = _inputs(rng, _uniform(rng, 1, 64), widths[0], lo, hi)
    plan = EnginePlan.from_model(model, calibration=calibration, **options)

    reload_at = _uniform(rng, 1, inputs - 1) if inputs >= 2 else None
    x = _inputs(rng, inputs, widths[0], lo, hi,
                extremes_at=(0,) if reload_at is None else (0, reload_at))
    reload_model = _reload_model(rng, model, plan, learned) if reload_at is not None else None
    if check_artifact:
        _check_artifact(model)
        if reload_model is not None:
            _check_artifact(reload_model)
    idle = 0.0 if rng.random() < 0.25 else round(float(rng.uniform(0.05, 0.6)), 2)
    backpressure = 0.0 if rng.random() < 0.25 else round(float(rng.uniform(0.05, 0.6)), 2)
    profile = {"wide": wide, "wide_accumulator": wide_accumulator, "factored": factored,
               "convolutional": convolutional, "map": map_kind, "layers": infos}
    return FuzzCase(seed=int(seed), model=model, options=options, calibration=calibration,
                    plan=plan, x=x, reload_model=reload_model, reload_at=reload_at, idle=idle,
                    backpressure=backpressure, profile=profile)


def shape_string(model: CompressedModel) -> str:
    """``64s-50r-50-10r``: input width (``s`` signed), then each layer's width (``r`` ReLU).

    A convolutional model's input is its maps, ``C x H x W``, and a convolution is its
    geometry's description in brackets: ``1x12x12s-[conv 1x12x12 -> 4x5x5 (3x3, stride 1,
    padding 0, max pool)]r-10``."""
    first = model.layers[0]
    g = first.geometry
    size = str(model.in_features) if g is None else \
        f"{g.in_channels}x{g.in_height}x{g.in_width}"
    parts = [f"{size}{'s' if first.integer.input_signed else ''}"]
    parts += [(f"{layer.out_features}" if layer.geometry is None
               else f"[{layer.geometry.describe(layer.out_features)}]")
              + ("r" if layer.relu else "") for layer in model.layers]
    return "-".join(parts)
