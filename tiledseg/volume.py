"""Opening images and label maps as volumes: axes, channels, spacing, lazy region reads.

A :class:`Volume` wraps any sliceable array (zarr, HDF5, memory-mapped ``.npy``,
TIFF through tifffile's zarr view, PNG or JPEG decoded whole, dask or numpy) and
knows which axes are spatial and which one, if any, holds channels. Reading a
region returns a numpy array ``(channels, *spatial)``: channels first inside
blocks, so that each channel is one contiguous image for the filters. A zarr
read that fails names the damaged chunk files (:mod:`tiledseg.damaged_chunks`).

Sources opened from a path are reopened lazily in each process, so a volume can
be sent to dask workers without shipping its data.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tiledseg.errors import InputDataError, TiledsegError
from tiledseg.formats import (
    PILLOW_SUFFIXES,
    READABLE,
    file_kind,
    not_readable,
    open_pillow,
    tiff_metadata,
)

if TYPE_CHECKING:
    from tiledseg.chunk_cache import ChunkCache

__all__ = [
    "SUPPORTED_DTYPES",
    "Volume",
    "chunk_cacheable",
    "open_volume",
    "parse_region",
    "parse_spacing",
    "same_path",
    "shape_mismatch",
    "split_dataset",
    "split_options",
    "with_chunk_cache",
    "with_extra_channels",
]

Region = tuple[slice, ...]

#: dtypes an image may have; everything is filtered as float32.
SUPPORTED_DTYPES = tuple(
    np.dtype(d) for d in ("u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8")
)

_H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
_TIFF_SUFFIXES = (".tif", ".tiff")  # .ome.tif(f) included
_ZARR_METADATA = ("zarr.json", ".zarray", ".zgroup")


class _LazySource:
    """A store opened from a path on first use, in each process that uses it."""

    def __init__(self, kind: str, path: str, key: str | None = None):
        self.kind, self.path, self.key = kind, path, key
        self._array: Any = None
        self._handle: Any = None

    def __getstate__(self) -> dict:
        return {"kind": self.kind, "path": self.path, "key": self.key}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["kind"], state["path"], state["key"])

    @property
    def array(self) -> Any:
        if self._array is None:
            self._array = self._open()
        return self._array

    def _open(self) -> Any:
        if self.kind == "npy":
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        if self.kind == "hdf5":
            import h5py

            self._handle = h5py.File(self.path, "r")
            return self._handle[self.key]
        if self.kind == "tiff":
            import tifffile
            import zarr

            self._handle = tifffile.imread(self.path, aszarr=True, series=0, level=0)
            return zarr.open_array(self._handle, mode="r")
        import zarr

        return zarr.open_array(self.path, mode="r")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[index])
        except MemoryError:
            raise
        except Exception as exc:  # a damaged chunk: the codec's error, whatever its type
            error = self._damaged(index, exc)
            if error is None:
                raise
            raise error from exc

    def _damaged(self, index: Any, exc: Exception) -> Exception | None:
        """Return an error naming the damaged zarr chunks a failed read met, if it finds any."""
        bounds = _index_bounds(index, self.shape) if self.kind == "zarr" else None
        if bounds is None:
            return None
        from tiledseg.damaged_chunks import damaged_chunk_error

        return damaged_chunk_error(self.array, bounds[0], bounds[1], exc)

    def close(self) -> None:
        """Close open file handles (TIFF, HDF5); the source reopens on next use."""
        handle, self._handle, self._array = self._handle, None, None
        if handle is not None:
            handle.close()

    def __del__(self) -> None:
        # tifffile's zarr store keeps files open after reads: close them, or they
        # are reported as unclosed (ResourceWarning) when collected
        try:
            self.close()
        except Exception:  # never raise from a finaliser
            pass


class WrappedSource:
    """A source read through another (``self.source``): its dtype and stored array."""

    source: Any

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    @property
    def array(self) -> Any:
        return getattr(self.source, "array", self.source)


class _OneTimePoint(WrappedSource):
    """A source seen without its single-point time axis (OME's t of size 1)."""

    def __init__(self, source: Any, axis: int):
        self.source, self.axis = source, axis

    @property
    def shape(self) -> tuple[int, ...]:
        shape = list(self.source.shape)
        del shape[self.axis]
        return tuple(shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        index = list(index) if isinstance(index, tuple) else [index]
        index.insert(self.axis, 0)
        return np.asarray(self.source[tuple(index)])


@dataclass
class Volume:
    """A 2D or 3D image, optionally with a channel axis, read region by region.

    Parameters
    ----------
    source : array-like
        Anything with ``shape``, ``dtype`` and basic slicing.
    channel_axis : int or None
        Axis of ``source`` that holds channels.
    spacing : tuple of float
        Physical voxel size per spatial axis.
    name : str
        Where the data came from, for messages.
    """

    source: Any
    channel_axis: int | None
    spacing: tuple[float, ...]
    name: str
    spacing_from_metadata: bool = False
    attrs: dict = field(default_factory=dict)
    #: Set once every voxel was read and found finite (``predict.check_finite``).
    checked_finite: bool = field(default=False, compare=False)
    #: The path it was opened from (``None``: an in-memory array), as the user gave it.
    path: str | None = None
    #: The metadata its axes and spacing were read from ("OME-Zarr", "OME-TIFF", "TIFF").
    metadata: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape."""
        shape = list(self.source.shape)
        if self.channel_axis is not None:
            del shape[self.channel_axis]
        return tuple(shape)

    @property
    def extra_volumes(self) -> tuple[Volume, ...]:
        """The extra images :func:`with_extra_channels` appended (none for a plain image)."""
        return self.source.volumes[1:] if isinstance(self.source, _ChannelStack) else ()

    @property
    def image_only(self) -> Volume:
        """The image without the extra images :func:`with_extra_channels` appended."""
        return self.source.volumes[0] if isinstance(self.source, _ChannelStack) else self

    @property
    def n_extra(self) -> int:
        """How many channels the extra images add, after the image's own."""
        return sum(v.n_channels for v in self.extra_volumes)

    @property
    def image_channel_axis(self) -> int | None:
        """The image's own channel axis (with extras appended, ``channel_axis`` is the stack's)."""
        if isinstance(self.source, _ChannelStack):
            return self.source.volumes[0].channel_axis
        return self.channel_axis

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.shape)

    @property
    def n_channels(self) -> int:
        """Number of channels (1 without a channel axis)."""
        return 1 if self.channel_axis is None else int(self.source.shape[self.channel_axis])

    @property
    def dtype(self) -> np.dtype:
        """Data type of the stored values."""
        return np.dtype(self.source.dtype)

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """Storage chunk shape of the source, if it has one."""
        array = getattr(self.source, "array", self.source)
        chunks = getattr(array, "chunks", None)
        if chunks is None or not all(isinstance(c, int | np.integer) for c in chunks):
            return None
        return tuple(int(c) for c in chunks)

    @property
    def axes(self) -> str:
        """Axis letters of the source, e.g. ``"zyx"`` or ``"yxc"``."""
        spatial = "zyx"[-self.ndim :]
        letters = list(spatial)
        if self.channel_axis is not None:
            letters.insert(self.channel_axis, "c")
        return "".join(letters)

    def read(self, region: Region) -> np.ndarray:
        """Read a spatial region as ``(channels, *region_shape)``."""
        index: list[Any] = list(region)
        if self.channel_axis is not None:
            index.insert(self.channel_axis, slice(None))
        data = self.source[tuple(index)]
        if hasattr(data, "compute"):  # a dask array: compute here, in this task
            data = data.compute(scheduler="sync")
        data = np.asarray(data)
        if self.channel_axis is None:
            return data[np.newaxis]
        return np.moveaxis(data, self.channel_axis, 0)

    def describe(self) -> dict[str, Any]:
        """Return the layout as plain data (for ``tiledseg info``)."""
        return {
            "path": self.name,
            "shape": list(self.shape),
            "axes": self.axes,
            "channels": self.n_channels,
            "dtype": str(self.dtype),
            "chunks": list(self.chunks) if self.chunks else None,
            "spacing": list(self.spacing),
            "spacing_from": "metadata" if self.spacing_from_metadata else "default",
            "metadata": self.metadata,
        }


def parse_spacing(
    text: str | Sequence[float] | None, ndim: int | None = None
) -> tuple[float, ...] | None:
    """Parse ``"z,y,x"`` (or a sequence) into positive floats; ``None`` stays ``None``."""
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise TiledsegError(
            f"spacing {text!r} must be numbers separated by commas, e.g. '2.0,0.5,0.5'"
        ) from None
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise TiledsegError(f"spacing {text!r} must hold positive finite numbers")
    if ndim is not None and len(values) != ndim:
        raise TiledsegError(
            f"spacing {text!r} has {len(values)} values but the image has {ndim} spatial axes"
        )
    return values


def parse_region(text: str | Sequence[slice] | None, shape: Sequence[int]) -> Region | None:
    """Parse a region such as ``"10:50,:,100:200"`` into slices clipped to ``shape``."""
    if text is None:
        return None
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        slices = []
        for part in parts:
            bounds = part.split(":")
            if len(bounds) != 2:
                raise TiledsegError(
                    f"region {text!r}: {part!r} is not start:stop; write e.g. '10:50,:,100:200'"
                )
            try:
                lo, hi = (int(b) if b.strip() else None for b in bounds)
            except ValueError:
                raise TiledsegError(
                    f"region {text!r}: {part!r} is not start:stop of integers"
                ) from None
            slices.append(slice(lo, hi))
    else:
        slices = list(text)
    if len(slices) != len(shape):
        raise TiledsegError(
            f"region {text!r} has {len(slices)} axes but the image has {len(shape)} spatial axes"
        )
    region = []
    for s, n in zip(slices, shape, strict=True):
        start, stop, step = s.indices(n)
        if step != 1 or stop <= start:
            raise TiledsegError(f"region {text!r} is empty or strided along an axis of length {n}")
        region.append(slice(start, stop))
    return tuple(region)


# -- opening ------------------------------------------------------------------------------


def open_volume(
    image: Any,
    *,
    channel_axis: int | None = None,
    spacing: Sequence[float] | str | None = None,
    level: int = 0,
    role: str = "image",
    allow_channels: bool = True,
) -> Volume:
    """Open an image or label map from a path or an array.

    Parameters
    ----------
    image : str, Path, Volume, zarr array, dask array or numpy array
        Paths: ``.npy`` (memory-mapped), ``.tif``/``.tiff`` (lazy, through
        tifffile's zarr view), ``file.h5:/dataset``, ``.png``/``.jpg``/``.jpeg``
        (2D, read whole; colour as channels, last), a zarr v2/v3 array, or a zarr
        group: an OME-Zarr image (multiscale ``level``), a tiledseg output (its
        labels) or a group with one array. ``store.zarr/path/to/array`` addresses
        an array inside a group. A file of another name is read by its first bytes.
        Reading a damaged zarr chunk raises an error naming its file. A TIFF's axes are
        tifffile's: samples (``S``, RGB) or OME's ``C`` are channels, OME's ``T`` of one
        point is dropped; an OME-TIFF's or OME-Zarr's spacing is read. A path may end
        with ``[channel_axis=N]`` (or ``[channel_axis=none]``), e.g.
        ``dist.h5:/data[channel_axis=-1]``: its own channel axis (see :func:`split_options`).
    channel_axis : int, optional
        Axis of the stored array holding channels (overrides the file's metadata).
    spacing : sequence of float or "z,y,x", optional
        Voxel spacing (overrides OME metadata; isotropic 1 by default).
    level : int
        OME-Zarr multiscale level (0 = full resolution).
    role : str
        What the array is ("image", "labels", "truth"), for messages.
    allow_channels : bool
        Whether a channel axis is allowed (not for label maps).

    Returns
    -------
    Volume
        The lazily read image, with its channel axis, spacing and name.
    """
    if isinstance(image, Volume):
        return image
    path = str(image) if isinstance(image, str | os.PathLike) else None
    written: dict[str, Any] = {}
    if path is not None:
        image, written = split_options(path)
    source, meta, name = _open_source(image, level=level, role=role, labels=not allow_channels)
    _check_dtype(np.dtype(source.dtype), name, role)
    source = _one_time_point(source, meta, name=name, role=role)
    shape = tuple(source.shape)
    checked = dict(name=name, role=role, allow_channels=allow_channels)
    if "channel_axis" in written:
        axis = _check_channel_axis(written["channel_axis"], shape, **checked)
        if channel_axis is not None and _check_channel_axis(channel_axis, shape, **checked) != axis:
            raise InputDataError(
                f"{role} {path!r} says channel axis {axis} but channel axis {channel_axis} was "
                "given too (--channel-axis); give one of them"
            )
        channel_axis = axis
    elif channel_axis is None:
        channel_axis = meta.get("channel_axis")
    channel_axis = _check_channel_axis(channel_axis, shape, **checked)
    spatial = len(shape) - (channel_axis is not None)
    _check_spatial(shape, spatial, channel_axis, **checked)
    parsed, from_meta = _spacing_of(spacing, meta, spatial)
    return Volume(
        source, channel_axis, parsed, name, from_meta, meta.get("attrs", {}),
        path=path, metadata=meta.get("metadata"),
    )  # fmt: skip


#: A path's trailing options: ``[key=value]`` (only ``channel_axis`` exists).
_PATH_OPTIONS = re.compile(r"\[(\w+)=([^\[\]]*)\]$")


def split_options(text: str) -> tuple[str, dict[str, Any]]:
    """Split the options written after a path, ``PATH[channel_axis=N]``, from the path.

    ``N`` is the axis of the stored array holding channels (negative counts from the
    end), or ``none``: no channel axis, whatever the file's metadata says. It applies
    to any path, e.g. ``dist.h5:/data[channel_axis=-1]``, ``scan.npy[channel_axis=0]``,
    ``rgb.tif[channel_axis=none]``. A text naming an existing file is a path, whole.

    Parameters
    ----------
    text : str
        A path as the user gave it.

    Returns
    -------
    str
        The path without its options.
    dict
        ``{"channel_axis": N or None}``, or ``{}`` without options.

    Raises
    ------
    InputDataError
        For an unknown option or an axis that is not an integer.
    """
    found = _PATH_OPTIONS.search(text)
    if found is None or os.path.exists(text):
        return text, {}
    key, value = found[1], found[2].strip()
    fix = "write PATH[channel_axis=N], N the stored array's axis of channels (or none)"
    if key != "channel_axis":
        raise InputDataError(f"{text!r}: [{key}=...] is no option of a path; {fix}")
    if value.lower() == "none":
        return text[: found.start()], {"channel_axis": None}
    try:
        return text[: found.start()], {"channel_axis": int(value)}
    except ValueError:
        raise InputDataError(f"{text!r}: channel_axis={value!r} is not an integer; {fix}") from None


def _open_source(
    image: Any, *, level: int, role: str, labels: bool = False
) -> tuple[Any, dict[str, Any], str]:
    """Return the array behind a path or array, its metadata (``{}`` for an array), its name.

    ``labels``: the array is a label map (a palette PNG gives its indices).
    """
    if isinstance(image, str | os.PathLike):
        return _open_path(str(image), level=level, role=role, labels=labels)
    source, name = image, f"<{type(image).__name__} {role}>"
    if not (hasattr(source, "shape") and hasattr(source, "dtype")):
        source = np.asarray(source)
    return source, {}, name


def _one_time_point(source: Any, meta: dict[str, Any], *, name: str, role: str) -> Any:
    """Drop the OME time axis of one point (and shift ``meta``'s channel axis past it)."""
    time_axis = meta.get("time_axis")
    if time_axis is None:
        return source
    if source.shape[time_axis] != 1:
        raise InputDataError(
            f"{role} {name} has a time axis of {source.shape[time_axis]} points (OME axes "
            "metadata); tiledseg segments one time point: write it to its own array"
        )
    if meta.get("channel_axis") is not None and meta["channel_axis"] > time_axis:
        meta["channel_axis"] -= 1
    return _OneTimePoint(source, time_axis)


def _check_channel_axis(
    channel_axis: int | None,
    shape: tuple[int, ...],
    *,
    name: str,
    role: str,
    allow_channels: bool,
) -> int | None:
    """Return the channel axis as an index from 0; refuse it where not allowed or out of range."""
    if channel_axis is None:
        return None
    if not allow_channels:
        raise InputDataError(f"{role} {name}: a {role} map has no channel axis")
    if not -len(shape) <= channel_axis < len(shape):
        raise InputDataError(
            f"{role} {name}: channel axis {channel_axis} is out of range for {len(shape)} axes"
        )
    return channel_axis % len(shape)


def _check_spatial(
    shape: tuple[int, ...],
    spatial: int,
    channel_axis: int | None,
    *,
    name: str,
    role: str,
    allow_channels: bool,
) -> None:
    """Refuse an image that is not 2D or 3D, or is empty."""
    if spatial not in (2, 3):
        how = "--channel-axis" if role == "image" else f"'{name}[channel_axis=N]'"
        hint = (
            f" If one axis holds channels, say which with {how}."
            if spatial == 4 and channel_axis is None and allow_channels
            else ""
        )
        raise InputDataError(
            f"{role} {name} has shape {shape}: tiledseg segments 2D (y, x) or 3D (z, y, x) "
            f"images, got {spatial} spatial axes.{hint}"
        )
    if any(n == 0 for n in shape):
        raise InputDataError(f"{role} {name} is empty (shape {shape})")


def _spacing_of(
    spacing: Sequence[float] | str | None, meta: dict[str, Any], spatial: int
) -> tuple[tuple[float, ...], bool]:
    """Return the spacing (given, else OME's if it fits, else 1) and whether OME's is used."""
    if spacing is not None:
        return parse_spacing(spacing, spatial), False
    if meta.get("spacing") is None or len(meta["spacing"]) != spatial:
        return (1.0,) * spatial, False
    return tuple(meta["spacing"]), True


class _ChannelStack:
    """Volumes of one spatial shape read as one source ``(channels, *spatial)``."""

    def __init__(self, volumes: Sequence[Volume]):
        self.volumes = tuple(volumes)

    @property
    def shape(self) -> tuple[int, ...]:
        return (sum(v.n_channels for v in self.volumes), *self.volumes[0].shape)

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(*(v.dtype for v in self.volumes))

    @property
    def chunks(self) -> tuple[int, ...] | None:
        first = self.volumes[0].chunks
        if first is None or len(first) != len(self.volumes[0].source.shape):
            return None
        spatial = list(first)
        if self.volumes[0].channel_axis is not None:
            del spatial[self.volumes[0].channel_axis]
        return (self.shape[0], *spatial)

    def __getitem__(self, index: Any) -> np.ndarray:
        region = tuple(index)[1:]  # the channel axis is read whole
        dtype = self.dtype
        return np.concatenate([v.read(region).astype(dtype, copy=False) for v in self.volumes])


def with_extra_channels(volume: Volume, extras: Sequence[Any]) -> Volume:
    """Return ``volume`` with co-registered extra images appended as channels, after its own.

    Parameters
    ----------
    volume : Volume
        The image.
    extras : sequence of path, array or Volume
        Images of the same spatial shape. Each may have channels of its own, every one
        of them a feature: as its metadata says (OME-Zarr or OME-TIFF axes, a TIFF's
        samples) or as written after its path, ``PATH[channel_axis=N]`` (e.g.
        ``dist.h5:/data[channel_axis=-1]`` for channels last; see :func:`split_options`).
        They take the image's spacing.

    Returns
    -------
    Volume
        Channels first; ``extra_volumes`` are the extras, ``n_extra`` counts their channels.

    Raises
    ------
    InputDataError
        For an extra of another spatial shape or with other spacing in its metadata; one
        whose shape is the image's with one axis more names ``[channel_axis=N]``.
    """
    opened = [_open_extra(e, volume) for e in extras]
    for extra in opened:
        if (
            extra.spacing_from_metadata
            and volume.spacing_from_metadata
            and not np.allclose(extra.spacing, volume.spacing, rtol=1e-3)
        ):
            raise InputDataError(
                f"extra channel {extra.name} has spacing {list(extra.spacing)} in its metadata "
                f"but image {volume.name} has {list(volume.spacing)}; extra channels must be "
                "co-registered with the image"
            )
    return Volume(
        _ChannelStack([volume, *opened]),
        0,
        volume.spacing,
        " + ".join([volume.name, *(e.name for e in opened)]),
        volume.spacing_from_metadata,
        volume.attrs,
        path=volume.path if all(e.path is not None for e in opened) else None,
    )


def _open_extra(extra: Any, volume: Volume) -> Volume:
    """Open an extra channel of ``volume``; one of another shape names the fix it needs."""
    role = "extra channel"
    try:
        opened = open_volume(extra, role=role)
    except InputDataError:
        stored = _stored_shape(extra, role)
        axis = None if stored is None else _channel_axis_fix(stored, volume.shape)
        if axis is None:
            raise
        raise _extra_needs_axis(extra, stored, volume, axis) from None
    if opened.shape == volume.shape:
        return opened
    stored = tuple(opened.source.shape)
    axis = _channel_axis_fix(stored, volume.shape)
    if axis is not None and axis != opened.channel_axis:
        raise _extra_needs_axis(extra, stored, volume, axis)
    raise InputDataError(
        f"extra channel {opened.name} has spatial shape {opened.shape} but image "
        f"{volume.name} has {volume.shape}; extra channels must be co-registered with "
        "the image, voxel for voxel (resample them first)"
    )


def _stored_shape(image: Any, role: str) -> tuple[int, ...] | None:
    """Return the shape of the array behind a path or array (``None``: it cannot be read)."""
    if not isinstance(image, str | os.PathLike):
        return tuple(np.shape(image))
    try:
        source, meta, name = _open_source(split_options(str(image))[0], level=0, role=role)
        return tuple(_one_time_point(source, meta, name=name, role=role).shape)
    except TiledsegError:
        return None


def _channel_axis_fix(stored: Sequence[int], spatial: Sequence[int]) -> int | None:
    """Return the axis of ``stored`` without which it is ``spatial`` (the last first), or None."""
    stored, spatial = tuple(stored), tuple(spatial)
    for axis in reversed(range(len(stored))):
        if stored[:axis] + stored[axis + 1 :] == spatial:
            return axis
    return None


def _extra_needs_axis(
    extra: Any, stored: tuple[int, ...], volume: Volume, axis: int
) -> InputDataError:
    """Return the error for an extra whose channel axis (``axis``) was not said."""
    if isinstance(extra, str | os.PathLike):
        fix = f"give it as '{split_options(str(extra))[0]}[channel_axis={axis}]'"
        name = split_options(str(extra))[0]
    else:
        fix = f"give it as open_volume(array, channel_axis={axis})"
        name = f"<{type(extra).__name__}>"
    return InputDataError(
        f"extra channel {name} has shape {stored}, image {volume.name}'s spatial shape "
        f"{volume.shape} with one axis more: if its axis {axis} holds channels, {fix}"
    )


def shape_mismatch(image: Volume, other: Volume, role: str) -> InputDataError:
    """Return the error for a label map (or truth) whose shape is not the image's.

    When the two differ by a channel axis the image was not read with (or was read
    with), the message names the fix: ``--channel-axis N`` (or ``PATH[channel_axis=none]``).

    Parameters
    ----------
    image : Volume
        The image (its extra channels, if any, are left aside).
    other : Volume
        The labels, truth or prediction.
    role : str
        What ``other`` is ("labels", "truth"), for the message.

    Returns
    -------
    InputDataError
        The error, to raise.
    """
    image = image.image_only
    message = (
        f"{role} {other.name} {'have' if role == 'labels' else 'has'} shape {other.shape} but "
        f"image {image.name} has spatial shape {image.shape}; they must match voxel for voxel"
    )
    stored = tuple(image.source.shape)
    axis = _channel_axis_fix(stored, other.shape)
    if image.channel_axis is None and axis is not None:
        message += (
            f"; if the image's axis {axis} holds channels (e.g. RGB), give --channel-axis "
            f"{axis} (channel_axis= in Python)"
        )
    elif image.channel_axis is not None and stored == tuple(other.shape):
        where = split_options(image.path)[0] if image.path else "PATH"
        message += (
            f"; the image was read with axis {image.channel_axis} as channels: if that "
            f"axis is spatial, give the image as '{where}[channel_axis=none]'"
        )
    return InputDataError(message)


class _ChunkCached(WrappedSource):
    """A chunked source whose reads are assembled from whole chunks kept in a cache.

    Each chunk is read from ``source`` once (decoded by the store) and kept in the
    run's :class:`~tiledseg.chunk_cache.ChunkCache`; a region is then copied out of
    the chunks it touches, the same values the store would have returned for it.
    """

    def __init__(self, source: Any, cache: ChunkCache, chunks: tuple[int, ...]):
        self.source, self.cache, self.chunks = source, cache, chunks
        # names this source's chunks in the cache (the same in every copy sent to a worker)
        self.token = uuid.uuid4().hex

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.source.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        bounds = _index_bounds(index, self.shape)
        if bounds is None:  # not plain slices and integers: read as the store reads it
            return np.asarray(self.source[index])
        starts, stops, dropped = bounds
        out = np.empty([b - a for a, b in zip(starts, stops, strict=True)], dtype=self.dtype)
        ranges = [
            range(a // c, -(-b // c)) for a, b, c in zip(starts, stops, self.chunks, strict=True)
        ]
        for position in itertools.product(*ranges):
            lo = [p * c for p, c in zip(position, self.chunks, strict=True)]
            hi = [min(a + c, n) for a, c, n in zip(lo, self.chunks, self.shape, strict=True)]
            chunk = self.cache.get(
                (self.token, position),
                lambda lo=lo, hi=hi: self.source[tuple(map(slice, lo, hi))],
            )
            # the overlap of the chunk and the region, in each one's own coordinates
            first = [max(a, c) for a, c in zip(starts, lo, strict=True)]
            last = [min(b, c) for b, c in zip(stops, hi, strict=True)]
            out[tuple(slice(f - a, e - a) for f, e, a in zip(first, last, starts, strict=True))] = (
                chunk[tuple(slice(f - c, e - c) for f, e, c in zip(first, last, lo, strict=True))]
            )
        return out.squeeze(axis=dropped) if dropped else out


def _index_bounds(
    index: Any, shape: tuple[int, ...]
) -> tuple[list[int], list[int], tuple[int, ...]] | None:
    """Return the starts, stops and integer-indexed axes of a basic index.

    ``None`` for another kind of index.
    """
    items = index if isinstance(index, tuple) else (index,)
    if len(items) > len(shape):
        return None
    items = (*items, *(slice(None),) * (len(shape) - len(items)))
    starts, stops, dropped = [], [], []
    for axis, (item, n) in enumerate(zip(items, shape, strict=True)):
        if isinstance(item, slice):
            start, stop, step = item.indices(n)
            if step != 1 or stop <= start:
                return None
        elif isinstance(item, int | np.integer) and -n <= item < n:
            start = int(item) % n
            stop = start + 1
            dropped.append(axis)
        else:
            return None
        starts.append(start)
        stops.append(stop)
    return starts, stops, tuple(dropped)


def with_chunk_cache(volume: Volume, cache: ChunkCache | None) -> Volume:
    """Return ``volume`` reading its chunked stores through ``cache``.

    Sources with storage chunks (zarr, chunked HDF5, TIFF through its zarr view), the
    image's and each extra channel's, read whole chunks once and keep them in
    ``cache``; the values read are the same. Sources whose chunks exceed half the cache,
    sources without chunks (``.npy``, which
    the operating system's page cache serves, numpy and dask arrays) and sources
    already reading through a cache are left as they are, as is everything with
    ``cache=None``.

    Parameters
    ----------
    volume : Volume
        The image (with its extra channels, if any).
    cache : ChunkCache or None
        The run's cache (:func:`tiledseg.chunk_cache.run_cache`).

    Returns
    -------
    Volume
        ``volume`` itself when nothing is to be cached (see :func:`chunk_cacheable`),
        else a new volume with the same data.
    """
    if cache is None or not chunk_cacheable(volume):
        return volume
    source = volume.source
    if isinstance(source, _ChannelStack):
        wrapped = _ChannelStack([with_chunk_cache(v, cache) for v in source.volumes])
        return dataclasses.replace(volume, source=wrapped)
    inner = source.source if isinstance(source, _OneTimePoint) else source
    chunks = _storage_chunks(inner) or ()
    if math.prod(chunks) * np.dtype(inner.dtype).itemsize > cache.max_bytes // 2:
        # a cache holding at most one such chunk would decode it whole for nearly every
        # box: a direct read of the box costs less
        return volume
    cached = _ChunkCached(inner, cache, chunks)
    if isinstance(source, _OneTimePoint):
        return dataclasses.replace(volume, source=_OneTimePoint(cached, source.axis))
    return dataclasses.replace(volume, source=cached)


def chunk_cacheable(volume: Volume) -> bool:
    """Whether :func:`with_chunk_cache` would cache any of ``volume``'s sources."""
    source = volume.source
    if isinstance(source, _ChannelStack):
        return any(chunk_cacheable(v) for v in source.volumes)
    inner = source.source if isinstance(source, _OneTimePoint) else source
    return _storage_chunks(inner) is not None


def _storage_chunks(source: Any) -> tuple[int, ...] | None:
    """Return the regular chunk shape of a stored source, else ``None``.

    Only a stored source not read through a cache yet has one here.
    """
    if isinstance(source, _ChunkCached | np.ndarray) or hasattr(source, "compute"):
        return None
    chunks = getattr(getattr(source, "array", source), "chunks", None)
    if (
        chunks is None
        or len(chunks) != len(source.shape)
        or not all(isinstance(c, int | np.integer) and c > 0 for c in chunks)
    ):
        return None
    return tuple(int(c) for c in chunks)


def _check_dtype(dtype: np.dtype, name: str, role: str) -> None:
    if dtype == np.bool_ and role != "image":
        return
    if dtype not in SUPPORTED_DTYPES:
        raise InputDataError(
            f"{role} {name} has dtype {dtype}, which tiledseg cannot use; convert it to an "
            "integer or float type (e.g. uint8, uint16, float32)"
        )


def split_dataset(text: str) -> tuple[str, str | None]:
    """Split ``file.h5:/group/dataset`` into the file path and the dataset (``None`` if absent).

    Any other path comes back whole, with ``None``.
    """
    lower = text.lower()
    for suffix in _H5_SUFFIXES:
        marker = suffix + ":"
        if marker in lower:
            cut = lower.index(marker) + len(suffix)
            return text[:cut], text[cut + 1 :] or None
    return text, None


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths (``file.h5:/dataset``, ``PATH[channel_axis=N]`` or plain) name one file."""
    a, b = (split_dataset(split_options(str(p))[0])[0] for p in (a, b))
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _open_path(text: str, *, level: int, role: str, labels: bool = False) -> tuple[Any, dict, str]:
    """Open a path to a sliceable source, with metadata (channel axis, spacing)."""
    path, key = split_dataset(text)
    key = key.lstrip("/") or None if key else None
    if not os.path.exists(path):
        raise InputDataError(f"{role} path {text!r} does not exist")
    if os.path.isdir(path):
        return _open_zarr(path, level=level, role=role)
    return _open_file(text, path, key, role=role, labels=labels)


def _open_file(
    text: str, path: str, key: str | None, *, role: str, labels: bool
) -> tuple[Any, dict, str]:
    """Open a file by its name's suffix, else by its first bytes; refuse another kind."""
    found = file_kind(path)
    if found == "model":  # whatever its name
        raise not_readable(role, text, found)
    kind = _suffix_kind(path.lower()) or found
    if kind == "npy":
        return _open_npy(path, text, role), {}, text
    if kind == "hdf5":
        return _open_hdf5(path, key, role), {}, text
    if kind == "tiff":
        return _open_tiff(path, role), tiff_metadata(path, role=role, labels=labels), text
    if kind in ("png", "jpeg"):
        source, meta = open_pillow(path, role=role, labels=labels)
        return source, meta, text
    raise not_readable(role, text, found)


def _suffix_kind(lower: str) -> str | None:
    """Return the kind of file a (lower-case) name says, or ``None``."""
    if lower.endswith(".npy"):
        return "npy"
    if lower.endswith(_H5_SUFFIXES):
        return "hdf5"
    if lower.endswith(_TIFF_SUFFIXES):
        return "tiff"
    return "png" if lower.endswith(PILLOW_SUFFIXES) else None


def _open_npy(path: str, text: str, role: str) -> _LazySource:
    try:
        source = _LazySource("npy", path)
        source.array  # noqa: B018 - open now so a bad file fails here, not in a worker
    except ValueError:
        raise InputDataError(
            f"{role} {text!r} is not a plain .npy array (it may hold pickled Python "
            "objects, which tiledseg never loads); save a numeric array"
        ) from None
    return source


def _open_hdf5(path: str, key: str | None, role: str) -> _LazySource:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            datasets: list[str] = []
            f.visititems(lambda n, o: datasets.append(n) if isinstance(o, h5py.Dataset) else None)
            if key is None:
                if len(datasets) != 1:
                    raise InputDataError(
                        f"{role} {path!r} holds {len(datasets)} datasets "
                        f"({', '.join(datasets[:8]) or 'none'}); name one as {path}:/dataset"
                    )
                key = datasets[0]
            elif key not in f or not isinstance(f[key], h5py.Dataset):
                raise InputDataError(
                    f"{role} {path!r} has no dataset {key!r}; it has: {', '.join(datasets[:8])}"
                )
    except OSError as exc:
        raise InputDataError(f"{role} {path!r} is not a readable HDF5 file: {exc}") from None
    return _LazySource("hdf5", path, key)


def _open_tiff(path: str, role: str) -> _LazySource:
    source = _LazySource("tiff", path)
    try:
        source.array  # noqa: B018 - open now so a bad file fails here
    except Exception as exc:  # tifffile raises several types for a bad file
        raise InputDataError(f"{role} {path!r} is not a readable TIFF file: {exc}") from None
    return source


def _open_zarr(path: str, *, level: int, role: str) -> tuple[Any, dict, str]:
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:  # zarr raises several types for a non-store
        if any(os.path.exists(os.path.join(path, m)) for m in _ZARR_METADATA):
            said = " ".join(str(exc).split())[:200]
            raise InputDataError(
                f"{role} {path!r} is a zarr store that zarr cannot open ({type(exc).__name__}: "
                f"{said}); its metadata may be damaged: rewrite it"
            ) from None
        raise InputDataError(
            f"{role} {path!r} is a folder but not a zarr store (no zarr.json, .zarray or "
            f".zgroup in it); give {READABLE}"
        ) from None
    if isinstance(node, zarr.Array):
        return _LazySource("zarr", path), {}, path
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)
    if "multiscales" in ome:
        ms = ome["multiscales"][0]
        datasets = ms["datasets"]
        if not 0 <= level < len(datasets):
            raise InputDataError(
                f"{role} {path!r} has {len(datasets)} levels; level {level} does not exist"
            )
        sub = f"{path.rstrip('/')}/{datasets[level]['path']}"
        return _LazySource("zarr", sub), _ome_meta(ms, level, attrs), sub
    if "tiledseg" in attrs and "labels" in node:
        return _open_zarr(f"{path.rstrip('/')}/labels", level=level, role=role)
    arrays = sorted(name for name, _ in node.arrays())
    if len(arrays) == 1:
        sub = f"{path.rstrip('/')}/{arrays[0]}"
        return _open_zarr(sub, level=level, role=role)
    raise InputDataError(
        f"{role} {path!r} is a zarr group with {len(arrays)} arrays "
        f"({', '.join(arrays[:8]) or 'none'}); address one as {path.rstrip('/')}/NAME"
    )


def _ome_meta(ms: dict, level: int, attrs: dict) -> dict:
    axes = ms.get("axes") or []
    meta: dict[str, Any] = {"attrs": attrs, "metadata": "OME-Zarr"}
    if not axes or not isinstance(axes[0], dict):
        return meta
    default_kind = {"z": "space", "y": "space", "x": "space", "c": "channel", "t": "time"}
    kinds = [a.get("type") or default_kind.get(str(a.get("name")), "") for a in axes]
    if "channel" in kinds:
        meta["channel_axis"] = kinds.index("channel")
    if "time" in kinds:
        meta["time_axis"] = kinds.index("time")
    scale = [1.0] * len(axes)
    transforms = list(ms["datasets"][level].get("coordinateTransformations", []))
    transforms += ms.get("coordinateTransformations", [])
    for t in transforms:
        if t.get("type") == "scale":
            scale = [a * b for a, b in zip(scale, t["scale"], strict=True)]
    meta["spacing"] = tuple(float(s) for s, k in zip(scale, kinds, strict=True) if k == "space")
    return meta
