"""Scribble strokes: held-out splits and folds that never cut a stroke in two.

Voxels of one stroke are near copies of each other: their features come from
overlapping neighbourhoods. A held-out set drawn voxel by voxel from the same
strokes as the training set scores about 1.0 whatever the model, so early
stopping learns nothing from it and the printed accuracy says nothing. Here the
unit of a split is a *stroke*: a connected component (8-connected in 2D,
26-connected in 3D) of voxels with the same label value, found over the whole
volume, whatever the blocks.

A class painted as a single stroke (or as fewer strokes than a split needs) has
its largest strokes cut into pieces along their longest extent: the held-out
piece is then the far end of the stroke, spatially apart from the rest but for
the voxels along the cut. A class of one voxel stays on the training side.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["HELD_OUT", "describe_split", "held_out_split", "stroke_folds", "stroke_ids"]

#: Share of each class's labelled voxels held out to stop boosting and to report accuracy.
HELD_OUT = 0.2


def stroke_ids(coords: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return the stroke of every labelled voxel: 0, 1, ... numbered in C order.

    Parameters
    ----------
    coords : ndarray, shape (n, ndim)
        Coordinates of the labelled voxels in the whole volume (any order, no repeats).
    values : ndarray, shape (n,)
        Their label values.

    Returns
    -------
    ndarray, shape (n,), int64
        Voxels in one connected component (full connectivity) of one label value share
        an id; ids are numbered by each stroke's first voxel in C order.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(coords)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    coords = np.asarray(coords, dtype=np.int64)
    lo = coords.min(axis=0)
    shape = tuple(int(s) for s in coords.max(axis=0) - lo + 3)  # a margin of one each side
    shifted = coords - lo + 1
    linear = np.ravel_multi_index(tuple(shifted.T), shape)
    order = np.argsort(linear, kind="stable")
    ranked = linear[order]
    rows, cols = [], []
    # half the neighbourhood: each edge once (the other half is its mirror)
    for step in itertools.product((-1, 0, 1), repeat=coords.shape[1]):
        if step <= (0,) * len(step):
            continue
        other = np.ravel_multi_index(tuple((shifted + np.asarray(step)).T), shape)
        at = np.searchsorted(ranked, other)
        at = np.minimum(at, n - 1)
        hit = ranked[at] == other
        mate = order[at[hit]]
        same = values[hit] == values[mate]
        rows.append(np.flatnonzero(hit)[same])
        cols.append(mate[same])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # canonical numbering: by each component's first voxel in C order
    first = np.full(component.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, component[order], np.arange(n))
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[component]


def _pieces(rows: np.ndarray, strokes: np.ndarray, coords: np.ndarray, need: int) -> list:
    """Return the class's strokes as row-index arrays, cut into ``need`` pieces.

    The largest is cut along its longest extent until there are ``need`` pieces (or as
    many as the class has voxels).
    """
    pieces = [rows[strokes[rows] == s] for s in np.unique(strokes[rows])]
    need = min(need, len(rows))
    while len(pieces) < need:
        pieces.sort(key=len)
        big = pieces.pop()
        parts = min(need - len(pieces), len(big))
        extent = np.ptp(coords[big], axis=0)
        axis = int(extent.argmax())
        # along the longest extent; level voxels in C order, whatever the rows' order
        along = big[np.lexsort((*coords[big].T[::-1], coords[big, axis]))]
        pieces += [p for p in np.array_split(along, parts) if len(p)]
    return pieces


def held_out_split(
    y: np.ndarray,
    strokes: np.ndarray,
    coords: np.ndarray,
    *,
    fraction: float = HELD_OUT,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into training and held-out sets, whole strokes on each side.

    Per class, strokes are drawn in a seeded random order onto the held-out side until
    it holds ``fraction`` of the class's voxels, always keeping one stroke on the
    training side; a stroke that would carry the held-out side far past its share is
    passed over (the smallest is taken if none fits). A class with one stroke has it
    cut: its far end (``fraction`` of its voxels along its longest extent) is held out.

    Returns
    -------
    train, held : ndarray of int
        Sorted row indices.
    """
    rng = np.random.default_rng(seed)
    held = []
    for cls in np.unique(y):
        rows = np.flatnonzero(y == cls)
        if len(rows) < 2:
            continue
        pieces = _pieces(rows, strokes, coords, 2)
        if len(np.unique(strokes[rows])) == 1:
            # one stroke, cut in two along its longest extent: hold out its end
            along = np.concatenate(pieces)
            n_held = min(max(1, int(round(fraction * len(along)))), len(along) - 1)
            held.append(along[len(along) - n_held :])
            continue
        target = fraction * len(rows)
        chosen: list[np.ndarray] = []
        count = 0
        for k in rng.permutation(len(pieces)):
            if len(chosen) == len(pieces) - 1 or count >= target:
                break
            if count + len(pieces[k]) <= 1.5 * target:
                chosen.append(pieces[k])
                count += len(pieces[k])
        if not chosen:
            chosen = [min(pieces, key=len)]
        held += chosen
    held_rows = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(y)), held_rows)
    return train, held_rows


def stroke_folds(
    y: np.ndarray,
    strokes: np.ndarray,
    coords: np.ndarray,
    *,
    n_folds: int,
    seed: int = 0,
) -> np.ndarray:
    """Assign every row to one of ``n_folds`` folds, whole strokes (or pieces) per fold.

    Per class, pieces (strokes, the largest cut until there are ``n_folds``) go, largest
    first, to the fold holding the fewest of the class's voxels so far; the folds'
    names are then shuffled per class (seeded), so no fold always gets the largest
    strokes. Every fold's complement holds every class that has two voxels or more.

    Returns
    -------
    ndarray, shape (n,), int64
        Fold of each row, 0..n_folds-1.
    """
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(y), dtype=np.int64)
    for cls in np.unique(y):
        rows = np.flatnonzero(y == cls)
        pieces = _pieces(rows, strokes, coords, n_folds)
        pieces.sort(key=len, reverse=True)
        load = np.zeros(n_folds, dtype=np.int64)
        names = rng.permutation(n_folds)
        for piece in pieces:
            k = int(load.argmin())
            folds[piece] = names[k]
            load[k] += len(piece)
    return folds


def describe_split(y: np.ndarray, strokes: np.ndarray) -> dict[int, int]:
    """Strokes per class (by class index), for the training summary."""
    return {int(c): int(len(np.unique(strokes[y == c]))) for c in np.unique(y)}
