"""Latent layers (EPR, docs/arithmetic.md A11): the codebook they make, the artifact's format
version 4 (range-coded latents, derived integer data), corrupt streams, and the integer path."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import compress
import sim
from core.artifact import CompressedLayer, CompressedModel
from core.integer import quantize_model
from core.latents import LATENT_LIMIT, LatentCode, LayerLatents, latent_codebook


def _latents(rng, out_features, in_features, *, spread=3.0, zeros=0.7, limit=LATENT_LIMIT):
    w = np.round(rng.laplace(0, spread, (out_features, in_features))).astype(np.int64)
    w[rng.random(w.shape) < zeros] = 0
    w = np.clip(w, -limit, limit)
    b = np.round(rng.normal(0, 4, out_features)).astype(np.int64)
    return LayerLatents(LatentCode(w, float(rng.uniform(0.005, 0.05)), float(rng.uniform(-1, 2))),
                        LatentCode(b, float(rng.uniform(0.001, 0.01)), 0.5))


def _model(seed=0, widths=(30, 20, 12, 5), relus=(True, False, False), **kwargs):
    rng = np.random.default_rng(seed)
    layers = [CompressedLayer.from_latents(_latents(rng, o, i, **kwargs), relu=r)
              for i, o, r in zip(widths[:-1], widths[1:], relus)]
    model = CompressedModel(layers, {"seed": seed})
    x = rng.random((64, widths[0]))
    return quantize_model(model, x), x


# -- A11 -----------------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-LATENT_LIMIT, LATENT_LIMIT), min_size=1, max_size=60))
def test_the_codebook_is_zero_then_the_distinct_nonzero_latents(values):
    q = np.array(values, dtype=np.int64).reshape(1, -1)
    codebook, index, bits = latent_codebook(q)
    assert codebook[0] == 0 and np.all(np.diff(codebook[1:]) > 0) and 0 not in codebook[1:]
    assert np.array_equal(codebook[index], q)                 # zero latents are index 0
    assert len(codebook) <= 2 ** bits and (bits == 1 or len(codebook) > 2 ** (bits - 1))


def test_every_latent_fits_eight_index_bits():
    q = np.arange(-LATENT_LIMIT, LATENT_LIMIT + 1).reshape(1, -1)
    codebook, _, bits = latent_codebook(q)
    assert len(codebook) == 255 and bits == 8


@pytest.mark.parametrize("bad, message", [
    (dict(values=np.array([LATENT_LIMIT + 1])), r"latents must be -127..127"),
    (dict(values=np.array([0.5])), "latents must be integers"),
    (dict(step=0.0), "step must be > 0"),
    (dict(step=float("nan")), "step must be finite"),
    (dict(step=1e300), "step must be finite as a float32"),
    (dict(log_scale=float("inf")), "log_scale must be finite"),
])
def test_a_bad_latent_code_is_refused(bad, message):
    fields = dict(values=np.array([1, 0, -2]), step=0.1, log_scale=0.0) | bad
    with pytest.raises(ValueError, match=message):
        LatentCode(**fields)


def test_a_layer_must_be_what_its_latents_make():
    model, _ = _model()
    layer = model.layers[0]
    with pytest.raises(ValueError, match="those its latents make"):
        CompressedLayer(codebook=layer.codebook, index=layer.index, bias=layer.bias * 2,
                        relu=True, index_bits=layer.index_bits, latents=layer.latents)


def test_the_integer_codebook_is_the_latents_and_the_weight_scale_the_step():
    model, _ = _model()
    for layer in model.layers:
        assert np.array_equal(layer.integer.codebook, latent_codebook(layer.latents.weight.values)[0])
        assert layer.integer.weight_scale == layer.latents.weight.step
        np.testing.assert_array_equal(layer.weight, layer.latents.weight.decoded())


def test_latents_beyond_the_weight_bits_are_refused():
    rng = np.random.default_rng(3)
    layer = CompressedLayer.from_latents(_latents(rng, 4, 6, spread=40, zeros=0.0), relu=False)
    with pytest.raises(ValueError, match="beyond weight_bits=6"):
        quantize_model(CompressedModel([layer]), rng.random((8, 6)), weight_bits=6)


# -- the artifact --------------------------------------------------------------------------------

def test_round_trip_through_format_version_4(tmp_path):
    model, x = _model()
    path = model.save(tmp_path / "epr.dcz")
    assert int.from_bytes(path.read_bytes()[8:10], "little") == 4
    loaded = compress.load(path)
    for a, b in zip(model.layers, loaded.layers):
        assert np.array_equal(a.latents.weight.values, b.latents.weight.values)
        assert np.array_equal(a.index, b.index) and np.array_equal(a.codebook, b.codebook)
        assert np.array_equal(a.bias, b.bias) and a.index_bits == b.index_bits
        assert np.array_equal(a.integer.codebook, b.integer.codebook)
        assert np.array_equal(a.integer.bias, b.integer.bias)
        for name in ("multiplier", "shift", "accumulator_bits", "input_scale", "weight_scale",
                     "output_scale", "input_signed", "logits"):
            assert getattr(a.integer, name) == getattr(b.integer, name), name
    xq = sim.quantize_input(model, x)
    assert np.array_equal(sim.run(model, xq), sim.run(loaded, xq))


def test_the_payload_is_the_accounted_size(tmp_path):
    model, _ = _model(seed=4)
    path = model.save(tmp_path / "epr.dcz")
    sizes = model.sizes()
    header = int.from_bytes(path.read_bytes()[12:16], "little")
    payload = path.stat().st_size - 16 - header - 32
    coded = sum(s.index_bits + s.bias_bits + s.codebook_bits for s in sizes) // 8
    # Words, and per tensor step and log_scale as float32 (the ranges are in the header).
    assert payload == coded - sum(2 * 2 for _ in sizes)
    assert all(s.integer_bits > 0 and s.zero_run_bits == 0 for s in sizes)


def _rewrite(path, change):
    data = path.read_bytes()
    body = data[:-32]
    n = int.from_bytes(body[12:16], "little")
    header = json.loads(body[16:16 + n])
    payload = bytearray(body[16 + n:])
    change(header, payload)
    text = json.dumps(header).encode()
    body = body[:12] + len(text).to_bytes(4, "little") + text + bytes(payload)
    path.write_bytes(body + hashlib.sha256(body).digest())


@pytest.mark.parametrize("damage", ["flipped word", "truncated", "extended", "range", "scale"])
def test_a_corrupt_latent_stream_is_refused_even_with_a_valid_checksum(tmp_path, damage):
    model, _ = _model(seed=5)
    path = model.save(tmp_path / "epr.dcz")

    def change(header, payload):
        entry = header["layers"][0]["arrays"]["weight_words"]
        offset, nbytes = entry["offset"], entry["nbytes"]
        if damage == "flipped word":
            payload[offset + nbytes // 2] ^= 0x04
        elif damage == "truncated":
            entry["nbytes"] = nbytes - 4
        elif damage == "extended":
            # The next array's first word read as part of this stream.
            entry["nbytes"] = nbytes + 4
        elif damage == "range":
            header["layers"][0]["latents"]["weight"]["high"] += 1
        elif damage == "scale":
            model_entry = header["layers"][0]["arrays"]["weight_model"]
            payload[model_entry["offset"] + 5] ^= 0x01          # log_scale's low bits

    _rewrite(path, change)
    with pytest.raises(ValueError, match=r"malformed: the weight latents: .*(corrupt|range)"):
        compress.load(path)


def test_a_latent_layer_in_an_older_version_is_refused(tmp_path):
    model, _ = _model(seed=6)
    path = model.save(tmp_path / "epr.dcz")
    data = bytearray(path.read_bytes())
    data[8:10] = (3).to_bytes(2, "little")
    body = bytes(data[:-32])
    path.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(ValueError, match="has a latent layer"):
        compress.load(path)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.integers(1, 40), min_size=2, max_size=4),
       st.sampled_from([0.0, 0.5, 0.95, 1.0]), st.sampled_from([1, 3, 40, LATENT_LIMIT]))
def test_random_latent_models_round_trip_and_run_alike(tmp_path_factory, seed, widths, zeros,
                                                       limit):
    """Any shapes (width 1 included), all-zero layers (a one-symbol alphabet: no words), any
    latent range: the file reads back to the same layers and the same integer outputs."""
    rng = np.random.default_rng(seed)
    relus = [bool(rng.random() < 0.5) for _ in widths[1:]]
    layers = [CompressedLayer.from_latents(_latents(rng, o, i, zeros=zeros, limit=limit),
                                           relu=r)
              for i, o, r in zip(widths[:-1], widths[1:], relus)]
    x = rng.random((16, widths[0]))
    model = quantize_model(CompressedModel(layers), x)
    path = model.save(tmp_path_factory.mktemp("latents") / "m.dcz")
    loaded = compress.load(path)
    for a, b in zip(model.layers, loaded.layers):
        assert np.array_equal(a.latents.weight.values, b.latents.weight.values)
        assert np.array_equal(a.latents.bias.values, b.latents.bias.values)
        assert np.array_equal(a.integer.bias, b.integer.bias)
    xq = sim.quantize_input(model, x)
    assert np.array_equal(sim.trace(model, xq)[-1], sim.trace(loaded, xq)[-1])
