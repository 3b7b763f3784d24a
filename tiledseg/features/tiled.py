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

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from tiledseg.arrays import to_device
from tiledseg.blocks import Block, plan_blocks, resolve_block
from tiledseg.errors import InputDataError
from tiledseg.features.bank import FeatureBank, resolve_bank
from tiledseg.features.filters import block_features
from tiledseg.volume import Volume, WrappedSource, open_volume, with_extra_channels

__all__ = [
    "NonFiniteValuesError",
    "feature_array",
    "features_of_block",
    "read_block",
    "read_finite",
    "with_nan_fill",
]


class NonFiniteValuesError(InputDataError):
    """An image holding NaN or infinite values where a run read it (and no fill was given)."""


def _where(region: Sequence[slice]) -> str:
    return ", ".join(f"{s.start}:{s.stop}" for s in region)


def _non_finite(name: str, region: Sequence[slice]) -> NonFiniteValuesError:
    return NonFiniteValuesError(
        f"image {name} holds NaN or infinite values (in region {_where(region)}); replace "
        "them (e.g. with numpy.nan_to_num) or give --nan-fill VALUE to read them as VALUE"
    )


def read_finite(volume: Volume, region: tuple[slice, ...]) -> np.ndarray:
    """Read a region and refuse NaN or infinite values, naming the region.

    A volume made by :func:`with_nan_fill` reads them as its fill value instead.

    Raises
    ------
    NonFiniteValuesError
        The region holds NaN or infinite values.
    """
    data = volume.read(region)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise _non_finite(volume.name, region)
    return data


class _Finite(WrappedSource):
    """A float source whose NaN and infinite values read as ``fill``.

    With ``fill=None`` reading one raises :class:`NonFiniteValuesError`, naming the
    spatial region read (``channel_axis``: the source's axis left out of it).
    """

    def __init__(self, source: Any, fill: float | None, name: str, channel_axis: int | None):
        self.source, self.fill, self.name, self.channel_axis = source, fill, name, channel_axis

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.source.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        data = self.source[index]
        if hasattr(data, "compute"):  # a dask array: compute here, in this task
            data = data.compute(scheduler="sync")
        data = np.asarray(data)
        bad = ~np.isfinite(data)
        if not bad.any():
            return data
        if self.fill is None:
            items = list(index) if isinstance(index, tuple) else [index]
            if self.channel_axis is not None and len(items) > self.channel_axis:
                del items[self.channel_axis]
            raise _non_finite(self.name, [i for i in items if isinstance(i, slice)])
        return np.where(bad, data.dtype.type(self.fill), data)


def with_nan_fill(volume: Volume, fill: float | None, *, refuse: bool = False) -> Volume:
    """Return ``volume`` reading NaN and infinite values as ``fill``.

    Every read of the returned volume (its blocks, the chunks a chunk cache keeps, a
    sample of its centre) sees ``fill`` in their place; ``volume`` is not changed.
    Integer images, which hold none, come back as they are; with extra channels each
    float image of the stack reads through the fill.

    Parameters
    ----------
    volume : Volume
        The image (with its extra channels, if any).
    fill : float or None
        The value NaN and infinite values read as; ``None``: ``volume`` as it is, unless
        ``refuse``.
    refuse : bool
        With ``fill=None``, a read that meets a NaN or infinite value raises
        :class:`NonFiniteValuesError` naming the region (a pass over the whole image,
        such as the graph cut's contrast scale, that must not add them up).

    Returns
    -------
    Volume

    Raises
    ------
    InputDataError
        ``fill`` does not fit a float image's dtype (above float16's 65504).
    """
    if fill is None and not refuse:
        return volume
    extras = volume.extra_volumes
    if extras:
        parts = [with_nan_fill(v, fill, refuse=refuse) for v in (volume.image_only, *extras)]
        return dataclasses.replace(volume, source=type(volume.source)(parts))
    if volume.dtype.kind != "f":
        return volume
    with np.errstate(over="ignore"):
        fits = fill is None or bool(np.isfinite(volume.dtype.type(fill)))
    if not fits:
        raise InputDataError(
            f"nan_fill {fill:g} does not fit image {volume.name}'s dtype {volume.dtype}; "
            "give a value inside its range"
        )
    source = volume.source
    if isinstance(source, _Finite):
        if fill is None:  # read as a fill (which leaves nothing to refuse) or refused already
            return volume
        source = source.source
    filled = _Finite(source, fill, volume.name, volume.channel_axis)
    return dataclasses.replace(volume, source=filled)


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
