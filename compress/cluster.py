"""One-dimensional weight sharing: exactly optimal k-means and Deep Compression baselines.

Deep Compression (Han et al., 2016, §3.2) shares weights by running k-means on
the weights of a layer. In one dimension k-means need not be heuristic: the
optimal partition into k clusters consists of contiguous runs of the sorted
values, so a dynamic program finds the exactly minimum sum of squared errors
(Wang & Song, 2011, "Ckmeans.1d.dp" [3]_); DP-Net (Yang et al., 2020 [2]_)
uses such a program for network compression. :func:`dp_kmeans` implements that program;
:func:`kmeans_1d` implements Lloyd's k-means with the three centroid
initialisations compared in the Deep Compression paper, as baselines.

References
----------
.. [1] S. Han, H. Mao, W. J. Dally, "Deep Compression: Compressing Deep Neural
   Networks with Pruning, Trained Quantization and Huffman Coding", ICLR 2016.
.. [2] D. Yang, W. Yu, A. Zhou, H. Mu, G. Yao, X. Wang, "DP-Net: Dynamic
   Programming Guided Deep Neural Network Compression", arXiv:2003.09615, 2020.
.. [3] H. Wang, M. Song, "Ckmeans.1d.dp: Optimal k-means Clustering in One
   Dimension by Dynamic Programming", The R Journal 3(2), 2011.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np
from numba import njit

__all__ = ["QUANTIZERS", "cluster", "dp_kmeans", "kmeans_1d", "sse"]

QUANTIZERS = ("dp", "kmeans-linear", "kmeans-density", "kmeans-random")

_INITS = ("linear", "density", "random")


# ---------------------------------------------------------------------------
# Input handling shared by every quantiser
# ---------------------------------------------------------------------------


def _check_int(name, value, minimum):
    """Return ``value`` as a Python int >= ``minimum`` or raise.

    Only true integer types are accepted (Python and NumPy ints); ``bool`` and
    floats such as ``2.0`` are rejected with TypeError so that a mistyped
    argument is not silently truncated.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, not {value!r}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


def _as_real_array(name, a):
    """Convert ``a`` to a float64 ndarray, rejecting non-real dtypes."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must have an integer or floating-point dtype, not {arr.dtype}"
        )
    return np.asarray(arr, dtype=np.float64)


def _check_inputs(values, k, weights):
    """Validate the common arguments of the quantisers.

    Returns
    -------
    x : ndarray of float64, shape (n,)
        The flattened values.
    k : int
    w : ndarray of float64, shape (n,), or None
        The flattened weights; None means all ones.
    shape : tuple
        The shape of ``values``.
    """
    k = _check_int("k", k, 1)
    arr = _as_real_array("values", values)
    shape = arr.shape
    if arr.size == 0:
        raise ValueError(f"values must be non-empty, not an empty array of shape {shape}")
    x = arr.ravel()
    bad = np.count_nonzero(~np.isfinite(x))
    if bad:
        raise ValueError(f"values must be finite; found {bad} NaN/inf")
    if weights is None:
        return x, k, None, shape
    warr = _as_real_array("weights", weights)
    if warr.shape != shape:
        raise ValueError(
            f"weights must have the same shape as values {shape}, not {warr.shape}"
        )
    w = warr.ravel()
    bad = np.count_nonzero(~np.isfinite(w))
    if bad:
        raise ValueError(f"weights must be finite and >= 0; found {bad} NaN/inf")
    neg = np.count_nonzero(w < 0)
    if neg:
        raise ValueError(f"weights must be finite and >= 0; found {neg} negative")
    if not np.any(w > 0):
        raise ValueError("weights must not all be zero")
    return x, k, w, shape


def _unique_weighted(x, w):
    """Sort ``x`` and merge equal values.

    Returns the ascending distinct values among those with positive weight and
    their summed weights. With ``w is None`` the weights are the multiplicities.
    """
    if w is None:
        # No weights to carry along, so an (unstable, much faster) value sort
        # suffices; equal values are merged anyway.
        xs = np.sort(x)
        ws = None
    else:
        pos = w > 0
        xp, wp = x[pos], w[pos]
        order = np.argsort(xp, kind="stable")
        xs, ws = xp[order], wp[order]
    # Start of each run of equal values: one sort, no second sort by np.unique.
    starts = np.flatnonzero(np.concatenate(([True], xs[1:] != xs[:-1])))
    u = xs[starts]
    if ws is None:
        uw = np.diff(np.append(starts, xs.size)).astype(np.float64)
    else:
        uw = np.add.reduceat(ws, starts)
    return u, uw


def _finish(x, w, shape, u, uw, starts):
    """Turn a partition of the distinct values into ``(codebook, index)``.

    ``starts`` holds the index into ``u`` where each (non-empty) cluster
    begins. The codebook entries are the clusters' weighted means; values with
    positive weight are indexed by the cluster whose range holds them, values
    with weight 0 by their nearest centroid (ties to the lower one).
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.append(starts[1:], u.size)
    wsum = np.add.reduceat(uw, starts)
    # Means of values shifted by a member of their cluster limit cancellation.
    shift = u[(starts + ends - 1) // 2]
    member_shift = np.repeat(shift, ends - starts)
    codebook = np.add.reduceat(uw * (u - member_shift), starts) / wsum + shift
    # Rounding must not push a mean outside its cluster's range; clipping also
    # keeps the codebook strictly increasing because the ranges are disjoint.
    lo, hi = u[starts], u[ends - 1]
    codebook = np.clip(codebook, lo, hi)
    # Cluster c holds exactly the values in (hi[c-1], hi[c]].
    index = np.searchsorted(hi[:-1], x, side="left")
    if w is not None:
        zero = w == 0
        if np.any(zero):
            index[zero] = _nearest(codebook, x[zero])
    return codebook, index.astype(np.int64, copy=False).reshape(shape)


def _nearest(codebook, x):
    """Index of the nearest codebook entry to each of ``x`` (ties to the lower)."""
    if codebook.size == 1:
        return np.zeros(x.size, dtype=np.int64)
    # codebook[j-1] < x <= codebook[j], clamped to a valid neighbour pair.
    j = np.clip(np.searchsorted(codebook, x, side="left"), 1, codebook.size - 1)
    lower = (x - codebook[j - 1]) <= (codebook[j] - x)
    return np.where(lower, j - 1, j).astype(np.int64)


# ---------------------------------------------------------------------------
# Dynamic programming kernel
# ---------------------------------------------------------------------------


# error_model="numpy" drops numba's Python-style zero-division checks (the
# denominators here are sums of positive weights), which would otherwise stop
# LLVM from vectorising the cost loops. No fastmath: IEEE semantics are kept.
_jit = njit(cache=True, error_model="numpy")


@_jit
def _prefix_sums(u, uw, shift, scale):
    """Prefix sums p0, p1 of w and w*y with y = (u - shift) / scale.

    p[t] sums items 0..t-1. Centring on the weighted mean limits cancellation
    in S1**2/W; the scale multiplies every SSE by the same factor, so it
    leaves the argmins alone while keeping y**2 from overflowing for huge
    values. (The prefix sum of w*y**2 is not needed: see _dp_layer.)
    """
    m = u.size
    inv = 1.0 / scale
    p0 = np.empty(m + 1)
    p1 = np.empty(m + 1)
    p0[0] = 0.0
    p1[0] = 0.0
    for t in range(m):
        p0[t + 1] = p0[t] + uw[t]
        p1[t + 1] = p1[t] + uw[t] * ((u[t] - shift) * inv)
    return p0, p1


@_jit
def _shift_scale(u, uw):
    """Weighted mean of the ascending ``u`` and the largest distance of ``u`` from it.

    A plain loop, not np.dot: BLAS may wake its threads for a dot product,
    which costs milliseconds on a busy machine.
    """
    tw = 0.0
    twu = 0.0
    for t in range(u.size):
        tw += uw[t]
        twu += uw[t] * u[t]
    shift = min(max(twu / tw, u[0]), u[-1])  # rounding must not leave the range
    scale = max(u[-1] - shift, shift - u[0])
    return shift, (scale if scale > 0.0 else 1.0)


@_jit
def _dp_layer(p0, p1, q, qout, opt, c, ilo, ihi, buf):
    """One DP layer: c clusters, rows ilo <= i <= ihi.

    Reads ``q[j] = D[c-1][j] - p2[j]`` (for c-1 <= j < ihi) and writes
    ``qout[i] = D[c][i] - p2[i]`` and the argmin, the start of the last
    cluster, to ``opt[i]``, where p2 are the prefix sums of w*y**2 and
    candidates are c-1 <= j <= i-1. Why p2 never appears: the SSE of items
    j..i-1 is cost(j, i) = p2[i] - p2[j] - S1**2/W (S1, W: sums of w*y and w
    over them), so D[c-1][j] + cost(j, i) = p2[i] + q[j] - S1**2/W.

    The leftmost argmin is non-decreasing in i (the SSE cost satisfies the
    quadrangle inequality), so divide and conquer applies: solve the middle
    row over its candidate range, then the rows left of it need candidates
    only up to its argmin and the rows right of it only from there on. An
    explicit stack replaces recursion; depth first keeps the working set in
    cache. Each level of the recursion scans O(m) candidates in total, so a
    layer costs O(m log m).
    """
    stack = np.empty((128, 4), dtype=np.int64)
    stack[0, 0] = ilo
    stack[0, 1] = ihi
    stack[0, 2] = c - 1
    stack[0, 3] = ihi - 1
    top = 1
    while top > 0:
        top -= 1
        lo = stack[top, 0]
        hi = stack[top, 1]
        jlo = stack[top, 2]
        jhi = stack[top, 3]
        if jlo == jhi:
            # Every row left here has the single candidate jlo (jlo <= lo - 1
            # always holds). In practice this covers about half of all rows.
            r0 = p0[lo : hi + 1]
            r1 = p1[lo : hi + 1]
            rq = qout[lo : hi + 1]
            ro = opt[lo : hi + 1]
            w_j = p0[jlo]
            s_j = p1[jlo]
            q_j = q[jlo]
            for t in range(hi - lo + 1):
                s = r1[t] - s_j
                rq[t] = q_j - s * s / (r0[t] - w_j)
                ro[t] = jlo
            continue
        mid = (lo + hi) >> 1
        jh = min(jhi, mid - 1)
        n = jh - jlo + 1
        # Slices, not j-offset indexing: numba's negative-index wraparound
        # on a signed index would keep LLVM from vectorising the loops.
        a0 = p0[jlo : jh + 1]
        a1 = p1[jlo : jh + 1]
        aq = q[jlo : jh + 1]
        w_i = p0[mid]
        s_i = p1[mid]
        if n < 16:
            best = np.inf
            bt = 0
            for t in range(n):
                s = s_i - a1[t]
                v = aq[t] - s * s / (w_i - a0[t])
                if v < best:
                    best = v
                    bt = t
        else:
            # Long ranges: one vectorised pass computes every candidate
            # (the division dominates), then a reduction finds the minimum
            # with four independent chains (min is exact in any order), then
            # the first index attaining it is looked up: the same leftmost
            # argmin as the scalar loop.
            for t in range(n):
                s = s_i - a1[t]
                buf[t] = aq[t] - s * s / (w_i - a0[t])
            b0 = np.inf
            b1 = np.inf
            b2 = np.inf
            b3 = np.inf
            t = 0
            while t + 4 <= n:
                v = buf[t]
                b0 = v if v < b0 else b0
                v = buf[t + 1]
                b1 = v if v < b1 else b1
                v = buf[t + 2]
                b2 = v if v < b2 else b2
                v = buf[t + 3]
                b3 = v if v < b3 else b3
                t += 4
            while t < n:
                v = buf[t]
                b0 = v if v < b0 else b0
                t += 1
            best = min(min(b0, b1), min(b2, b3))
            bt = 0
            while buf[bt] != best:
                bt += 1
        bj = jlo + bt
        qout[mid] = best
        opt[mid] = bj
        if mid < hi:
            stack[top, 0] = mid + 1
            stack[top, 1] = hi
            stack[top, 2] = bj
            stack[top, 3] = jhi
            top += 1
        if lo < mid:
            stack[top, 0] = lo
            stack[top, 1] = mid - 1
            stack[top, 2] = jlo
            stack[top, 3] = bj
            top += 1


@_jit
def _dp_partition(u, uw, k, shift, scale):
    """Optimal partition of the sorted distinct ``u`` (weights ``uw``) into k runs.

    Requires 2 <= k < u.size. Returns the start index in ``u`` of each run.
    """
    m = u.size
    p0, p1 = _prefix_sums(u, uw, shift, scale)
    q = np.empty(m + 1)
    qout = np.empty(m + 1)
    buf = np.empty(m + 1)
    # opt[c - 2, i]: start of the last cluster in the best split of the first
    # i values into c clusters, c = 2 .. k (with one cluster it starts at 0).
    opt = np.empty((k - 1, m + 1), dtype=np.int32)
    # Layer 1: D[1][i] = cost(0, i) = p2[i] - S1**2/W, so q = -S1**2/W.
    q[0] = 0.0
    for i in range(1, m + 1):
        q[i] = -p1[i] * p1[i] / p0[i]
    for c in range(2, k):
        # c clusters need i >= c values, and the k-c clusters still to come
        # need at least k-c values after them.
        _dp_layer(p0, p1, q, qout, opt[c - 2], c, c, m - (k - c), buf)
        q, qout = qout, q
    # Last layer: only D[k][m] is needed, a single O(m) scan.
    _dp_layer(p0, p1, q, qout, opt[k - 2], k, m, m, buf)
    starts = np.empty(k, dtype=np.int64)
    starts[0] = 0
    j = m
    for c in range(k, 1, -1):
        j = opt[c - 2, j]
        starts[c - 1] = j
    return starts


def dp_kmeans(values, k, *, weights=None):
    """Exactly optimal (weighted) 1-D k-means by dynamic programming.

    Finds the partition of ``values`` into at most ``k`` clusters with the
    minimum (weighted) sum of squared distances to the cluster means -- the
    weight sharing of DP-Net [1]_, following Ckmeans.1d.dp [2]_. Unlike
    Lloyd's k-means the result does not depend on an initialisation.

    Parameters
    ----------
    values : array_like of int or float, any shape
        The values to cluster (e.g. a layer's non-zero weights). Flattened
        internally and converted to float64. Must be finite and non-empty.
    k : int
        Maximum number of clusters, >= 1. The result has
        ``min(k, number of distinct values with positive weight)`` clusters.
    weights : array_like of int or float, optional
        Non-negative finite weight of each value, same shape as ``values``,
        not all zero. Values with weight 0 do not influence the clusters and
        are indexed to their nearest centroid (ties to the lower one).
        Default: all ones.

    Returns
    -------
    codebook : ndarray of float64, shape (c,)
        Strictly increasing cluster means, one per non-empty cluster, c <= k.
    index : ndarray of int64, shape ``values.shape``
        Cluster of each value; ``codebook[index]`` is the reconstruction.

    Raises
    ------
    TypeError
        If ``k`` is not an integer (``bool`` and floats such as 2.5 are
        rejected) or ``values``/``weights`` do not have an int/float dtype.
    ValueError
        If ``k < 1``; ``values`` is empty or contains NaN/inf; ``weights``
        has another shape than ``values``, contains negative/NaN/inf entries
        or is all zero.

    Notes
    -----
    The values are sorted once (no weights: a plain value sort; with weights:
    a stable argsort) and equal values are merged into one item carrying
    their summed weight -- an optimal partition never splits equal values.
    Over the m sorted distinct values,
    ``D[c][i] = min_j D[c-1][j] + cost(j, i)`` where ``cost`` is the
    weighted SSE of items j..i-1, evaluated in O(1) from prefix sums of w,
    w*y, w*y**2 in float64, with y the values centred on their weighted mean
    (and scaled to [-1, 1]) to limit cancellation; the w*y**2 term cancels
    out of the recursion and is never formed. Because the cost satisfies the
    quadrangle inequality the (leftmost) argmin is non-decreasing in i, so
    each layer is solved by divide and conquer over i; the last layer only
    needs ``D[k][m]``, one O(m) scan. The kernels are compiled with numba
    (no fastmath). An int32 argmin table of (k-1) x (m+1) entries is kept
    for backtracking.

    Complexity: O(n log n) for the sort plus O(k m log m) time for the DP,
    O(k m) memory. The result is deterministic; among partitions of equal
    SSE any one may be returned.

    References
    ----------
    .. [1] D. Yang, W. Yu, A. Zhou, H. Mu, G. Yao, X. Wang, "DP-Net: Dynamic
       Programming Guided Deep Neural Network Compression", arXiv:2003.09615,
       2020.
    .. [2] H. Wang, M. Song, "Ckmeans.1d.dp: Optimal k-means Clustering in
       One Dimension by Dynamic Programming", The R Journal 3(2):29-33, 2011.

    Examples
    --------
    >>> codebook, index = dp_kmeans([0.0, 0.1, 1.0, 1.1, 5.0], 3)
    >>> codebook
    array([0.05, 1.05, 5.  ])
    >>> index
    array([0, 0, 1, 1, 2])
    """
    x, k, w, shape = _check_inputs(values, k, weights)
    u, uw = _unique_weighted(x, w)
    m = u.size
    if k >= m:
        starts = np.arange(m)
    elif k == 1:
        starts = np.zeros(1, dtype=np.int64)
    else:
        if m >= 2**31 - 1:  # the argmin table is int32
            raise ValueError(
                f"values must have fewer than 2**31 - 1 distinct entries, not {m}"
            )
        shift, scale = _shift_scale(u, uw)
        # Scaling the weights scales every SSE alike; it keeps tiny weights
        # from underflowing in S1**2.
        starts = _dp_partition(u, uw / uw.max(), k, shift, scale)
    return _finish(x, w, shape, u, uw, starts)


# ---------------------------------------------------------------------------
# Lloyd's k-means baselines (Deep Compression, §3.2)
# ---------------------------------------------------------------------------


@_jit
def _upper_bound(u, v):
    """Number of entries of the ascending ``u`` that are <= v (binary search)."""
    lo = 0
    hi = u.size
    while lo < hi:
        mid = (lo + hi) >> 1
        if u[mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def _lloyd(u, uw, centroids, max_iter, shift):
    """Lloyd's iterations over sorted distinct values with weights.

    In 1-D the nearest-centroid regions of the sorted centroids are the
    intervals between consecutive midpoints, so the assignment step is a
    binary search per centroid and the update step reads cluster sums off
    prefix sums: O(k log m) per iteration after O(m) set-up. A value exactly
    at a midpoint goes to the lower centroid. An empty cluster keeps its
    centroid. Stops when the assignment no longer changes (then the centroids
    are the means of their clusters) or after ``max_iter`` iterations.

    Returns the end index (exclusive) of each centroid's run in ``u``.
    """
    m = u.size
    k = centroids.size
    p0, p1 = _prefix_sums(u, uw, shift, 1.0)
    c = centroids.copy()
    ends = np.full(k, -1, dtype=np.int64)
    new_ends = np.empty(k, dtype=np.int64)
    for _ in range(max_iter):
        # Insertion sort: k is small and c is nearly sorted (only an empty
        # cluster's stale centroid can fall out of order).
        for i in range(1, k):
            v = c[i]
            j = i - 1
            while j >= 0 and c[j] > v:
                c[j + 1] = c[j]
                j -= 1
            c[j + 1] = v
        for i in range(k - 1):
            # Values up to the midpoint go to the lower centroid (ties too);
            # halving first cannot overflow.
            new_ends[i] = _upper_bound(u, 0.5 * c[i] + 0.5 * c[i + 1])
        new_ends[k - 1] = m
        same = True
        for i in range(k):
            if new_ends[i] != ends[i]:
                same = False
        if same:
            break
        start = 0
        for i in range(k):
            e = new_ends[i]
            ends[i] = e
            if e > start:
                c[i] = (p1[e] - p1[start]) / (p0[e] - p0[start]) + shift
            start = max(start, e)
    return ends


def _init_centroids(u, uw, k, init, seed):
    """Initial centroids of Deep Compression's three schemes (see kmeans_1d)."""
    if init == "linear":
        return np.linspace(u[0], u[-1], k)
    if init == "density":
        # Inverse of the (weighted) empirical CDF at the midpoints (i+0.5)/k.
        cdf = np.cumsum(uw)
        q = (np.arange(k) + 0.5) / k * cdf[-1]
        return u[np.minimum(np.searchsorted(cdf, q, side="left"), u.size - 1)]
    rng = np.random.default_rng(seed)
    return rng.choice(u, size=min(k, u.size), replace=False)


def kmeans_1d(values, k, *, init, seed=0, weights=None, max_iter=300):
    """Lloyd's k-means in 1-D with Deep Compression's centroid initialisations.

    The baselines of Han et al. [1]_ §3.2 ("centroid initialization") for
    weight sharing; :func:`dp_kmeans` gives the optimum they approximate.

    Parameters
    ----------
    values : array_like of int or float, any shape
        The values to cluster; flattened, converted to float64, must be finite
        and non-empty.
    k : int
        Number of initial centroids, >= 1.
    init : {"linear", "density", "random"}
        ``"linear"``: k centroids evenly spaced between the minimum and the
        maximum value. ``"density"``: the (weighted) empirical quantiles at
        probabilities (i + 0.5)/k, i = 0..k-1 (inverse-CDF quantiles, i.e.
        the CDF's y axis split into k equal bands, taking each band's
        midpoint). ``"random"`` (Forgy): min(k, #distinct) distinct values
        drawn uniformly without replacement with
        ``np.random.default_rng(seed)``.
    seed : int, optional
        Seed for ``init="random"``; ignored otherwise.
    weights : array_like, optional
        Non-negative finite weights, same shape as ``values``, not all zero.
        Values with weight 0 take no part (neither in the initialisation nor
        in the means) and are indexed to their nearest centroid.
    max_iter : int, optional
        Maximum number of Lloyd iterations, >= 1.

    Returns
    -------
    codebook : ndarray of float64, shape (c,)
        Strictly increasing means of the non-empty clusters, c <= k.
    index : ndarray of int64, shape ``values.shape``
        Cluster of each value; ``codebook[index]`` is the reconstruction.

    Raises
    ------
    TypeError, ValueError
        As :func:`dp_kmeans`; also ValueError for an unknown ``init`` and
        TypeError/ValueError for a ``max_iter`` that is not an integer >= 1.

    Notes
    -----
    The iterations are exact Lloyd steps (assign each value to its nearest
    centroid, ties to the lower; move each centroid to its cluster's weighted
    mean; an empty cluster keeps its centroid) run on the sorted distinct
    values, so each costs O(k log m). They stop once the assignment is
    stable. Empty clusters are dropped from the result, and the codebook is
    the means of the final clusters.

    References
    ----------
    .. [1] S. Han, H. Mao, W. J. Dally, "Deep Compression: Compressing Deep
       Neural Networks with Pruning, Trained Quantization and Huffman Coding",
       ICLR 2016.
    """
    if not (isinstance(init, str) and init in _INITS):
        raise ValueError(f"init must be one of {', '.join(_INITS)}, not {init!r}")
    max_iter = _check_int("max_iter", max_iter, 1)
    x, k, w, shape = _check_inputs(values, k, weights)
    u, uw = _unique_weighted(x, w)
    centroids = _init_centroids(u, uw, k, init, seed)
    shift, _ = _shift_scale(u, uw)
    ends = _lloyd(u, uw, centroids.astype(np.float64), max_iter, shift)
    ends = np.unique(ends)  # drops empty clusters (repeated ends)
    starts = np.concatenate(([0], ends[:-1]))
    return _finish(x, w, shape, u, uw, starts)


# ---------------------------------------------------------------------------
# Dispatch and evaluation
# ---------------------------------------------------------------------------


def cluster(values, k, *, method="dp", weights=None, seed=0):
    """Quantise ``values`` to at most ``k`` shared values with the named method.

    Parameters
    ----------
    values, k, weights
        As :func:`dp_kmeans`.
    method : {"dp", "kmeans-linear", "kmeans-density", "kmeans-random"}
        ``"dp"``: :func:`dp_kmeans` (optimal). ``"kmeans-<init>"``:
        :func:`kmeans_1d` with that initialisation.
    seed : int, optional
        Seed for ``"kmeans-random"``; ignored otherwise.

    Returns
    -------
    codebook : ndarray of float64
    index : ndarray of int64, shape ``values.shape``

    Raises
    ------
    ValueError
        For an unknown ``method``, and as :func:`dp_kmeans`.
    """
    if method == "dp":
        return dp_kmeans(values, k, weights=weights)
    if isinstance(method, str) and method in QUANTIZERS:
        return kmeans_1d(values, k, init=method[len("kmeans-"):], seed=seed, weights=weights)
    raise ValueError(f"method must be one of {', '.join(QUANTIZERS)}, not {method!r}")


def sse(values, codebook, index, *, weights=None):
    """Weighted sum of squared errors of the reconstruction ``codebook[index]``.

    Computed directly from the residuals (not from prefix sums), in float64
    with NumPy's pairwise summation.

    Parameters
    ----------
    values : array_like
    codebook : array_like, shape (c,)
    index : array_like of int, same shape as ``values``
    weights : array_like, optional
        Same shape as ``values``; default all ones.

    Returns
    -------
    float
    """
    x = np.asarray(values, dtype=np.float64)
    r = x - np.asarray(codebook, dtype=np.float64)[np.asarray(index)]
    r = r.ravel()
    if weights is None:
        return float(np.sum(r * r))
    return float(np.sum(np.asarray(weights, dtype=np.float64).ravel() * r * r))
