"""The graph-cut energy and its per-window solve: pure functions of numpy arrays.

Energy of a labelling ``l`` (class indices):

    E(l) = sum_p -log p_p(l_p)  +  sum_(p,q) w_pq [l_p != l_q]
    w_pq = weight * exp(-beta * ||I_p - I_q||^2) / dist(p, q) * norm

a contrast-sensitive Potts model (Boykov & Jolly 2001): neighbours of similar
intensity pay the full ``weight`` to disagree, across an edge of the image they
pay little. ``I`` is the image after a light Gaussian blur (:func:`contrast_image`).
``dist`` is the physical distance between the voxel centres in units of the finest
spacing, so a coarse z axis couples its slices more weakly; ``norm`` makes the 8-
and 26-neighbourhoods couple a voxel as strongly in total as the 4- and
6-neighbourhoods, so one weight means the same smoothing in each. ``beta`` is one
number for the whole image (:func:`beta_from_sums`); a per-window value would give
every block its own energy.

The solver works in integers. Every term is quantised with the same global
:data:`SCALE`, so a window's energy is exactly the restriction of the volume's
energy to that window, whichever block it belongs to.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from tiledseg.errors import TiledsegError
from tiledseg.features.bank import TRUNCATE, kernel_radius

__all__ = [
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "SCALE",
    "beta_from_sums",
    "check_contrast_sigma",
    "check_iterations",
    "check_neighbours",
    "check_weight",
    "contrast_halo",
    "contrast_image",
    "neighbour_offsets",
    "solve",
    "squared_difference_sums",
    "unary_costs",
]

#: Integer units per nat. Unary terms are at most -log(P_MIN) * SCALE = 13816 and a
#: pair weight at most MAX_WEIGHT * SCALE = 1e6, so a site with 26 neighbours stays
#: below 2.7e7, far inside the solver's int32 terms (energies are summed in int64).
SCALE = 1000
#: Probabilities are floored here: a classifier's 0 is "very unlikely", not "impossible".
P_MIN = 1e-6
#: Weights between these bounds are represented to 1 part in 10 or better.
MIN_WEIGHT = 0.01
MAX_WEIGHT = 1000.0
#: Neighbourhoods offered, per dimensionality; the first is the default.
NEIGHBOURHOODS = {2: (4, 8), 3: (6, 26)}


def check_weight(weight: float) -> float:
    """Return ``weight`` as a float, or raise if the solver cannot represent it."""
    try:
        if isinstance(weight, bool):
            raise TypeError
        value = float(weight)
    except (TypeError, ValueError):
        raise TiledsegError(
            f"smooth weight {weight!r} is not a number; give a positive number (try 1 to 4)"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise TiledsegError(
            f"smooth weight {weight} must be a positive number (try 1 to 4; larger smooths more)"
        )
    if not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise TiledsegError(
            f"smooth weight {value:g} is outside [{MIN_WEIGHT:g}, {MAX_WEIGHT:g}], the range the "
            "solver's integer energies represent exactly; try 1 to 4"
        )
    return value


def check_contrast_sigma(sigma: float | str | None) -> float:
    """Return the contrast blur (1 when ``None``; 0 = raw intensities), checked."""
    if sigma is None:
        return 1.0
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or not 0 <= value <= 10:
        raise TiledsegError(
            f"smooth contrast sigma {sigma}: give a blur from 0 (raw intensities) to 10 "
            "voxels; 1 suits noisy images"
        )
    return value


def check_iterations(iterations: int | str | None) -> int:
    """Return the expansion cycles (1 when ``None``; -1 = until convergence), checked."""
    if iterations is None:
        return 1
    try:
        value = int(str(iterations).strip())
    except ValueError:
        value = 0
    if value != -1 and value < 1:
        raise TiledsegError(
            f"smooth iterations {iterations!r}: give a number of expansion cycles (1 or more), "
            "or -1 to run until the energy stops falling"
        )
    return value


def check_neighbours(neighbours: int | None, ndim: int) -> int:
    """Return the neighbourhood size for ``ndim`` (the default when ``None``), checked."""
    offered = NEIGHBOURHOODS.get(ndim, ())
    if neighbours is None:
        return offered[0]
    if isinstance(neighbours, bool) or str(neighbours).strip() not in {str(n) for n in offered}:
        choices = " or ".join(str(n) for n in offered)
        raise TiledsegError(
            f"smooth neighbourhood {neighbours} is not offered for {ndim}D images; use {choices}"
        )
    return int(neighbours)


def neighbour_offsets(ndim: int, neighbours: int) -> list[tuple[int, ...]]:
    """Half of the neighbourhood: each offset once, with its first non-zero step positive.

    A positive first step makes every offset's raveled (C-order) displacement
    positive, so an edge's first site always has the smaller index.
    """
    if neighbours == 2 * ndim:
        return [tuple(int(a == b) for b in range(ndim)) for a in range(ndim)]
    return [
        o
        for o in itertools.product((-1, 0, 1), repeat=ndim)
        if any(o) and o[next(i for i, v in enumerate(o) if v)] > 0
    ]


def unary_costs(proba: np.ndarray) -> np.ndarray:
    """Quantised ``-log p`` of probabilities ``(n, k)``, as uint16 ``(n, k)``."""
    cost = -np.log(np.maximum(proba.astype(np.float64), P_MIN)) * SCALE
    return np.rint(cost).astype(np.uint16)


def _pair_slices(shape: Sequence[int], offset: Sequence[int]):
    first, second = [], []
    for n, o in zip(shape, offset, strict=True):
        if o >= 0:
            first.append(slice(0, n - o))
            second.append(slice(o, n))
        else:
            first.append(slice(-o, n))
            second.append(slice(0, n + o))
    return tuple(first), tuple(second)


def _squared_differences(image: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """``||I_p - I_(p+offset)||^2`` summed over channels, for every pair in ``image``."""
    a, b = _pair_slices(image.shape[1:], offset)
    diff = image[(slice(None), *a)].astype(np.float64) - image[(slice(None), *b)]
    return np.einsum("c...,c...->...", diff, diff)


def squared_difference_sums(image: np.ndarray, inner: Sequence[slice]) -> tuple[float, int]:
    """Sum and count of the axis-neighbour squared differences whose first voxel is in ``inner``.

    ``image`` is channel-first and holds ``inner`` plus (where the volume goes on)
    one more voxel after it along every axis, so that summing over the blocks of any
    grid counts every pair of the volume exactly once.
    """
    ndim = image.ndim - 1
    total, count = 0.0, 0
    for axis in range(ndim):
        offset = tuple(int(a == axis) for a in range(ndim))
        d2 = _squared_differences(image, offset)
        keep = tuple(slice(s.start, min(s.stop, d2.shape[a])) for a, s in enumerate(inner))
        part = d2[keep]
        total += float(part.sum())
        count += int(part.size)
    return total, count


def contrast_halo(sigma: float, spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels per axis that :func:`contrast_image` needs around a window."""
    if sigma <= 0:
        return (0,) * len(spacing)
    return tuple(kernel_radius(sigma / s) for s in spacing)


def contrast_image(
    image: np.ndarray, *, sigma: float, spacing: Sequence[float], inner: Sequence[slice]
) -> np.ndarray:
    """Return the image the contrast term compares: Gaussian-smoothed, then cropped to ``inner``.

    Raw intensities of a noisy image differ between neighbours mostly by noise, so
    the contrast weights would be noise too; a blur of ``sigma`` (in units of the
    finest spacing) keeps the edges of the phases and drops the noise. ``image`` is
    channel-first and holds ``inner`` plus :func:`contrast_halo` where the volume goes
    on, so every window sees the values the whole image would have (scipy's 1-D passes
    on the same inputs give the same bits).
    """
    data = image.astype(np.float64)
    if sigma > 0:
        from scipy import ndimage as ndi

        sigmas = (0.0, *(sigma / s for s in spacing))
        data = ndi.gaussian_filter(data, sigmas, mode="reflect", truncate=TRUNCATE)
    return data[(slice(None), *inner)]


def beta_from_sums(total: float, count: int) -> float:
    """Return the contrast scale ``1 / (2 mean ||dI||^2)``; 0 for a constant image."""
    if count == 0 or total <= 0:
        return 0.0
    return 1.0 / (2.0 * total / count)


def _pair_weights(
    image: np.ndarray,
    offset: Sequence[int],
    *,
    beta: float,
    weight: float,
    spacing: Sequence[float],
    neighbours: int,
) -> np.ndarray:
    distance = math.sqrt(sum((o * s) ** 2 for o, s in zip(offset, spacing, strict=True)))
    contrast = np.exp(-beta * _squared_differences(image, offset))
    scale = weight * SCALE / distance * _neighbourhood_norm(len(offset), neighbours)
    return np.rint(contrast * scale).astype(np.intc)


def _neighbourhood_norm(ndim: int, neighbours: int) -> float:
    """Scale the diagonal neighbourhoods down to the axis neighbourhood's total coupling.

    With 26 neighbours a voxel has about three times the edges of 6; without this a
    weight would smooth three times as much. Dividing by the sum of ``1/dist`` over
    the neighbourhood keeps ``weight`` meaning the same in every neighbourhood.
    """
    total = sum(
        1.0 / math.sqrt(sum(o * o for o in off)) for off in neighbour_offsets(ndim, neighbours)
    )
    return ndim / total


def solve(
    unary: np.ndarray,
    image: np.ndarray,
    *,
    fixed: np.ndarray | None = None,
    beta: float,
    weight: float,
    spacing: Sequence[float],
    neighbours: int,
    iterations: int = -1,
) -> np.ndarray:
    """Smooth the labels of one window; return class indices ``(*shape)`` as uint8.

    Alpha-expansion from the first label everywhere, by
    :mod:`tiledseg.smoothing._grid_cut`'s solver on the window padded by one voxel.

    Parameters
    ----------
    unary : ndarray, shape (*shape, k)
        Quantised costs from :func:`unary_costs`.
    image : ndarray, shape (channels, *shape)
        The image over the same window (for the contrast term).
    fixed : ndarray of int, shape (*shape), optional
        A label index for voxels held fixed, -1 for free voxels. A free voxel next to a
        fixed one pays that edge's weight for every label but the fixed one; fixed
        voxels keep their label. ``None``: every voxel is free.
    beta, weight : float
        Contrast scale (for the whole image) and Potts weight.
    spacing : sequence of float
        Voxel spacing relative to the finest axis (all >= 1).
    neighbours : int
        4 or 8 in 2D, 6 or 26 in 3D.
    iterations : int
        Expansion cycles; -1 runs to convergence.

    Returns
    -------
    ndarray of uint8, shape (*shape)
        The class index of every voxel.
    """
    from tiledseg.smoothing import _grid_cut

    shape = unary.shape[:-1]
    k = unary.shape[-1]
    free = np.ones(shape, dtype=bool) if fixed is None else fixed < 0
    padded = tuple(n + 2 for n in shape)
    inner = (slice(1, -1),) * len(shape)
    # int32 throughout: the solver's type (every sum stays below 2.7e7, see SCALE)
    costs = np.zeros((*padded, k), dtype=np.int32)
    costs[inner] = unary
    offsets = neighbour_offsets(len(shape), neighbours)
    weights = np.zeros((len(offsets), *padded), dtype=np.int32)
    for m, offset in enumerate(offsets):
        a, b = _pair_slices(shape, offset)
        w = _pair_weights(
            image, offset, beta=beta, weight=weight, spacing=spacing, neighbours=neighbours
        )
        weights[m][_padded(a)] = np.where(free[a] & free[b], w, 0)
        if fixed is not None:
            _fixed_edges_to_costs(costs, w, (a, b), free=free, fixed=fixed)
    # every free voxel starts at the first label, as gco did: measured against starting
    # from the arg-max, tiled runs then agree better with the whole-volume solve
    # (docs/smoothing.md), at the same cost
    labels = np.zeros(padded, dtype=np.int32)
    if fixed is not None:
        # held voxels keep their label: no cost, no edge, so no move changes them
        costs[inner][~free] = 0
        labels[inner][~free] = fixed[~free]
    solved = _grid_cut.expansion(
        costs.reshape(-1, k),
        weights.reshape(len(offsets), -1),
        padded,
        offsets,
        labels.reshape(-1),
        iterations=iterations,
    )
    # class indices fit uint8: training refuses more than 100 classes
    return solved.reshape(padded)[inner].astype(np.uint8)


def _padded(region: tuple[slice, ...]) -> tuple[slice, ...]:
    """Return the same region in the grid padded by one voxel on every side."""
    return tuple(slice(s.start + 1, s.stop + 1) for s in region)


def _fixed_edges_to_costs(
    costs: np.ndarray,
    w: np.ndarray,
    pair: tuple[tuple[slice, ...], tuple[slice, ...]],
    *,
    free: np.ndarray,
    fixed: np.ndarray,
) -> None:
    """Add, in place, the edges from free to fixed voxels to the free ends' costs.

    An edge to a fixed voxel becomes a unary term of its free end: it pays the edge's
    weight ``w`` for every label but the fixed voxel's.
    """
    a, b = pair
    for near, far in ((a, b), (b, a)):
        edge = free[near] & ~free[far]
        if not edge.any():
            continue
        paid = np.where(edge, w, 0)
        held = fixed[far]
        target = costs[_padded(near)]
        for label in range(costs.shape[-1]):
            target[..., label] += np.where(held == label, 0, paid)
