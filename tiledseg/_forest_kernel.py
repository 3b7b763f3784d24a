"""The forest kernels of :mod:`tiledseg.forest`, compiled by numba: the walk and the grower.

They are imported only when a forest predicts or grows; numba caches the machine code
beside this file, or in its user cache where this folder is read-only, so later
processes only load it.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def walk(X, feature, threshold, left, values, roots, depths, out, chunk):  # pragma: no cover
    """Write into ``out`` the mean over trees of the leaf values each row of ``X`` reaches.

    A node's children are ``left[i]`` and ``left[i] + 1``; a leaf's ``left`` is itself and its
    threshold ``+inf``, so a walk of a tree's full depth ends on the leaf whatever its depth.
    """
    n, k, n_trees = X.shape[0], values.shape[1], roots.shape[0]
    acc = np.zeros((chunk, k))
    # unsigned indices: numba adds a negative-index wraparound to every signed one, and
    # without it the walk ran 2.6x faster (0.53 s against 1.38 s for 2^20 voxels)
    nodes = np.empty(chunk, np.uint32)
    for start in range(0, n, chunk):
        width = min(chunk, n - start)
        acc[:] = 0.0
        for t in range(n_trees):
            root = np.uint32(roots[t])
            for j in range(width):
                nodes[j] = root
            # every row takes the tree's full depth: no branch to mispredict, and the
            # rows' walks overlap in the pipeline
            for _ in range(depths[t]):
                for j in range(width):
                    node = nodes[j]
                    x = X[np.uint64(start + j), np.uint32(feature[node])]
                    nodes[j] = np.uint32(left[node]) + np.uint32(x > threshold[node])
            for j in range(width):
                for c in range(k):
                    acc[j, c] += values[nodes[j], c]
        for j in range(width):
            for c in range(k):
                out[start + j, c] = acc[j, c] / n_trees


#: Feature values closer than this are one value to a split (scikit-learn's FEATURE_THRESHOLD).
_SAME = 1e-7
_EPS = np.finfo(np.float64).eps


@numba.njit(nogil=True, cache=True, inline="always")
def _gini(sums, total):  # pragma: no cover
    """Gini impurity of weighted class sums (scikit-learn's formula)."""
    squares = 0.0
    for c in range(sums.shape[0]):
        squares += sums[c] * sums[c]
    return 1.0 - squares / (total * total)


@numba.njit(nogil=True, cache=True, inline="always")
def _gini_rest(sums, sums_l, total):  # pragma: no cover
    """:func:`_gini` of ``sums - sums_l`` (no array made: it runs for every candidate split)."""
    squares = 0.0
    for c in range(sums.shape[0]):
        rest = sums[c] - sums_l[c]
        squares += rest * rest
    return 1.0 - squares / (total * total)


@numba.njit(nogil=True, cache=True, inline="always")
def _class_sums(y, w, rows, sums):  # pragma: no cover
    """Write the weighted class sums of ``rows`` into ``sums``; return their total weight."""
    sums[:] = 0.0
    total = 0.0
    for i in range(rows.shape[0]):
        sums[y[rows[i]]] += w[rows[i]]
        total += w[rows[i]]
    return total


@numba.njit(nogil=True, cache=True)
def _sample(weight, bootstrap):  # pragma: no cover
    """Return a tree's voxel weights and the voxels that weigh anything: ``(w, rows)``.

    With ``bootstrap``, n draws with probabilities in proportion to ``weight``, a voxel
    weighing the times it was drawn (scikit-learn >= 1.8; drawing uniformly and
    multiplying the counts by the weights was 0.015-0.025 mean IoU worse on
    superalloy-2d); else every voxel with its weight.
    """
    n = weight.shape[0]
    if bootstrap:
        w = np.zeros(n)
        cumulative = np.cumsum(weight)
        for _ in range(n):
            u = np.random.random() * cumulative[-1]  # noqa: NPY002
            w[min(np.searchsorted(cumulative, u), n - 1)] += 1
    else:
        w = weight.copy()
    return w, np.flatnonzero(w > 0.0)


@numba.njit(nogil=True, cache=True)
def _best_split(X, y, w, rows, sums, total, max_features, perm, vals, sums_l):  # pragma: no cover
    """Find the best split of a node's ``rows``: ``(feature, threshold)``, feature -1 for none.

    ``sums`` and ``total`` are the node's weighted class sums and weight; ``perm``,
    ``vals`` and ``sums_l`` are scratch arrays the grower reuses from node to node.
    """
    m, p = rows.shape[0], X.shape[1]
    best_proxy, best_f, best_t = -np.inf, -1, 0.0
    # draw max_features features, constant ones included, and more until one varies
    # (scikit-learn's rule: in small nodes most draws are constant, and the tree
    # stays random there)
    remaining, drawn, varying = p, 0, 0
    while remaining > 0 and (drawn < max_features or varying == 0):
        r = np.random.randint(0, remaining)  # noqa: NPY002
        remaining -= 1
        drawn += 1
        perm[r], perm[remaining] = perm[remaining], perm[r]
        f = perm[remaining]
        for i in range(m):
            vals[i] = X[np.uint64(rows[i]), np.uint64(f)]
        order = np.argsort(vals[:m])
        if np.float64(vals[order[m - 1]]) <= np.float64(vals[order[0]]) + _SAME:
            continue
        varying += 1
        sums_l[:] = 0.0
        w_l = 0.0
        for i in range(m - 1):
            s = np.uint64(rows[np.uint64(order[i])])
            sums_l[y[s]] += w[s]
            w_l += w[s]
            a, b = np.float64(vals[order[i]]), np.float64(vals[order[i + 1]])
            if b <= a + _SAME:
                continue
            # scikit-learn's proxy, formula for formula: two pure children give
            # exactly 0, so ties go to the feature drawn first, not to rounding
            w_r = total - w_l
            proxy = -w_l * _gini(sums_l, w_l) - w_r * _gini_rest(sums, sums_l, w_r)
            if proxy > best_proxy:
                best_proxy, best_f = proxy, f
                best_t = a / 2.0 + b / 2.0
                if best_t == b or best_t == np.inf or best_t == -np.inf:
                    best_t = a
    return best_f, best_t


@numba.njit(nogil=True, cache=True, inline="always")
def _node_capacity(m_all, max_depth):  # pragma: no cover
    """Return the most nodes a tree of ``m_all`` sampled voxels can have (fewer if limited)."""
    cap = 2 * m_all - 1
    if 0 <= max_depth < 40:
        cap = min(cap, 2 ** (max_depth + 1) - 1)
    return cap


@numba.njit(nogil=True, cache=True, inline="always")
def _attach(left, right, parent, is_left, node):  # pragma: no cover
    """Record ``node`` as its parent's left or right child (the root has parent -1)."""
    if parent >= 0:
        if is_left:
            left[parent] = node
        else:
            right[parent] = node


@numba.njit(nogil=True, cache=True, inline="always")
def _partition(X, idx, start, end, f, t):  # pragma: no cover
    """Reorder ``idx[start:end]``: rows with feature ``f`` <= ``t`` first.

    Returns where the other rows start.
    """
    lo, hi = start, end - 1
    while lo <= hi:
        if X[idx[lo], f] <= t:
            lo += 1
        else:
            idx[lo], idx[hi] = idx[hi], idx[lo]
            hi -= 1
    return lo


@numba.njit(nogil=True, cache=True, inline="always")
def _gain(y, w, rows_l, sums, sums_l, total, gini):  # pragma: no cover
    """Return the weighted Gini decrease of splitting a node into ``rows_l`` and the rest.

    ``sums``, ``total`` and ``gini`` are the node's class sums, weight and impurity;
    ``sums_l`` is scratch.
    """
    w_l = _class_sums(y, w, rows_l, sums_l)
    w_r = total - w_l
    return total * gini - w_l * _gini(sums_l, w_l) - w_r * _gini_rest(sums, sums_l, w_r)


@numba.njit(nogil=True, cache=True, inline="always")
def _push_children(stack, top, start, lo, end, depth, node):  # pragma: no cover
    """Push the children of ``node`` (rows ``start:lo`` and ``lo:end``); return the new top.

    The left child goes on top: nodes are numbered depth first, left before right.
    """
    for side_start, side_end, side in ((lo, end, 0), (start, lo, 1)):
        stack[top, 0], stack[top, 1], stack[top, 2] = side_start, side_end, depth + 1
        stack[top, 3], stack[top, 4] = node, side
        top += 1
    return top


@numba.njit(nogil=True, cache=True)
def grow(X, y, weight, n_classes, max_depth, max_features, bootstrap, seed):  # pragma: no cover
    """Grow one CART tree (Gini, best split among ``max_features`` random features).

    Returns ``(feature, threshold, left, right, value, importances, depth)`` for the tree's
    nodes (``left`` -1 at a leaf); ``max_depth`` < 0: grown until pure.
    """
    p = X.shape[1]
    # numba's generator of this thread (compiled code takes no numpy Generator from a
    # string signature), seeded per tree: a tree is the same on whichever thread grows it
    np.random.seed(seed)  # noqa: NPY002
    w, idx = _sample(weight, bootstrap)
    m_all = idx.shape[0]
    cap = _node_capacity(m_all, max_depth)
    feature = np.zeros(cap, np.int32)
    threshold = np.full(cap, np.inf)
    left = np.full(cap, -1, np.int64)
    right = np.full(cap, -1, np.int64)
    value = np.zeros((cap, n_classes))
    importances = np.zeros(p)
    # a depth-first stack of (start, end, depth, parent, is-left) over ``idx``
    stack = np.empty((cap, 5), np.int64)
    stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3], stack[0, 4] = 0, m_all, 0, -1, 0
    top, count, deepest = 1, 0, 0
    vals = np.empty(m_all, np.float32)
    perm = np.arange(p)
    sums = np.empty(n_classes)
    sums_l = np.empty(n_classes)
    while top > 0:
        top -= 1
        start, end, depth, parent = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
        node = count
        count += 1
        _attach(left, right, parent, stack[top, 4], node)
        deepest = max(deepest, depth)
        total = _class_sums(y, w, idx[start:end], sums)
        gini = _gini(sums, total)
        for c in range(n_classes):
            value[node, c] = sums[c] / total
        if (0 <= max_depth <= depth) or end - start < 2 or gini <= _EPS:
            continue
        best_f, best_t = _best_split(
            X, y, w, idx[start:end], sums, total, max_features, perm, vals, sums_l
        )
        if best_f < 0:
            continue
        lo = _partition(X, idx, start, end, best_f, best_t)
        feature[node] = best_f
        threshold[node] = best_t
        importances[best_f] += _gain(y, w, idx[start:lo], sums, sums_l, total, gini)
        top = _push_children(stack, top, start, lo, end, depth, node)
    return (
        feature[:count].copy(),
        threshold[:count].copy(),
        left[:count].copy(),
        right[:count].copy(),
        value[:count].copy(),
        importances,
        deepest,
    )
