"""Magnitude pruning with a per-layer threshold (Han et al. 2015; Deep Compression §2).

Two ways to set each layer's threshold:

* a target density (fraction of weights kept), reached geometrically over the rounds of
  iterative pruning: round ``r`` of ``R`` keeps ``density ** (r / R)`` of the weights;
* a quality factor ``q``: weights with ``|w| < q * std(w)`` are pruned, ``std`` being that of the
  layer's dense trained weights, with the factor ramped linearly ``q * r / R`` over the rounds.

Masks only shrink: a weight pruned in one round stays pruned in every later step.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["magnitude_mask", "round_targets"]


def magnitude_mask(weight: np.ndarray, *, previous: np.ndarray | None = None,
                   density: float | None = None, threshold: float | None = None) -> np.ndarray:
    """Boolean mask keeping the largest-magnitude weights.

    Exactly one of ``density`` (keep ``round(density * size)`` weights, at least one) and
    ``threshold`` (keep ``|w| >= threshold``) is given. With ``previous``, the result is a subset
    of it. Ties at the density cut are broken by position (stable), so the mask is deterministic.
    """
    if (density is None) == (threshold is None):
        raise ValueError("give exactly one of density and threshold")
    magnitude = np.abs(weight.astype(np.float64))
    if previous is not None:
        magnitude = np.where(previous, magnitude, -1.0)  # pruned ones never come back
    if density is not None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], not {density!r}")
        keep = max(1, int(round(density * weight.size)))
        if previous is not None:
            keep = min(keep, int(previous.sum()))
        order = np.argsort(-magnitude, axis=None, kind="stable")
        mask = np.zeros(weight.size, dtype=bool)
        mask[order[:keep]] = True
        return mask.reshape(weight.shape)
    if threshold < 0 or not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite and >= 0, not {threshold!r}")
    return magnitude >= threshold


def round_targets(final: float, rounds: int, mode: str) -> list[float]:
    """Per-round targets of iterative pruning, ending at ``final``.

    ``mode="density"`` gives geometric steps from 1 toward ``final``; ``mode="quality"`` gives
    linear steps from 0 toward ``final``.
    """
    if rounds < 1:
        raise ValueError(f"prune rounds must be >= 1, not {rounds!r}")
    if mode == "density":
        return [final ** (r / rounds) for r in range(1, rounds + 1)]
    if mode == "quality":
        return [final * r / rounds for r in range(1, rounds + 1)]
    raise ValueError(f"mode must be 'density' or 'quality', not {mode!r}")
