"""Input checks shared by the coding modules."""

from __future__ import annotations

import numpy as np


def as_index_array(values, name: str = "symbols") -> np.ndarray:
    """Validate a 1-D array of non-negative integers and return it as int64."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, not an array of shape {arr.shape}")
    if arr.size == 0:
        # An empty list arrives as float64; its dtype is meaningless.
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, not dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative, not {int(arr.min())!r}")
    if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64, not {int(arr.max())!r}")
    return arr.astype(np.int64, copy=False)
