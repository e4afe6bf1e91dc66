"""Magnitude pruning: per-layer thresholds, masks that only shrink."""

import numpy as np
import pytest

from compress.prune import magnitude_mask, round_targets


def test_density_keeps_the_largest():
    w = np.array([[0.1, -3.0, 0.2], [2.0, -0.05, 0.0]])
    mask = magnitude_mask(w, density=0.5)
    np.testing.assert_array_equal(mask, [[False, True, True], [True, False, False]])


def test_threshold_and_previous_mask():
    w = np.array([1.0, -2.0, 3.0, -4.0])
    previous = np.array([True, True, False, True])
    np.testing.assert_array_equal(magnitude_mask(w, threshold=1.5, previous=previous),
                                  [False, True, False, True])
    # A pruned weight never returns, even if the density would allow it.
    np.testing.assert_array_equal(magnitude_mask(w, density=1.0, previous=previous), previous)


def test_at_least_one_weight_survives_a_density():
    assert magnitude_mask(np.ones(10), density=0.01).sum() == 1


def test_schedules():
    assert round_targets(0.25, 2, "density") == pytest.approx([0.5, 0.25])
    assert round_targets(3.0, 3, "quality") == pytest.approx([1.0, 2.0, 3.0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(density=0.0), r"density must be in \(0, 1\]"),
    (dict(density=1.5), r"density must be in \(0, 1\]"),
    (dict(threshold=-1.0), "threshold must be finite and >= 0"),
    (dict(), "exactly one of density and threshold"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        magnitude_mask(np.ones(3), **kwargs)
