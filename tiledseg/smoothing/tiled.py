"""Blockwise graph-cut smoothing without seams: the dask graph around the window solves.

The plan (docs/design-notes.md, "Graph cut without seams"):

1. **Costs.** Each block's task computes its features and probabilities once (as
   prediction does) and returns its quantised unary costs. Probabilities and
   uncertainty are written here when asked; otherwise they never reach the disk.
2. **First pass.** Each block is solved over a window of the block plus
   ``margin`` voxels of context on every side, assembled from its neighbours'
   costs (no feature is computed twice); only the block's own voxels are kept.
3. **Seam passes**, one axis after the other. Around every block border along the
   axis, a slab ``2 * seam`` voxels thick (and one block wide in the other axes)
   is solved again with the labels just outside it held fixed at the previous
   pass's values. Both blocks of a border solve the same slab from the same
   inputs, so they agree on it bit for bit, and the border lies in the middle of
   a region that was optimised as one piece.

Every step is a pure function of its inputs, so the result does not depend on
the scheduler, the order of tasks or the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiledseg.blocks import DEFAULT_BLOCK, Block, plan_blocks
from tiledseg.smoothing import energy

__all__ = ["SmoothSettings", "image_beta", "read_contrast", "smoothed_label_tasks"]

Region = tuple[slice, ...]


@dataclass(frozen=True)
class SmoothSettings:
    """Parameters of the graph cut.

    Attributes
    ----------
    weight : float
        Potts weight, in nats per neighbour pair of equal intensity.
    neighbours : int
        4 or 8 (2D), 6 or 26 (3D).
    margin : int
        Context around a block in the first pass, in voxels.
    seam : int
        Half-thickness of the slabs re-solved around block borders.
    iterations : int
        Expansion cycles per solve; -1 runs to convergence. One cycle (the default)
        takes half the time of convergence and gave the same mIoU in every benchmark
        (docs/smoothing.md).
    contrast_sigma : float
        Blur of the image the contrast term compares (0: raw intensities).
    """

    weight: float
    neighbours: int
    margin: int = 8
    seam: int = 4
    iterations: int = 1
    contrast_sigma: float = 1.0

    def to_dict(self, beta: float) -> dict[str, Any]:
        """The settings and the image's contrast scale, for the provenance."""
        return {
            "method": "graphcut",
            "weight": self.weight,
            "neighbours": self.neighbours,
            "margin": self.margin,
            "seam": self.seam,
            "iterations": self.iterations,
            "contrast_sigma": self.contrast_sigma,
            "beta": beta,
        }


def read_contrast(volume: Any, region: Region, *, sigma: float, spacing: Sequence[float]):
    """The contrast image over ``region``: read with the blur's halo, blurred, cropped."""
    from tiledseg.blocks import haloed

    grown = haloed(region, energy.contrast_halo(sigma, spacing), volume.shape)
    inner = tuple(
        slice(r.start - g.start, r.stop - g.start) for r, g in zip(region, grown, strict=True)
    )
    return energy.contrast_image(volume.read(grown), sigma=sigma, spacing=spacing, inner=inner)


def _beta_task(args: tuple) -> tuple[float, int]:
    volume, region, sigma, spacing = args
    grown = tuple(
        slice(s.start, min(s.stop + 1, n)) for s, n in zip(region, volume.shape, strict=True)
    )
    image = read_contrast(volume, grown, sigma=sigma, spacing=spacing)
    inner = tuple(slice(0, s.stop - s.start) for s in region)
    return energy.squared_difference_sums(image, inner)


def image_beta(
    volume: Any, executor: Any, *, sigma: float = 0.0, spacing: Sequence[float] | None = None
) -> float:
    """The contrast scale of the whole image, read blockwise on a fixed grid.

    The grid does not depend on the processing block, and the block sums are added
    with :func:`math.fsum`, so every tiling of a run gets the same ``beta``.
    ``sigma`` and ``spacing`` (relative, finest axis 1) are the contrast blur's.
    """
    spacing = tuple(spacing) if spacing is not None else (1.0,) * volume.ndim
    grid = tuple(min(n, b) for n, b in zip(volume.shape, DEFAULT_BLOCK[volume.ndim], strict=True))
    regions = [b.region for b in plan_blocks(volume.shape, grid, (0,) * volume.ndim)]
    tasks = [(volume, r, sigma, spacing) for r in regions]
    sums = executor.map(_beta_task, tasks, desc="contrast")
    return energy.beta_from_sums(math.fsum(s for s, _ in sums), sum(c for _, c in sums))


class _Grid:
    """The planned blocks, indexed, and the box they cover."""

    def __init__(self, blocks: Sequence[Block]):
        self.blocks = {b.index: b for b in blocks}
        ndim = len(blocks[0].region)
        self.box = tuple(
            slice(min(b.region[a].start for b in blocks), max(b.region[a].stop for b in blocks))
            for a in range(ndim)
        )

    def grow(self, region: Region, by: Sequence[int]) -> Region:
        return tuple(
            slice(max(b.start, r.start - d), min(b.stop, r.stop + d))
            for r, b, d in zip(region, self.box, by, strict=True)
        )

    def meeting(self, region: Region) -> list[Block]:
        found = []
        for block in self.blocks.values():
            if all(
                r.start < s.stop and s.start < r.stop
                for r, s in zip(region, block.region, strict=True)
            ):
                found.append(block)
        return found


def _assemble(
    region: Region, parts: Sequence[tuple[Region, np.ndarray]], *, fill: int = 0
) -> np.ndarray:
    """Copy the parts of blocks into one array over ``region`` (gaps get ``fill``)."""
    trailing = parts[0][1].shape[len(region) :]
    out = np.full((*(s.stop - s.start for s in region), *trailing), fill, dtype=parts[0][1].dtype)
    for where, data in parts:
        common = tuple(
            slice(max(r.start, w.start), min(r.stop, w.stop))
            for r, w in zip(region, where, strict=True)
        )
        if any(c.start >= c.stop for c in common):
            continue
        dst = tuple(
            slice(c.start - r.start, c.stop - r.start) for c, r in zip(common, region, strict=True)
        )
        src = tuple(
            slice(c.start - w.start, c.stop - w.start) for c, w in zip(common, where, strict=True)
        )
        out[dst] = data[src]
    return out


def _within(inner: Region, outer: Region) -> Region:
    return tuple(
        slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True)
    )


@dataclass(frozen=True)
class _Solve:
    """What every window solve needs besides its data."""

    volume: Any
    beta: float
    spacing: tuple[float, ...]
    settings: SmoothSettings

    def __call__(self, unary: np.ndarray, window: Region, fixed: np.ndarray | None = None):
        image = read_contrast(
            self.volume, window, sigma=self.settings.contrast_sigma, spacing=self.spacing
        )
        return energy.solve(
            unary,
            image,
            fixed=fixed,
            beta=self.beta,
            weight=self.settings.weight,
            spacing=self.spacing,
            neighbours=self.settings.neighbours,
            iterations=self.settings.iterations,
        )


def _first_pass(solve: _Solve, block: Block, window: Region, regions, *costs) -> np.ndarray:
    unary = _assemble(window, list(zip(regions, costs, strict=True)))
    labels = solve(unary, window)
    return labels[_within(block.region, window)]


def _seam_pass(solve: _Solve, block: Block, axis: int, box: Region, regions, *parts) -> np.ndarray:
    n = len(regions)
    costs = list(zip(regions, parts[:n], strict=True))
    labels = list(zip(regions, parts[n:], strict=True))
    result = _assemble(block.region, labels)
    span = block.region[axis]
    for border in (span.start, span.stop):
        if border in (box[axis].start, box[axis].stop):
            continue  # an edge of the volume (or of the ROI) is no seam
        piece = list(block.region)
        piece[axis] = slice(
            max(box[axis].start, border - solve.settings.seam),
            min(box[axis].stop, border + solve.settings.seam),
        )
        piece = tuple(piece)
        window = tuple(
            slice(max(b.start, p.start - 1), min(b.stop, p.stop + 1))
            for p, b in zip(piece, box, strict=True)
        )
        fixed = _assemble(window, labels).astype(np.int16)
        fixed[_within(piece, window)] = -1
        solved = solve(_assemble(window, costs), window, fixed)
        mine = tuple(
            slice(max(p.start, r.start), min(p.stop, r.stop))
            for p, r in zip(piece, block.region, strict=True)
        )
        result[_within(mine, block.region)] = solved[_within(mine, window)]
    return result


def smoothed_label_tasks(
    blocks: Sequence[Block],
    costs: dict[tuple[int, ...], Any],
    *,
    volume: Any,
    beta: float,
    spacing: Sequence[float],
    settings: SmoothSettings,
) -> dict[tuple[int, ...], Any]:
    """Dask tasks for the smoothed class indices of every block.

    Parameters
    ----------
    blocks : sequence of Block
        The planned blocks (a box of the block grid).
    costs : dict
        Block index -> delayed ``(*block.shape, k)`` quantised unary costs.
    volume : Volume
        The image, for the contrast term.
    beta : float
        Contrast scale of the whole image (:func:`image_beta`).
    spacing : sequence of float
        Voxel spacing.
    settings : SmoothSettings

    Returns
    -------
    dict
        Block index -> delayed uint8 class indices of the block.
    """
    import dask

    grid = _Grid(blocks)
    finest = min(spacing)
    solve = _Solve(volume, float(beta), tuple(s / finest for s in spacing), settings)
    ndim = len(grid.box)
    labels = {}
    for index, block in grid.blocks.items():
        window = grid.grow(block.region, (settings.margin,) * ndim)
        near = grid.meeting(window)
        labels[index] = dask.delayed(_first_pass)(
            solve,
            block,
            window,
            tuple(b.region for b in near),
            *(costs[b.index] for b in near),
            dask_key_name=f"graphcut-first-{index}",
        )
    for axis in range(ndim):
        reach = [1] * ndim
        reach[axis] = settings.seam + 1
        updated = {}
        for index, block in grid.blocks.items():
            near = grid.meeting(grid.grow(block.region, reach))
            updated[index] = dask.delayed(_seam_pass)(
                solve,
                block,
                axis,
                grid.box,
                tuple(b.region for b in near),
                *(costs[b.index] for b in near),
                *(labels[b.index] for b in near),
                dask_key_name=f"graphcut-seam-{'zyx'[axis - ndim]}-{index}",
            )
        labels = updated
    return labels
