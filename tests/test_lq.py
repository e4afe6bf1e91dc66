"""LQ-Nets end to end on the software side: levels, the A10 thresholds, the artifact's version 3,
the quantizer modules and the pipeline (``core.levels``, ``core.integer``,
``compress.lq``, ``docs/arithmetic.md`` A9-A10)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import struct
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compress
import sim
from core.artifact import CompressedLayer, CompressedModel
from core.integer import IntegerLayer, activation_thresholds, quantize_model
from core.levels import (basis_codebook, code_matrix, midpoints, nearest_level,
                             unsigned_levels)
from compress.lq import ActivationQuantizer, WeightQuantizer, quantized_network
from compress.pipeline import CompressConfig, compress_model
from compress.torch_model import to_torch

_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- levels --------------------------------------------------------------------------------------

def test_basis_codebook_is_zero_then_every_signed_code_ascending():
    basis = np.array([[0.5, 1.25], [0.0, 2.0], [-1.0, 0.25]], dtype=np.float32)
    codebook = basis_codebook(basis)
    assert codebook.shape == (3, 5) and codebook.dtype == np.float32
    for r, row in enumerate(basis):
        brute = sorted(float(np.float32(sum(v * e for v, e in zip(row, code))))
                       for code in itertools.product([-1.0, 1.0], repeat=2))
        assert codebook[r].tolist() == [0.0] + brute


def test_unsigned_levels_start_at_zero_and_refuse_a_negative_basis():
    levels = unsigned_levels(np.array([0.3, 0.7, 1.5], dtype=np.float32))
    assert len(levels) == 8 and levels[0] == 0 and np.all(np.diff(levels) >= 0)
    assert np.isclose(levels[-1], 2.5)
    with pytest.raises(ValueError, match=">= 0"):
        unsigned_levels(np.array([0.3, -0.1]))
    with pytest.raises(ValueError, match="bits must be 1..8, not 9"):
        code_matrix(9, signed=True)


def test_nearest_level_sends_ties_up():
    levels = np.array([0.0, 1.0, 3.0], dtype=np.float32)
    values = np.array([-5, 0.49, 0.5, 0.51, 2.0, 2.5, 100])
    assert nearest_level(values, levels).tolist() == [0, 0, 1, 1, 2, 2, 2]


# -- A10: the integer thresholds equal the float comparison --------------------------------------

def _float_code(acc: int, scale: float, levels: np.ndarray) -> int:
    """The float rule on the real value the accumulator stands for, exactly (rationals)."""
    real = Fraction(acc) * Fraction(scale)
    return sum(1 for tau in midpoints(levels).tolist() if real >= Fraction(tau))


def _integer_code(acc: int, thresholds: np.ndarray) -> int:
    return sum(1 for t in thresholds.tolist() if acc >= t)


@st.composite
def _activation_cases(draw):
    bits = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    exponent = draw(st.integers(-20, 5))
    basis = (rng.random(bits) * 2.0 ** exponent).astype(np.float32)
    if draw(st.booleans()):
        basis[rng.integers(bits)] = 0.0                      # repeated levels
    scale = float(draw(st.floats(1e-9, 10.0, allow_nan=False)))
    if draw(st.booleans()):                                   # midpoints exactly on the grid
        scale = float(basis.max() / 2 ** draw(st.integers(1, 12))) or scale
    width = draw(st.integers(2, 47))
    return unsigned_levels(basis), scale, width


@settings(max_examples=300, **_SETTINGS)
@given(_activation_cases())
def test_thresholds_agree_with_the_float_rule_on_both_sides_of_every_threshold(case):
    levels, scale, width = case
    thresholds = activation_thresholds(levels, scale, width)
    reach = 1 << (width - 1)
    assert thresholds.dtype == np.int64 and np.all(np.diff(thresholds) >= 0)
    assert thresholds.min() >= -reach and thresholds.max() <= reach
    # The code is monotone in acc on both sides, so agreeing at every threshold's two sides
    # (and at the range's ends) is agreeing everywhere in range.
    probes = {-(reach - 1), reach - 1, 0}
    for t in thresholds.tolist():
        probes.update({t - 1, t, t + 1})
    for acc in sorted(a for a in probes if abs(a) <= reach - 1):
        assert _integer_code(acc, thresholds) == _float_code(acc, scale, levels), acc


@pytest.mark.parametrize("width", [2, 5, 9, 12])
def test_thresholds_agree_with_the_float_rule_for_every_accumulator_value(width):
    rng = np.random.default_rng(width)
    reach = 1 << (width - 1)
    accs = np.arange(-(reach - 1), reach)
    for _ in range(20):
        levels = unsigned_levels((rng.random(rng.integers(1, 5)) * 3).astype(np.float32))
        scale = float(rng.choice([levels[-1] / (reach - 1), 1e-3, rng.random()]) or 1.0)
        thresholds = activation_thresholds(levels, scale, width)
        got = sim.threshold_activation(accs, thresholds, np.arange(len(levels)))
        # Exact float comparison: acc * scale >= tau, for every accumulator value.
        taus = [Fraction(t) for t in midpoints(levels).tolist()]
        want = [sum(1 for tau in taus if Fraction(int(a)) * Fraction(scale) >= tau)
                for a in accs.tolist()]
        assert got.tolist() == want


def test_threshold_activation_counts_thresholds_passed():
    acc = np.array([-10, 4, 5, 6, 99, 100])
    got = sim.threshold_activation(acc, np.array([5, 5, 100]), np.array([0, 7, 9, 255]))
    assert got.tolist() == [0, 0, 9, 9, 9, 255]


# -- integer data: refusals ----------------------------------------------------------------------

def _integer(**changes) -> IntegerLayer:
    fields = dict(codebook=np.array([[0, 3, -3], [0, 1, 2]]), bias=np.array([0, 5]),
                  weight_bits=8, activation_bits=8, input_signed=False, accumulator_bits=12,
                  multiplier=0, shift=0, logits=False, thresholds=np.array([10, 20, 30]),
                  levels=np.array([0, 40, 90, 255]))
    fields.update(changes)
    return IntegerLayer(**fields)


@pytest.mark.parametrize("changes, message", [
    (dict(thresholds=np.array([10, 30, 20])), "thresholds must be ascending"),
    (dict(levels=np.array([0, 40, 90, 256])), r"levels must fit the 8-bit unsigned output "
                                              r"range 0..255, found 256"),
    (dict(levels=np.array([1, 40, 90, 255])), "levels must be ascending .* from levels"),
    (dict(levels=np.array([0, 90, 40, 255])), "levels must be ascending"),
    (dict(thresholds=np.array([10, 20, 2049])), r"thresholds must be -2048..2048"),
    (dict(thresholds=np.array([10, 20])), "thresholds must have 3 values"),
    (dict(levels=np.array([0, 1, 2])), "levels must be a 1-D array of 2, 4, 8, 16"),
    (dict(levels=None), "thresholds and levels go together"),
    (dict(multiplier=3), "multiplier and shift must be 0"),
    (dict(logits=True), "logits layer has no threshold activation"),
    (dict(codebook=np.array([[0, 3, -3], [1, 1, 2]])), r"codebook\[0\] must be 0"),
    (dict(thresholds=np.array([1.5, 2.0, 3.0])), "thresholds must hold integers"),
])
def test_bad_integer_data_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        _integer(**changes)


def test_a_basis_must_be_float16_values():
    with pytest.raises(ValueError, match="basis values must be float16 values"):
        CompressedLayer(codebook=None, basis=np.array([[0.1, 0.3]], dtype=np.float32),
                        index=np.ones((1, 2), np.uint8), bias=np.zeros(1), relu=False,
                        index_bits=3)


def test_a_layer_without_relu_cannot_have_learned_levels():
    with pytest.raises(ValueError, match="need a ReLU after the layer"):
        CompressedLayer(codebook=np.array([0.0, 1.0]), index=np.ones((2, 2), np.uint8),
                        bias=np.zeros(2), relu=False, activation_levels=np.array([0.0, 1.0]))


# -- the artifact's version 3 --------------------------------------------------------------------

def _lq_model(rng=np.random.default_rng(5)) -> CompressedModel:
    x = rng.random((64, 6)).astype(np.float32)
    first = CompressedLayer(codebook=None, basis=rng.random((5, 2)).astype(np.float16),
                            index=rng.integers(0, 5, (5, 6)).astype(np.uint8),
                            bias=rng.normal(size=5), relu=True, index_bits=3,
                            activation_levels=unsigned_levels(np.array([0.4, 0.9], np.float32)))
    codebook = np.concatenate([np.zeros((3, 1)), rng.normal(size=(3, 3))], axis=1)
    second = CompressedLayer(codebook=codebook, index=rng.integers(0, 4, (3, 5)).astype(np.uint8),
                             bias=rng.normal(size=3), relu=False, index_bits=2)
    return quantize_model(CompressedModel([first, second], {"test": "lq"}), x)


def test_version_3_round_trips_bases_per_row_codebooks_and_thresholds(tmp_path):
    model = _lq_model()
    assert model.format_version == 3
    path = model.save(tmp_path / "lq.dcz")
    assert struct.unpack_from("<H", path.read_bytes(), 8)[0] == 3
    loaded = compress.load(path)
    for a, b in zip(model.layers, loaded.layers):
        assert np.array_equal(a.codebook, b.codebook) and np.array_equal(a.index, b.index)
        assert (a.basis is None) == (b.basis is None)
        assert a.integer.codebook.shape == b.integer.codebook.shape
        assert np.array_equal(a.integer.codebook, b.integer.codebook)
        for name in ("thresholds", "levels"):
            x, y = getattr(a.integer, name), getattr(b.integer, name)
            assert (x is None and y is None) or np.array_equal(x, y)
    x = sim.quantize_input(loaded, np.random.default_rng(1).random((20, 6)))
    assert np.array_equal(sim.run(loaded, x), sim.run(model, x))
    # Stored: the basis (5 x 2 values, 16 bits each), not the 5 x 4 levels, and 3 activation
    # levels; 3 per-row centroids x 3 rows.
    assert loaded.layers[0].size().codebook_bits == 16 * 10 + 32 * 3
    assert loaded.layers[1].size().codebook_bits == 32 * 9


def _rewrite(path, edit) -> None:
    """Apply ``edit`` to the header JSON (or the version field) and re-sign the file."""
    data = path.read_bytes()
    magic, version, reserved, length = struct.unpack_from("<8sHHI", data)
    header = json.loads(data[16:16 + length])
    version = edit(header, version)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = struct.pack("<8sHHI", magic, version, reserved, len(text)) + text + \
        data[16 + length:-32]
    path.write_bytes(body + hashlib.sha256(body).digest())


def test_a_corrupt_or_inconsistent_lq_artifact_is_refused(tmp_path):
    path = _lq_model().save(tmp_path / "lq.dcz")
    data = bytearray(path.read_bytes())
    data[-40] ^= 1
    (tmp_path / "flipped.dcz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        compress.load(tmp_path / "flipped.dcz")

    def older(header, version):
        return 2
    _rewrite(path, older)
    with pytest.raises(ValueError, match="version-2 file has version-3 fields"):
        compress.load(path)

    path = _lq_model().save(tmp_path / "lq.dcz")

    def wider_basis(header, version):
        header["layers"][0]["basis_bits"] = 3
        return version
    _rewrite(path, wider_basis)
    with pytest.raises(ValueError, match="the basis has 10 values, not 5 x 3"):
        compress.load(path)


def test_descending_thresholds_in_a_file_are_refused(tmp_path):
    model = _lq_model()
    integer = model.layers[0].integer
    path = model.save(tmp_path / "lq.dcz")
    data = bytearray(path.read_bytes())
    header = json.loads(data[16:16 + struct.unpack_from("<I", data, 12)[0]])
    entry = header["layers"][0]["integer"]["arrays"]["thresholds"]
    start = 16 + struct.unpack_from("<I", data, 12)[0] + entry["offset"]
    swapped = integer.thresholds[::-1].astype("<i8").tobytes()
    if integer.thresholds[0] == integer.thresholds[-1]:
        pytest.skip("equal thresholds")
    data[start:start + len(swapped)] = swapped
    body = bytes(data[:-32])
    path.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(ValueError, match="thresholds must be ascending"):
        compress.load(path)


def test_models_without_learned_quantizers_are_still_written_as_version_2(tmp_path):
    layer = CompressedLayer(codebook=np.array([0.0, 0.5]), index=np.ones((2, 3), np.uint8),
                            bias=np.zeros(2), relu=False, index_bits=1)
    model = quantize_model(CompressedModel([layer]), np.ones((4, 3)))
    path = model.save(tmp_path / "plain.dcz")
    assert model.format_version == 2 and struct.unpack_from("<H", path.read_bytes(), 8)[0] == 2


# -- the quantizer modules -----------------------------------------------------------------------

def test_weight_quantizer_keeps_pruned_weights_zero_and_qem_lowers_the_error():
    torch.manual_seed(0)
    weight = torch.randn(8, 50) * torch.linspace(0.1, 2.0, 8)[:, None]
    mask = (torch.rand(8, 50) > 0.3).float()
    mask[3] = 0.0                                            # a fully pruned row
    weight = weight * mask
    errors = {}
    for learn in (False, True):
        quantizer = WeightQuantizer(weight, mask, 2, learn=learn)
        quantized, _ = quantizer.quantize(weight)
        assert torch.all(quantized[mask == 0] == 0)
        errors[learn] = float(((quantized - weight) ** 2).sum())
        quantizer.train()
        before = quantizer.basis.clone()
        quantizer(weight)
        assert torch.equal(before, quantizer.basis) != learn      # only lq learns
    assert errors[True] < errors[False]
    # The uniform basis c * 2^i gives evenly spaced levels.
    levels = basis_codebook(WeightQuantizer(weight, mask, 3, learn=False).basis.numpy())[0, 1:]
    assert np.allclose(np.diff(levels), levels[1] - levels[0], rtol=1e-5)


def test_activation_quantizer_passes_gradients_only_up_to_its_top_level():
    quantizer = ActivationQuantizer(2, 1.0, learn=False)
    top = float(quantizer.levels()[-1])
    x = torch.tensor([0.0, 0.3, top - 0.01, top + 0.5], requires_grad=True)
    quantizer(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="activation_bits must be 1..4, not 5"):
        ActivationQuantizer(5, 1.0, learn=True)


def test_a_learned_activation_quantizer_needs_relus():
    linears = [torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)]
    masks = [np.ones((3, 4), bool), np.ones((2, 3), bool)]
    with pytest.raises(ValueError, match="needs a ReLU after every hidden layer"):
        quantized_network(linears, [False, False], masks, np.ones((2, 4)), weight="lq",
                          bits=[2, 2], activation="lq", activation_bits=2)


# -- the pipeline --------------------------------------------------------------------------------

_QUICK = dict(epochs=8, prune_rounds=1, retrain_epochs=1, finetune_epochs=2, progress=False)


@pytest.mark.parametrize("quantizer, activation", [("lq", "lq"), ("uniform", "uniform"),
                                                   ("dp", "lq"), ("lq", "none")])
def test_pipeline_gives_a_deterministic_artifact_that_sim_runs(tmp_path, quantizer, activation):
    config = CompressConfig(quantizer=quantizer, bits=(2,), activation_quantizer=activation,
                            activation_bits=2 if activation != "none" else 8, **_QUICK)
    result = compress_model(config, log=lambda _: None)
    model = result.model
    paths = [model.save(tmp_path / "a.dcz"),
             compress_model(config, log=lambda _: None).model.save(tmp_path / "b.dcz")]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    loaded = compress.load(paths[0])
    per_row = quantizer != "dp"
    for i, layer in enumerate(loaded.layers):
        assert layer.integer.per_row == per_row
        assert (layer.integer.levels is not None) == (activation != "none" and i < 2)
        if per_row:
            assert layer.index_bits == 3 and layer.codebook.shape == (layer.out_features, 5)
    data = result.dataset
    logits = sim.run(loaded, sim.quantize_input(loaded, data.x_test))
    assert math.isclose(float((logits.argmax(1) == data.y_test).mean()), result.accuracy_int)
    assert result.accuracy_int > 0.8
    # The float artifact (the numpy forward, with its levels) is what `compressed` measured,
    # and to_torch computes the same function.
    float_logits = loaded.forward(data.x_test)
    float_accuracy = float((float_logits.argmax(1) == data.y_test).mean())
    assert float_accuracy == result.accuracy_compressed
    with torch.no_grad():
        torch_logits = to_torch(loaded)(torch.from_numpy(data.x_test)).numpy()
    # (torch and numpy may round a sum differently, and a value on a midpoint then takes the
    # next level: agreement, not equality)
    assert np.mean(torch_logits.argmax(1) == float_logits.argmax(1)) >= 0.99


def test_the_engine_plans_lq_layers_and_refuses_a_reload_of_another_kind():
    from accel.planning.plan import EnginePlan

    model = _lq_model()
    plan = EnginePlan.from_model(model, n_pes=2)
    assert plan.layers[0].per_row and plan.layers[0].code_bits == 2
    assert plan.region("codebook", 0, 1).depth == plan.layers[0].image.rows_per_pe << 3
    assert plan.region("thresholds", 0).width == plan.layers[0].accumulator_bits + 1
    assert plan.write_image(model)                                # the same kind fits
    plain = CompressedModel([CompressedLayer(
        codebook=layer.codebook[0] if layer.per_row else layer.codebook, index=layer.index,
        bias=layer.bias, relu=layer.relu, index_bits=layer.index_bits)
        for layer in model.layers])
    x = np.random.default_rng(0).random((16, 6))
    with pytest.raises(ValueError, match="layer 0: per-row codebooks is False; this engine "
                                         "was built for True"):
        plan.write_image(quantize_model(plain, x))
