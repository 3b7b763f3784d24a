"""What ``tiledseg info`` says of a path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tiledseg.errors import TiledsegError
from tiledseg.formats import READABLE
from tiledseg.volume import split_dataset

__all__ = ["describe"]

_IMAGE_SUFFIXES = (".npy", ".tif", ".tiff", ".h5", ".hdf5", ".hdf", ".he5", ".png", ".jpg", ".jpeg")


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Describe a path: a model file, an image store or a tiledseg output.

    Parameters
    ----------
    path : path
        A model file, or an image (zarr, OME-Zarr, TIFF, ``file.h5:/dataset``, ``.npy``).

    Returns
    -------
    dict
        ``kind`` ("model", "image" or "tiledseg output") and what
        :meth:`tiledseg.model.Model.describe` or :meth:`tiledseg.volume.Volume.describe`
        say; an image also has the ``installed`` versions, an output its ``provenance``.
    """
    from tiledseg.model import load_model, versions
    from tiledseg.volume import open_volume

    path = str(path)
    target = Path(split_dataset(path)[0])
    if target.suffix.lower() in (".yaml", ".yml", ".json", ".txt"):
        raise TiledsegError(
            f"{path!r} is neither an image nor a model; 'tiledseg info' describes stores "
            f"({READABLE}) and model files"
        )
    if target.is_file() and not target.name.lower().endswith(_IMAGE_SUFFIXES):
        # a model file, or a clear error for a pickle or anything else
        return {**load_model(target).describe(), "kind": "model"}
    from tiledseg.runs import is_tiledseg_output

    data = {**open_volume(path).describe(), "kind": "image", "installed": versions()}
    if is_tiledseg_output(path):
        import zarr

        data["kind"] = "tiledseg output"
        data["provenance"] = dict(zarr.open_group(path, mode="r").attrs["tiledseg"])
    return data
