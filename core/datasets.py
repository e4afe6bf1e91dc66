"""Data sets: scikit-learn's bundled digits (the default) and breast-cancer (signed tabular
features), MNIST from IDX files, or a user's ``.npz``.

Every data set is returned as 2-D float32 feature matrices (one row a sample) and int64 labels
``0 .. n_classes - 1``; image data sets are flattened row-major, so a model's ``Flatten`` is a
no-op on them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "DATASETS", "DEFAULT_MNIST_DIR", "MAX_SEED", "load_dataset"]

#: The largest seed (the data splits' generators take 32-bit seeds).
MAX_SEED = 2**32 - 1

#: Names accepted by :func:`load_dataset` besides a path to an ``.npz`` file.
DATASETS = ("digits", "breast-cancer", "mnist")

#: Where :func:`load_dataset` looks for MNIST when no ``data_dir`` is given (the project's shared
#: folder beside the checkout); ``$MNIST_DIR`` overrides it.
DEFAULT_MNIST_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"

_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class Dataset:
    """A classification data set split into training and test parts.

    Attributes
    ----------
    name : str
        ``"digits"``, ``"mnist"`` or the ``.npz`` path it was read from.
    x_train, x_test : numpy.ndarray
        float32, shape ``(n, n_features)``.
    y_train, y_test : numpy.ndarray
        int64 labels in ``0 .. n_classes - 1``.
    n_classes : int
    signed : bool
        Whether any feature is negative. Image pixels are unsigned; standardized tabular data is
        signed. The integer reference (``docs/arithmetic.md``) picks uint8 or int8 inputs from it.
    shape : tuple of int
        One sample's shape before flattening: ``(1, H, W)`` for the image sets (a convolution
        reads it), an ``.npz``'s own (``(C, H, W)`` or ``(H, W)``), ``()`` for tabular data.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    signed: bool
    shape: tuple[int, ...] = ()

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def describe(self) -> str:
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test samples, "
                f"{self.n_features} features ({'signed' if self.signed else 'unsigned'}), "
                f"{self.n_classes} classes")


def load_dataset(name: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                 seed: int = 0) -> Dataset:
    """Load a data set by name or ``.npz`` path.

    Parameters
    ----------
    name : str or path
        ``"digits"`` (scikit-learn's 8x8 digits, 1,797 images, works offline; pixel values
        0..16 scaled by 1/16; a stratified 75/25 split drawn with ``seed``),
        ``"breast-cancer"`` (scikit-learn's Wisconsin breast cancer table, 569 samples, 30
        features, 2 classes, offline; the same kind of split, each feature standardized with
        the training part's mean and standard deviation, so the features are signed),
        ``"mnist"`` (the four standard IDX ``.gz`` files in ``data_dir``; pixels scaled by
        1/255) or a path to an ``.npz`` holding ``x_train, y_train, x_test, y_test``.
    data_dir : path, optional
        MNIST folder; default ``$MNIST_DIR`` or :data:`DEFAULT_MNIST_DIR`. A ``SHA256SUMS`` file
        beside the data is checked when present.
    seed : int
        Seed of the digits and breast-cancer splits.

    Raises
    ------
    ValueError
        Unknown name, missing or corrupt files, malformed arrays.
    """
    name_str = os.fspath(name)
    if name_str == "digits":
        return _load_digits(seed)
    if name_str == "breast-cancer":
        return _load_breast_cancer(seed)
    if name_str == "mnist":
        return _load_mnist(Path(data_dir) if data_dir is not None
                           else Path(os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR)))
    if name_str.endswith(".npz"):
        return _load_npz(Path(name_str))
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)} or a path to an .npz file, "
                     f"not {name_str!r}")


def _finish(name: str, x_train, y_train, x_test, y_test, shape=()) -> Dataset:
    n_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    signed = bool(min(x_train.min(initial=0.0), x_test.min(initial=0.0)) < 0)
    return Dataset(name, x_train, y_train, x_test, y_test, n_classes, signed, tuple(shape))


def _load_digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y)
    return _finish("digits", x_train, y_train, x_test, y_test, (1, 8, 8))


def _load_breast_cancer(seed: int) -> Dataset:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    bunch = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.data, bunch.target.astype(np.int64), test_size=0.25, random_state=seed,
        stratify=bunch.target)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    return _finish("breast-cancer", ((x_train - mean) / std).astype(np.float32), y_train,
                   ((x_test - mean) / std).astype(np.float32), y_test)


def _read_checksums(folder: Path) -> dict[str, str]:
    sums = folder / "SHA256SUMS"
    if not sums.exists():
        return {}
    table = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            table[parts[1].lstrip("*")] = parts[0].lower()
    return table


def _read_idx(path: Path, expected_sha256: str | None) -> np.ndarray:
    raw = path.read_bytes()
    if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise ValueError(f"{path} does not match its SHA256SUMS entry: the file is corrupt")
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} is not a valid gzip file: {error}") from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    n_dims = data[3]
    header = 4 + 4 * n_dims
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims))
    if len(data) != header + int(np.prod(dims)):
        raise ValueError(f"{path} has {len(data) - header} data bytes, its header says "
                         f"{int(np.prod(dims))} ({'x'.join(map(str, dims))})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_mnist(folder: Path) -> Dataset:
    missing = [f for f in _MNIST_FILES.values() if not (folder / f).exists()]
    if missing:
        raise ValueError(f"MNIST files missing in {folder}: {', '.join(missing)} "
                         "(pass --data-dir with the four IDX .gz files)")
    sums = _read_checksums(folder)
    arrays = {key: _read_idx(folder / f, sums.get(f)) for key, f in _MNIST_FILES.items()}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"MNIST {part} images {x.shape} and labels {y.shape} do not match")
    scale = np.float32(1.0 / 255.0)
    return _finish(
        "mnist",
        arrays["x_train"].reshape(len(arrays["x_train"]), -1).astype(np.float32) * scale,
        arrays["y_train"].astype(np.int64),
        arrays["x_test"].reshape(len(arrays["x_test"]), -1).astype(np.float32) * scale,
        arrays["y_test"].astype(np.int64), (1,) + arrays["x_test"].shape[1:])


def _load_npz(path: Path) -> Dataset:
    if not path.exists():
        raise ValueError(f"dataset file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz]
            if missing:
                raise ValueError(f"{path} must hold arrays x_train, y_train, x_test, y_test; "
                                 f"missing {', '.join(missing)}")
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npz file: {error}") from None
    out = {}
    shape = arrays["x_train"].shape[1:]
    shape = (1,) + shape if len(shape) == 2 else shape if len(shape) == 3 else ()
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"x_{part} must have shape (n_samples, n_features...) with "
                             f"n_samples >= 1, not {x.shape}")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"x_{part} must be numeric, not dtype {x.dtype}")
        x = x.reshape(len(x), -1).astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"x_{part} must be finite; it holds NaN or inf")
        if y.shape != (len(x),):
            raise ValueError(f"y_{part} must have shape ({len(x)},), not {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y_{part} must hold integer class labels, not dtype {y.dtype}")
        if y.min() < 0:
            raise ValueError(f"y_{part} labels must be >= 0, found {y.min()}")
        out[f"x_{part}"], out[f"y_{part}"] = x, y.astype(np.int64)
    if out["x_train"].shape[1] != out["x_test"].shape[1]:
        raise ValueError(f"x_train has {out['x_train'].shape[1]} features, "
                         f"x_test {out['x_test'].shape[1]}")
    return _finish(str(path), out["x_train"], out["y_train"], out["x_test"], out["y_test"],
                   shape)
