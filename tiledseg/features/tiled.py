"""The thin layer between volumes and the per-block kernel.

:func:`features_of_block` reads a block with its halo and makes its features with
:func:`tiledseg.features.filters.block_features`, the one kernel that training and
prediction (:func:`tiledseg.autocontext.cascade_features`) both call.
:func:`feature_array` exposes the same computation as a lazy dask array
``(n_features, *spatial)`` whose chunks are the processing blocks, for users who want
the features themselves: computing one chunk reads one haloed block, so the whole
stack is never in memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from tiledseg.arrays import to_device
from tiledseg.blocks import Block, plan_blocks, resolve_block
from tiledseg.errors import InputDataError
from tiledseg.features.bank import FeatureBank, resolve_bank
from tiledseg.features.filters import block_features
from tiledseg.volume import Volume, open_volume, with_extra_channels

__all__ = ["feature_array", "features_of_block", "read_block", "read_finite"]


def read_finite(volume: Volume, region: tuple[slice, ...]) -> np.ndarray:
    """Read a region and refuse NaN or infinite values with a clear error."""
    data = volume.read(region)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        where = ", ".join(f"{s.start}:{s.stop}" for s in region)
        raise InputDataError(
            f"image {volume.name} holds NaN or infinite values (in region {where}); "
            "replace them (e.g. with numpy.nan_to_num) before segmenting"
        )
    return data


def read_block(volume: Volume, block: Block, device: str = "cpu") -> Any:
    """Return a block's read region (the block and its halo), checked finite, on ``device``."""
    return to_device(read_finite(volume, block.read), device)


def features_of_block(
    volume: Volume,
    block: Block,
    *,
    bank: FeatureBank,
    spacing: Sequence[float],
    device: str = "cpu",
) -> Any:
    """Read a block with its halo and return its features ``(n_features, *block.shape)``.

    With ``device="cuda"`` the block is copied to the GPU once, its features are
    computed there and stay there (a cupy array).
    """
    data = read_block(volume, block, device)
    return block_features(data, bank=bank, inner=block.inner, spacing=spacing)


def feature_array(
    image: Any,
    *,
    features: Any = None,
    block: int | Sequence[int] | str | None = None,
    spacing: Sequence[float] | str | None = None,
    channel_axis: int | None = None,
    extra_channels: Sequence[Any] | None = None,
    filter_extra_channels: bool = False,
) -> Any:
    """Return the features of a whole image as a lazy dask array.

    Parameters
    ----------
    image : path or array
        Anything :func:`tiledseg.volume.open_volume` accepts.
    features : bank name, YAML path, mapping or FeatureBank, optional
        The feature bank (``"default"`` if omitted).
    block : int or sequence of int, optional
        Processing block; it becomes the chunk shape of the result.
    spacing : sequence of float, optional
        Voxel spacing.
    channel_axis : int, optional
        Channel axis of ``image``.
    extra_channels : sequence of path or array, optional
        Co-registered images appended as channels: their raw values, and with
        ``filter_extra_channels`` the bank's families of them too.
    filter_extra_channels : bool

    Returns
    -------
    dask.array.Array, shape (n_features, *spatial), float32
    """
    import dask.array as da

    volume = open_volume(image, channel_axis=channel_axis, spacing=spacing)
    bank = resolve_bank(features, ndim=volume.ndim)
    if extra_channels:
        volume = with_extra_channels(volume, extra_channels)
        bank = bank.with_extra_channels(volume.n_extra, filtered=filter_extra_channels)
    halo = bank.halo(volume.spacing)
    shape = volume.shape
    blocks = resolve_block(block, shape=shape, halo=halo)
    n = bank.n_features(ndim=volume.ndim, n_channels=volume.n_channels)
    chunks = ((n,), *(_axis_chunks(s, b) for s, b in zip(shape, blocks, strict=True)))
    from dask.base import tokenize

    # named by what sets the values, so one image opened twice names one graph
    name = "tiledseg-features-" + tokenize(_volume_identity(volume), bank.to_dict(), blocks)
    graph = {
        (name, 0, *b.index): (_block_task, volume, b, bank)
        for b in plan_blocks(shape, blocks, halo)
    }
    meta = np.empty((0,) * (volume.ndim + 1), dtype=np.float32)
    return da.Array(graph, name, chunks, dtype=np.float32, meta=meta)


def _volume_identity(volume: Volume) -> tuple:
    """Return what determines a volume's values, for naming its dask graph.

    An image opened from a path: the path (absolute) and name; an in-memory array:
    dask's token of the array itself (its data, for numpy). Then the layout: shape,
    dtype, spacing, channel axis and count. Extra channels: the same for each of them.
    """
    layout = (
        volume.shape,
        str(volume.dtype),
        tuple(float(s) for s in volume.spacing),
        volume.channel_axis,
        volume.n_channels,
    )
    parts = (volume.image_only, *volume.extra_volumes)
    if len(parts) > 1:
        return ("stack", layout, tuple(_volume_identity(v) for v in parts))
    if volume.path is not None:
        return ("path", os.path.abspath(volume.path), volume.name, layout)
    from dask.base import tokenize

    return ("array", tokenize(volume.source), layout)


def _block_task(volume: Volume, block: Block, bank: FeatureBank) -> np.ndarray:
    return features_of_block(volume, block, bank=bank, spacing=volume.spacing)


def _axis_chunks(n: int, b: int) -> tuple[int, ...]:
    full, rest = divmod(n, b)
    return (b,) * full + ((rest,) if rest else ())
