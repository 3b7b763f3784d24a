"""The forest walk of :mod:`tiledseg.forest`, compiled by numba (imported only when a
forest predicts; numba caches the machine code beside this file, or in its user cache
where this folder is read-only, so later processes only load it)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def walk(X, feature, threshold, children, values, roots, depths, out, chunk):  # pragma: no cover
    """Write into ``out`` the mean over trees of the leaf values each row of ``X`` reaches."""
    n, k, n_trees = X.shape[0], values.shape[1], roots.shape[0]
    acc = np.zeros((chunk, k))
    nodes = np.empty(chunk, np.int64)
    for start in range(0, n, chunk):
        width = min(chunk, n - start)
        acc[:] = 0.0
        for t in range(n_trees):
            for j in range(width):
                nodes[j] = roots[t]
            # every row takes the tree's full depth (a leaf leads to itself): no branch to
            # mispredict, and the rows' walks overlap in the pipeline
            for _ in range(depths[t]):
                for j in range(width):
                    node = nodes[j]
                    right = X[start + j, feature[node]] > threshold[node]
                    nodes[j] = children[2 * node + right]
            for j in range(width):
                for c in range(k):
                    acc[j, c] += values[nodes[j], c]
        for j in range(width):
            for c in range(k):
                out[start + j, c] = acc[j, c] / n_trees
