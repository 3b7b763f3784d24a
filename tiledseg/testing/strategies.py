"""Hypothesis strategies for property tests of tiling (shipped, as zarr ships its own).

They draw what the tiling code must be indifferent to: volume shapes in 2D and 3D,
small random feature banks, anisotropic spacings, and processing blocks that do not
divide the shape, are smaller than it along only some axes, or cover it whole. A
drawn block is always one :func:`tiledseg.blocks.resolve_block` accepts: along each
axis it is at least the halo the bank needs, or at least the volume's length.

Requires ``hypothesis`` (a development dependency); import this module explicitly::

    from tiledseg.testing import strategies as tst

    @given(case=tst.tiling_cases())
    def test_tiling(case): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from tiledseg.features.bank import FAMILIES, FeatureBank

__all__ = [
    "SMALL_SCALES",
    "TilingCase",
    "banks",
    "block_shapes",
    "ndims",
    "shapes",
    "spacings",
    "symmetric_matrices",
    "tiling_cases",
]

#: Scales small enough that a halo (at most 9 voxels) fits many times in a small volume.
SMALL_SCALES: tuple[float, ...] = (0.5, 0.7, 1.0, 1.6)

#: Default largest side of a drawn volume, per dimensionality (keeps examples fast).
MAX_SIDE = {2: 40, 3: 18}


def ndims() -> st.SearchStrategy[int]:
    """2 or 3 spatial dimensions."""
    return st.sampled_from((2, 3))


@st.composite
def shapes(
    draw: st.DrawFn,
    *,
    ndim: int | None = None,
    min_side: int = 1,
    max_side: int | None = None,
) -> tuple[int, ...]:
    """Draw a spatial shape of 2 or 3 axes, each between ``min_side`` and ``max_side``."""
    if ndim is None:
        ndim = draw(ndims())
    top = MAX_SIDE[ndim] if max_side is None else max_side
    side = st.integers(min_value=min_side, max_value=max(min_side, top))
    return tuple(draw(side) for _ in range(ndim))


@st.composite
def banks(
    draw: st.DrawFn,
    *,
    families: Sequence[str] = FAMILIES,
    scales: Sequence[float] = SMALL_SCALES,
    max_families: int = 3,
    max_scales: int = 2,
) -> FeatureBank:
    """Draw a small random bank of 1 to ``max_families`` families.

    Each family is at 1 to ``max_scales`` scales.
    """
    chosen = draw(
        st.lists(st.sampled_from(tuple(families)), min_size=1, max_size=max_families, unique=True)
    )
    scale_lists = st.lists(
        st.sampled_from(tuple(scales)), min_size=1, max_size=max_scales, unique=True
    )
    return FeatureBank({family: tuple(draw(scale_lists)) for family in chosen})


@st.composite
def spacings(draw: st.DrawFn, ndim: int, *, isotropic_weight: float = 0.5) -> tuple[float, ...]:
    """Voxel spacings: isotropic (all 1) or anisotropic with ratios up to 3."""
    if draw(st.floats(0, 1)) < isotropic_weight:
        return (1.0,) * ndim
    values = st.sampled_from((0.5, 1.0, 1.5, 2.0, 3.0))
    return tuple(draw(values) for _ in range(ndim))


@st.composite
def block_shapes(
    draw: st.DrawFn,
    shape: Sequence[int],
    halo: Sequence[int],
    *,
    beyond: int = 3,
) -> tuple[int, ...]:
    """Draw a block :func:`~tiledseg.blocks.resolve_block` accepts for ``shape`` and ``halo``.

    Along each axis the size is at least ``halo`` (and 1) or at least the volume's
    length, and at most ``beyond`` past the length; sizes that do not divide the
    length are drawn as often as any other, so blocks are uneven, smaller than the
    volume along some axes and not others, or one block for the whole volume.
    """
    block = []
    for n, h in zip(shape, halo, strict=True):
        low = max(1, min(h, n))
        block.append(draw(st.integers(min_value=low, max_value=n + beyond)))
    return tuple(block)


@dataclass(frozen=True)
class TilingCase:
    """One drawn tiling problem: an image, its bank and spacing, and a block to tile it with."""

    shape: tuple[int, ...]
    n_channels: int
    dtype: str
    bank: FeatureBank
    spacing: tuple[float, ...]
    block: tuple[int, ...]
    seed: int

    @property
    def halo(self) -> tuple[int, ...]:
        """Halo the bank needs at this spacing."""
        return self.bank.halo(self.spacing)

    def image(self) -> np.ndarray:
        """Return the image, channels last when there is more than one channel (seeded)."""
        rng = np.random.default_rng(self.seed)
        full = (*self.shape, self.n_channels) if self.n_channels > 1 else self.shape
        if self.dtype == "uint8":
            return rng.integers(0, 256, size=full, dtype=np.uint8)
        return (rng.standard_normal(full) * 40.0 + 100.0).astype(self.dtype)

    @property
    def channel_axis(self) -> int | None:
        """Channel axis of :meth:`image` (``None`` for one channel)."""
        return len(self.shape) if self.n_channels > 1 else None


@st.composite
def tiling_cases(
    draw: st.DrawFn,
    *,
    ndim: int | None = None,
    max_side: int | None = None,
    anisotropic: bool = True,
    channels: bool = True,
    bank: st.SearchStrategy[FeatureBank] | None = None,
) -> TilingCase:
    """Draw a shape, a small bank, a spacing and a valid, usually uneven block for them."""
    if ndim is None:
        ndim = draw(ndims())
    fb = draw(bank if bank is not None else banks())
    spacing = draw(spacings(ndim)) if anisotropic else (1.0,) * ndim
    shape = draw(shapes(ndim=ndim, min_side=2, max_side=max_side))
    block = draw(block_shapes(shape, fb.halo(spacing)))
    n_channels = draw(st.sampled_from((1, 2))) if channels else 1
    dtype = draw(st.sampled_from(("uint8", "float32", "float64")))
    seed = draw(st.integers(min_value=0, max_value=2**16))
    return TilingCase(shape, n_channels, dtype, fb, spacing, block, seed)


@st.composite
def symmetric_matrices(
    draw: st.DrawFn, ndim: int, *, max_count: int = 12, bound: float = 100.0
) -> np.ndarray:
    """Draw a stack ``(count, ndim, ndim)`` of symmetric matrices, degenerate ones included.

    Each matrix is random, zero, a multiple of the identity, rank one, or has a
    repeated eigenvalue (``Q diag(a, a, b) Q^T``), so closed-form eigenvalue code
    meets its edge cases (``p = 0``, a clipped ``arccos``).
    """
    count = draw(st.integers(min_value=1, max_value=max_count))
    value = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=32)
    out = np.empty((count, ndim, ndim), dtype=np.float64)
    for i in range(count):
        kind = draw(st.sampled_from(("random", "zero", "identity", "rank1", "repeated")))
        if kind == "random":
            upper = np.array([[draw(value) for _ in range(ndim)] for _ in range(ndim)])
            m = np.triu(upper) + np.triu(upper, 1).T
        elif kind == "zero":
            m = np.zeros((ndim, ndim))
        elif kind == "identity":
            m = draw(value) * np.eye(ndim)
        elif kind == "rank1":
            v = np.array([draw(value) for _ in range(ndim)])
            m = np.outer(v, v) / max(1.0, bound)
        else:
            seed = draw(st.integers(min_value=0, max_value=2**16))
            q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((ndim, ndim)))
            diag = [draw(value)] * (ndim - 1) + [draw(value)]
            m = q @ np.diag(diag) @ q.T
            m = (m + m.T) / 2
        out[i] = m
    return out
