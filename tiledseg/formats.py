"""What kind of file an input is, and the 2D image files read whole (PNG, JPEG).

:func:`tiledseg.volume.open_volume` picks a reader by a file's name and, for a name it
does not know, by the file's first bytes (:func:`file_kind`). A file of no kind it
reads is refused with one line listing the kinds it reads (:func:`not_readable`);
a tiledseg model file given as an image is named as such.

PNG and JPEG files are small 2D images: Pillow decodes them whole into numpy
(:class:`PillowImage`), grey as ``(y, x)`` and colour as ``(y, x, channels)``.

A TIFF file's axes are its first series' as tifffile reads them (:func:`tiff_metadata`):
samples (``S``: RGB) and OME channels (``C``) are the channel axis, an OME time axis
``T`` of one point is dropped, and an OME-TIFF's ``PhysicalSizeZ/Y/X`` are its spacing.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tiledseg.errors import InputDataError, MissingExtraError

__all__ = [
    "PILLOW_SUFFIXES",
    "READABLE",
    "PillowImage",
    "file_kind",
    "not_readable",
    "open_pillow",
    "tiff_metadata",
]

#: The kinds of input tiledseg reads, as the messages list them.
READABLE = "zarr, OME-Zarr, TIFF, HDF5 (file.h5:/dataset), .npy, PNG or JPEG"

#: File names read with Pillow.
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg")

# the first bytes of each kind of file (and tiledseg.model.MAGIC: a model file)
_MAGICS = (
    (b"\x93NUMPY", "npy"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
)

# Pillow modes converted to RGB(A) before use: colour spaces other than RGB, and a
# palette image's colours (a label map keeps its palette indices)
_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV", "P", "PA")


def file_kind(path: str) -> str | None:
    """Return the kind of file ``path`` is by its first bytes, or ``None`` if unknown.

    Parameters
    ----------
    path : str
        A regular file.

    Returns
    -------
    str or None
        ``"npy"``, ``"hdf5"``, ``"tiff"``, ``"png"``, ``"jpeg"`` or ``"model"`` (a
        tiledseg model file).
    """
    from tiledseg.model import MAGIC

    try:
        with open(path, "rb") as f:
            head = f.read(max(16, len(MAGIC)))
    except OSError:
        return None
    if head.startswith(MAGIC):
        return "model"
    return next((kind for magic, kind in _MAGICS if head.startswith(magic)), None)


def not_readable(role: str, text: str, kind: str | None = None) -> InputDataError:
    """Return the one-line error for an input of no kind tiledseg reads.

    Parameters
    ----------
    role : str
        What the input is ("image", "labels", ...), for the message.
    text : str
        The path as given.
    kind : str, optional
        What :func:`file_kind` found (``"model"`` adds a hint).

    Returns
    -------
    InputDataError
        The error, to raise.
    """
    hint = " (it is a tiledseg model file: give models with --model)" if kind == "model" else ""
    return InputDataError(f"{role} {text!r} is not a file tiledseg reads{hint}; give {READABLE}")


class PillowImage:
    """A PNG or JPEG file decoded whole with Pillow on first use, in each process using it.

    Pixels are as stored (an EXIF orientation is not applied). Grey images are ``(y, x)``
    (16-bit PNGs as uint16), colour ones ``(y, x, channels)`` with the channels last: RGB,
    RGBA or grey and alpha. A palette image is its palette's colours, or with
    ``labels=True`` its palette indices: the values a label map painted in it holds.

    Parameters
    ----------
    path : str
        The file.
    labels : bool
        Whether the file holds labels (palette indices kept, colour refused).
    role : str
        What the file is, for messages.
    """

    def __init__(self, path: str, *, labels: bool = False, role: str = "image"):
        self.path, self.labels, self.role = path, labels, role
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        """Return the path and options only: a copy sent to a worker decodes the file there."""
        return {"path": self.path, "labels": self.labels, "role": self.role}

    def __setstate__(self, state: dict) -> None:
        """Rebuild from :meth:`__getstate__`'s state."""
        self.__init__(state["path"], labels=state["labels"], role=state["role"])

    @property
    def array(self) -> np.ndarray:
        """The decoded pixels."""
        if self._array is None:
            self._array = _decode(self.path, labels=self.labels, role=self.role)
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the pixels: ``(y, x)`` or ``(y, x, channels)``."""
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        """The data type of the pixels."""
        return self.array.dtype

    def __getitem__(self, index: Any) -> np.ndarray:
        """Return the pixels at ``index``."""
        return self.array[index]


def open_pillow(path: str, *, role: str, labels: bool) -> tuple[PillowImage, dict[str, Any]]:
    """Open a PNG or JPEG file as a source and its metadata (its channel axis, if any).

    Parameters
    ----------
    path : str
        The file.
    role : str
        What the file is, for messages.
    labels : bool
        Whether it holds labels (a map of one value per pixel).

    Returns
    -------
    PillowImage
        The decoded image.
    dict
        ``{"channel_axis": 2}`` for a colour image, else ``{}``.

    Raises
    ------
    InputDataError
        For a file Pillow cannot read, a JPEG or colour image given as labels.
    """
    if labels and file_kind(path) == "jpeg":
        raise InputDataError(
            f"{role} {path!r} is a JPEG, whose lossy compression changes the values of a "
            "label map; save labels as a PNG (grey or palette: one value per class)"
        )
    source = PillowImage(path, labels=labels, role=role)
    return source, ({"channel_axis": 2} if len(source.shape) == 3 else {})


def _decode(path: str, *, labels: bool, role: str) -> np.ndarray:
    """Return the pixels of a PNG or JPEG file (see :class:`PillowImage`)."""
    try:
        from PIL import Image
    except ImportError:
        raise MissingExtraError(
            f"reading {role} {path!r} (PNG or JPEG) needs Pillow: pip install pillow"
        ) from None
    try:
        with warnings.catch_warnings():
            # the user's own image, not a hostile file: a large one is no "decompression bomb"
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                mode = image.mode
                if mode in _TO_RGB and not (labels and mode == "P"):
                    image = image.convert("RGBA" if mode == "PA" else "RGB")
                pixels = np.asarray(image)
    except Image.DecompressionBombError as exc:
        raise InputDataError(
            f"{role} {path!r} is larger than Pillow opens ({exc}); convert it to TIFF or zarr"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for a bad file
        raise InputDataError(f"{role} {path!r} is not a readable PNG or JPEG file: {exc}") from None
    if pixels.dtype == np.bool_:  # mode "1": one bit per pixel
        pixels = pixels.astype(np.uint8)
    if not pixels.dtype.isnative:  # big-endian 16-bit modes
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    pixels.setflags(write=False)  # shared by every read, like a read-only memory map
    if labels and pixels.ndim != 2:
        raise InputDataError(
            f"{role} {path!r} is a colour image (Pillow mode {mode}); a label map holds one "
            "value per pixel: save it as a grey or palette PNG, one value per class"
        )
    return pixels


# micrometres per unit of an OME PhysicalSize (OME's default unit is the micrometre)
_MICROMETRES = {"pm": 1e-6, "Å": 1e-4, "nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4}
_MICROMETRES["m"] = 1e6


def tiff_metadata(path: str, *, role: str, labels: bool = False) -> dict[str, Any]:
    """Return what a TIFF file's first series says of its axes and, for an OME-TIFF, spacing.

    Parameters
    ----------
    path : str
        A readable TIFF file.
    role : str
        What the file is, for messages.
    labels : bool
        Whether it holds labels (a channel axis is refused).

    Returns
    -------
    dict
        ``channel_axis`` (the ``S`` or ``C`` axis, if any), ``time_axis`` (``T``, if any),
        ``spacing`` (OME's ``PhysicalSizeZ/Y/X`` in micrometres, when all are given),
        ``axes`` (tifffile's letters) and ``metadata`` (``"OME-TIFF"`` or ``"TIFF"``).

    Raises
    ------
    InputDataError
        For two channel axes (``C`` and ``S``), or a channel axis in a label map.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        axes = tif.series[0].axes.upper()
        ome = tif.ome_metadata if tif.is_ome else None
    channels = [i for i, a in enumerate(axes) if a in "CS"]
    if len(channels) > 1:
        raise InputDataError(
            f"{role} {path!r} has two channel axes (TIFF axes {axes}: C and S); write one "
            "channel axis, e.g. with tifffile.imwrite(..., photometric='minisblack')"
        )
    if channels and labels:
        raise InputDataError(
            f"{role} {path!r} has a channel axis (TIFF axes {axes}, e.g. RGB); a label map "
            "holds one value per voxel: save it as a grey TIFF, one value per class"
        )
    meta: dict[str, Any] = {"axes": axes, "metadata": "OME-TIFF" if ome else "TIFF"}
    if channels:
        meta["channel_axis"] = channels[0]
    if "T" in axes:
        meta["time_axis"] = axes.index("T")
    spatial = "".join(a for a in axes if a not in "CST")
    if ome and set(spatial) <= set("ZYX") and len(set(spatial)) == len(spatial):
        meta["spacing"] = _ome_spacing(ome, spatial)
    return meta


def _ome_spacing(xml: str, spatial: str) -> tuple[float, ...] | None:
    """Return the ``PhysicalSize`` of each of ``spatial``'s axes in micrometres, else ``None``."""
    import tifffile

    image = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    image = image[0] if isinstance(image, list) else image
    pixels = image.get("Pixels", {}) if isinstance(image, dict) else {}
    sizes = [pixels.get(f"PhysicalSize{a}") for a in spatial]
    units = [str(pixels.get(f"PhysicalSize{a}Unit", "µm")) for a in spatial]
    if not all(isinstance(s, int | float) and s > 0 for s in sizes):
        return None
    if len(set(units)) == 1:
        return tuple(float(s) for s in sizes)
    if not all(u in _MICROMETRES for u in units):
        return None
    return tuple(float(s) * _MICROMETRES[u] for s, u in zip(sizes, units, strict=True))
