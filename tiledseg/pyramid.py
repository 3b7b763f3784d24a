"""Multiscale outputs: OME-Zarr levels written blockwise as the blocks below them finish.

Level ``k`` halves every spatial axis of level ``k - 1`` (an odd side keeps its last voxel
alone): labels by the most frequent value of each 2x2 (2x2x2) group, ties to the smaller
value, and probabilities and uncertainty by the group's mean, rounded half up. Every level
is chunked as level 0 (the processing block), so a chunk of level ``k`` is made from the
2x2(x2) chunks below it and no group ever straddles two chunks: each level equals the
whole-volume downsampling of the level below, whatever the blocks.

A chunk is computed as soon as the chunks below it are written (:class:`LevelTracker`),
in the same stream of tasks as the prediction's blocks (:func:`stream`), and marked done
as a block is; an unfinished run continues with the chunks not done. Chunks whose
children were never written (outside the mask or the region) stay unwritten: they read
as 0, as the blocks below them do.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiledseg.errors import TiledsegError

__all__ = [
    "LevelChunk",
    "LevelTracker",
    "PyramidJob",
    "check_pyramid",
    "downsample_mean",
    "downsample_mode",
    "level_count",
    "level_shapes",
    "stream",
    "tracker",
]

#: ``auto`` adds a level while the new level's smallest side stays at least this
#: (so the last level's smallest side is about 256: between 192 and 384).
AUTO_SMALLEST = 192

#: Each array's reduction: labels are categories, the others are intensities.
REDUCTIONS = {"labels": "mode", "probabilities": "mean", "uncertainty": "mean"}


def check_pyramid(value: Any) -> str | int:
    """Return ``"auto"``, ``"none"`` or a number of levels from what a user gave."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "none"):
            return text
        value = int(text) if text.isdigit() else text
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TiledsegError(
            f"--pyramid must be auto, none or a number of levels (0 or more), not {value!r}"
        )
    return value


def level_count(shape: Sequence[int], pyramid: str | int) -> int:
    """Return the number of levels below full resolution ``pyramid`` asks of ``shape``.

    ``auto``: levels while the next level's smallest side is at least :data:`AUTO_SMALLEST`;
    ``none``: 0. A number is refused where a level would be one voxel along every axis
    already before it.
    """
    if pyramid == "none":
        return 0
    if pyramid == "auto":
        n, side = 0, min(shape)
        while -(-side // 2) >= AUTO_SMALLEST:
            n, side = n + 1, -(-side // 2)
        return n
    most = max(0, int(np.ceil(np.log2(max(shape)))))
    if int(pyramid) > most:
        raise TiledsegError(
            f"--pyramid {pyramid} asks for more levels than an image of shape {tuple(shape)} "
            f"has: at most {most} (its level {most} is one voxel); give {most} or fewer, or auto"
        )
    return int(pyramid)


def level_shapes(shape: Sequence[int], levels: int) -> list[tuple[int, ...]]:
    """Return the spatial shape of level 0 (``shape``) and of each level below it."""
    shapes = [tuple(int(n) for n in shape)]
    for _ in range(levels):
        shapes.append(tuple(-(-n // 2) for n in shapes[-1]))
    return shapes


def _groups(values: np.ndarray, ndim: int) -> np.ndarray:
    """Return the 2x2(x2) groups of the last ``ndim`` axes as a leading axis of members.

    An odd side is padded by repeating its last voxel: a group cut by the edge then
    holds each of its voxels equally often, so neither its mode nor its mean changes.
    """
    lead = values.ndim - ndim
    pad = [(0, 0)] * lead + [(0, n % 2) for n in values.shape[lead:]]
    if any(p for _, p in pad):
        values = np.pad(values, pad, mode="edge")
    members = []
    for offsets in itertools.product((0, 1), repeat=ndim):
        members.append(values[(Ellipsis, *(slice(o, None, 2) for o in offsets))])
    return np.stack(members)


def downsample_mode(labels: np.ndarray, *, ndim: int | None = None) -> np.ndarray:
    """Return the most frequent value of each 2x2 (2x2x2) group; ties go to the smaller.

    Parameters
    ----------
    labels : ndarray
        Label values; the last ``ndim`` axes are halved (default: all).
    ndim : int, optional
        Spatial axes.
    """
    members = _groups(labels, labels.ndim if ndim is None else ndim)
    best = members[0].copy()
    best_count = np.zeros(best.shape, np.uint8)
    for candidate in members:
        count = (members == candidate).sum(axis=0, dtype=np.uint8)
        better = (count > best_count) | ((count == best_count) & (candidate < best))
        best[better] = candidate[better]
        best_count[better] = count[better]
    return best


def downsample_mean(values: np.ndarray, *, ndim: int | None = None) -> np.ndarray:
    """Return the mean of each 2x2 (2x2x2) group of unsigned integers, rounded half up.

    Parameters
    ----------
    values : ndarray
        Unsigned integer values (probabilities or uncertainty as uint8); the last
        ``ndim`` axes are halved (default: all).
    ndim : int, optional
        Spatial axes.
    """
    members = _groups(values, values.ndim if ndim is None else ndim)
    n = members.shape[0]
    total = members.sum(axis=0, dtype=np.uint64)
    return ((total + n // 2) // n).astype(values.dtype)


@dataclass(frozen=True)
class LevelChunk:
    """A chunk of a level below full resolution, as the executor runs it (as a block)."""

    level: int
    index: tuple[int, ...]

    @property
    def name(self) -> str:
        """How failures name it."""
        return f"level {self.level} chunk {','.join(map(str, self.index))}"


@dataclass(frozen=True)
class PyramidJob:
    """What every chunk of an output's levels shares; :meth:`write` makes one chunk.

    Parameters
    ----------
    out : str
        The output group.
    arrays : tuple of str
        Its arrays (``labels``, ``probabilities``, ``uncertainty``).
    chunk : tuple of int
        The spatial chunk shape, the same at every level.
    shapes : tuple of tuple of int
        The spatial shape of each level, level 0 first.
    """

    out: str
    arrays: tuple[str, ...]
    chunk: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def levels(self) -> int:
        """Levels below full resolution."""
        return len(self.shapes) - 1

    def write(self, chunk: LevelChunk) -> int:
        """Make ``chunk`` from the level below; mark it done.

        Returns 0: the run's voxel count is of voxels classified.
        """
        import zarr

        from tiledseg.runs import mark_block_done

        level, index = chunk.level, chunk.index
        below = self.shapes[level - 1]
        source = tuple(
            slice(2 * c * i, min(2 * c * (i + 1), n))
            for c, i, n in zip(self.chunk, index, below, strict=True)
        )
        target = tuple(
            slice(c * i, min(c * (i + 1), n))
            for c, i, n in zip(self.chunk, index, self.shapes[level], strict=True)
        )
        ndim = len(self.chunk)
        for name in self.arrays:
            lead = (slice(None),) if name == "probabilities" else ()
            values = zarr.open_array(f"{self.out}/{name}/{level - 1}", mode="r")[(*lead, *source)]
            reduce = downsample_mode if REDUCTIONS[name] == "mode" else downsample_mean
            zarr.open_array(f"{self.out}/{name}/{level}", mode="r+")[(*lead, *target)] = reduce(
                values, ndim=ndim
            )
        mark_block_done(self.out, index, level=level)
        return 0


def _pool(values: np.ndarray, how: str) -> np.ndarray:
    """Reduce each 2x2(x2) group of grid entries: ``any``, or ``sum`` (edges padded empty)."""
    pad = [(0, n % 2) for n in values.shape]
    padded = np.pad(values, pad) if any(p for _, p in pad) else values
    members = [
        padded[tuple(slice(o, None, 2) for o in offsets)]
        for offsets in itertools.product((0, 1), repeat=values.ndim)
    ]
    if how == "any":
        return np.logical_or.reduce(members)
    return np.add.reduce([m.astype(np.uint8) for m in members])


class LevelTracker:
    """Which chunks of an output's levels are to be made, and which of them are ready.

    A chunk is to be made when a chunk below it holds data and it is not done (by an
    earlier run); it is ready once none of the chunks below it is still to be made. The
    state is one or two bytes a chunk, per level: it grows with the blocks, as the block
    plan's own mask does, never with the voxels.

    Parameters
    ----------
    job : PyramidJob
        The output's levels.
    written : ndarray of bool
        Per level-0 block (the grid's shape): whether it is (or will be) written.
    todo : ndarray of bool
        Per level-0 block: whether this run writes it.
    done : dict of int to set
        Per level, the chunks an earlier run made.
    """

    def __init__(
        self,
        job: PyramidJob,
        written: np.ndarray,
        todo: np.ndarray,
        done: dict[int, set[tuple[int, ...]]],
    ):
        self.job = job
        self.ready: collections.deque[LevelChunk] = collections.deque()
        #: per level (1, 2, ...): how many chunks below each chunk are still to be made
        self.pending: list[np.ndarray] = [np.zeros(0)]
        #: per level: whether each chunk is to be made in this run
        self.todo: list[np.ndarray] = [todo]
        for level in range(1, job.levels + 1):
            written = _pool(written, "any")
            pending = _pool(self.todo[-1], "sum")
            todo = written.copy()
            for index in done.get(level, ()):
                if all(i < n for i, n in zip(index, todo.shape, strict=True)):
                    todo[index] = False
            self.pending.append(pending)
            self.todo.append(todo)
            for index in zip(*np.nonzero(todo & (pending == 0)), strict=True):
                self.ready.append(LevelChunk(level, tuple(int(i) for i in index)))

    @property
    def total(self) -> int:
        """Chunks of the levels this run makes."""
        return int(sum(t.sum() for t in self.todo[1:]))

    def finished(self, level: int, index: tuple[int, ...]) -> None:
        """Record that chunk ``index`` of ``level`` is written; its parent may be ready."""
        if level >= self.job.levels:
            return
        parent = tuple(i // 2 for i in index)
        self.pending[level + 1][parent] -= 1
        if self.pending[level + 1][parent] == 0 and self.todo[level + 1][parent]:
            self.ready.append(LevelChunk(level + 1, parent))


def stream(
    executor: Any,
    calls: Iterator[tuple[Any, Any, Any]],
    trackers: dict[Any, LevelTracker],
    *,
    desc: str,
    total: int,
) -> Iterator[tuple[Any, int, Any]]:
    """Run ``(owner, method, block)`` calls and the levels they make ready, in one stream.

    Each output's level chunks are run as soon as the chunks below them are written
    (``trackers``, by owner), between the blocks still to come; those that become ready
    only after the last block are run in further rounds. One progress bar counts all.

    Yields
    ------
    (owner, int, object)
        The call's owner, its level (0 for a block) and its result (a
        :class:`~tiledseg.runs.BlockFailure` for a failed one).
    """
    total += sum(t.total for t in trackers.values())
    with executor.progress(total, desc) as bar:
        round_ = _Round(trackers)
        items: Iterator[Any] = round_.items(calls)
        while True:
            with contextlib.closing(executor.blocks_of(items, desc=desc, bar=bar)) as results:
                for i, result in results:
                    owner, level, index = round_.keys.pop(i)
                    if _failed(result):
                        # (a level's chunk is reported apart from the blocks)
                        kind = "level chunk" if level else result.kind
                        result = dataclasses.replace(result, kind=kind)
                    elif owner in trackers:
                        trackers[owner].finished(level, index)
                    yield owner, level, result
            if not any(t.ready for t in trackers.values()):
                return
            round_ = _Round(trackers)
            items = round_.items(iter(()))


def _failed(result: Any) -> bool:
    from tiledseg.runs import BlockFailure

    return isinstance(result, BlockFailure)


class _Round:
    """One pass of :func:`stream`: its items, and what each position in it was."""

    def __init__(self, trackers: dict[Any, LevelTracker]):
        self.trackers = trackers
        self.keys: dict[int, tuple[Any, int, tuple[int, ...]]] = {}
        self._position = itertools.count()

    def items(self, calls: Iterator[tuple[Any, Any, Any]]) -> Iterator[tuple[Any, Any]]:
        for owner, method, block in calls:
            yield from self._ready()
            self.keys[next(self._position)] = (owner, 0, block.index)
            yield method, block
        yield from self._ready()

    def _ready(self) -> Iterator[tuple[Any, Any]]:
        for owner, tracker in self.trackers.items():
            while tracker.ready:
                chunk = tracker.ready.popleft()
                self.keys[next(self._position)] = (owner, chunk.level, chunk.index)
                yield tracker.job.write, chunk


def tracker(
    job: PyramidJob, blocks: Any, done: set[tuple[int, ...]], *, running: bool = True
) -> LevelTracker:
    """Return the tracker of an output's levels, from its block plan and the blocks done.

    Parameters
    ----------
    job : PyramidJob
        The output's levels.
    blocks : tiledseg.blocks.BlockPlan
        The blocks of the run (those outside its region or mask are never written).
    done : set of tuple
        The blocks an earlier run wrote.
    running : bool
        Whether this run is still to write the blocks not done (``False``: they are all
        written, as after a graph cut).
    """
    from tiledseg.runs import done_blocks

    written = np.zeros(blocks.grid, bool)
    written[np.ix_(*blocks.axes)] = True
    if blocks.keep is not None:
        written &= blocks.keep
    todo = written.copy() if running else np.zeros_like(written)
    for index in done:
        if running and all(i < n for i, n in zip(index, todo.shape, strict=True)):
            todo[index] = False
    levels = {level: done_blocks(job.out, level=level) for level in range(1, job.levels + 1)}
    return LevelTracker(job, written, todo, levels)
