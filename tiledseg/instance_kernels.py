"""Per-block kernels of the instance labelling: components, their measures, border pairs.

Pure functions of numpy arrays; :mod:`tiledseg.instances` runs them blockwise. A block's
components are numbered by their first voxel in C order, which within a box is the
volume's C order too, so merging blocks and ranking objects by first voxel needs only
each component's first voxel.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CONNECTIVITY",
    "block_measures",
    "border_pairs",
    "foreground",
    "local_components",
    "neighbour_offsets",
    "split_distance",
    "split_pieces",
    "split_seeds",
]

#: The connectivities each dimensionality allows, and the default (the largest).
CONNECTIVITY = {2: (4, 8), 3: (6, 18, 26)}


def foreground(
    labels: np.ndarray | None,
    classes: Sequence[int],
    *,
    probabilities: np.ndarray | None = None,
    threshold: float | None = None,
    class_values: Sequence[int] = (),
) -> np.ndarray:
    """Return the class of each voxel that belongs to an object, 0 elsewhere (uint16).

    Parameters
    ----------
    labels : ndarray or None
        The predicted labels (used without ``threshold``).
    classes : sequence of int
        The class values whose voxels form objects.
    probabilities : ndarray, shape (k, *shape), optional
        uint8 probabilities, for ``threshold``.
    threshold : float, optional
        A voxel belongs to class K's objects where K's probability is at least this (0..1);
        where several chosen classes reach it, the most probable (the first on a tie).
    class_values : sequence of int
        The class value of each of the ``k`` probability channels.
    """
    if threshold is None:
        return np.where(np.isin(labels, classes), labels, 0).astype(np.uint16)
    level = int(np.ceil(threshold * 255 - 1e-9))  # (probabilities are stored as 255 * p)
    channels = [list(class_values).index(c) for c in classes]
    chosen = probabilities[channels].astype(np.int16)
    chosen[chosen < level] = -1
    best = chosen.argmax(axis=0)
    reached = chosen.max(axis=0) >= 0
    values = np.asarray(classes, np.uint16)[best]
    return np.where(reached, values, 0).astype(np.uint16)


def local_components(values: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Label the connected components of each nonzero value; number them by first voxel.

    Components of different values are different components, even where they touch.

    Returns
    -------
    (ndarray of uint32, int)
        The block's component labels (0: background) and their number.
    """
    import cc3d

    labels, n = cc3d.connected_components(
        values, connectivity=connectivity, return_N=True, out_dtype=np.uint32
    )
    if n == 0:
        return labels.astype(np.uint32, copy=False), 0
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    found, first = np.unique(flat[where], return_index=True)
    order = np.argsort(first, kind="stable")  # (cc3d numbers in scan order already)
    if not np.array_equal(found[order], np.arange(1, n + 1)):
        renumber = np.zeros(n + 1, np.uint32)
        renumber[found[order]] = np.arange(1, n + 1, dtype=np.uint32)
        labels = renumber[labels]
    return labels, int(n)


def block_measures(
    labels: np.ndarray,
    n: int,
    values: np.ndarray,
    *,
    origin: Sequence[int],
    shape: Sequence[int],
    intensity: np.ndarray | None = None,
    probability: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Return each component's measures, to be summed (or min'd, max'd) over blocks.

    Parameters
    ----------
    labels : ndarray of uint32
        The block's components, 1..n by first voxel.
    n : int
        Their number.
    values : ndarray
        Each voxel's class (the component's class).
    origin : sequence of int
        The block's first voxel in the volume.
    shape : sequence of int
        The volume's shape (for the first voxels' C-order index).
    intensity : ndarray, optional
        The image's (first channel's) values over the block.
    probability : ndarray, optional
        Each voxel's probability of its own class (0..1).

    Returns
    -------
    dict
        ``first`` (C-order index in the volume), ``count``, ``sum`` (of the coordinates,
        ``(n, ndim)``), ``low`` and ``high`` (bounding box, inclusive), ``class``, and
        ``intensity`` and ``probability`` sums where given.
    """
    ndim = labels.ndim
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    ids = flat[where].astype(np.int64) - 1
    coords = np.stack(np.unravel_index(where, labels.shape), axis=1) + np.asarray(origin)
    count = np.bincount(ids, minlength=n).astype(np.int64)
    sums = np.stack([np.bincount(ids, coords[:, a], minlength=n) for a in range(ndim)], axis=1)
    low = np.full((n, ndim), np.iinfo(np.int64).max, np.int64)
    high = np.full((n, ndim), -1, np.int64)
    for a in range(ndim):
        np.minimum.at(low[:, a], ids, coords[:, a])
        np.maximum.at(high[:, a], ids, coords[:, a])
    _, first_at = np.unique(ids, return_index=True)  # (where is sorted: the first voxels)
    first = np.ravel_multi_index(tuple(coords[first_at].T), tuple(shape)).astype(np.int64)
    out = {
        "first": first,
        "count": count,
        "sum": sums,
        "low": low,
        "high": high,
        "class": values.ravel()[where[first_at]].astype(np.int64),
    }
    if intensity is not None:
        out["intensity"] = np.bincount(ids, intensity.ravel()[where].astype(np.float64), n)
    if probability is not None:
        out["probability"] = np.bincount(ids, probability.ravel()[where].astype(np.float64), n)
    return out


def neighbour_offsets(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    """Return the offsets of a voxel's neighbours under ``connectivity`` (no zero offset)."""
    most = {4: 1, 8: 2, 6: 1, 18: 2, 26: 3}[connectivity]  # (nonzero components at most)
    return [d for d in itertools.product((-1, 0, 1), repeat=ndim) if 0 < sum(map(abs, d)) <= most]


def border_pairs(
    labels: np.ndarray,
    inner: tuple[slice, ...],
    block_of: Sequence[np.ndarray],
    grid: Sequence[int],
    *,
    connectivity: int,
) -> np.ndarray:
    """Return the pairs of components that touch across the block's low faces.

    Parameters
    ----------
    labels : ndarray of uint32
        Every block's own component labels over the block grown by one voxel (clipped).
    inner : tuple of slice
        The block's position in ``labels``.
    block_of : sequence of ndarray
        Per axis, the grid index of the block each position of ``labels`` lies in.
    grid : sequence of int
        The block grid's shape (blocks are named by their linear index in it).
    connectivity : int
        As for :func:`local_components`.

    Returns
    -------
    ndarray of int64, shape (m, 4)
        Unique rows ``(block, label, other block, other label)``: a voxel of this block and
        a neighbour beyond one of its low faces, both in components. Every pair of
        neighbouring voxels in two blocks is found from one of them: the one whose block
        the other lies below along some axis. Pairs of two classes are found too: the
        caller, which knows each component's class, drops them.
    """
    ndim = labels.ndim
    own = int(
        np.ravel_multi_index(
            tuple(int(b[i.start]) for b, i in zip(block_of, inner, strict=True)), tuple(grid)
        )
    )
    found = []
    for axis in range(ndim):
        if inner[axis].start == 0:
            continue  # the volume's edge (or this side is no face)
        face = list(inner)
        face[axis] = slice(inner[axis].start, inner[axis].start + 1)
        for d in neighbour_offsets(ndim, connectivity):
            if d[axis] != -1:
                continue
            there = tuple(slice(f.start + o, f.stop + o) for f, o in zip(face, d, strict=True))
            if any(t.start < 0 or t.stop > n for t, n in zip(there, labels.shape, strict=True)):
                there, here = _clip(face, there, labels.shape)
            else:
                here = tuple(face)
            a, b = labels[here], labels[there]
            both = (a > 0) & (b > 0)
            if not both.any():
                continue
            at = np.nonzero(both)
            others = np.ravel_multi_index(
                tuple(
                    blocks[t.start + i] for blocks, t, i in zip(block_of, there, at, strict=True)
                ),
                tuple(grid),
            )
            found.append(
                np.stack(
                    [
                        np.full(len(others), own),
                        a[at].astype(np.int64),
                        others,
                        b[at].astype(np.int64),
                    ],
                    axis=1,
                )
            )
    if not found:
        return np.zeros((0, 4), np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def split_distance(values: np.ndarray, *, spacing: Sequence[float], radius: float) -> np.ndarray:
    """Return each object voxel's distance to the nearest voxel not of its class, capped.

    The distance is Euclidean in the spacing's units (the edt package); the volume's edge
    is no boundary. Capped at ``radius``, it depends only on what lies within ``radius``
    of a voxel, so a block grown by that much gives its voxels' distances exactly.
    """
    import edt

    distance = edt.edt(np.ascontiguousarray(values), anisotropy=tuple(map(float, spacing)))
    np.minimum(distance, np.float32(radius), out=distance)
    return distance


def split_seeds(values: np.ndarray, distance: np.ndarray, *, window: Sequence[int]) -> np.ndarray:
    """Return the seed voxels: each the farthest from its class's border within its window.

    A voxel is a seed when no voxel of its class within ``window`` voxels along each axis
    (a box) lies farther from the border. Plateaus (such as the capped centres of objects
    wider than the cap) are seeds whole, and their connected seed voxels one seed.

    Returns
    -------
    ndarray of uint16
        The class of each seed voxel, 0 elsewhere.
    """
    from scipy.ndimage import maximum_filter

    size = tuple(2 * int(w) + 1 for w in window)
    seeds = np.zeros(values.shape, np.uint16)
    for value in np.unique(values[values > 0]):
        own = values == value
        masked = np.where(own, distance, np.float32(-1))
        peak = own & (masked >= maximum_filter(masked, size=size, mode="nearest"))
        seeds[peak] = value
    return seeds


def split_pieces(
    values: np.ndarray,
    distance: np.ndarray,
    seeds: np.ndarray,
    *,
    connectivity: int,
    origin: Sequence[int],
    shape: Sequence[int],
) -> np.ndarray:
    """Return each object voxel's seed: a watershed of the distance from the seeds.

    The seeds flood downhill from the objects' centres (scikit-image's watershed of the
    negated distance) within the voxels of their own class. Voxels of equal distance are
    flooded in the order of their place in the volume (C order), not in the order they
    were reached, which depends on how much of the volume is in view: so every block
    grown around a voxel breaks the ties as the whole volume does.

    Parameters
    ----------
    seeds : ndarray of int
        Seed ids (any positive integers), 0 elsewhere.
    origin, shape : sequence of int
        The array's first voxel in the volume, and the volume's shape.

    Returns
    -------
    ndarray of int64
        The seed id of each voxel a seed of its class reaches; 0 elsewhere.
    """
    from skimage.segmentation import watershed

    seeded = seeds > 0
    ids, inverse = np.unique(seeds[seeded], return_inverse=True)
    ids = np.concatenate([[0], ids])  # (0: background stays 0)
    small = np.int32 if values.size < 2**31 else np.int64  # (a block's counts: half the memory)
    local = np.zeros(seeds.shape, small)
    local[seeded] = inverse.ravel() + 1
    rank = {4: 1, 8: 2, 6: 1, 18: 2, 26: 3}[connectivity]
    inside = values > 0  # (the flood's height is the rank of (-distance, place) within)
    place = np.ravel_multi_index(
        tuple(np.ogrid[tuple(slice(o, o + n) for o, n in zip(origin, values.shape, strict=True))]),
        tuple(shape),
    )
    order = np.lexsort((np.broadcast_to(place, values.shape)[inside], -distance[inside]))
    ranks = np.empty(len(order), small)
    ranks[order] = np.arange(1, len(order) + 1, dtype=small)
    height = np.zeros(values.shape, small)
    height[inside] = ranks
    out = np.zeros(values.shape, np.int64)
    for value in np.unique(values[inside]):
        own = values == value
        markers = np.where(own, local, 0)
        if not markers.any():
            continue
        flooded = watershed(height, markers, mask=own, connectivity=rank)
        out[own] = ids[flooded[own]]
    return out


def _clip(
    face: Sequence[slice], there: Sequence[slice], shape: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Return ``there`` and ``face`` cut to where both lie inside ``shape``."""
    here_out, there_out = [], []
    for f, t, n in zip(face, there, shape, strict=True):
        cut_low = max(0, -t.start)
        cut_high = max(0, t.stop - n)
        here_out.append(slice(f.start + cut_low, f.stop - cut_high))
        there_out.append(slice(t.start + cut_low, t.stop - cut_high))
    return tuple(there_out), tuple(here_out)
