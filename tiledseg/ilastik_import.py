"""Import an ilastik Pixel Classification project: its scribbles, label names and features.

``tiledseg import-ilastik PROJECT.ilp --labels OUT.zarr --bank OUT.yaml`` reads what
ilastik saved in the project (an HDF5 file) and writes it as tiledseg's inputs:

- the scribbles of one lane (``PixelClassification/LabelSets/labels000``: blocks, each
  placed in the image by its ``blockSlice`` attribute in the block's own axis order, which
  its ``axistags`` attribute names) into a zarr array of the image's spatial shape, in the
  raw data's axis order (the order of the raw file's array, as tiledseg reads it);
- the label names (``PixelClassification/LabelNames``: value k is the k-th name);
- the feature selection (``FeatureSelections``: ``FeatureIds`` x ``Scales``
  ``SelectionMatrix``, and ``ComputeIn2d`` per scale) as a bank file, ilastik's names
  mapped to tiledseg's families and "compute in 2D" to ``in_2d`` at those scales.

It never unpickles anything from the project (its classifier factory is a pickle) and
never reads the raw data: it prints the path the project names, so that
``tiledseg train RAW OUT.zarr --features OUT.yaml --classifier random-forest`` reproduces
the project on any machine. An autocontext project imports its first stage.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg.errors import InputDataError, OutputExistsError

__all__ = ["IlastikImport", "import_ilastik"]

#: The group of an autocontext project's second stage.
SECOND_STAGE = "PixelClassification01"


@dataclass(frozen=True)
class IlastikImport:
    """What :func:`import_ilastik` found and wrote."""

    labels: str
    bank: str | None
    #: the raw data the project names (resolved against the project's folder if relative)
    raw: str | None
    #: the raw data's spatial axes, in its array's order (``"zyx"``, ``"yx"``...)
    axes: str
    #: the raw data's channel axis, as tiledseg reads it (``None``: none)
    shape: tuple[int, ...]
    channel_axis: int | None
    #: label value -> ilastik's label name
    names: dict[int, str]
    #: label value -> scribbled voxels
    voxels: dict[int, int]
    workflow: str
    notes: tuple[str, ...] = field(default=())


def import_ilastik(
    project: str | os.PathLike,
    *,
    labels: str | os.PathLike,
    bank: str | os.PathLike | None = None,
    lane: int = 0,
    overwrite: bool = False,
) -> IlastikImport:
    """Write an ilastik project's scribbles (and feature selection) as tiledseg inputs.

    Parameters
    ----------
    project : path
        The ilastik project (``.ilp``): Pixel Classification, or Autocontext (its first
        stage).
    labels : path
        The zarr array of scribbles to write (uint8, or uint16 past 255 labels; 0
        unlabelled, k the k-th label).
    bank : path, optional
        The YAML feature bank to write from the project's feature selection.
    lane : int
        Which of the project's images (ilastik's lanes, from 0).
    overwrite : bool
        Replace existing ``labels`` and ``bank``.

    Returns
    -------
    IlastikImport
    """
    import h5py

    project = str(project)
    _check_paths(project, labels, bank, overwrite)
    try:
        f = h5py.File(project, "r")
    except OSError as exc:
        raise InputDataError(
            f"{project!r} is not an ilastik project ({_reason(exc)}); give the .ilp file "
            "ilastik saved"
        ) from None
    with f:
        workflow = _workflow(f, project)
        raw = _lane(f, project, lane)
        axes, shape, channel_axis = _spatial(raw, project)
        blocks = _label_blocks(f, project, lane)
        names = _names(f)
        notes = []
        if SECOND_STAGE in f:
            notes.append(
                "an autocontext project: its first stage is imported (its scribbles and "
                "features); tiledseg train --stages 2 adds a second stage of its own"
            )
        # (everything is read and checked before anything is written)
        features = _bank(f, project, planar=len(axes) == 3) if bank is not None else None
        source = _raw_path(raw, project)
        part = None if features is None else _bank_part(features, str(bank), project)
        try:
            voxels = _write_labels(blocks, axes, shape, str(labels), project, overwrite, names)
        except BaseException:
            if part is not None:
                part.unlink(missing_ok=True)
            raise
    written = None if part is None else str(bank)
    if part is not None:  # (moved once the labels are in place)
        os.replace(part, bank)
    return IlastikImport(
        str(labels), written, source, axes, shape, channel_axis, names, voxels, workflow,
        tuple(notes),
    )  # fmt: skip


def _check_paths(project: str, labels: Any, bank: Any, overwrite: bool) -> None:
    """Refuse a missing project, and outputs that are the project, unwritable or existing."""
    from tiledseg.runs import check_apart, check_writable

    if not os.path.isfile(project):
        what = "is a folder" if os.path.isdir(project) else "does not exist"
        raise InputDataError(f"ilastik project {project!r} {what}; give the .ilp file")
    for path, what in ((labels, "labels"), (bank, "bank")):
        if path is None:
            continue
        check_apart(path, [project], what=what)  # (never written over the project)
        check_writable(path, what=what)
        if os.path.exists(path) and not overwrite:
            raise OutputExistsError(
                f"{what} {str(path)!r} exists; choose another path or pass --overwrite"
            )
    if bank is not None and (str(bank).endswith(("/", os.sep)) or os.path.isdir(bank)):
        raise OutputExistsError(
            f"bank {str(bank)!r} is a folder; give a file name such as bank.yaml"
        )
    if bank is not None and Path(bank).resolve() == Path(labels).resolve():
        raise OutputExistsError("--bank and --labels are the same path; give each its own")


def _reason(exc: OSError) -> str:
    text = str(exc)
    if "signature" in text or "not an HDF5" in text.lower():
        return "not an HDF5 file"
    return text.split("(")[0].strip() or type(exc).__name__


def _text(value: Any) -> str:
    """Return an HDF5 string scalar (bytes or str) as str."""
    if isinstance(value, np.ndarray):
        value = value[()]
    return value.decode() if isinstance(value, bytes) else str(value)


def _workflow(f: Any, project: str) -> str:
    """Return the project's workflow name; refuse a project that is not pixel classification."""
    if "workflowName" not in f:
        raise InputDataError(
            f"{project!r} is not an ilastik project (no workflowName in it); give the .ilp "
            "file ilastik saved"
        )
    workflow = _text(f["workflowName"][()])
    pixels = any(w in workflow.replace(" ", "").lower() for w in ("pixelclass", "autocontext"))
    if not pixels or "PixelClassification" not in f or "FeatureSelections" not in f:
        raise InputDataError(
            f"{project!r} is an ilastik {workflow} project; tiledseg imports Pixel "
            "Classification and Autocontext projects"
        )
    return workflow


def _lane(f: Any, project: str, lane: int) -> Any:
    """Return the lane's raw data's info group."""
    infos = f.get("Input Data/infos")
    lanes = sorted(infos) if infos is not None else []
    name = f"lane{lane:04d}"
    if name not in lanes or "Raw Data" not in infos[name]:
        raise InputDataError(
            f"project {project!r} has no image in lane {lane} (it has {len(lanes)}); give "
            f"--lane 0..{max(0, len(lanes) - 1)}"
        )
    return infos[name]["Raw Data"]


def _axis_keys(axistags: Any) -> list[str]:
    """Return the axis keys of an ilastik ``axistags`` JSON (``["z", "y", "x", "c"]``)."""
    return [a["key"] for a in json.loads(_text(axistags))["axes"]]


def _spatial(raw: Any, project: str) -> tuple[str, tuple[int, ...], int | None]:
    """Return the raw data's spatial axes (in its order), their lengths and its channel axis."""
    if "axistags" not in raw or "shape" not in raw:
        raise InputDataError(
            f"project {project!r} does not record its image's axes and shape (saved by an "
            "ilastik older than 1.3?); open it in a newer ilastik and save it again"
        )
    keys = _axis_keys(raw["axistags"][()])
    shape = [int(n) for n in raw["shape"][()]]
    if "t" in keys and shape[keys.index("t")] > 1:
        raise InputDataError(
            f"project {project!r} holds a time series ({shape[keys.index('t')]} frames); "
            "tiledseg segments one 2D or 3D image: export one frame"
        )
    spatial = [(k, n) for k, n in zip(keys, shape, strict=True) if k in "zyx"]
    # (the file's axes without a time axis of one frame, which tiledseg does not read)
    channel = [k for k in keys if k != "t"].index("c") if "c" in keys else None
    return "".join(k for k, _ in spatial), tuple(n for _, n in spatial), channel


def _raw_path(raw: Any, project: str) -> str | None:
    """Return the raw data's path as the project names it, relative ones resolved."""
    if "filePath" not in raw:
        return None
    path = _text(raw["filePath"][()])
    if "location" in raw and _text(raw["location"][()]) == "ProjectInternal":
        return f"{project}:/{path.lstrip('/')}"  # (a copy inside the project)
    if not os.path.isabs(path):
        path = str(Path(project).resolve().parent / path)
    return path


def _label_blocks(f: Any, project: str, lane: int) -> list[Any]:
    """Return the lane's label blocks (HDF5 datasets); refuse a project without labels."""
    group = f.get(f"PixelClassification/LabelSets/labels{lane:03d}")
    blocks = [group[name] for name in sorted(group)] if group is not None else []
    if not blocks or not any(np.any(b[()]) for b in blocks):
        raise InputDataError(
            f"project {project!r} has no labels in lane {lane}; paint some in ilastik's "
            "Training applet and save the project"
        )
    return blocks


def _names(f: Any) -> dict[int, str]:
    """Return label value -> name (ilastik's k-th name is label value k)."""
    names = f.get("PixelClassification/LabelNames")
    if names is None:
        return {}
    return {k: _text(name) for k, name in enumerate(names[()], start=1)}


def _block_region(block: Any, axes: str, shape: tuple[int, ...], project: str) -> Any:
    """Return a label block's data in the image's spatial order and its region there."""
    keys = _axis_keys(block.attrs["axistags"])
    spans = [
        (int(a), int(b)) for a, b in re.findall(r"(-?\d+)\s*:\s*(-?\d+)", block.attrs["blockSlice"])
    ]
    data = block[()]
    if len(spans) != len(keys) or data.ndim != len(keys):
        raise InputDataError(
            f"label block {block.name} of {project!r} has a blockSlice "
            f"{block.attrs['blockSlice']!r} that does not match its axes {''.join(keys)}"
        )
    if not set(axes) <= set(keys):
        raise InputDataError(
            f"label block {block.name} of {project!r} has axes {''.join(keys)}, not the "
            f"image's {axes}; the project is damaged"
        )
    spatial = [keys.index(k) for k in axes]
    others = [i for i, k in enumerate(keys) if k not in axes]
    data = np.transpose(data, spatial + others).reshape(tuple(data.shape[i] for i in spatial))
    region = tuple(slice(*spans[i]) for i in spatial)
    outside = any(s.start < 0 or s.stop > n for s, n in zip(region, shape, strict=True))
    if outside:
        raise InputDataError(
            f"label block {block.name} of {project!r} lies outside the image (at "
            f"{block.attrs['blockSlice']}, axes {''.join(keys)}; the image is {axes} "
            f"{list(shape)}); the project is damaged or names another image"
        )
    return data, region


def _write_labels(
    blocks: list[Any], axes: str, shape: tuple[int, ...], path: str, project: str,
    overwrite: bool, names: dict[int, str],
) -> dict[int, int]:  # fmt: skip
    """Write the scribbles to a zarr array (whole or not at all); return voxels per value."""
    import zarr

    placed = [_block_region(b, axes, shape, project) for b in blocks]  # (all checked first)
    top = max(int(d.max()) for d, _ in placed)
    part = Path(path).with_name(f".{Path(path).name}.part")
    shutil.rmtree(part, ignore_errors=True)
    out = zarr.create_array(
        str(part), shape=shape, chunks=tuple(min(n, 64 if len(shape) == 3 else 512) for n in shape),
        dtype=np.uint8 if top < 256 else np.uint16, fill_value=0, zarr_format=3,
        dimension_names=list(axes),
    )  # fmt: skip
    counts: dict[int, int] = {}
    for data, region in placed:
        old = out[region]
        out[region] = np.where(data > 0, data, old)  # (blocks do not overlap; if they did: 0 loses)
    for data, _ in placed:
        values, n = np.unique(data[data > 0], return_counts=True)
        for v, c in zip(values.tolist(), n.tolist(), strict=True):
            counts[v] = counts.get(v, 0) + c
    out.attrs["ilastik"] = {
        "project": str(Path(project).resolve()), "axes": axes,
        "label_names": {str(k): v for k, v in names.items()},
    }  # fmt: skip
    if overwrite and os.path.exists(path):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.replace(part, path)
    return dict(sorted(counts.items()))


def _bank(f: Any, project: str, *, planar: bool) -> Any:
    """Return the project's (first stage's) feature selection as a feature bank."""
    from tiledseg.features.bank import FeatureBank
    from tiledseg.features.families import ALIASES

    group = f["FeatureSelections"]
    ids = [_text(i) for i in group["FeatureIds"][()]]
    scales = [float(s) for s in group["Scales"][()]]
    matrix = np.asarray(group["SelectionMatrix"][()], bool)
    in_2d = np.asarray(group["ComputeIn2d"][()], bool) if "ComputeIn2d" in group else None
    families: dict[str, list[float]] = {}
    flat: dict[str, list[float]] = {}
    for row, name in enumerate(ids):
        if not matrix[row].any():
            continue
        if name not in ALIASES:
            raise InputDataError(
                f"project {project!r} selects the feature {name!r}, which tiledseg does not "
                "compute; deselect it in ilastik, or write the bank by hand"
            )
        chosen = [s for col, s in enumerate(scales) if matrix[row, col]]
        if chosen:
            families[ALIASES[name]] = chosen
            if planar and in_2d is not None:
                flat[ALIASES[name]] = [s for s in chosen if in_2d[scales.index(s)]]
    if not families:
        raise InputDataError(
            f"project {project!r} selects no features; choose some in ilastik's Feature "
            "Selection applet, or leave --bank out"
        )
    return FeatureBank(families, in_2d={k: v for k, v in flat.items() if v})


def _bank_part(bank: Any, path: str, project: str) -> Path:
    """Write ``bank`` as a YAML bank file under a temporary name beside ``path``; return it."""
    import yaml

    part = Path(path).with_name(f".{Path(path).name}.part")
    part.write_text(
        f"# the feature selection of the ilastik project {Path(project).name}\n"
        + yaml.safe_dump(bank.to_dict(), sort_keys=False, default_flow_style=None)
    )
    return part
