"""Data sets: digits offline, MNIST from IDX files (skipped when absent), a user's .npz."""

import gzip

import numpy as np
import pytest

from core.datasets import DEFAULT_MNIST_DIR, load_dataset


def test_digits_is_the_offline_default():
    data = load_dataset("digits")
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train.shape == (1347, 64) and data.x_test.shape == (450, 64)
    assert data.n_classes == 10 and not data.signed
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    # Pixels are multiples of 1/16: the integer reference can take them exactly.
    np.testing.assert_array_equal(data.x_train * 16, np.round(data.x_train * 16))


def test_digits_split_is_deterministic():
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, load_dataset("digits", seed=4).x_test)


def test_npz_signed_features(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tab.npz"
    np.savez(path, x_train=rng.normal(size=(40, 7)), y_train=rng.integers(0, 3, 40),
             x_test=rng.normal(size=(10, 7)), y_test=rng.integers(0, 3, 10))
    data = load_dataset(path)
    assert data.signed and data.n_features == 7 and data.n_classes == 3
    assert data.x_train.dtype == np.float32


@pytest.mark.parametrize("arrays, message", [
    (dict(x_train=np.zeros((4, 2))), "missing y_train, x_test, y_test"),
    (dict(x_train=np.zeros((4, 2)), y_train=np.zeros(3, int), x_test=np.zeros((2, 2)),
          y_test=np.zeros(2, int)), r"y_train must have shape \(4,\)"),
    (dict(x_train=np.full((4, 2), np.nan), y_train=np.zeros(4, int), x_test=np.zeros((2, 2)),
          y_test=np.zeros(2, int)), "must be finite"),
    (dict(x_train=np.zeros((4, 2)), y_train=np.zeros(4), x_test=np.zeros((2, 2)),
          y_test=np.zeros(2, int)), "integer class labels"),
    (dict(x_train=np.zeros((4, 2)), y_train=np.zeros(4, int), x_test=np.zeros((2, 3)),
          y_test=np.zeros(2, int)), "x_train has 2 features, x_test 3"),
    (dict(x_train=np.zeros((4, 2)), y_train=-np.ones(4, int), x_test=np.zeros((2, 2)),
          y_test=np.zeros(2, int)), "labels must be >= 0"),
])
def test_bad_npz_is_refused(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset must be one of digits, breast-cancer, mnist or a path"):
        load_dataset("cifar")


def test_missing_mnist_files(tmp_path):
    with pytest.raises(ValueError, match="MNIST files missing"):
        load_dataset("mnist", data_dir=tmp_path)


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_mnist_reader_on_small_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for stem, shape in (("train", 6), ("t10k", 3)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (shape, 4, 5)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, shape))
    data = load_dataset("mnist", data_dir=tmp_path)
    assert data.x_train.shape == (6, 20) and data.x_test.shape == (3, 20)
    # A checksum file beside the data is enforced.
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  t10k-labels-idx1-ubyte.gz\n")
    with pytest.raises(ValueError, match="does not match its SHA256SUMS entry"):
        load_dataset("mnist", data_dir=tmp_path)


def test_truncated_idx_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    for stem in ("train", "t10k"):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (2, 3, 3)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, 2))
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-1]))
    with pytest.raises(ValueError, match="data bytes, its header says"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.skipif(not DEFAULT_MNIST_DIR.exists(), reason="MNIST not at ../shared/data/mnist")
def test_real_mnist():
    data = load_dataset("mnist")
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.n_classes == 10 and not data.signed
    assert np.bincount(data.y_test).tolist()[:2] == [980, 1135]


def test_breast_cancer_is_signed_and_standardized():
    data = load_dataset("breast-cancer", seed=1)
    assert data.x_train.shape == (426, 30) and data.x_test.shape == (143, 30)
    assert data.signed and data.n_classes == 2 and data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1, atol=1e-4)
    np.testing.assert_array_equal(load_dataset("breast-cancer", seed=1).x_test, data.x_test)
