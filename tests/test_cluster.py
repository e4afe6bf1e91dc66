"""Tests of compress.cluster: optimality of dp_kmeans, the Lloyd baselines, validation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.cluster import QUANTIZERS, cluster, dp_kmeans, kmeans_1d, sse

# A small pool of values, so that drawn inputs have duplicates; spread over
# several scales (and signs) to exercise the shifted prefix sums.
POOL = [-7.5, -2.0, -1.0, -0.25, 0.0, 0.1, 0.3, 1.0, 1.5, 4.0, 9.0, 100.0]
WEIGHT_POOL = [0.25, 0.5, 1.0, 2.0, 3.0, 10.0]


# ---------------------------------------------------------------------------
# Reference solutions
# ---------------------------------------------------------------------------


def _segment_costs(x, w):
    """C[j, i]: weighted SSE of sorted items j..i-1 about their mean (two-pass)."""
    n = x.size
    cost = np.full((n + 1, n + 1), np.inf)
    for j in range(n):
        seg, ws = x[j:], w[j:]
        mean = np.cumsum(ws * seg) / np.cumsum(ws)  # mean of items j..j+t
        sq = ws[None, :] * (seg[None, :] - mean[:, None]) ** 2
        cost[j, j + 1 :] = np.tril(sq).sum(axis=1)  # item e belongs iff e <= t
    return cost


def _sorted_with_weights(values, weights):
    x = np.asarray(values, dtype=np.float64).ravel()
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    return x[order], w[order]


def _brute_dp(values, k, weights=None):
    """Plain O(k n^2) DP over the sorted values: the optimum with <= k clusters."""
    x, w = _sorted_with_weights(values, weights)
    cost = _segment_costs(x, w)
    n = x.size
    d = np.full(n + 1, np.inf)
    d[0] = 0.0
    best = np.inf
    for _ in range(min(k, n)):
        d = np.min(d[:, None] + cost, axis=0)  # d[i] = min_j d_prev[j] + C[j, i]
        best = min(best, d[n])
    return best


def _exhaustive(values, k, weights=None):
    """Minimum over every partition of the sorted values into <= k runs."""
    x, w = _sorted_with_weights(values, weights)
    cost = _segment_costs(x, w)
    n = x.size
    best = np.inf
    for ncuts in range(min(k, n)):
        for cuts in itertools.combinations(range(1, n), ncuts):
            bounds = (0, *cuts, n)
            best = min(best, sum(cost[a, b] for a, b in zip(bounds, bounds[1:])))
    return best


def _check_contract(values, k, codebook, index, weights=None):
    """The return contract shared by every quantiser."""
    values = np.asarray(values)
    x = values.astype(np.float64).ravel()
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    assert codebook.dtype == np.float64 and codebook.ndim == 1
    assert index.dtype == np.int64 and index.shape == values.shape
    assert codebook[index].shape == values.shape
    assert 1 <= codebook.size <= k
    assert np.all(np.diff(codebook) > 0), "codebook must be strictly increasing"
    flat = index.ravel()
    assert flat.min() >= 0 and flat.max() < codebook.size
    for c, centre in enumerate(codebook):
        members = (flat == c) & (w > 0)
        assert members.any(), f"cluster {c} has no member with positive weight"
        mean = np.sum(w[members] * x[members]) / np.sum(w[members])
        assert math.isclose(centre, mean, rel_tol=1e-12, abs_tol=1e-12)


# ---------------------------------------------------------------------------
# Optimality
# ---------------------------------------------------------------------------


@st.composite
def _problems(draw):
    n = draw(st.integers(1, 40))
    values = draw(st.lists(st.sampled_from(POOL), min_size=n, max_size=n))
    weights = None
    if draw(st.booleans()):
        weights = draw(st.lists(st.sampled_from(WEIGHT_POOL), min_size=n, max_size=n))
    k = draw(st.integers(1, n + 3))
    return np.array(values), k, None if weights is None else np.array(weights)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_problems())
def test_dp_kmeans_is_optimal(problem):
    values, k, weights = problem
    codebook, index = dp_kmeans(values, k, weights=weights)
    _check_contract(values, k, codebook, index, weights)
    assert codebook.size == min(k, np.unique(values).size)
    got = sse(values, codebook, index, weights=weights)
    best = _brute_dp(values, k, weights)
    assert math.isclose(got, best, rel_tol=1e-9, abs_tol=1e-12), (got, best)
    if values.size <= 10:
        assert math.isclose(got, _exhaustive(values, k, weights), rel_tol=1e-9, abs_tol=1e-12)


def test_dp_kmeans_matches_brute_force_on_continuous_data():
    rng = np.random.default_rng(7)
    for n, k in [(60, 2), (60, 5), (80, 9), (50, 49), (300, 16)]:
        values = rng.laplace(0.0, 0.05, n)
        weights = rng.uniform(0.1, 3.0, n)
        for w in (None, weights):
            codebook, index = dp_kmeans(values, k, weights=w)
            _check_contract(values, k, codebook, index, w)
            got = sse(values, codebook, index, weights=w)
            assert math.isclose(got, _brute_dp(values, k, w), rel_tol=1e-9, abs_tol=1e-12)


def test_docstring_example():
    codebook, index = dp_kmeans([0.0, 0.1, 1.0, 1.1, 5.0], 3)
    np.testing.assert_allclose(codebook, [0.05, 1.05, 5.0])
    np.testing.assert_array_equal(index, [0, 0, 1, 1, 2])


# ---------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------


def test_fewer_distinct_values_than_k_gives_one_cluster_each():
    values = np.array([3.0, -1.0, 3.0, 2.0, -1.0])
    codebook, index = dp_kmeans(values, 8)
    np.testing.assert_array_equal(codebook, [-1.0, 2.0, 3.0])
    np.testing.assert_array_equal(codebook[index], values)
    assert sse(values, codebook, index) == 0.0


def test_n_equal_k():
    values = np.array([0.5, -2.0, 7.0])
    codebook, index = dp_kmeans(values, 3)
    np.testing.assert_array_equal(codebook[index], values)


def test_single_value():
    codebook, index = dp_kmeans([4.25], 5)
    np.testing.assert_array_equal(codebook, [4.25])
    np.testing.assert_array_equal(index, [0])


def test_constant_input():
    values = np.full(1000, -0.125)
    for k in (1, 2, 16):
        codebook, index = dp_kmeans(values, k)
        np.testing.assert_array_equal(codebook, [-0.125])
        assert index.shape == (1000,) and not index.any()


def test_k_one_is_the_mean():
    values = np.array([1.0, 2.0, 6.0])
    codebook, index = dp_kmeans(values, 1)
    np.testing.assert_allclose(codebook, [3.0])
    np.testing.assert_array_equal(index, [0, 0, 0])


def test_duplicates_are_never_split():
    values = np.array([0.0] * 5 + [1.0] * 5 + [1.1] + [5.0] * 3)
    codebook, index = dp_kmeans(values, 2)
    for v in np.unique(values):
        assert np.unique(index[values == v]).size == 1
    assert math.isclose(sse(values, codebook, index), _brute_dp(values, 2), rel_tol=1e-12)


def test_two_dimensional_input_keeps_its_shape():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(7, 13)).astype(np.float32)
    codebook, index = dp_kmeans(values, 4)
    _check_contract(values, 4, codebook, index)
    assert index.shape == (7, 13)
    assert math.isclose(sse(values, codebook, index), _brute_dp(values, 4), rel_tol=1e-9)


def test_int_input():
    values = np.array([1, 2, 3, 10, 11, 12, 50], dtype=np.int16)
    codebook, index = dp_kmeans(values, 3)
    np.testing.assert_allclose(codebook, [2.0, 11.0, 50.0])
    np.testing.assert_array_equal(index, [0, 0, 0, 1, 1, 1, 2])
    codebook, index = dp_kmeans([5, 1, 5], 2)  # a plain list of Python ints
    np.testing.assert_array_equal(codebook, [1.0, 5.0])


def test_weights_move_the_centroids():
    values = np.array([0.0, 1.0, 10.0])
    codebook, _ = dp_kmeans(values, 2, weights=np.array([1.0, 3.0, 1.0]))
    np.testing.assert_allclose(codebook, [0.75, 10.0])


def test_zero_weight_values_go_to_the_nearest_centroid():
    values = np.array([0.0, 1.0, 10.0, 11.0, 5.5, 100.0, -3.0, 6.0])
    weights = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    codebook, index = dp_kmeans(values, 2, weights=weights)
    np.testing.assert_allclose(codebook, [0.5, 10.5])  # the zero weights take no part
    # 5.5 is equidistant from 0.5 and 10.5: ties go to the lower centroid.
    np.testing.assert_array_equal(index, [0, 0, 1, 1, 0, 1, 0, 1])
    _check_contract(values, 2, codebook, index, weights)


def test_zero_weight_values_do_not_count_as_distinct():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    codebook, index = dp_kmeans(values, 4, weights=[1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(codebook, [1.0, 4.0])
    np.testing.assert_array_equal(index, [0, 0, 1, 1])


def test_huge_and_tiny_scales():
    rng = np.random.default_rng(3)
    base = rng.laplace(size=200)
    for scale in (1e-150, 1e150):
        values = base * scale
        codebook, index = dp_kmeans(values, 5)
        ref, ref_index = dp_kmeans(base, 5)
        np.testing.assert_array_equal(index, ref_index)
        np.testing.assert_allclose(codebook, ref * scale, rtol=1e-12)
    codebook, index = dp_kmeans(base, 5, weights=np.full(200, 1e-300))
    np.testing.assert_array_equal(index, ref_index)


def test_deterministic():
    values = np.random.default_rng(5).laplace(size=5000)
    a = dp_kmeans(values, 16)
    b = dp_kmeans(values, 16)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("func", [
    lambda v, k, **kw: dp_kmeans(v, k, **kw),
    lambda v, k, **kw: kmeans_1d(v, k, init="linear", **kw),
    lambda v, k, **kw: cluster(v, k, method="kmeans-density", **kw),
], ids=["dp_kmeans", "kmeans_1d", "cluster"])
def test_invalid_inputs(func):
    with pytest.raises(ValueError, match=r"values must be finite; found 1 NaN/inf"):
        func([1.0, np.nan, 2.0], 2)
    with pytest.raises(ValueError, match=r"values must be finite; found 2 NaN/inf"):
        func([np.inf, 1.0, -np.inf], 2)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1, not 0"):
        func([1.0, 2.0], 0)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1, not -1"):
        func([1.0, 2.0], -1)
    with pytest.raises(TypeError, match=r"k must be an integer >= 1, not 2.5"):
        func([1.0, 2.0], 2.5)
    with pytest.raises(TypeError, match=r"k must be an integer >= 1, not True"):
        func([1.0, 2.0], True)
    with pytest.raises(ValueError, match=r"values must be non-empty"):
        func([], 2)
    with pytest.raises(ValueError, match=r"weights must have the same shape as values"):
        func([1.0, 2.0], 2, weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0; found 1 negative"):
        func([1.0, 2.0], 2, weights=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0; found 1 NaN/inf"):
        func([1.0, 2.0], 2, weights=[1.0, np.nan])
    with pytest.raises(ValueError, match=r"weights must not all be zero"):
        func([1.0, 2.0], 2, weights=[0.0, 0.0])
    with pytest.raises(TypeError, match=r"values must have an integer or floating-point dtype"):
        func(["a", "b"], 2)


def test_numpy_integer_k_is_accepted():
    codebook, _ = dp_kmeans([1.0, 2.0, 9.0], np.int64(2))
    np.testing.assert_allclose(codebook, [1.5, 9.0])


def test_unknown_method_and_init():
    with pytest.raises(ValueError, match=(
        r"method must be one of dp, kmeans-linear, kmeans-density, kmeans-random, not 'foo'"
    )):
        cluster([1.0, 2.0], 2, method="foo")
    with pytest.raises(ValueError, match=r"init must be one of linear, density, random, not 'k-means\+\+'"):
        kmeans_1d([1.0, 2.0], 2, init="k-means++")
    with pytest.raises(ValueError, match=r"max_iter must be an integer >= 1, not 0"):
        kmeans_1d([1.0, 2.0], 2, init="linear", max_iter=0)


# ---------------------------------------------------------------------------
# Deep Compression baselines
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def laplace():
    return np.random.default_rng(0).laplace(0.0, 0.05, 2000)


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_baselines_are_no_better_than_dp(laplace, init):
    codebook, index = kmeans_1d(laplace, 8, init=init, seed=0)
    _check_contract(laplace, 8, codebook, index)
    dp = sse(laplace, *dp_kmeans(laplace, 8))
    assert sse(laplace, codebook, index) >= dp * (1 - 1e-12)


def test_dp_beats_linear_initialisation(laplace):
    # Linear initialisation puts most centroids in the sparse tails of the
    # Laplace distribution (the weakness Han et al. point out).
    dp = sse(laplace, *dp_kmeans(laplace, 8))
    linear = sse(laplace, *kmeans_1d(laplace, 8, init="linear"))
    assert linear > dp * 1.01


def test_kmeans_matches_sklearn_lloyd(laplace):
    sklearn = pytest.importorskip("sklearn.cluster")
    for init in ("linear", "density"):
        codebook, index = kmeans_1d(laplace, 8, init=init)
        # The same initial centroids, as documented: evenly spaced, or the
        # (i + 0.5)/k quantiles of the inverse empirical CDF.
        if init == "linear":
            start = np.linspace(laplace.min(), laplace.max(), 8)
        else:
            start = np.quantile(laplace, (np.arange(8) + 0.5) / 8, method="inverted_cdf")
        km = sklearn.KMeans(8, init=start[:, None], n_init=1, algorithm="lloyd", tol=0.0,
                            max_iter=300).fit(laplace[:, None])
        assert codebook.size == 8  # no empty cluster here, so sklearn's relocation is moot
        np.testing.assert_allclose(codebook, np.sort(km.cluster_centers_.ravel()), rtol=1e-9)
        assert math.isclose(sse(laplace, codebook, index), km.inertia_, rel_tol=1e-9)


def test_kmeans_random_is_seeded(laplace):
    a = kmeans_1d(laplace, 8, init="random", seed=3)
    b = kmeans_1d(laplace, 8, init="random", seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_edge_cases(init):
    codebook, index = kmeans_1d(np.full((3, 4), 2.0), 4, init=init)
    np.testing.assert_array_equal(codebook, [2.0])
    assert index.shape == (3, 4)
    values = np.array([0.0, 1.0, 1.0, 10.0, 11.0])
    weights = np.array([1.0, 1.0, 0.0, 1.0, 0.0])
    codebook, index = kmeans_1d(values, 2, init=init, weights=weights)
    _check_contract(values, 2, codebook, index, weights)
    codebook, index = kmeans_1d([3, 1, 2], 5, init=init)
    _check_contract([3, 1, 2], 5, codebook, index)


@pytest.mark.parametrize("method", QUANTIZERS)
def test_cluster_dispatch(laplace, method):
    codebook, index = cluster(laplace, 8, method=method, seed=1)
    _check_contract(laplace, 8, codebook, index)
    if method == "dp":
        expected = dp_kmeans(laplace, 8)
    else:
        expected = kmeans_1d(laplace, 8, init=method.removeprefix("kmeans-"), seed=1)
    np.testing.assert_array_equal(codebook, expected[0])
    np.testing.assert_array_equal(index, expected[1])


def test_sse():
    values = np.array([[1.0, 2.0], [4.0, 8.0]])
    codebook = np.array([1.5, 6.0])
    index = np.array([[0, 0], [1, 1]])
    assert sse(values, codebook, index) == 0.25 + 0.25 + 4.0 + 4.0
    assert sse(values, codebook, index, weights=[[1.0, 0.0], [2.0, 0.5]]) == 0.25 + 8.0 + 2.0


# ---------------------------------------------------------------------------
# Against the reference implementation of Ckmeans.1d.dp
# ---------------------------------------------------------------------------


def test_matches_ckmeans_package():
    ckmeans = pytest.importorskip("ckmeans")
    values = np.random.default_rng(11).laplace(0.0, 0.05, 20000)
    k = 16
    codebook, index = dp_kmeans(values, k)
    _check_contract(values, k, codebook, index)
    groups = ckmeans.ckmeans(values, k)
    theirs = sum(float(np.sum((g - g.mean()) ** 2)) for g in groups)
    assert math.isclose(sse(values, codebook, index), theirs, rel_tol=1e-9)
