"""Block planning: the grid of processing blocks, their halos and what each reads.

The processing block is independent of the store's chunks. Each block has a
*write region* (its own voxels, which no other block writes) and a *read
region* (the write region grown by the halo, clipped at the edges of the
volume). Clipping is what keeps the tiled result equal to the untiled one: at a
true edge the filters' boundary mode applies to the same voxels in both.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tiledseg.errors import BlockSizeError

__all__ = [
    "DEFAULT_BLOCK",
    "Block",
    "BlockPlan",
    "haloed",
    "plan_blocks",
    "resolve_block",
    "within",
]

Region = tuple[slice, ...]

#: Default block shape per dimensionality: about a million voxels, so a block's
#: features (~20 x 4 bytes per voxel) stay near 80 MB per thread. At 256^3, blocks of
#: 64 x 128 x 128 predicted as fast as 128^3 (the first pass, along z, is the only
#: one that sees the z halo) with half the memory (benchmarks/RESULTS.md).
DEFAULT_BLOCK = {2: (1024, 1024), 3: (64, 128, 128)}


@dataclass(frozen=True)
class Block:
    """One processing block."""

    index: tuple[int, ...]
    region: Region
    read: Region

    @property
    def inner(self) -> Region:
        """The write region's position inside the read region."""
        return within(self.region, self.read)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the write region."""
        return tuple(s.stop - s.start for s in self.region)

    @property
    def name(self) -> str:
        """Human-readable position, e.g. ``z 0:128, y 128:256, x 0:100``."""
        axes = "zyx"[-len(self.region) :]
        return ", ".join(f"{a} {s.start}:{s.stop}" for a, s in zip(axes, self.region, strict=True))


def split_until(
    sizes: Sequence[int], *, shape: Sequence[int], halo: Sequence[int], min_blocks: int
) -> tuple[int, ...]:
    """Halve the longest axis of a block until ``shape`` holds at least ``min_blocks`` of them.

    Every worker thread then has one. No axis is halved below twice the halo, nor 16.
    """
    sizes = list(sizes)
    while math.prod(-(-n // b) for n, b in zip(shape, sizes, strict=True)) < min_blocks:
        axis = max(range(len(sizes)), key=lambda a: sizes[a])
        smaller = -(-sizes[axis] // 2)
        if smaller < max(2 * halo[axis], 16):
            break
        sizes[axis] = smaller
    return tuple(sizes)


def resolve_block(
    block: int | Sequence[int] | str | None,
    *,
    shape: Sequence[int],
    halo: Sequence[int],
    min_blocks: int = 1,
) -> tuple[int, ...]:
    """Return the block shape for a volume, checked against the halo.

    Parameters
    ----------
    block : int, sequence of int, "N" or "Z,Y,X", or None
        Requested block edge(s). ``None`` picks :data:`DEFAULT_BLOCK`, enlarged
        to the halo where the bank needs it.
    shape : sequence of int
        Spatial shape of the volume.
    halo : sequence of int
        Halo per axis the computation needs.
    min_blocks : int
        For the default only: split blocks (never below twice the halo, nor 16) until the
        volume has at least this many, so that every core has a block to work on.

    Raises
    ------
    BlockSizeError
        When a size is not positive, or smaller than the halo along an axis where
        the volume is longer than the block (such a block would read more halo than
        block, wasting most of its work, so we refuse rather than guess).
    """
    ndim = len(shape)
    if block is None:
        sizes = [
            min(n, max(edge, h))
            for n, edge, h in zip(shape, DEFAULT_BLOCK[ndim], halo, strict=True)
        ]
        return split_until(sizes, shape=shape, halo=halo, min_blocks=min_blocks)
    if isinstance(block, str):
        try:
            values = [int(p) for p in block.split(",")]
        except ValueError:
            raise BlockSizeError(
                f"block {block!r} must be an integer or integers separated by commas"
            ) from None
    elif isinstance(block, int):
        values = [block]
    else:
        values = [int(b) for b in block]
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim:
        raise BlockSizeError(
            f"block {block!r} has {len(values)} sizes but the volume has {ndim} spatial axes"
        )
    if any(v <= 0 for v in values):
        raise BlockSizeError(f"block {block!r}: every block size must be a positive integer")
    axes = "zyx"[-ndim:]
    for axis, (v, n, h) in enumerate(zip(values, shape, halo, strict=True)):
        if v < h and v < n:
            raise BlockSizeError(
                f"block size {v} along {axes[axis]} is smaller than the halo {h} the features "
                f"need there; use --block {max(halo)} or more (or a bank with smaller scales; "
                "an autocontext model needs one bank halo per stage)"
            )
    return tuple(min(v, n) for v, n in zip(values, shape, strict=True))


def within(inner: Region, outer: Region) -> Region:
    """Return the position of region ``inner`` inside region ``outer`` (which contains it)."""
    return tuple(
        slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True)
    )


def haloed(region: Region, halo: Sequence[int], shape: Sequence[int]) -> Region:
    """Return the read region of ``region``: grown by ``halo``, clipped at the volume's edges."""
    return tuple(
        slice(max(0, s.start - h), min(n, s.stop + h))
        for s, h, n in zip(region, halo, shape, strict=True)
    )


class BlockPlan:
    """The blocks of a regular grid, made as they are iterated.

    Only the blocks meeting ``roi`` are made, when it is given.

    A list of blocks holds ~0.7 kB a block in the process that plans it (70 MB for
    10^5); this holds the grid alone. Its length and membership are computed from
    the grid, and every iteration yields the blocks of :func:`plan_blocks`, in its
    order (grid index order).

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the volume.
    block : sequence of int
        Block shape.
    halo : sequence of int
        Halo per axis: grows each block's read region.
    roi : tuple of slice, optional
        Only the blocks whose write region meets this region.

    :meth:`only` leaves out more blocks (those a mask does not meet), by their grid index.
    """

    def __init__(
        self,
        shape: Sequence[int],
        block: Sequence[int],
        halo: Sequence[int],
        *,
        roi: Region | None = None,
    ):
        self.shape = tuple(int(n) for n in shape)
        self.block = tuple(int(b) for b in block)
        self.halo = tuple(int(h) for h in halo)
        #: Per axis, the grid indices of the blocks meeting ``roi`` (a block meets it when
        #: it does along every axis, so the blocks kept are the product of these).
        limits = (None,) * len(self.shape) if roi is None else tuple(roi)
        self.axes = tuple(
            _axis_indices(n, b, r) for n, b, r in zip(self.shape, self.block, limits, strict=True)
        )
        #: ``None``, or a boolean array of the grid's shape: the blocks kept (:meth:`only`)
        self.keep: Any = None

    @property
    def grid(self) -> tuple[int, ...]:
        """The number of blocks along each axis of the whole grid (``roi`` or not)."""
        return tuple(-(-n // b) for n, b in zip(self.shape, self.block, strict=True))

    def only(self, keep: Any) -> BlockPlan:
        """Return the plan of this plan's blocks whose entry in ``keep`` is true.

        ``keep`` is a boolean array of shape :attr:`grid` (one byte a block).
        """
        plan = copy.copy(self)
        plan.keep = keep if self.keep is None else keep & self.keep
        return plan

    def __len__(self) -> int:
        """Return the number of blocks in the plan."""
        if self.keep is None:
            return math.prod(len(indices) for indices in self.axes)
        import numpy as np

        return int(self.keep[np.ix_(*(list(indices) for indices in self.axes))].sum())

    def __iter__(self) -> Iterator[Block]:
        """Yield the plan's blocks, in grid index order."""
        for index in itertools.product(*self.axes):
            if self.keep is None or self.keep[index]:
                yield self.block_at(index)

    def __contains__(self, index: object) -> bool:
        """Whether the block at grid ``index`` is one of the plan's."""
        return (
            isinstance(index, tuple)
            and len(index) == len(self.axes)
            and all(i in indices for i, indices in zip(index, self.axes, strict=True))
            and (self.keep is None or bool(self.keep[index]))
        )

    def block_at(self, index: Sequence[int]) -> Block:
        """Return the block at grid ``index``."""
        region = tuple(
            slice(i * b, min(i * b + b, n))
            for i, b, n in zip(index, self.block, self.shape, strict=True)
        )
        return Block(tuple(index), region, haloed(region, self.halo, self.shape))


def _axis_indices(n: int, b: int, roi: slice | None) -> range | tuple[int, ...]:
    """Grid indices along one axis (length ``n``, blocks of ``b``) of the blocks meeting ``roi``."""
    every = range(-(-n // b))
    if roi is None:
        return every
    return tuple(i for i in every if roi.start < min(i * b + b, n) and i * b < roi.stop)


def plan_blocks(
    shape: Sequence[int],
    block: Sequence[int],
    halo: Sequence[int],
    *,
    roi: Region | None = None,
) -> list[Block]:
    """Return the blocks of a regular grid, optionally only those meeting ``roi``.

    The result is a list of :class:`BlockPlan`'s blocks, for the callers that index them
    or go over them twice.
    """
    return list(BlockPlan(shape, block, halo, roi=roi))
