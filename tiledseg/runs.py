"""The output store: an OME-Zarr group written block by block, with provenance.

Layout of ``OUT.zarr`` (zarr v3, OME-Zarr 0.5)::

    OUT.zarr/                 attrs["tiledseg"]: provenance (model checksum, bank, versions,
                              command, image, block, roi, complete)
      labels/0                the user's label values, smallest unsigned dtype that fits
      probabilities/0         optional: uint8 0-255, class axis first
      uncertainty/0           optional: uint8, 255 * (1 - (p_best - p_second))

Each of ``labels``, ``probabilities`` and ``uncertainty`` is a one-level
OME-Zarr multiscale image, so napari and other OME-Zarr readers open them
directly. Arrays are chunked like the processing blocks, so every block writes
whole chunks and no two blocks touch the same chunk.

An existing path is never replaced unless asked, and never at all unless it is
a tiledseg output.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg.errors import OutputExistsError
from tiledseg.volume import same_path

__all__ = [
    "create_output",
    "is_tiledseg_output",
    "mark_complete",
    "prepare_output",
]


def is_tiledseg_output(path: str | Path) -> bool:
    """Whether ``path`` is a zarr group written by tiledseg."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:  # anything that is not a readable zarr group
        return False
    return "tiledseg" in group.attrs


def prepare_output(path: str | Path, *, overwrite: bool, inputs: Sequence[str] = ()) -> Path:
    """Check that ``path`` may be written, before any work starts; nothing is changed here."""
    path = Path(path)
    for source in inputs:
        if same_path(source, path):
            raise OutputExistsError(
                f"output {str(path)!r} is one of the inputs; choose another path"
            )
    if not path.parent.exists():
        raise OutputExistsError(
            f"the folder of output {str(path)!r} does not exist; create {str(path.parent)!r} first"
        )
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(
                f"output {str(path)!r} exists; choose another path or pass --overwrite"
            )
        if not is_tiledseg_output(path):
            raise OutputExistsError(
                f"output {str(path)!r} exists and is not a tiledseg output; tiledseg will not "
                "delete it, even with --overwrite: choose another path"
            )
    return path


def _multiscale_attrs(name: str, axes: str, scale: Sequence[float]) -> dict[str, Any]:
    kinds = {"c": "channel", "z": "space", "y": "space", "x": "space"}
    return {
        "ome": {
            "version": "0.5",
            "multiscales": [
                {
                    "name": name,
                    "axes": [{"name": a, "type": kinds[a]} for a in axes],
                    "datasets": [
                        {
                            "path": "0",
                            "coordinateTransformations": [{"type": "scale", "scale": list(scale)}],
                        }
                    ],
                }
            ],
        }
    }


def create_output(
    path: str | Path,
    *,
    shape: Sequence[int],
    block: Sequence[int],
    spacing: Sequence[float],
    label_dtype: np.dtype,
    classes: Sequence[int],
    probabilities: bool,
    uncertainty: bool,
    provenance: dict[str, Any],
    overwrite: bool,
) -> Path:
    """Create the output group and its empty arrays (after :func:`prepare_output`)."""
    import zarr

    path = prepare_output(path, overwrite=overwrite)
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    spatial = "zyx"[-len(shape) :]
    shape, block, spacing = tuple(shape), tuple(block), list(spacing)
    wanted = [("labels", shape, block, label_dtype, spatial, spacing)]
    if probabilities:
        wanted.append(
            (
                "probabilities",
                (len(classes), *shape),
                (len(classes), *block),
                np.uint8,
                "c" + spatial,
                [1.0, *spacing],
            )
        )
    if uncertainty:
        wanted.append(("uncertainty", shape, block, np.uint8, spatial, spacing))
    for name, arr_shape, chunks, dtype, axes, scale in wanted:
        group = root.create_group(name)
        attrs = _multiscale_attrs(name, axes, scale)
        if name == "labels":
            # no "source": the image is not the parent group, as the spec's "../../" assumes
            attrs["ome"]["image-label"] = {"version": "0.5"}
        group.attrs.update(attrs)
        group.create_array("0", shape=arr_shape, chunks=chunks, dtype=dtype, fill_value=0)
    root.attrs["tiledseg"] = {
        **provenance,
        "arrays": [w[0] for w in wanted],
        "classes": [int(c) for c in classes],
        "block": list(block),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "complete": False,
    }
    return path


def mark_complete(path: str | Path, **extra: Any) -> None:
    """Record in the provenance that every planned block was written."""
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    info = dict(root.attrs["tiledseg"])
    info.update(extra, complete=True, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    root.attrs["tiledseg"] = info
