"""Property tests of the integer reference ``sim`` against ``docs/arithmetic.md``.

The vectorized golden model (``sim.run``, ``sim.trace``, ``sim.run_layer``, ``sim.requantize``)
is checked against a plain Python loop written here straight from the contract, with Python
ints only:

- A1: activation ranges, unsigned ``0 .. 2**A - 1`` or signed ``-2**(A-1) .. 2**(A-1) - 1``;
- A3: ``w[r, c] = codebook[index[r, c]]``;
- A5: ``acc[r] = bias[r] + sum_c w[r, c] * x[c]``, exact, and its proven bound and width;
- A6: ``t = (acc * multiplier + round) >> shift``, ``round = 2**(shift-1)`` (0 for shift 0);
- A7: ReLU, then clamp to the output tensor's A1 range;
- A8: the last layer emits ``acc`` (or ``max(acc, 0)`` after a ReLU), unrequantized;
- A9: a per-row codebook, ``w[r, c] = codebook[r][index[r, c]]``;
- A10: a threshold activation, ``levels[#{j : acc >= thresholds[j]}]``;
- A12: a convolution, each output position's accumulator over its kernel window, padding 0;
- A13: 2 x 2 pooling of the output maps, the maximum or ``(sum + 2) >> 2``.

Random models are built directly (no calibration): 1-3 layers, shapes 1x1 .. 40x40, random
index matrices (empty and dense ones, zero rows and columns), codebooks of 2..16-bit values
(extremes included), one per layer or one per row, int32 biases, random multipliers and shifts
or threshold activations (thresholds spread over the accumulator's range, its ends included).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import compress
import sim
from core.artifact import CompressedLayer, CompressedModel
from core.geometry import ConvGeometry
from core.integer import (
    MAX_ACCUMULATOR_BITS,
    MAX_SHIFT,
    MULTIPLIER_BITS,
    IntegerLayer,
    accumulator_bound,
    accumulator_width,
    requantization_parameters,
)

_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


# -- the loop reference: docs/arithmetic.md in Python ints ---------------------------------------

def _loop_range(bits: int, signed: bool) -> tuple[int, int]:
    """A1: the range of a ``bits``-wide activation tensor."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _loop_requantize(acc: int, multiplier: int, shift: int, relu: bool, bits: int) -> int:
    """A6-A7 for one accumulator."""
    rounding = 1 << (shift - 1) if shift > 0 else 0
    t = (acc * multiplier + rounding) >> shift          # Python's >> is a floor shift
    if relu:
        t = max(t, 0)
    lo, hi = _loop_range(bits, signed=not relu)
    return min(max(t, lo), hi)


def _plain(layer: CompressedLayer) -> dict:
    """A layer's integer data as Python ints and lists (no numpy in the loops)."""
    integer = layer.integer
    levels = None if integer.levels is None else [int(v) for v in integer.levels.tolist()]
    thresholds = None if levels is None else [int(v) for v in integer.thresholds.tolist()]
    codebook = integer.codebook.tolist()
    return {"codebook": codebook, "per_row": integer.per_row,
            "thresholds": thresholds, "levels": levels,
            "index": [[int(v) for v in row] for row in layer.index.tolist()],
            "bias": [int(v) for v in integer.bias.tolist()],
            "multiplier": int(integer.multiplier), "shift": int(integer.shift),
            "relu": bool(layer.relu), "logits": bool(integer.logits),
            "bits": int(integer.activation_bits)}


def _loop_accumulate(p: dict, r: int, x: list[int]) -> int:
    """A3, A5: row ``r``'s exact accumulator."""
    acc = p["bias"][r]
    codebook = _row_codebook(p, r)                                      # A9 or A3
    for c in range(len(x)):
        acc += int(codebook[p["index"][r][c]]) * x[c]
    return acc


def _loop_layer(p: dict, x: list[int]) -> list[int]:
    """One layer for one sample: requantized activations (A6-A7) or logits (A8)."""
    out = []
    for r in range(len(p["index"])):
        acc = _loop_accumulate(p, r, x)
        if p["logits"]:
            out.append(max(acc, 0) if p["relu"] else acc)
        elif p["levels"] is not None:                                    # A10
            out.append(p["levels"][sum(1 for t in p["thresholds"] if acc >= t)])
        else:
            out.append(_loop_requantize(acc, p["multiplier"], p["shift"], p["relu"], p["bits"]))
    return out


def _loop_trace(model: CompressedModel, x: np.ndarray) -> list[list[list[int]]]:
    """Every layer's output for a batch: ``[layer][sample][feature]`` Python ints."""
    plain = [_plain(layer) for layer in model.layers]
    outputs = []
    activations = [[int(v) for v in row] for row in x.tolist()]
    for p in plain:
        activations = [_loop_layer(p, row) for row in activations]
        outputs.append(activations)
    return outputs


# -- strategies --------------------------------------------------------------------------------

_FEATURES = st.integers(1, 40)
_SEEDS = st.integers(0, 2 ** 32 - 1)


def _index_matrix(draw, rng, shape, size: int) -> np.ndarray:
    """Codebook indices with a drawn density, sometimes with whole zero rows and columns."""
    if size == 1:
        return np.zeros(shape, dtype=np.uint8)
    index = rng.integers(1, size, shape)
    density = draw(st.sampled_from(["drawn", "drawn", "drawn", "dense", "empty"]))
    if density != "dense":
        density = 0.0 if density == "empty" else draw(st.floats(0.02, 1.0))
        index[rng.random(shape) >= density] = 0
    if draw(st.booleans()):
        index[rng.random(shape[0]) < 0.2, :] = 0
        index[:, rng.random(shape[1]) < 0.2] = 0
    return index.astype(np.uint8)


def _codebook(draw, rng, size: int, weight_bits: int) -> np.ndarray:
    """A2: ``size`` signed values with ``|v| <= 2**(B-1) - 1`` and ``codebook[0] == 0``."""
    limit = (1 << (weight_bits - 1)) - 1
    kind = draw(st.sampled_from(["random", "extremes", "max", "min", "zero"]))
    codebook = {"random": lambda: rng.integers(-limit, limit + 1, size),
                "extremes": lambda: rng.choice([-limit, limit], size),
                "max": lambda: np.full(size, limit),
                "min": lambda: np.full(size, -limit),
                "zero": lambda: np.zeros(size, dtype=np.int64)}[kind]()
    codebook[0] = 0
    return codebook.astype(np.int64)


def _bias(draw, rng, out_features: int) -> np.ndarray:
    """A4: int32 biases, from zero to the int32 extremes."""
    kind = draw(st.sampled_from(["zero", "random", "extremes"]))
    if kind == "zero":
        return np.zeros(out_features, dtype=np.int64)
    if kind == "extremes":
        return rng.choice([_INT32_MIN, _INT32_MAX, -_INT32_MAX], out_features).astype(np.int64)
    bits = draw(st.integers(0, 31))
    return rng.integers(-(1 << bits), 1 << bits, out_features, dtype=np.int64)


def _requantization(draw, bound: int, activation_bits: int) -> tuple[int, int]:
    """A6: a multiplier and shift, either any, or fitting the bound to about the output range,
    or tiny ones under which exact halves (the rounding rule) are common."""
    mode = draw(st.sampled_from(["any", "fit", "halves"]))
    if mode == "halves":
        return draw(st.integers(1, 3)), draw(st.integers(1, 2))
    multiplier = draw(st.sampled_from([0, 1, 1 << 14, (1 << MULTIPLIER_BITS) - 1])
                      | st.integers(0, (1 << MULTIPLIER_BITS) - 1))
    if mode == "any":
        return multiplier, draw(st.integers(0, MAX_SHIFT))
    natural = (bound * multiplier).bit_length() - activation_bits
    low = min(MAX_SHIFT, max(0, natural - 3))
    return multiplier, draw(st.integers(low, min(MAX_SHIFT, low + 7)))


@st.composite
def _layers(draw, out_features: int, in_features: int, activation_bits: int,
            input_signed: bool, relu: bool, logits: bool, weight_bits: int | None = None):
    """A CompressedLayer with random integer data that satisfies A1-A6."""
    rng = np.random.default_rng(draw(_SEEDS))
    if weight_bits is None:
        weight_bits = draw(st.integers(2, 16))
    index_bits = draw(st.integers(1, 8))
    size = draw(st.sampled_from(["random", "random", "full", "one"]))   # codebook length K
    if size == "random":
        size = int(rng.integers(2, 2 ** index_bits + 1))
    else:
        size = 2 ** index_bits if size == "full" else 1
    if draw(st.booleans()):                                               # A9
        codebook = np.stack([_codebook(draw, rng, size, weight_bits)
                             for _ in range(out_features)])
    else:
        codebook = _codebook(draw, rng, size, weight_bits)
    index = _index_matrix(draw, rng, (out_features, in_features), size)
    bias = _bias(draw, rng, out_features)
    bound = accumulator_bound(codebook, index, bias, activation_bits, input_signed)
    width = accumulator_width(bound)
    thresholds = levels = float_levels = None
    if relu and not logits and draw(st.booleans()):                       # A10
        multiplier = shift = 0
        thresholds, levels = _threshold_activation(draw, rng, bound, width, activation_bits)
        float_levels = (levels * 0.01).astype(np.float32)
    else:
        multiplier, shift = (0, 0) if logits else _requantization(draw, bound, activation_bits)
    integer = IntegerLayer(codebook=codebook, bias=bias, weight_bits=weight_bits,
                           activation_bits=activation_bits, input_signed=input_signed,
                           accumulator_bits=width, multiplier=multiplier,
                           shift=shift, logits=logits, thresholds=thresholds, levels=levels)
    return CompressedLayer(codebook=(codebook * 0.01).astype(np.float32), index=index,
                           bias=(bias * 1e-4).astype(np.float32), relu=relu,
                           index_bits=index_bits, zero_run_bits=draw(st.integers(1, 8)),
                           integer=integer, activation_levels=float_levels)


def _threshold_activation(draw, rng, bound: int, width: int, activation_bits: int):
    """A10: ``2**K - 1`` non-decreasing thresholds, from the reachable accumulator values or
    over the whole stored range (its ends included), and ``2**K`` non-decreasing levels from 0
    within the unsigned output range."""
    count = 1 << draw(st.integers(1, 4))
    reach = 1 << (width - 1)
    spread = draw(st.sampled_from(["reachable", "reachable", "stored", "ends"]))
    if spread == "ends":
        thresholds = rng.choice([-reach, reach, 0], count - 1)
    else:
        span = max(bound, 1) if spread == "reachable" else reach
        thresholds = rng.integers(-span, span + 1, count - 1)
    top = (1 << activation_bits) - 1
    levels = np.concatenate([[0], np.sort(rng.integers(0, top + 1, count - 1))])
    return np.sort(thresholds).astype(np.int64), levels.astype(np.int64)


@st.composite
def _models(draw, max_layers: int = 3) -> CompressedModel:
    """1..max_layers integer layers; a hidden layer without ReLU makes the next input signed."""
    activation_bits = draw(st.integers(2, 16))
    n_layers = draw(st.integers(1, max_layers))
    features = [draw(_FEATURES) for _ in range(n_layers + 1)]
    signed = draw(st.booleans())
    layers = []
    for i in range(n_layers):
        relu = draw(st.booleans())
        layers.append(draw(_layers(features[i + 1], features[i], activation_bits, signed, relu,
                                   logits=i == n_layers - 1)))
        signed = not relu
    return CompressedModel(layers, {"test": "sim properties"})


def _native_dtype(bits: int, signed: bool):
    if bits <= 8:
        return np.int8 if signed else np.uint8
    return np.int16 if signed else np.uint16


@st.composite
def _inputs(draw, features: int, bits: int, signed: bool) -> np.ndarray:
    """A batch over the whole A1 range: random, all zero, all at one extreme, or mixed extremes."""
    lo, hi = _loop_range(bits, signed)
    n = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(_SEEDS))
    kind = draw(st.sampled_from(["random", "zero", "low", "high", "extremes"]))
    x = {"random": lambda: rng.integers(lo, hi + 1, (n, features)),
         "zero": lambda: np.zeros((n, features), dtype=np.int64),
         "low": lambda: np.full((n, features), lo),
         "high": lambda: np.full((n, features), hi),
         "extremes": lambda: rng.choice([lo, hi], (n, features))}[kind]()
    dtype = draw(st.sampled_from([np.int64, _native_dtype(bits, signed)]))
    return x.astype(dtype)


@st.composite
def _models_and_inputs(draw, max_layers: int = 3):
    model = draw(_models(max_layers))
    first = model.layers[0].integer
    x = draw(_inputs(model.in_features, first.activation_bits, first.input_signed))
    return model, x


# -- 1. sim equals the loop reference ----------------------------------------------------------

@settings(max_examples=80, **_SETTINGS)
@given(_models_and_inputs())
def test_run_trace_and_run_layer_equal_the_loop_reference(case):
    model, x = case
    expected = _loop_trace(model, x)

    outputs = sim.trace(model, x)
    assert len(outputs) == len(model.layers)
    for i, (got, want) in enumerate(zip(outputs, expected)):
        assert got.dtype == np.int64, f"layer {i}"
        assert got.shape == (len(x), model.layers[i].out_features)
        assert got.tolist() == want, f"layer {i}"

    logits = sim.run(model, x)
    assert logits.dtype == np.int64
    assert logits.tolist() == expected[-1]

    previous = x
    for i, want in enumerate(expected):
        got = sim.run_layer(model, i, previous)
        assert got.dtype == np.int64
        assert got.tolist() == want, f"layer {i}"
        previous = np.array(want, dtype=np.int64).reshape(len(x), -1)


@settings(max_examples=30, **_SETTINGS)
@given(_models(), st.data())
def test_hidden_outputs_stay_in_their_range(model, data):
    """A1, A7: every hidden tensor is in the next layer's input range, so the chain is valid."""
    first = model.layers[0].integer
    x = data.draw(_inputs(model.in_features, first.activation_bits, first.input_signed))
    outputs = sim.trace(model, x)
    for layer, following, out in zip(model.layers, model.layers[1:], outputs):
        lo, hi = _loop_range(following.integer.activation_bits, following.integer.input_signed)
        assert following.integer.input_signed == (not layer.relu)
        assert lo <= out.min() and out.max() <= hi


# -- 2. the accumulator never overflows --------------------------------------------------------

def _loop_bound(p: dict, activation_bits: int, input_signed: bool) -> int:
    """A5: ``max_r |bias[r]| + X * sum_c |w[r, c]|``, X the largest |activation|."""
    x_max = (1 << (activation_bits - 1)) if input_signed else (1 << activation_bits) - 1
    return max((abs(p["bias"][r]) + x_max * sum(abs(_row_codebook(p, r)[i]) for i in row)
                for r, row in enumerate(p["index"])), default=0)


def _row_codebook(p: dict, r: int) -> list[int]:
    """Row ``r``'s codebook: its own (A9) or the layer's (A2)."""
    return p["codebook"][r] if p["per_row"] else p["codebook"]


def _worst_inputs(p: dict, activation_bits: int, input_signed: bool) -> list[list[int]]:
    """For each row, the in-range inputs that drive its weighted sum up and down the furthest.

    A5's ``x[c] = -2**(A-1) * sign(w[r, c])`` asks for ``+2**(A-1)`` where ``w < 0``, one past
    the signed range, so the in-range extreme ``2**(A-1) - 1`` stands in for it.
    """
    lo, hi = _loop_range(activation_bits, input_signed)
    rows = []
    for r, index_row in enumerate(p["index"]):
        weights = [_row_codebook(p, r)[i] for i in index_row]
        up = [hi if w > 0 else lo if w < 0 else 0 for w in weights]
        down = [lo if w > 0 else hi if w < 0 else 0 for w in weights]
        rows += [up, down]
    return rows


def _single_layer_models(layer: CompressedLayer,
                         requantization: tuple[int, int]) -> tuple[CompressedModel, ...]:
    """The layer as a logits layer, and as a hidden layer (with an empty logits layer after it)."""
    integer = layer.integer
    multiplier, shift = requantization
    logits_layer = replace(layer, integer=replace(integer, multiplier=0, shift=0, logits=True))
    hidden_layer = replace(layer, integer=replace(integer, multiplier=multiplier, shift=shift,
                                                  logits=False))
    tail = CompressedLayer(
        codebook=[0.0], index=np.zeros((1, layer.out_features), np.uint8), bias=[0.0],
        relu=False,
        integer=IntegerLayer(codebook=[0], bias=[0], weight_bits=2,
                             activation_bits=integer.activation_bits,
                             input_signed=not layer.relu, accumulator_bits=1, multiplier=0,
                             shift=0, logits=True))
    return CompressedModel([logits_layer]), CompressedModel([hidden_layer, tail])


@st.composite
def _worst_case_layers(draw):
    """A random layer, biased to wide activations and weights, and a requantization for it."""
    activation_bits = draw(st.sampled_from([2, 8, 15, 16]) | st.integers(2, 16))
    weight_bits = draw(st.sampled_from([2, 8, 16]) | st.integers(2, 16))
    signed = draw(st.booleans())
    layer = draw(_layers(draw(_FEATURES), draw(_FEATURES), activation_bits, signed,
                         relu=draw(st.booleans()), logits=True, weight_bits=weight_bits))
    multiplier = draw(st.sampled_from([1, (1 << MULTIPLIER_BITS) - 1])
                      | st.integers(0, (1 << MULTIPLIER_BITS) - 1))
    shift = draw(st.sampled_from([0, MAX_SHIFT]) | st.integers(0, MAX_SHIFT))
    return layer, (multiplier, shift)


def _check_worst_case(layer: CompressedLayer, requantization: tuple[int, int]) -> None:
    integer = layer.integer
    bits, signed = integer.activation_bits, integer.input_signed
    p = _plain(layer)
    bound = _loop_bound(p, bits, signed)
    assert bound == accumulator_bound(integer.codebook, layer.index, integer.bias, bits, signed)
    assert integer.accumulator_bits == bound.bit_length() + 1
    assert bound <= (1 << (integer.accumulator_bits - 1)) - 1
    assert integer.accumulator_bits <= MAX_ACCUMULATOR_BITS
    # A6: the widest product plus the largest rounding term fits a signed 64-bit integer.
    assert bound * ((1 << MULTIPLIER_BITS) - 1) + (1 << (MAX_SHIFT - 1)) < 1 << 63

    x = _worst_inputs(p, bits, signed)
    accs = [[_loop_accumulate(p, r, row) for r in range(layer.out_features)] for row in x]
    for sample in accs:
        assert all(abs(acc) <= bound for acc in sample)
    x = np.array(x, dtype=np.int64)
    logits_model, hidden_model = _single_layer_models(layer, requantization)
    got = sim.run_layer(logits_model, 0, x)
    assert got.tolist() == [[max(a, 0) if layer.relu else a for a in s] for s in accs]
    multiplier, shift = requantization
    got = sim.run_layer(hidden_model, 0, x)
    assert got.tolist() == [[_loop_requantize(a, multiplier, shift, layer.relu, bits) for a in s]
                            for s in accs]


@settings(max_examples=70, **_SETTINGS)
@given(_worst_case_layers())
def test_worst_case_accumulator_is_exact_and_within_its_bound(case):
    _check_worst_case(*case)


def _boundary_layer(weights: list[list[int]], bias: list[int], activation_bits: int,
                    signed: bool, relu: bool = False) -> CompressedLayer:
    """A logits layer whose index k picks codebook entry k + 1 = weight k (distinct values)."""
    values = sorted({w for row in weights for w in row} - {0})
    codebook = [0] + values
    index = np.array([[codebook.index(w) for w in row] for row in weights], dtype=np.uint8)
    bias = np.array(bias, dtype=np.int64)
    bound = accumulator_bound(codebook, index, bias, activation_bits, signed)
    integer = IntegerLayer(codebook=codebook, bias=bias, weight_bits=16,
                           activation_bits=activation_bits, input_signed=signed,
                           accumulator_bits=accumulator_width(bound), multiplier=0, shift=0,
                           logits=True)
    return CompressedLayer(codebook=np.array(codebook) * 0.01, index=index, bias=bias * 1e-4,
                           relu=relu, index_bits=8, integer=integer)


_W, _X = (1 << 15) - 1, (1 << 16) - 1          # largest 16-bit weight, largest uint16 input
_EDGE = (1 << 31) - 1 - _W * _X                 # the bias that puts one product at int32 max


@pytest.mark.parametrize("weights, bias, activation_bits, signed, width", [
    # exactly int32: |acc| reaches 2**31 - 1 (sim accumulates in int32 here)
    ([[_W], [-_W]], [_EDGE, -_EDGE], 16, False, 32),
    # one past int32: 2**31 needs 33 bits (sim must switch to int64)
    ([[_W], [-_W]], [_EDGE + 1, -_EDGE - 1], 16, False, 33),
    ([[0], [0]], [_INT32_MIN, _INT32_MAX], 16, False, 33),
    # signed inputs: x = -2**15 meets w = -(2**15 - 1) for 2**30 - 2**15 per column
    ([[-_W, -_W], [_W, _W]], [(1 << 31) - 1 - 2 * (_W << 15), -((1 << 31) - 1 - 2 * (_W << 15))],
     16, True, 32),
    ([[-_W, -_W], [_W, _W]], [(1 << 31) - 2 * (_W << 15), -((1 << 31) - 2 * (_W << 15))],
     16, True, 33),
    ([[-_W, _W, 5]], [_INT32_MAX], 16, True, 34),
])
@pytest.mark.parametrize("relu", [False, True])
def test_int32_boundary_accumulators_are_exact(weights, bias, activation_bits, signed, width,
                                               relu):
    layer = _boundary_layer(weights, bias, activation_bits, signed, relu)
    assert layer.integer.accumulator_bits == width
    _check_worst_case(layer, ((1 << MULTIPLIER_BITS) - 1, MAX_SHIFT))
    _check_worst_case(layer, (1, 0))


def test_widest_accumulator_is_exact():
    """A5-A6 at MAX_ACCUMULATOR_BITS: 2**15 columns of the largest weight and uint16 input."""
    columns = 1 << 15
    layer = _boundary_layer([[_W] * columns, [-_W] * columns], [_INT32_MAX, -_INT32_MAX],
                            16, False)
    assert layer.integer.accumulator_bits == MAX_ACCUMULATOR_BITS
    acc = _INT32_MAX + columns * _W * _X
    assert acc.bit_length() == MAX_ACCUMULATOR_BITS - 1
    x = np.full((1, columns), _X, dtype=np.uint16)
    logits_model, hidden_model = _single_layer_models(layer, ((1 << MULTIPLIER_BITS) - 1,
                                                              MAX_SHIFT))
    assert sim.run_layer(logits_model, 0, x).tolist() == [[acc, -acc]]
    want = [_loop_requantize(a, (1 << MULTIPLIER_BITS) - 1, MAX_SHIFT, False, 16)
            for a in (acc, -acc)]
    assert sim.run_layer(hidden_model, 0, x).tolist() == [want]
    # the widest product plus rounding is still inside int64, not saturated by a wrap
    assert acc * ((1 << MULTIPLIER_BITS) - 1) + (1 << (MAX_SHIFT - 1)) < 1 << 62


# -- 3. requantization and its rounding (A6-A7) ------------------------------------------------

@pytest.mark.parametrize("acc, multiplier, shift, relu, bits, want", [
    # round half up, towards +inf: acc / 2
    (1, 1, 1, False, 8, 1), (3, 1, 1, False, 8, 2), (5, 1, 1, False, 8, 3),
    (-1, 1, 1, False, 8, 0), (-3, 1, 1, False, 8, -1), (-5, 1, 1, False, 8, -2),
    (2, 1, 1, False, 8, 1), (-2, 1, 1, False, 8, -1), (0, 1, 1, False, 8, 0),
    # acc / 4: quarters round to nearest, halves up
    (1, 1, 2, False, 8, 0), (2, 1, 2, False, 8, 1), (3, 1, 2, False, 8, 1),
    (-1, 1, 2, False, 8, 0), (-2, 1, 2, False, 8, 0), (-3, 1, 2, False, 8, -1),
    (6, 1, 2, False, 8, 2), (-6, 1, 2, False, 8, -1),
    # shift 0: no rounding term, a plain product
    (7, 3, 0, False, 8, 21), (-7, 3, 0, False, 8, -21), (1, 0, 0, False, 8, 0),
    # multiplier 0: only the rounding term is left, and it shifts out to 0
    (12345, 0, 5, False, 8, 0), (-12345, 0, 5, True, 8, 0),
    # ReLU clamps negatives to 0
    (-5, 1, 1, True, 8, 0), (-1, 1, 0, True, 8, 0), (5, 1, 1, True, 8, 3),
    # clamp (saturation) to 0..2**A-1 after a ReLU, -2**(A-1)..2**(A-1)-1 without
    (10 ** 9, 1, 0, True, 8, 255), (10 ** 9, 1, 0, False, 8, 127),
    (-10 ** 9, 1, 0, True, 8, 0), (-10 ** 9, 1, 0, False, 8, -128),
    (255, 1, 0, True, 8, 255), (256, 1, 0, True, 8, 255),
    (127, 1, 0, False, 8, 127), (128, 1, 0, False, 8, 127),
    (-128, 1, 0, False, 8, -128), (-129, 1, 0, False, 8, -128),
    (10 ** 9, 1, 0, True, 16, 65535), (10 ** 9, 1, 0, False, 16, 32767),
    (-10 ** 9, 1, 0, False, 16, -32768), (10 ** 9, 1, 0, True, 2, 3),
    (10 ** 9, 1, 0, False, 2, 1), (-10 ** 9, 1, 0, False, 2, -2),
    # the widest operands: (2**47 * (2**15 - 1) + 2**61) >> 62
    (1 << 47, (1 << 15) - 1, 62, False, 16, 1), (-(1 << 47), (1 << 15) - 1, 62, False, 16, -1),
])
def test_requantize_table(acc, multiplier, shift, relu, bits, want):
    for dtype in (np.int64, np.int32):
        if not np.iinfo(dtype).min <= acc <= np.iinfo(dtype).max:
            continue
        got = sim.requantize(np.array([acc, acc], dtype=dtype), multiplier, shift, relu=relu,
                             bits=bits)
        assert got.dtype == np.int64
        assert got.tolist() == [want, want]


_ACC_LIMIT = 1 << 47


@settings(max_examples=150, **_SETTINGS)
@given(accs=st.lists(st.integers(-_ACC_LIMIT, _ACC_LIMIT)
                     | st.sampled_from([0, 1, -1, _ACC_LIMIT, -_ACC_LIMIT]), min_size=1,
                     max_size=20),
       multiplier=st.integers(0, (1 << MULTIPLIER_BITS) - 1),
       shift=st.integers(0, MAX_SHIFT), relu=st.booleans(), bits=st.integers(2, 16))
def test_requantize_equals_the_loop_formula(accs, multiplier, shift, relu, bits):
    got = sim.requantize(np.array(accs, dtype=np.int64), multiplier, shift, relu=relu, bits=bits)
    assert got.dtype == np.int64
    assert got.tolist() == [_loop_requantize(a, multiplier, shift, relu, bits) for a in accs]


def test_requantize_refuses_float_accumulators():
    with pytest.raises(ValueError, match="integer"):
        sim.requantize(np.array([1.0]), 1, 0, relu=False, bits=8)


# -- 4. requantization parameters (A6) ---------------------------------------------------------

@settings(max_examples=300, **_SETTINGS)
@given(st.floats(min_value=2.0 ** -40, max_value=2.0 ** 15, exclude_max=True))
@example(1.0)
@example(2.0 ** 14)
@example(math.nextafter(2.0 ** 14, 0.0))
@example(2.0 ** -40)
@example(32767.0)
@example(32767.4)
@example(32767.5)
@example(math.nextafter(2.0 ** 15, 0.0))
def test_requantization_parameters_normalised_and_accurate(real):
    multiplier, shift = requantization_parameters(real)
    assert isinstance(multiplier, int) and isinstance(shift, int)
    assert 0 <= shift <= MAX_SHIFT
    assert 1 << 14 <= multiplier < 1 << MULTIPLIER_BITS
    assert abs(math.ldexp(multiplier, -shift) - real) / real <= 2.0 ** -15


@settings(max_examples=100, **_SETTINGS)
@given(st.floats(min_value=2.0 ** -80, max_value=2.0 ** -48, exclude_max=True))
def test_requantization_parameters_of_tiny_factors_stop_at_max_shift(real):
    """A6: when the shift would pass 62 the multiplier is what is left, possibly 0."""
    multiplier, shift = requantization_parameters(real)
    assert shift == MAX_SHIFT
    assert 0 <= multiplier <= 1 << 14
    assert abs(multiplier - math.ldexp(real, MAX_SHIFT)) <= 0.5


def test_requantization_parameters_of_zero():
    assert requantization_parameters(0.0) == (0, 0)


@pytest.mark.parametrize("real", [2.0 ** 15, 2.0 ** 15 + 1, 1e10, -1.0, -1e-30,
                                  math.nan, math.inf, -math.inf])
def test_requantization_parameters_refuse(real):
    with pytest.raises(ValueError):
        requantization_parameters(real)


# -- 5. error cases ----------------------------------------------------------------------------

def _small_model(integer: bool = True) -> CompressedModel:
    """3 unsigned 8-bit inputs -> 2 hidden (ReLU) -> 2 logits."""
    layers = []
    specs = [([[1, 2, 0], [0, 1, 1]], True, False, 3 << 13, 20),
             ([[1, 2], [2, 0]], False, True, 0, 0)]
    for i, (index, relu, logits, multiplier, shift) in enumerate(specs):
        codebook, index, bias = np.array([0, 5, -7]), np.array(index, np.uint8), np.array([3, -4])
        data = None
        if integer:
            data = IntegerLayer(
                codebook=codebook, bias=bias, weight_bits=8, activation_bits=8,
                input_signed=i > 0 and not specs[i - 1][1],
                accumulator_bits=accumulator_width(accumulator_bound(codebook, index, bias, 8,
                                                                     False)),
                multiplier=multiplier, shift=shift, logits=logits)
        layers.append(CompressedLayer(codebook=codebook * 0.01, index=index, bias=bias * 1e-4,
                                      relu=relu, integer=data))
    return CompressedModel(layers)


@pytest.mark.parametrize("call", [sim.run, sim.trace])
def test_errors_of_the_network_input(call):
    model = _small_model()
    with pytest.raises(ValueError, match="integer"):
        call(model, np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="integer"):
        call(model, [[0.5, 1.0, 2.0]])
    with pytest.raises(ValueError, match=r"0\.\.255"):
        call(model, np.array([[0, 256, 0]]))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        call(model, np.array([[0, -1, 0]]))
    with pytest.raises(ValueError, match="3 features"):
        call(model, np.zeros((1, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        call(model, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="no integer data"):
        call(_small_model(integer=False), np.zeros((1, 3), dtype=np.int64))


def test_errors_of_run_layer():
    model = _small_model()
    x = np.zeros((1, 3), dtype=np.int64)
    for bad in (-1, 2, 1.0, True, "0", None):
        with pytest.raises(ValueError, match=r"layer must be 0\.\.1"):
            sim.run_layer(model, bad, x)
    with pytest.raises(ValueError, match="integer"):
        sim.run_layer(model, 0, x.astype(np.float64))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        sim.run_layer(model, 1, np.array([[0, 256]]))
    with pytest.raises(ValueError, match="2 features"):
        sim.run_layer(model, 1, x)
    with pytest.raises(ValueError, match="shape"):
        sim.run_layer(model, 0, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="no integer data"):
        sim.run_layer(_small_model(integer=False), 0, x)


def test_small_model_by_hand():
    """A5-A8 on numbers small enough to check on paper."""
    model = _small_model()
    x = np.array([[10, 20, 30]], dtype=np.uint8)
    # layer 0: acc = [3 + 5*10 - 7*20, -4 + 5*20 + 5*30] = [-87, 246]
    # t = (acc * 24576 + 2**19) >> 20 = [-2.04 -> -2, 5.77 -> 6]; ReLU -> [0, 6]
    # layer 1: acc = [3 + 5*0 - 7*6, -4 - 7*0] = [-39, -4]; logits, no ReLU
    hidden, logits = sim.trace(model, x)
    assert hidden.tolist() == [[0, 6]]
    assert logits.tolist() == [[-39, -4]]


# -- 6. the artifact round trip keeps the integer path ----------------------------------------

_INTEGER_FIELDS = ("weight_bits", "activation_bits", "input_signed", "accumulator_bits",
                   "multiplier", "shift", "logits", "input_scale", "weight_scale",
                   "output_scale")


@settings(max_examples=20, **_SETTINGS)
@given(_models_and_inputs())
def test_save_and_load_keep_the_integer_model(case):
    model, x = case
    with tempfile.TemporaryDirectory() as directory:
        loaded = compress.load(model.save(Path(directory) / "m.dcz"))
    assert loaded.has_integer
    for a, b in zip(model.layers, loaded.layers, strict=True):
        np.testing.assert_array_equal(a.index, b.index)
        for name in _INTEGER_FIELDS:
            assert getattr(a.integer, name) == getattr(b.integer, name), name
        for name in ("codebook", "bias"):
            got, want = getattr(b.integer, name), getattr(a.integer, name)
            assert got.dtype == want.dtype == np.int32
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(sim.run(loaded, x), sim.run(model, x))
    assert sim.run(loaded, x).tolist() == _loop_trace(model, x)[-1]


# -- 7. convolution and pooling (A12-A13) -------------------------------------------------------

def _loop_conv_layer(p: dict, g: ConvGeometry, x: list[int]) -> list[int]:
    """A12-A13 for one sample: the output maps from each position's window (padding 0), the
    drain of A6-A8/A10 on each, then the pooling, flattened channel-major."""
    def value(c, row, column):
        if 0 <= row < g.in_height and 0 <= column < g.in_width:
            return x[(c * g.in_height + row) * g.in_width + column]
        return 0                                                       # zero padding

    maps = []
    for o in range(len(p["index"])):
        codebook = _row_codebook(p, o)
        plane = []
        for y in range(g.conv_height):
            line = []
            for xx in range(g.conv_width):
                acc = p["bias"][o]
                for c in range(g.in_channels):
                    for dy in range(g.kernel_height):
                        for dx in range(g.kernel_width):
                            column = (c * g.kernel_height + dy) * g.kernel_width + dx
                            acc += int(codebook[p["index"][o][column]]) * value(
                                c, y * g.stride + dy - g.padding, xx * g.stride + dx - g.padding)
                if p["logits"]:
                    line.append(max(acc, 0) if p["relu"] else acc)
                elif p["levels"] is not None:
                    line.append(p["levels"][sum(1 for t in p["thresholds"] if acc >= t)])
                else:
                    line.append(_loop_requantize(acc, p["multiplier"], p["shift"], p["relu"],
                                                 p["bits"]))
            plane.append(line)
        maps.append(plane)
    out = []
    for plane in maps:
        if g.pool is None:
            out += [v for line in plane for v in line]
            continue
        for y in range(g.conv_height // 2):
            for xx in range(g.conv_width // 2):
                window = [plane[2 * y + i][2 * xx + j] for i in (0, 1) for j in (0, 1)]
                out.append(max(window) if g.pool == "max" else (sum(window) + 2) >> 2)
    return out


def _loop_trace_any(model: CompressedModel, x: np.ndarray) -> list[list[list[int]]]:
    """:func:`_loop_trace` with convolution layers."""
    outputs = []
    activations = [[int(v) for v in row] for row in x.tolist()]
    for layer in model.layers:
        p = _plain(layer)
        if layer.geometry is None:
            activations = [_loop_layer(p, row) for row in activations]
        else:
            activations = [_loop_conv_layer(p, layer.geometry, row) for row in activations]
        outputs.append(activations)
    return outputs


@st.composite
def _geometries(draw, channels: int | None = None, height: int | None = None,
                width: int | None = None) -> ConvGeometry:
    """A valid geometry: kernel 1..5 (at most the padded map), stride 1 or 2, padding
    0..k-1, 1..9-wide maps, any pooling the convolution's map allows."""
    channels = channels or draw(st.integers(1, 4))
    height = height or draw(st.integers(1, 9))
    width = width or draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    padding = draw(st.integers(0, min(kh, kw) - 1))
    # A kernel larger than the padded map does not fit: shrink it to the map.
    kh, kw = min(kh, height + 2 * padding), min(kw, width + 2 * padding)
    padding = min(padding, min(kh, kw) - 1)
    geometry = ConvGeometry(channels, height, width, kh, kw,
                            stride=draw(st.sampled_from([1, 2])), padding=padding)
    pools = [None] + (["max", "avg"] if geometry.conv_height >= 2 and geometry.conv_width >= 2
                      else [])
    return replace(geometry, pool=draw(st.sampled_from(pools)))


@st.composite
def _conv_models_and_inputs(draw, linear_last: bool = False):
    """One or two convolutions, then maybe a Linear layer (always with ``linear_last``: the
    engine's logits come from one); random integer data (A1-A10)."""
    activation_bits = draw(st.integers(2, 16))
    signed = draw(st.booleans())
    first = draw(_geometries())
    geometries = [first]
    if draw(st.booleans()):
        out_channels = draw(st.integers(1, 4))
        geometries.append((out_channels, None))
    linear = True if linear_last else draw(st.booleans())
    layers = []
    shape = None
    n_layers = len(geometries) + linear
    for i in range(n_layers):
        last = i == n_layers - 1
        relu = draw(st.booleans())
        if i < len(geometries):
            geometry = geometries[i] if i == 0 else draw(_geometries(*shape))
            out_channels = draw(st.integers(1, 5))
            if i + 1 < len(geometries):
                out_channels = geometries[i + 1][0]
            layer = draw(_layers(out_channels, geometry.columns, activation_bits, signed, relu,
                                 logits=last))
            layer = replace(layer, geometry=geometry)
            shape = (out_channels, geometry.out_height, geometry.out_width)
        else:
            layer = draw(_layers(draw(st.integers(1, 6)), layers[-1].output_size,
                                 activation_bits, signed, relu, logits=True))
        layers.append(layer)
        signed = not relu
    model = CompressedModel(layers, {"test": "conv properties"})
    x0 = model.layers[0].integer
    x = draw(_inputs(model.in_features, x0.activation_bits, x0.input_signed))
    return model, x


@settings(max_examples=150, **_SETTINGS)
@given(_conv_models_and_inputs())
def test_convolution_and_pooling_equal_the_loop_reference(case):
    model, x = case
    expected = _loop_trace_any(model, x)
    outputs = sim.trace(model, x)
    for i, (got, want) in enumerate(zip(outputs, expected, strict=True)):
        assert got.dtype == np.int64, f"layer {i}"
        assert got.shape == (len(x), model.layers[i].output_size)
        assert got.tolist() == want, f"layer {i}"
    previous = x
    for i, want in enumerate(expected):
        assert sim.run_layer(model, i, previous).tolist() == want, f"layer {i}"
        previous = np.array(want, dtype=np.int64).reshape(len(x), -1)
    with tempfile.TemporaryDirectory() as directory:
        loaded = compress.load(model.save(Path(directory) / "m.dcz"))
    assert loaded.format_version == 5
    assert [layer.geometry for layer in loaded.layers] == [layer.geometry for layer in
                                                            model.layers]
    assert sim.run(loaded, x).tolist() == expected[-1]


@pytest.mark.parametrize("kind, window, want", [
    ("max", [3, -7, 2, 0], 3), ("max", [-5, -7, -6, -8], -5),
    ("avg", [1, 2, 3, 4], 3), ("avg", [1, 1, 1, 0], 1), ("avg", [1, 0, 0, 0], 0),
    ("avg", [1, 1, 0, 0], 1), ("avg", [-1, -1, 0, 0], 0), ("avg", [-1, -1, -1, 0], -1),
    ("avg", [-2, -1, 0, 0], -1), ("avg", [255, 255, 255, 255], 255),
    ("avg", [-128, -128, -128, -128], -128),
])
def test_pool_by_hand(kind, window, want):
    """A13: the maximum, or round half up of the mean: (sum + 2) >> 2."""
    maps = np.array(window, dtype=np.int64).reshape(1, 1, 2, 2)
    assert sim.pool(maps, kind).tolist() == [[[[want]]]]
    odd = np.pad(maps, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=99)
    assert sim.pool(odd, kind).tolist() == [[[[want]]]]             # floor mode drops the edge


def test_pool_refuses_bad_input():
    with pytest.raises(ValueError, match="4-D integer"):
        sim.pool(np.zeros((1, 1, 2, 2)), "max")
    with pytest.raises(ValueError, match="max, avg or None"):
        sim.pool(np.zeros((1, 1, 2, 2), dtype=np.int64), "min")
