"""Integer quantization (docs/arithmetic.md): calibration, the format-2 artifact, the pipeline
and ``python -m sim``."""

import hashlib
import json

import numpy as np
import pytest

import compress
import sim
from core.artifact import CompressedLayer, CompressedModel
from core.integer import (
    MAX_ACCUMULATOR_BITS,
    IntegerLayer,
    accumulator_bound,
    accumulator_width,
    quantize_model,
)
from compress.pipeline import CompressConfig, compress_model
from sim.__main__ import main as sim_main

QUICK = dict(epochs=4, prune_rounds=2, retrain_epochs=1, finetune_epochs=1, progress=False)


def _float_model(seed=0, signed_hidden=False):
    rng = np.random.default_rng(seed)

    def layer(n_out, n_in, relu):
        index = rng.integers(1, 16, size=(n_out, n_in))
        index[rng.random((n_out, n_in)) < 0.6] = 0
        codebook = np.concatenate([[0.0], np.sort(rng.normal(scale=0.3, size=15))])
        return CompressedLayer(codebook=codebook, index=index.astype(np.uint8),
                               bias=rng.normal(scale=0.1, size=n_out), relu=relu)

    return CompressedModel([layer(24, 12, not signed_hidden), layer(8, 24, True),
                            layer(3, 8, False)], metadata={"model": "test"})


@pytest.fixture(scope="module")
def digits_result():
    return compress_model(CompressConfig(**QUICK), log=lambda _: None)


# -- calibration ----------------------------------------------------------------------------

@pytest.mark.parametrize("signed_input", [False, True])
@pytest.mark.parametrize("signed_hidden", [False, True])
def test_quantize_model_follows_the_contract(signed_input, signed_hidden):
    rng = np.random.default_rng(3)
    x = rng.random((200, 12)) * 3.0
    if signed_input:
        x -= 1.5
    model = quantize_model(_float_model(signed_hidden=signed_hidden), x)
    assert model.has_integer
    for i, layer in enumerate(model.layers):
        integer = layer.integer
        assert integer.codebook[0] == 0 and np.abs(integer.codebook).max() == 127       # A2
        assert integer.input_signed == (signed_input if i == 0 else not model.layers[i - 1].relu)
        assert integer.accumulator_bits == accumulator_width(accumulator_bound(
            integer.codebook, layer.index, integer.bias, 8, integer.input_signed))      # A5
        if integer.logits:                                                              # A8
            assert (integer.multiplier, integer.shift) == (0, 0)
        else:                                                                           # A6
            assert 2 ** 14 <= integer.multiplier < 2 ** 15
            real = integer.input_scale * integer.weight_scale / integer.output_scale
            assert integer.multiplier * 2.0 ** -integer.shift == pytest.approx(real, rel=2**-15)
        # The integer codebook times its scale is the float codebook within half a step.
        np.testing.assert_allclose(integer.codebook * integer.weight_scale, layer.codebook,
                                   atol=integer.weight_scale / 2 + 1e-9)
    # The integer logits track the float model (scaled) closely on the calibration data.
    q = sim.quantize_input(model, x)
    assert q.dtype == (np.int8 if signed_input else np.uint8)
    logits = sim.run(model, q) * model.layers[-1].integer.output_scale
    reference = model.forward(x)
    assert np.abs(logits - reference).max() < 0.05 * np.abs(reference).max() + 0.05


def test_pixels_on_the_255_grid_quantize_exactly():
    model = quantize_model(_float_model(), np.tile(np.arange(256) / 255.0, (12, 1)).T)
    pixels = np.random.default_rng(0).integers(0, 256, size=(50, 12))
    np.testing.assert_array_equal(
        sim.quantize_input(model, (pixels / 255.0).astype(np.float32)), pixels)
    # Values beyond the calibration range saturate (A1).
    assert sim.quantize_input(model, np.full((1, 12), 9.0)).max() == 255


def test_digits_pixels_stay_exact(digits_result):
    data = digits_result.dataset
    assert digits_result.model.layers[0].integer.input_scale == 1 / 16
    np.testing.assert_array_equal(sim.quantize_input(digits_result.model, data.x_test),
                                  data.x_test * 16)


def test_off_grid_features_use_the_range():
    x = np.random.default_rng(2).random((100, 12)) * 2.0
    model = quantize_model(_float_model(), x)
    assert model.layers[0].integer.input_scale == pytest.approx(x.max() / 255)
    assert sim.quantize_input(model, x).max() == 255


def test_quantize_model_is_deterministic():
    x = np.random.default_rng(1).random((64, 12))
    a, b = quantize_model(_float_model(), x), quantize_model(_float_model(), x)
    for la, lb in zip(a.layers, b.layers):
        assert la.integer.multiplier == lb.integer.multiplier
        np.testing.assert_array_equal(la.integer.bias, lb.integer.bias)


@pytest.mark.parametrize("x, kwargs, message", [
    (np.zeros((0, 12)), {}, "n_samples >= 1"),
    (np.zeros(12), {}, "calibration data must have shape"),
    (np.zeros((4, 5)), {}, "has 5 features, the model takes 12"),
    (np.full((4, 12), np.nan), {}, "finite"),
    (-np.ones((4, 12)), {"input_signed": False}, "negative features"),
    (np.ones((4, 12)), {"weight_bits": 1}, "weight_bits must be 2..16, not 1"),
    (np.ones((4, 12)), {"activation_bits": 17}, "activation_bits must be 2..16, not 17"),
])
def test_quantize_model_errors(x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize_model(_float_model(), x, **kwargs)


def test_bias_beyond_int32_is_refused():
    model = _float_model()
    model.layers[0].bias[0] = 1e9
    with pytest.raises(ValueError, match=r"layer 0 .*beyond int32 .*A4"):
        quantize_model(model, np.ones((4, 12)))


def test_too_wide_accumulator_is_refused():
    layer = CompressedLayer(codebook=[0.0, 1.0], index=np.ones((1, 40000), np.uint8),
                            bias=[0.0], relu=False)
    with pytest.raises(ValueError, match=f"at most {MAX_ACCUMULATOR_BITS} bits"):
        quantize_model(CompressedModel([layer]), np.ones((2, 40000)), weight_bits=16,
                       activation_bits=16)


def test_integer_layer_validation():
    fields = dict(codebook=[0, 5, -7], bias=[1, 2], weight_bits=4, activation_bits=8,
                  input_signed=False, accumulator_bits=20, multiplier=20000, shift=20,
                  logits=False)
    IntegerLayer(**fields)
    for change, message in [
        ({"codebook": [1, 5]}, r"codebook\[0\] must be 0"),
        ({"codebook": [0, 8]}, "codebook values must be -7..7 for weight_bits=4"),
        ({"codebook": [0.0, 1.5]}, "must hold integers"),
        ({"bias": [2 ** 31, 0]}, "bias must fit in int32"),
        ({"multiplier": 2 ** 15}, "multiplier must be 0..32767"),
        ({"shift": 63}, "shift must be 0..62"),
        ({"logits": True}, "multiplier and shift must be 0"),
        ({"accumulator_bits": 48}, "accumulator_bits must be 1..47"),
        ({"output_scale": 0.0}, "output_scale must be finite and > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            IntegerLayer(**{**fields, **change})


def test_stored_accumulator_width_must_cover_the_bound():
    integer = IntegerLayer(codebook=[0, 100], bias=[0], weight_bits=8, activation_bits=8,
                           input_signed=False, accumulator_bits=16, multiplier=0, shift=0,
                           logits=True)
    # 255 * 100 * 3 = 76,500 needs 18 bits.
    with pytest.raises(ValueError, match="accumulator_bits is 16 but the layer's weights need 18"):
        CompressedLayer(codebook=[0.0, 1.0], index=np.ones((1, 3), np.uint8), bias=[0.0],
                        relu=False, integer=integer)


def test_integer_chain_must_connect():
    model = quantize_model(_float_model(), np.ones((4, 12)))
    layers = model.layers
    wrong = IntegerLayer(**{**layers[1].integer.__dict__, "input_signed": True})
    layers[1] = CompressedLayer(layers[1].codebook, layers[1].index, layers[1].bias,
                                layers[1].relu, integer=wrong)
    with pytest.raises(ValueError, match="layer 1's input must be unsigned"):
        CompressedModel(layers)
    with pytest.raises(ValueError, match="every layer or no layer"):
        CompressedModel([model.layers[0], _float_model().layers[1], model.layers[2]])


# -- the artifact, format 2 ---------------------------------------------------------------------

def _rewrite(path, edit):
    """Apply ``edit`` to the artifact's (version, header) and re-sign it, as a writer would."""
    data = path.read_bytes()
    body = data[:-32]
    n = int.from_bytes(body[12:16], "little")
    version, header = edit(int.from_bytes(body[8:10], "little"), json.loads(body[16:16 + n]))
    text = json.dumps(header).encode()
    body = (body[:8] + version.to_bytes(2, "little") + body[10:12] + len(text).to_bytes(4, "little")
            + text + body[16 + n:])
    path.write_bytes(body + hashlib.sha256(body).digest())


def test_integer_data_round_trips(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 12))
    model = quantize_model(_float_model(signed_hidden=True), x)
    loaded = compress.load(model.save(tmp_path / "m.dcz"))
    assert loaded.has_integer
    for a, b in zip(model.layers, loaded.layers):
        for name, value in a.integer.__dict__.items():
            np.testing.assert_array_equal(value, getattr(b.integer, name))
    q = sim.quantize_input(model, x)
    np.testing.assert_array_equal(sim.run(model, q), sim.run(loaded, q))


def test_version_1_files_still_load(tmp_path):
    path = _float_model().save(tmp_path / "v1.dcz")
    _rewrite(path, lambda version, header: (1, {**header, "version": 1}))
    loaded = compress.load(path)
    assert not loaded.has_integer
    with pytest.raises(ValueError, match="no integer data"):
        sim.run(loaded, np.zeros((1, 12), np.uint8))


def test_tampered_integer_data_is_refused(tmp_path):
    path = quantize_model(_float_model(), np.ones((4, 12))).save(tmp_path / "m.dcz")

    def narrow(version, header):
        header["layers"][0]["integer"]["accumulator_bits"] = 3
        return version, header

    _rewrite(path, narrow)
    with pytest.raises(ValueError, match="malformed: accumulator_bits is 3"):
        compress.load(path)

    def untyped(version, header):
        header["layers"][0]["integer"]["multiplier"] = "big"
        return version, header

    path = quantize_model(_float_model(), np.ones((4, 12))).save(tmp_path / "n.dcz")
    _rewrite(path, untyped)
    with pytest.raises(ValueError, match="integer field 'multiplier' must be a int"):
        compress.load(path)


# -- the pipeline and the CLIs ----------------------------------------------------------------

def test_pipeline_quantizes_by_default(digits_result):
    model = digits_result.model
    assert model.has_integer and model.metadata["accuracy_int"] == digits_result.accuracy_int
    assert not model.layers[0].integer.input_signed
    # The integer model predicts like the float shared-weight model on almost every image.
    data = digits_result.dataset
    integer = sim.run(model, sim.quantize_input(model, data.x_test)).argmax(1)
    assert (integer == model.forward(data.x_test).argmax(1)).mean() >= 0.98
    assert abs(digits_result.accuracy_int - digits_result.accuracy_compressed) <= 0.02


def test_pipeline_without_integer():
    result = compress_model(CompressConfig(**QUICK, integer=False), log=lambda _: None)
    assert not result.model.has_integer and result.accuracy_int is None


def test_signed_tabular_pipeline():
    result = compress_model(CompressConfig(model="cancer-mlp", **QUICK), log=lambda _: None)
    assert result.dataset.signed and result.model.layers[0].integer.input_signed
    assert result.accuracy_int >= 0.85


def test_sim_cli(tmp_path, digits_result, capsys):
    path = digits_result.model.save(tmp_path / "m.dcz")
    assert sim_main(["--model", str(path), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["accuracy_int"] == pytest.approx(digits_result.accuracy_int)
    assert report["accuracy_compressed"] == pytest.approx(digits_result.accuracy_compressed)
    assert 0.98 <= report["agreement"] <= 1.0 and report["samples"] == 450
    assert report["timings"]["run_int_s"] >= 0 and len(report["layers"]) == 3
    assert "integer accuracy" in capsys.readouterr().out


def test_sim_cli_errors(tmp_path, capsys):
    plain = _float_model().save(tmp_path / "plain.dcz")
    for argv, message in [
        (["--model", str(plain)], "has no integer data"),
        (["--model", str(tmp_path / "none.dcz")], "does not exist"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            sim_main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    model = quantize_model(_float_model(), np.ones((4, 12))).save(tmp_path / "m.dcz")
    with pytest.raises(SystemExit):
        sim_main(["--model", str(model), "--dataset", "digits"])
    assert "has 64 features, the model takes 12" in capsys.readouterr().err
