"""Quantization levels on the float side: binary bases and the nearest-level rule.

An LQ-Nets quantizer (Zhang et al., ECCV 2018) of ``K`` bits has a basis ``v`` of ``K`` reals;
its levels are ``v^T e`` for every code ``e`` in ``{-1, +1}^K`` (weights) or ``{0, 1}^K``
(activations). This module computes those levels the one way every stage uses (training,
the artifact, calibration), and quantizes a value to its nearest level with ties going up,
the float rule that ``docs/arithmetic.md`` A10 turns into integer thresholds.

Numpy only, no torch: the artifact and the integer calibration import it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["basis_codebook", "code_matrix", "midpoints", "nearest_level", "quantize_to_levels",
           "unsigned_levels"]


def code_matrix(bits: int, signed: bool) -> np.ndarray:
    """Every code ``e`` as a row, shape ``(2**bits, bits)``, float64.

    Row ``n`` holds the bits of ``n`` (bit ``i`` in column ``i``), as ``+-1`` when ``signed``
    (weights), as ``0/1`` otherwise (activations).
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, not {bits!r}")
    codes = (np.arange(1 << bits)[:, None] >> np.arange(bits)[None, :]) & 1
    codes = codes.astype(np.float64)
    return 2.0 * codes - 1.0 if signed else codes


def basis_codebook(basis: np.ndarray) -> np.ndarray:
    """Per-row codebooks ``[0, ascending levels]`` of signed binary bases (weights).

    ``basis`` has shape ``(rows, K)``; the result, float32, shape ``(rows, 2**K + 1)``: entry 0
    is the pruned weight (exactly 0, ``docs/arithmetic.md`` A9), entries ``1 .. 2**K`` the
    levels ``v_r^T e``, ascending. The sum is formed in float64 in a fixed order (exact for
    any basis whose values lie within 2**29 of one another in magnitude) and rounded once to
    float32, so the codebook is the same on every machine.
    """
    basis = np.asarray(basis, dtype=np.float32)
    if basis.ndim != 2 or not 1 <= basis.shape[1] <= 8:
        raise ValueError(f"basis must have shape (rows, K) with K = 1..8, not {basis.shape}")
    if not np.isfinite(basis).all():
        raise ValueError("basis must be finite")
    codes = code_matrix(basis.shape[1], signed=True)
    levels = np.zeros((basis.shape[0], len(codes)), dtype=np.float64)
    for i in range(basis.shape[1]):                  # a fixed order of summation
        levels += basis[:, i:i + 1].astype(np.float64) * codes[None, :, i]
    levels = np.sort(levels.astype(np.float32), axis=1, kind="stable")
    return np.concatenate([np.zeros((basis.shape[0], 1), np.float32), levels], axis=1)


def unsigned_levels(basis: np.ndarray) -> np.ndarray:
    """The ascending float32 levels ``v^T e``, ``e`` in ``{0, 1}^K``, of an activation basis
    ``(K,)`` of non-negative values: ``2**K`` levels, the first 0 (``docs/arithmetic.md`` A10).
    Summed in float64 in a fixed order and rounded once, as :func:`basis_codebook`."""
    basis = np.asarray(basis, dtype=np.float32)
    if basis.ndim != 1 or not 1 <= len(basis) <= 8:
        raise ValueError(f"basis must have shape (K,) with K = 1..8, not {basis.shape}")
    if not np.isfinite(basis).all() or basis.min() < 0:
        raise ValueError("an activation basis must be finite and >= 0")
    codes = code_matrix(len(basis), signed=False)
    levels = np.zeros(len(codes), dtype=np.float64)
    for i in range(len(basis)):
        levels += float(basis[i]) * codes[:, i]
    return np.sort(levels.astype(np.float32), kind="stable")


def midpoints(levels: np.ndarray) -> np.ndarray:
    """``(L_j + L_{j+1}) / 2`` of ascending float32 levels, float64 (exact)."""
    levels = np.asarray(levels, dtype=np.float64)
    return (levels[..., :-1] + levels[..., 1:]) / 2.0


def nearest_level(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The code of each value: ``#{j : value >= midpoint_j}`` (nearest level, ties upward).

    ``levels`` is one ascending array shared by all values.
    """
    levels = np.asarray(levels)
    if levels.ndim != 1 or len(levels) == 0 or np.any(np.diff(levels) < 0):
        raise ValueError("levels must be a non-empty ascending 1-D array")
    return np.searchsorted(midpoints(levels), np.asarray(values, dtype=np.float64),
                           side="right")


def quantize_to_levels(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each value replaced by its nearest level (:func:`nearest_level`), float32."""
    levels = np.asarray(levels, dtype=np.float32)
    return levels[nearest_level(values, levels)]
