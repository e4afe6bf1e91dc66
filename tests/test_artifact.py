"""The artifact round-trips exactly and refuses every corrupt file."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

import compress
from core.artifact import MAGIC, CompressedLayer, CompressedModel


def _random_layer(rng, n_out, n_in, density, index_bits=4, zero_run_bits=4, relu=True):
    k = 2 ** index_bits
    index = rng.integers(1, k, size=(n_out, n_in))
    index[rng.random((n_out, n_in)) >= density] = 0
    codebook = np.concatenate([[0.0], np.sort(rng.normal(size=k - 1))])
    return CompressedLayer(codebook=codebook, index=index.astype(np.uint8),
                           bias=rng.normal(size=n_out), relu=relu, index_bits=index_bits,
                           zero_run_bits=zero_run_bits)


@pytest.fixture
def model():
    rng = np.random.default_rng(0)
    return CompressedModel(
        [_random_layer(rng, 37, 13, 0.3), _random_layer(rng, 20, 37, 0.05, 5, 3),
         _random_layer(rng, 1, 20, 1.0, 2, 8, relu=False)],
        metadata={"model": "test", "note": "ünïcode"})


def test_round_trip_is_exact(tmp_path, model):
    path = model.save(tmp_path / "m.dcz")
    loaded = compress.load(path)
    assert loaded.metadata == model.metadata
    for a, b in zip(model.layers, loaded.layers):
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.codebook, b.codebook)
        np.testing.assert_array_equal(a.bias, b.bias)
        assert (a.relu, a.index_bits, a.zero_run_bits) == (b.relu, b.index_bits, b.zero_run_bits)
    x = np.random.default_rng(1).random((5, 13), dtype=np.float32)
    np.testing.assert_array_equal(model.forward(x), loaded.forward(x))


def test_same_model_same_bytes(tmp_path, model):
    a = model.save(tmp_path / "a.dcz").read_bytes()
    b = model.save(tmp_path / "b.dcz").read_bytes()
    assert a == b


def test_edge_layers_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    empty = CompressedLayer(codebook=[0.0], index=np.zeros((4, 50), np.uint8), bias=np.zeros(4),
                            relu=True)
    one = CompressedLayer(codebook=[0.0, 0.5], index=np.ones((1, 1), np.uint8), bias=[0.25],
                          relu=False)
    dense = _random_layer(rng, 1, 4, 1.0, relu=False)
    for layers in ([empty, _random_layer(rng, 3, 4, 0.5, relu=False)], [one], [dense]):
        model = CompressedModel(layers)
        loaded = compress.load(model.save(tmp_path / "m.dcz"))
        for a, b in zip(model.layers, loaded.layers):
            np.testing.assert_array_equal(a.weight, b.weight)


def test_file_is_about_the_accounted_size(tmp_path, model):
    path = model.save(tmp_path / "m.dcz")
    accounted = sum(s.compressed_bytes for s in model.sizes())
    header = int.from_bytes(path.read_bytes()[12:16], "little")
    payload = path.stat().st_size - 16 - header - 32
    # The payload holds exactly what is accounted; codes rounded up to whole bytes per stream.
    assert accounted <= payload <= accounted + 2 * len(model.layers)


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped", "magic", "version",
                                    "appended", "header"])
def test_corrupt_file_is_refused(tmp_path, model, damage):
    path = model.save(tmp_path / "m.dcz")
    data = bytearray(path.read_bytes())
    if damage == "empty":
        data = bytearray()
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        data[len(data) // 2] ^= 0x10
    elif damage == "magic":
        data[:8] = b"NOTMODEL"
    elif damage == "version":
        data[8:10] = (99).to_bytes(2, "little")
    elif damage == "appended":
        data += b"\x00"
    elif damage == "header":
        # A well-formed checksum over a header that lies: the layer claims more entries.
        body = bytes(data[:-32])
        n = int.from_bytes(body[12:16], "little")
        header = json.loads(body[16:16 + n])
        header["layers"][0]["entries"] += 3
        text = json.dumps(header).encode()
        body = body[:12] + len(text).to_bytes(4, "little") + text + body[16 + n:]
        data = bytearray(body + hashlib.sha256(body).digest())
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"artifact .*(empty|truncated|corrupt|magic|version|"
                                         r"malformed)"):
        compress.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        compress.load(tmp_path / "nothing.dcz")


def test_magic_is_documented():
    text = (__import__("pathlib").Path(__file__).parent.parent / "docs" /
            "artifact-format.md").read_text()
    assert MAGIC.decode("latin-1").rstrip("\x00") in text


@pytest.mark.parametrize("kwargs, message", [
    (dict(codebook=[0.5, 1.0]), "codebook\\[0\\] must be 0"),
    (dict(codebook=[0.0] * 17), "codebook must have 1..16 entries"),
    (dict(index=np.full((2, 3), 5, np.uint8)), "index values must be 0..1"),
    (dict(bias=[0.0]), "bias must have shape \\(2,\\)"),
    (dict(index_bits=0), "index_bits must be 1..16"),
    (dict(codebook=[0.0, float("nan")]), "must be finite"),
])
def test_layer_validation(kwargs, message):
    fields = dict(codebook=[0.0, 1.0], index=np.ones((2, 3), np.uint8), bias=[0.0, 0.0],
                  relu=True)
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CompressedLayer(**fields)


def test_model_shapes_must_connect():
    a = CompressedLayer(codebook=[0.0], index=np.zeros((3, 2), np.uint8), bias=np.zeros(3),
                        relu=True)
    with pytest.raises(ValueError, match="layer 0 gives 3 outputs but layer 1 takes 2"):
        CompressedModel([a, a])


def test_core_is_the_bottom_of_the_imports():
    """``core`` (the artifact, its parts, the data sets, the option checks) loads without torch
    and without any other package of the project: ``sim`` reads artifacts without ``compress``,
    and nothing imports in a circle."""
    code = ("import sys, pkgutil, importlib, core\n"
            "for m in pkgutil.iter_modules(core.__path__): importlib.import_module('core.' + m.name)\n"
            "import sim\n"
            "print(sorted({n.split('.')[0] for n in sys.modules} & "
            "{'torch', 'compress', 'accel', 'boards'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["[]"]
