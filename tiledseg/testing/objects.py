"""Objects with a known answer: touching balls, and the whole-volume labellings to match."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["canonical", "touching_balls", "whole_volume_split"]


def canonical(values: np.ndarray, connectivity: int, min_size: int = 0) -> np.ndarray:
    """Return the whole-volume components of each nonzero value, numbered by first voxel."""
    import cc3d

    labels = cc3d.connected_components(values, connectivity=connectivity, out_dtype=np.uint64)
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    ids, first, counts = np.unique(flat[where], return_index=True, return_counts=True)
    keep = counts >= min_size
    order = np.argsort(first[keep])
    lut = np.zeros(int(flat.max()) + 1, np.uint64)
    lut[ids[keep][order]] = np.arange(1, int(keep.sum()) + 1)
    return lut[labels]


def touching_balls(
    shape: Sequence[int],
    spacing: Sequence[float],
    pairs: int,
    *,
    seed: int,
    radii: tuple[float, float] = (4.0, 6.0),
    apart: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Return pairs of overlapping balls (class 2 on class 1) in physical space, and centres.

    Each pair's centres are 1.4 radii apart, so the two balls share a neck. With ``apart``
    no pair touches another (each ball is then one object of a right split).
    """
    rng = np.random.default_rng(seed)
    spacing = np.asarray(spacing, float)
    size = np.asarray(shape) * spacing
    labels = np.ones(tuple(shape), np.uint8)
    centres: list[np.ndarray] = []
    for _ in range(1000 * pairs):
        if len(centres) == 2 * pairs:
            return labels, np.asarray(centres)
        radius = rng.uniform(*radii)
        first = rng.uniform(radius, size - radius)
        step = rng.normal(size=len(shape))
        second = first + 1.4 * radius * step / np.linalg.norm(step)
        if not ((second >= radius) & (second < size - radius)).all():
            continue
        near = [_ball(labels.shape, spacing, c, radius + 3) for c in (first, second)]
        if apart and any((labels[box][inside] == 2).any() for box, inside in near):
            continue  # (it would touch another pair)
        for c in (first, second):
            box, inside = _ball(labels.shape, spacing, c, radius)
            labels[box][inside] = 2
        centres += [first, second]
    if len(centres) == 2 * pairs:
        return labels, np.asarray(centres)
    raise ValueError(f"{pairs} pairs of balls do not fit in {tuple(shape)}; give fewer")


def _ball(
    shape: Sequence[int], spacing: np.ndarray, centre: np.ndarray, radius: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Return the box around a ball and the ball's voxels in it."""
    low = np.maximum(0, np.floor((centre - radius) / spacing)).astype(int)
    high = np.minimum(shape, np.ceil((centre + radius) / spacing) + 1).astype(int)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    grid = np.ogrid[box]
    inside = sum((g * s - c) ** 2 for g, s, c in zip(grid, spacing, centre, strict=True))
    return box, inside < radius**2


def whole_volume_split(
    values: np.ndarray, spacing: Sequence[float], radius: float, connectivity: int
) -> np.ndarray:
    """Return ``--split distance`` of the whole volume at once, numbered by first voxel.

    Written from the definition with scipy and scikit-image, apart from tiledseg's kernels:
    the distance to the class's border capped at ``radius``; seeds where it is the largest
    of the class's voxels within ``radius / 2`` along each axis; scikit-image's watershed
    from the seeds down the distance, equal distances in C order; voxels no seed reaches
    keep their plain object.
    """
    import edt
    from scipy.ndimage import maximum_filter
    from skimage.measure import label
    from skimage.segmentation import watershed

    distance = np.minimum(edt.edt(values, anisotropy=tuple(spacing)), np.float32(radius))
    window = [2 * int(radius / 2 // s) + 1 for s in spacing]
    rank = {4: 1, 8: 2, 6: 1, 18: 2, 26: 3}[connectivity]
    pieces = np.zeros(values.shape, np.int64)
    height = np.lexsort((np.arange(values.size), -distance.ravel())).argsort()
    height = height.reshape(values.shape)
    for value in np.unique(values[values > 0]):
        own = values == value
        masked = np.where(own, distance, np.float32(-1))
        seeds = own & (masked >= maximum_filter(masked, size=window, mode="nearest"))
        markers = label(seeds, connectivity=rank)
        flooded = watershed(height, markers, mask=own, connectivity=rank)
        plain = label(own, connectivity=rank)
        lost = own & (flooded == 0)
        flooded[lost] = plain[lost] + flooded.max()  # (an object no seed lies in stays whole)
        pieces[own] = flooded[own] + pieces.max()
    return canonical(pieces, 26)  # (pieces are numbers: cc3d keeps touching ones apart)
