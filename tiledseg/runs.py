"""The output store: an OME-Zarr group written block by block, with provenance.

Layout of ``OUT.zarr`` (zarr v3 and OME-Zarr 0.5; zarr v2 and OME-Zarr 0.4 with ``--ngff
0.4``)::

    OUT.zarr/                 attrs["tiledseg"]: provenance (model checksum, bank, versions,
                              command, image, block, roi, levels, complete)
      labels/0                the user's label values, smallest unsigned dtype that fits
      labels/1, 2, ...        halved levels (--pyramid; tiledseg.pyramid)
      probabilities/0         optional: uint8 0-255, class axis first
      uncertainty/0           optional: uint8, 255 * (1 - (p_best - p_second))

      .tiledseg-done/         one empty file per finished block (named by its grid index;
                              a level's chunk by levelK-index), made after all of the
                              block's data is written; removed when the run completes

A run that stopped (killed, walltime, failed blocks) leaves ``complete: false``
and its done markers: the same command again continues it, skipping the blocks
already done. What must match for that is the run's *identity* (model, image,
block, region, arrays, smoothing, mask, NaN fill, levels, OME-Zarr version, and the
features' spacing for a model of several anisotropies); anything else is refused rather
than mixed.

Each of ``labels``, ``probabilities`` and ``uncertainty`` is an OME-Zarr multiscale
image (``labels`` with ``image-label`` metadata), so napari and other OME-Zarr readers
open them directly. Arrays are chunked like the processing blocks, so every block writes
whole chunks and no two blocks touch the same chunk.

An existing path is never replaced unless asked, and never at all unless it is
a tiledseg output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg.errors import BlocksFailedError, OutputExistsError
from tiledseg.volume import split_dataset, split_options

__all__ = [
    "BlockFailure",
    "DONE_DIR",
    "completed_with",
    "create_output",
    "done_blocks",
    "guarded",
    "is_tiledseg_output",
    "mark_block_done",
    "mark_complete",
    "prepare_output",
    "raise_failures",
    "record_resume",
    "unfinished_run",
    "update_provenance",
]

#: Folder of the per-block done markers inside the output group.
DONE_DIR = ".tiledseg-done"

# how the identity's keys are named in a refusal
_IDENTITY_NAMES = {
    "model_checksum": "model (checksum)",
    "image": "image",
    "image_shape": "image shape",
    "image_dtype": "image dtype",
    "block": "block",
    "roi": "region (--roi)",
    "arrays": "set of outputs (--probabilities/--uncertainty)",
    "smoothing": "smoothing",
    "extra_channels": "set of extra channels",
    "plugins": "plug-in feature code",
    "levels": "number of multiscale levels (--pyramid)",
    "ngff": "OME-Zarr version (--ngff)",
    "spacing": "spacing of the image's features",
    # (tiledseg instances)
    "prediction": "prediction",
    "prediction_finished": "prediction (it was made again since)",
    "classes": "set of classes (--class)",
    "threshold": "probability threshold (--threshold)",
    "min_size": "--min-size",
    "connectivity": "--connectivity",
    "table": "table format (--table)",
    "split": "split of touching objects (--split)",
    "split_radius": "--split-radius",
}


def is_tiledseg_output(path: str | Path) -> bool:
    """Whether ``path`` is a zarr group written by tiledseg."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:  # anything that is not a readable zarr group
        return False
    return "tiledseg" in group.attrs


def _stored_run(path: Path) -> dict[str, Any] | None:
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs["tiledseg"])
    except Exception:  # not a readable tiledseg group
        return None


def unfinished_run(path: str | Path) -> dict[str, Any] | None:
    """Return the provenance of the unfinished tiledseg run at ``path`` (``None``: none)."""
    path = Path(path)
    stored = _stored_run(path) if path.exists() else None
    if stored is None or stored.get("complete", True):
        return None
    return stored


def prepare_output(
    path: str | Path,
    *,
    overwrite: bool,
    inputs: Sequence[str] = (),
    identity: dict[str, Any] | None = None,
) -> bool:
    """Check that ``path`` may be written, before any work starts; nothing is changed here.

    Parameters
    ----------
    path : path
        The output group.
    overwrite : bool
        Start afresh over an existing tiledseg output.
    inputs : sequence of str
        Paths the run reads, which the output must not be.
    identity : dict, optional
        What a run that wrote ``path`` must have had in common with this one for
        this one to continue it (see :func:`create_output`). ``None``: no resume.

    Returns
    -------
    bool
        Whether ``path`` holds an unfinished run with this identity, to be continued.
    """
    path = Path(path)
    check_apart(path, inputs, what="output")
    check_writable(path, what="output")
    if path.exists() or path.is_symlink():
        stored = _stored_run(path)
        if stored is None:
            raise OutputExistsError(
                f"output {str(path)!r} exists and is not a tiledseg output; tiledseg will not "
                "delete it, even with --overwrite: choose another path"
            )
        if overwrite:
            return False
        if identity is None or stored.get("complete", True):
            raise OutputExistsError(
                f"output {str(path)!r} exists"
                + (" and is complete" if stored.get("complete") else "")
                + "; choose another path or pass --overwrite"
            )
        _check_same_run(path, stored.get("identity") or {}, identity)
        return True
    return False


def completed_with(path: str | Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """Return the provenance of ``path`` if it is a complete output of a run with ``identity``.

    ``None`` otherwise: the same command run again finds its output done, not in the way.
    """
    stored = _stored_run(Path(path)) if Path(path).exists() else None
    if stored is None or not stored.get("complete") or stored.get("identity") != identity:
        return None
    return stored


def check_apart(path: str | Path, inputs: Sequence[str], *, what: str) -> None:
    """Refuse an output that is an input, lies inside an input's store, or holds one."""
    given, path = str(path), Path(path).resolve()
    for source in inputs:
        head = split_dataset(split_options(str(source))[0])[0]
        store = Path(head).resolve()
        if path == store:
            raise OutputExistsError(f"{what} {given!r} is one of the inputs; choose another path")
        if store in path.parents:
            raise OutputExistsError(
                f"{what} {given!r} is inside input {head!r}; writing there would change the "
                "input: choose a path outside it"
            )
        if path in store.parents:
            raise OutputExistsError(
                f"{what} {given!r} holds input {head!r}; replacing it would delete the input: "
                "choose another path"
            )


def check_writable(path: str | Path, *, what: str) -> None:
    """Refuse an output whose folder is missing or cannot be written, before any work.

    The folder is probed by creating (and removing) a file in it: permission bits say
    nothing of a read-only mount, nor of root's rights.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        which = "is a file" if folder.exists() else "does not exist"
        raise OutputExistsError(
            f"the folder of {what} {str(path)!r} {which}; give a path in an existing folder"
            + ("" if folder.exists() else f" (create {str(folder)!r} first)")
        )
    try:
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".tiledseg-probe-")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputExistsError(
            f"cannot write {what} {str(path)!r}: folder {str(folder)!r} is not writable "
            f"({reason}); choose another folder"
        ) from None
    probe.close()


def _check_same_run(path: Path, stored: dict[str, Any], identity: dict[str, Any]) -> None:
    for key, name in _IDENTITY_NAMES.items():
        was, now = stored.get(key), identity.get(key)
        if was == now:
            continue
        if isinstance(was, dict) and isinstance(now, dict):
            # name the setting that differs, not two long dicts
            sub = next(k for k in sorted({*was, *now}) if was.get(k) != now.get(k))
            name, was, now = f"{name} {sub}", was.get(sub), now.get(sub)
        raise OutputExistsError(
            f"output {str(path)!r} holds an unfinished run with a different {name} "
            f"(it had {_short(was)}, this run has {_short(now)}); rerun it as it was to "
            "continue it, pass --overwrite to start afresh, or choose another path"
        )


def _short(value: Any) -> str:
    text = "none" if value is None else str(value)
    return text if len(text) <= 40 else text[:18] + "..." + text[-18:]


def _multiscale_attrs(
    name: str, axes: str, scale: Sequence[float], *, levels: int, ngff: str
) -> dict[str, Any]:
    """Return a group's OME-Zarr ``ngff`` (0.5 or 0.4) metadata: ``levels`` below level 0.

    Level ``k``'s scale is ``2**k`` times level 0's along the spatial axes.
    """
    kinds = {"c": "channel", "z": "space", "y": "space", "x": "space"}
    datasets = []
    for k in range(levels + 1):
        factors = [1 if a == "c" else 2**k for a in axes]
        level = [s * f for s, f in zip(scale, factors, strict=True)]
        datasets.append(
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": level}]}
        )
    multiscale = {
        "name": name,
        "axes": [{"name": a, "type": kinds[a]} for a in axes],
        "datasets": datasets,
    }
    labels = {"image-label": {"version": ngff}} if name == "labels" else {}
    if ngff == "0.4":  # (0.4: the version inside each multiscale, the keys at the top)
        return {"multiscales": [{"version": ngff, **multiscale}], **labels}
    return {"ome": {"version": ngff, "multiscales": [multiscale], **labels}}


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
    identity: dict[str, Any] | None = None,
    levels: int = 0,
    ngff: str = "0.5",
) -> Path:
    """Create the output group and its empty arrays (after :func:`prepare_output`).

    ``identity`` is stored in the provenance; a later run with the same identity
    continues this one (:func:`prepare_output`). ``levels``: the multiscale levels below
    full resolution (:mod:`tiledseg.pyramid`), chunked as level 0. ``ngff``: ``"0.5"``
    (zarr v3) or ``"0.4"`` (zarr v2, for readers that know no other).
    """
    import zarr

    from tiledseg.pyramid import level_shapes

    path = Path(path)
    prepare_output(path, overwrite=overwrite)
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(str(path), mode="w-", zarr_format=2 if ngff == "0.4" else 3)
    spatial = "zyx"[-len(shape) :]
    spacing = list(spacing)
    wanted = [("labels", (), label_dtype, spatial, spacing)]
    if probabilities:
        n = len(classes)
        wanted.append(("probabilities", (n,), np.uint8, "c" + spatial, [1.0, *spacing]))
    if uncertainty:
        wanted.append(("uncertainty", (), np.uint8, spatial, spacing))
    for name, lead, dtype, axes, scale in wanted:
        group = root.create_group(name)
        group.attrs.update(_multiscale_attrs(name, axes, scale, levels=levels, ngff=ngff))
        _create_levels(group, lead, level_shapes(shape, levels), tuple(block), dtype, axes, ngff)
    root.attrs["tiledseg"] = {
        **provenance,
        "identity": identity,
        "arrays": [w[0] for w in wanted],
        "classes": [int(c) for c in classes],
        "block": list(block),
        "levels": levels,
        "ngff": ngff,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "complete": False,
    }
    (path / DONE_DIR).mkdir()
    return path


def _create_levels(
    group: Any,
    lead: tuple[int, ...],
    shapes: Sequence[tuple[int, ...]],
    block: tuple[int, ...],
    dtype: Any,
    axes: str,
    ngff: str,
) -> None:
    """Create one array per level in ``group``, each chunked as the blocks (``lead`` whole)."""
    if ngff == "0.4":  # zarr v2: 0.4 names chunks with "/" between indices, as v3 does
        keys: dict[str, Any] = {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    else:  # (0.5 asks for the axes' names on the arrays too)
        keys = {"dimension_names": tuple(axes)}
    keys["fill_value"] = 0  # (unwritten chunks, outside a mask or region, read 0)
    for k, level in enumerate(shapes):
        chunks = tuple(min(b, m) for b, m in zip(block, level, strict=True))
        shape = (*lead, *level)
        group.create_array(str(k), shape=shape, chunks=(*lead, *chunks), dtype=dtype, **keys)


def update_provenance(path: str | Path, **items: Any) -> None:
    """Set ``items`` in the output's provenance (``attrs["tiledseg"]``)."""
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    root.attrs["tiledseg"] = {**root.attrs["tiledseg"], **items}


def mark_complete(path: str | Path, **extra: Any) -> None:
    """Record in the provenance that every planned block was written."""
    update_provenance(path, **extra, complete=True, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    # the markers only serve an unfinished run
    shutil.rmtree(Path(path) / DONE_DIR, ignore_errors=True)


def record_resume(path: str | Path, *, skipped: int, total: int) -> None:
    """Note in the provenance that a run was continued, and how much it skipped."""
    earlier = (_stored_run(Path(path)) or {}).get("resumed", [])
    now = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "skipped": skipped, "blocks": total}
    update_provenance(path, resumed=[*earlier, now])


def _marker_name(index: Sequence[int]) -> str:
    return "_".join(str(int(i)) for i in index)


def mark_block_done(path: str | Path, index: Sequence[int], *, level: int = 0) -> None:
    """Record that the block at grid ``index`` is written (call after its last write).

    ``level``: a chunk of a multiscale level below full resolution (:mod:`tiledseg.pyramid`).
    """
    # an empty file: its creation is the whole record, so a kill leaves it or not
    name = _marker_name(index) if not level else f"level{level}-{_marker_name(index)}"
    os.close(os.open(Path(path) / DONE_DIR / name, os.O_CREAT | os.O_WRONLY, 0o644))


def done_blocks(path: str | Path, *, level: int = 0) -> set[tuple[int, ...]]:
    """Return the grid indices of the blocks an unfinished run at ``path`` has written.

    ``level``: the chunks of a multiscale level below full resolution instead.
    """
    folder = Path(path) / DONE_DIR
    if not folder.is_dir():
        return set()
    prefix = f"level{level}-" if level else ""
    return {
        tuple(int(i) for i in entry.name[len(prefix) :].split("_"))
        for entry in os.scandir(folder)
        if entry.name.startswith(prefix) and entry.name[len(prefix) :].replace("_", "").isdigit()
    }


@dataclass(frozen=True)
class BlockFailure:
    """A block whose task raised, with the error as text (it crosses process borders)."""

    name: str
    index: tuple[int, ...]
    error: str
    details: str = ""
    caused_by: str = ""
    #: "block", or "level chunk" (a chunk of a multiscale level, :mod:`tiledseg.pyramid`)
    kind: str = "block"

    def __str__(self) -> str:
        """Return one line for the report: the block and the first line of its error."""
        # one line per block in the report: the first line of the error
        first = self.error.splitlines()[0] if self.error else ""
        if self.kind != "block":
            return f"{self.name}: {first}"
        return f"block {self.name} (grid index {self.index}): {first}"


def guarded(func: Callable[..., Any], name: str, index: Sequence[int], *args: Any) -> Any:
    """``func(*args)``, or a :class:`BlockFailure` if it raises.

    One block's failure (an unreadable chunk) must not stop the others: the run
    finishes what it can and reports the failures at the end.
    """
    try:
        return func(*args)
    except Exception as exc:  # any error of this block's task, reported with its block
        return BlockFailure(
            name, tuple(index), f"{type(exc).__name__}: {exc}", traceback.format_exc()
        )


def raise_failures(
    path: str | Path, failures: Sequence[BlockFailure], *, total: int, skipped: int = 0
) -> None:
    """Raise :class:`BlocksFailedError` with a report of ``failures`` (if there are any).

    Parameters
    ----------
    path : path
        The output, named in the report.
    failures : sequence of BlockFailure
        The blocks that failed, one line each in the report.
    total : int
        Blocks in the run.
    skipped : int
        Blocks this run skipped as done by an earlier one.
    """
    if not failures:
        return
    blocks = [f for f in failures if f.kind == "block"]
    chunks = len(failures) - len(blocks)
    resumed = f" (this run skipped {skipped} blocks already done)" if skipped else ""
    levels = f"; {chunks} level chunk{'s' * (chunks > 1)} failed" if chunks else ""
    if not blocks:
        head = f"all {total} blocks are written but {chunks} chunk{'s' * (chunks > 1)} of the "
        head += "multiscale levels failed"
    elif len(blocks) + skipped >= total:
        written = "no block was written" if not skipped else "no other block was written"
        head = f"{'all ' if not skipped else ''}{len(blocks)} of {total} blocks failed; {written}"
        head += levels
    else:
        head = f"{len(blocks)} of {total} blocks failed; the other blocks are written{levels}"
    lines = [
        f"{head} to {str(path)!r}{resumed if blocks else ''}. Fix the cause and rerun the same "
        "command: it redoes only the blocks not done."
    ]
    lines += [f"  {f}" for f in sorted(failures, key=lambda f: f.index)]
    raise BlocksFailedError("\n".join(lines), list(failures))
