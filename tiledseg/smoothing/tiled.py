"""Blockwise graph-cut smoothing without seams: the dask graph around the window solves.

The plan (docs/smoothing.md, "Graph cut without seams"):

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

import bisect
import itertools
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiledseg.blocks import DEFAULT_BLOCK, Block, haloed, plan_blocks, within
from tiledseg.features.bank import relative_spacing
from tiledseg.runs import BlockFailure, guarded
from tiledseg.smoothing import energy

__all__ = [
    "SmoothSettings",
    "SmoothingJob",
    "SmoothingPlan",
    "image_beta",
    "read_contrast",
    "smoothed_label_tasks",
]

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
        took less than half the time and tiles more reliably (docs/smoothing.md).
    contrast_sigma : float
        Blur of the image the contrast term compares (0: raw intensities).
    """

    weight: float
    neighbours: int
    margin: int = 16
    seam: int = 4
    iterations: int = 1
    contrast_sigma: float = 1.0

    def to_dict(self, beta: float) -> dict[str, Any]:
        """Return the settings and the image's contrast scale, for the provenance."""
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


def read_contrast(
    volume: Any, region: Region, *, sigma: float, spacing: Sequence[float]
) -> np.ndarray:
    """Return the contrast image over ``region``: read with the blur's halo, blurred, cropped.

    Parameters
    ----------
    volume : Volume
        The image.
    region : tuple of slice
        Spatial region to return.
    sigma : float
        Blur in units of the finest spacing (0: the raw image).
    spacing : sequence of float
        Spacing relative to the finest axis.

    Returns
    -------
    ndarray
        float64, channel-first, ``(channels, *region shape)``.
    """
    grown = haloed(region, energy.contrast_halo(sigma, spacing), volume.shape)
    return energy.contrast_image(
        volume.read(grown), sigma=sigma, spacing=spacing, inner=within(region, grown)
    )


def _beta_task(args: tuple) -> tuple[float, int]:
    volume, region, sigma, spacing = args
    grown = tuple(
        slice(s.start, min(s.stop + 1, n)) for s, n in zip(region, volume.shape, strict=True)
    )
    image = read_contrast(volume, grown, sigma=sigma, spacing=spacing)
    return energy.squared_difference_sums(image, within(region, grown))


def image_beta(
    volume: Any, executor: Any, *, sigma: float = 0.0, spacing: Sequence[float] | None = None
) -> float:
    """Return the contrast scale of the whole image, read blockwise on a fixed grid.

    The grid does not depend on the processing block, and the block sums are added
    with :func:`math.fsum`, so every tiling of a run gets the same ``beta``.

    Parameters
    ----------
    volume : Volume
        The image.
    executor : Executor
        Where the blocks are read.
    sigma : float
        Blur of the contrast image (see :func:`read_contrast`).
    spacing : sequence of float, optional
        Spacing relative to the finest axis (default isotropic).

    Returns
    -------
    float
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
        # the grid is regular: each axis's block extents, once
        self.spans = [
            sorted({(b.region[a].start, b.region[a].stop, b.index[a]) for b in blocks})
            for a in range(ndim)
        ]
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
        """Return the blocks that overlap ``region``, found per axis (not by scanning them all)."""
        ranges = []
        for axis, r in enumerate(region):
            spans = self.spans[axis]  # (start, stop, index) sorted by start
            first = bisect.bisect_right([stop for _, stop, _ in spans], r.start)
            ranges.append([i for start, _, i in spans[first:] if start < r.stop])
        return [self.blocks[index] for index in itertools.product(*ranges)]


def _assemble(region: Region, parts: Sequence[tuple[Region, np.ndarray]]) -> np.ndarray:
    """Copy the parts of blocks into one array over ``region`` (gaps stay 0)."""
    trailing = parts[0][1].shape[len(region) :]
    out = np.zeros((*(s.stop - s.start for s in region), *trailing), dtype=parts[0][1].dtype)
    for where, data in parts:
        common = tuple(
            slice(max(r.start, w.start), min(r.stop, w.stop))
            for r, w in zip(region, where, strict=True)
        )
        if any(c.start >= c.stop for c in common):
            continue
        out[within(common, region)] = data[within(common, where)]
    return out


@dataclass(frozen=True)
class SmoothingJob:
    """What every window of a graph cut shares; a method per pass of a block.

    :meth:`first` solves a block's window from its neighbours' costs; :meth:`seams`
    solves again across the block's borders along one axis, the labels around them
    fixed. Each passes on a failure of its inputs, and reports its own as the block's
    :class:`~tiledseg.runs.BlockFailure`.
    """

    volume: Any
    beta: float
    spacing: tuple[float, ...]
    settings: SmoothSettings

    def first(self, block: Block, window: Region, regions: Sequence[Region], *costs: Any) -> Any:
        """Return the block's labels from the first pass (or the failure it meets)."""
        failed = _failed_input(block, costs)
        if failed is not None:
            return failed
        return guarded(self._first, block.name, block.index, block, window, regions, costs)

    def seams(
        self, block: Block, axis: int, box: Region, regions: Sequence[Region], *parts: Any
    ) -> Any:
        """Return the block's labels solved again across its borders along ``axis``."""
        failed = _failed_input(block, parts)
        if failed is not None:
            return failed
        return guarded(self._seams, block.name, block.index, block, axis, box, regions, parts)

    def solve(self, unary: np.ndarray, window: Region, fixed: np.ndarray | None = None) -> Any:
        """Return the labels of one window (``fixed``: labels kept, -1 where free)."""
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

    def _first(self, block: Block, window: Region, regions, costs) -> np.ndarray:
        unary = _assemble(window, list(zip(regions, costs, strict=True)))
        labels = self.solve(unary, window)
        return labels[within(block.region, window)]

    def _seams(self, block: Block, axis: int, box: Region, regions, parts) -> np.ndarray:
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
                max(box[axis].start, border - self.settings.seam),
                min(box[axis].stop, border + self.settings.seam),
            )
            piece = tuple(piece)
            window = tuple(
                slice(max(b.start, p.start - 1), min(b.stop, p.stop + 1))
                for p, b in zip(piece, box, strict=True)
            )
            fixed = _assemble(window, labels).astype(np.int16)
            fixed[within(piece, window)] = -1
            solved = self.solve(_assemble(window, costs), window, fixed)
            mine = tuple(
                slice(max(p.start, r.start), min(p.stop, r.stop))
                for p, r in zip(piece, block.region, strict=True)
            )
            result[within(mine, block.region)] = solved[within(mine, window)]
        return result


def _failed_input(block: Block, inputs: Sequence[Any]) -> BlockFailure | None:
    """Return the failure a node passes on when an input failed (``None`` if none did).

    A block's own failure is passed as it is; a neighbour's becomes this block's,
    naming the block that failed, so the report names every block not written.
    """
    failed = [f for f in inputs if isinstance(f, BlockFailure)]
    if not failed:
        return None
    own = next((f for f in failed if f.index == block.index), None)
    if own is not None:
        return own
    cause = failed[0].caused_by or failed[0].name
    return BlockFailure(
        block.name, block.index, f"not smoothed: it needs block {cause}, which failed", "", cause
    )


class SmoothingPlan:
    """The nodes of a blockwise graph cut and what each needs, run in waves of block rows.

    Nodes are ``("costs", index)`` (a block's unary costs) and ``(p, index)``: the
    block's labels after pass ``p`` (0: the first pass; ``1 + axis``: the seam pass
    along ``axis``). :meth:`run` computes the volume a few rows of blocks at a time,
    along the axis with the most blocks: a wave computes what its rows' labels need
    and keeps only the results that later rows still need, so memory holds a few rows
    of blocks (the cross-section), not the volume.

    Parameters
    ----------
    blocks : sequence of Block
        The planned blocks (a box of the block grid).
    volume : Volume
        The image, for the contrast term.
    beta : float
        Contrast scale of the whole image (:func:`image_beta`).
    spacing : sequence of float
        Voxel spacing.
    settings : SmoothSettings
    """

    def __init__(
        self,
        blocks: Sequence[Block],
        *,
        volume: Any,
        beta: float,
        spacing: Sequence[float],
        settings: SmoothSettings,
    ):
        self.grid = _Grid(blocks)
        # task names must not meet another run's on a shared scheduler
        self.token = uuid.uuid4().hex[:12]
        self.job = SmoothingJob(volume, float(beta), relative_spacing(spacing), settings)
        ndim = len(self.grid.box)
        self.last = ndim
        self.windows: dict[tuple[int, ...], Region] = {}
        # the blocks whose results each node reads
        self.near: dict[tuple, list[Block]] = {}
        for index, block in self.grid.blocks.items():
            self.windows[index] = self.grid.grow(block.region, (settings.margin,) * ndim)
            self.near[0, index] = self.grid.meeting(self.windows[index])
            for axis in range(ndim):
                reach = [1] * ndim
                reach[axis] = settings.seam + 1
                self.near[1 + axis, index] = self.grid.meeting(self.grid.grow(block.region, reach))
        self.consumers: dict[tuple, set[tuple]] = {}
        for node in self.near:
            for need in self.needs(node):
                self.consumers.setdefault(need, set()).add(node)

    def needs(self, node: tuple) -> list[tuple]:
        """Return the nodes ``node`` reads, in the order its task takes them.

        They are its near blocks' costs and, for a seam pass, their labels after the
        previous pass.
        """
        p, _ = node
        near = self.near[node]
        costs = [("costs", b.index) for b in near]
        return costs if p == 0 else costs + [(p - 1, b.index) for b in near]

    def _task(self, node: tuple, inputs: list[Any]) -> Any:
        import dask

        p, index = node
        block = self.grid.blocks[index]
        near = self.near[node]
        regions = tuple(b.region for b in near)
        if p == 0:
            return dask.delayed(self.job.first)(
                block,
                self.windows[index],
                regions,
                *inputs,
                dask_key_name=f"graphcut-first-{self.token}-{index}",
            )
        axis = p - 1
        return dask.delayed(self.job.seams)(
            block,
            axis,
            self.grid.box,
            regions,
            *inputs,
            dask_key_name=f"graphcut-seam-{'zyx'[axis - self.last]}-{self.token}-{index}",
        )

    def build(
        self,
        node: tuple,
        built: dict[tuple, Any],
        *,
        costs: Callable[[Block], Any],
        kept: dict[tuple, Any] | None = None,
    ) -> Any:
        """Return the delayed of ``node``, building its inputs into ``built`` (``kept``: done)."""
        if kept is not None and node in kept:
            return kept[node]
        if node not in built:
            if node[0] == "costs":
                built[node] = costs(self.grid.blocks[node[1]])
            else:
                needs = [self.build(n, built, costs=costs, kept=kept) for n in self.needs(node)]
                built[node] = self._task(node, needs)
        return built[node]

    def run(
        self,
        *,
        costs: Callable[[Block], Any],
        write: Callable[[Block, Any], Any],
        persist: Callable[[list[Any]], list[Any]],
        progress: Callable[[int], Any] | None = None,
        workers: int = 1,
        done: set[tuple[int, ...]] = frozenset(),
    ) -> list[Any]:
        """Compute every block's smoothed labels (but those ``done``) and hand them to ``write``.

        Parameters
        ----------
        costs : callable
            ``costs(block)`` -> a dask delayed of the block's ``(*shape, k)`` costs.
        write : callable
            ``write(block, labels)`` -> a dask delayed that stores the block's class
            indices (a delayed) and returns a small result.
        persist : callable
            Computes a list of dask delayed objects and returns them persisted
            (e.g. :meth:`tiledseg.cluster.Executor.persist`).
        progress : callable, optional
            Called with the number of blocks written after each wave.
        workers : int
            Tasks that run at once: a wave takes enough rows to give each a block.
        done : set of tuple
            Grid indices of blocks already written (a resumed run): they get no
            write, and their nodes are computed only where another block needs them.

        Returns
        -------
        list
            The persisted results of ``write``, in row order.
        """
        # the nodes this run computes: what the writes need, and nothing else
        needed: set[tuple] = set()
        stack = [(self.last, index) for index in self.grid.blocks if index not in done]
        while stack:
            node = stack.pop()
            if node not in needed:
                needed.add(node)
                if node[0] != "costs":
                    stack.extend(self.needs(node))

        def readers(node: tuple) -> set[tuple]:
            return self.consumers.get(node, set()) & needed

        kept: dict[tuple, Any] = {}
        finished: set[tuple] = set()
        written: list[Any] = []
        # waves go along the axis with the most blocks: the fewest blocks per wave
        counts = [len({index[a] for index in self.grid.blocks}) for a in range(self.last)]
        axis = max(range(self.last), key=lambda a: (counts[a], -a))
        rows = sorted({index[axis] for index in self.grid.blocks})
        per_row = len(self.grid.blocks) // len(rows)
        step = max(1, -(-workers // per_row))
        for first in range(0, len(rows), step):
            wave = set(rows[first : first + step])
            built: dict[tuple, Any] = {}
            targets = [
                write(block, self.build((self.last, index), built, costs=costs, kept=kept))
                for index, block in self.grid.blocks.items()
                if index[axis] in wave and index not in done
            ]
            if not targets:
                continue
            finished.update(built)
            # keep what a node not yet computed will read
            keep = [node for node in built if not readers(node) <= finished]
            results = persist(targets + [built[n] for n in keep])
            written.extend(results[: len(targets)])
            if progress is not None:
                progress(len(targets))
            kept.update(zip(keep, results[len(targets) :], strict=True))
            for node in list(kept):
                if readers(node) <= finished:
                    del kept[node]
        return written


def smoothed_label_tasks(
    blocks: Sequence[Block],
    costs: dict[tuple[int, ...], Any],
    *,
    volume: Any,
    beta: float,
    spacing: Sequence[float],
    settings: SmoothSettings,
) -> dict[tuple[int, ...], Any]:
    """Dask tasks for the smoothed class indices of every block, as one graph.

    The whole plan of :class:`SmoothingPlan` as one dask graph (for tests and small
    volumes; :meth:`SmoothingPlan.run` keeps memory to a few rows of blocks).

    Parameters
    ----------
    blocks : sequence of Block
        The planned blocks (a box of the block grid).
    costs : dict
        Block index -> delayed ``(*block.shape, k)`` quantised unary costs.
    volume, beta, spacing, settings
        As for :class:`SmoothingPlan`.

    Returns
    -------
    dict
        Block index -> delayed uint8 class indices of the block.
    """
    plan = SmoothingPlan(blocks, volume=volume, beta=beta, spacing=spacing, settings=settings)
    built: dict[tuple, Any] = {}
    return {
        index: plan.build((plan.last, index), built, costs=lambda b: costs[b.index])
        for index in plan.grid.blocks
    }
