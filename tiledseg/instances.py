"""Objects: instance labels of a prediction's classes that know no block borders.

``tiledseg instances PRED.zarr --class K --out INST.zarr`` labels the connected voxels of
class K (or of several classes, each its own objects) in three blockwise passes:

1. **components**: each block's connected components (connected-components-3d), kept in
   a scratch array in the block's own numbers, with their measures (voxels, coordinate
   sums, bounding box, first voxel, class, intensity and probability sums) saved beside;
2. **pairs**: each block's components that touch a component of a lower neighbour
   block, read one voxel deep from the neighbours' own numbers;
3. **objects**: the pairs joined into objects (scipy's connected components of the graph
   of the components that touch a face: it grows with them, not with the volume), the
   objects under ``--min-size`` dropped and the others numbered by their first voxel in C
   order; each block is then written in the final numbers. The driver holds each
   component's measures (they make the table) and the pairs, nothing of the volume's size.

So the output equals a whole-volume labelling numbered the same way, voxel for voxel,
whatever the blocks.

``--split distance`` cuts touching objects apart at their necks. Each voxel's distance
to its class's border (the edt package, in the spacing's units) is capped at the split
radius R, so a block grown by R has it exactly. Seeds are the voxels farthest from the
border within R/2; they are numbered by the three passes above (so a seed crossing a
block border is one seed), as are the plain objects. Then each block, grown by 2.5 R,
floods its seeds down the distance (scikit-image's watershed): every voxel gets the
global number of the seed that reaches it, or of its plain object where none does. A
last numbering ranks these pieces by first voxel. An object is never cut by a block
border: its number is its seed's, the same in every block; a voxel's seed may differ
from a whole-volume watershed's only where the flood from it leaves the grown block or
meets a tie (measured above 99.9% equal, tested).

Each pass saves what it found per block, so a stopped run continues where it was; the
scratch is removed when the output is complete. The objects table (Parquet, or CSV) is
written beside the output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg.blocks import Block, BlockPlan, Region, haloed, resolve_block, within
from tiledseg.cluster import Executor, open_executor, planned_workers
from tiledseg.errors import InputDataError, OutputExistsError, TiledsegError
from tiledseg.instance_kernels import (
    CONNECTIVITY,
    block_measures,
    border_pairs,
    foreground,
    local_components,
    split_distance,
    split_pieces,
    split_seeds,
)
from tiledseg.options import Execution, Objects, gather
from tiledseg.runs import (
    DONE_DIR,
    BlockFailure,
    check_apart,
    check_writable,
    completed_with,
    create_output,
    done_blocks,
    mark_block_done,
    mark_complete,
    prepare_output,
    raise_failures,
)
from tiledseg.volume import Volume, open_volume

__all__ = ["InstancesResult", "instances"]

#: The scratch folder inside the output: the blocks' own numbers and what each pass found.
SCRATCH = ".tiledseg-objects"

#: The measures a block's components have, and how blocks' values of one object combine.
MEASURES = {
    "first": "min",
    "count": "sum",
    "sum": "sum",
    "low": "min",
    "high": "max",
    "class": "min",
    "intensity": "sum",
    "probability": "sum",
}


@dataclass(frozen=True)
class InstancesResult:
    """What :func:`instances` wrote."""

    path: str
    #: the objects table (``None`` with ``table="none"``)
    table: str | None
    objects: int
    #: objects dropped by ``min_size``
    dropped: int
    blocks: int
    skipped: int
    seconds: float
    notes: tuple[str, ...] = ()


def instances(
    prediction: str | os.PathLike,
    *,
    out: str | os.PathLike,
    objects: Objects | None = None,
    execution: Execution | None = None,
    image: Any = None,
    overwrite: bool = False,
    command: str | None = None,
    complete_ok: bool = False,
    **options: Any,
) -> InstancesResult:
    """Label the objects of a prediction's classes into an OME-Zarr labels group.

    Parameters
    ----------
    prediction : path
        A complete tiledseg output (``PRED.zarr``).
    out : path
        The instance labels ``INST.zarr`` (uint32; uint64 for volumes of 2^32 voxels or
        more); the table is ``INST.parquet`` (or ``.csv``) beside it.
    objects, execution : option models, optional
        Which classes, how (:class:`~tiledseg.options.Objects`: ``classes``,
        ``threshold``, ``min_size``, ``connectivity``, ``table``) and where blocks run
        (:class:`~tiledseg.options.Execution`; ``block`` defaults to the prediction's).
    image : path or array, optional
        The image whose mean intensity per object the table gives (default: the image the
        prediction names, when it is still readable).
    overwrite : bool
        Replace an existing output (and table). Without it, an unfinished run into
        ``out`` with the same settings is continued.
    command : str, optional
        The command line, recorded in the provenance.
    complete_ok : bool
        An output this run completed already (the same settings) is returned as it is,
        not refused (a config run again).
    **options
        Fields of those models by name (``classes=2``, ``min_size=10``, ``workers=4``).

    Returns
    -------
    InstancesResult
    """
    started = time.perf_counter()
    given = gather({"objects": objects, "execution": execution}, options, what="instances")
    obj, ex = given["objects"], given["execution"]
    source = _Source.open(str(prediction), obj)
    notes: list[str] = []
    job = _job(source, obj, ex, str(out), image, notes)
    plan = BlockPlan(source.labels.shape, job.block, (0,) * source.labels.ndim)
    table = None if obj.table == "none" else str(Path(out).with_suffix(f".{obj.table}"))
    check_apart(out, source.inputs(image), what="output")
    check_writable(out, what="output")
    from tiledseg.locks import output_lock

    with contextlib.ExitStack() as stack:
        stack.enter_context(output_lock(out))
        stored = completed_with(out, job.identity) if complete_ok and not overwrite else None
        if stored is not None:
            return InstancesResult(
                str(out), table, stored["objects"], stored["dropped"], len(plan), len(plan), 0.0,
                tuple(notes),
            )  # fmt: skip
        resuming = prepare_output(
            out, overwrite=overwrite, inputs=[str(prediction)], identity=job.identity
        )
        if not resuming:
            if table is not None:  # (an unfinished run's own table comes at its end)
                _check_table(table, overwrite)
            _create(job, source, command)
        for note in notes:  # (once the run starts: they say what the table will lack)
            print(note, file=sys.stderr)
        executor = stack.enter_context(
            open_executor(ex.workers, quiet=ex.quiet, scheduler=ex.scheduler, cluster=ex.cluster)
        )
        counts = _run(job, plan, executor, source.labels.spacing, obj.min_size, table)
        _finish(job, table, counts)  # (still holding the lock)
    return InstancesResult(
        str(out), table, counts["objects"], counts["dropped"], len(plan), counts["skipped"],
        time.perf_counter() - started, tuple(notes),
    )  # fmt: skip


def _finish(job: ObjectsJob, table: str | None, counts: dict[str, int]) -> None:
    """Move the table into place, mark the output complete and remove the scratch."""
    if table is not None:
        made = job.scratch / f"table{Path(table).suffix}"
        if made.exists():  # (else a kill came after the move: it is in place)
            os.replace(made, table)
    mark_complete(job.out, objects=counts["objects"], dropped=counts["dropped"])
    _remove_scratch(job.out)


@dataclass(frozen=True)
class _Source:
    """The prediction objects are made of: its labels, provenance and probabilities."""

    path: str
    labels: Volume
    provenance: dict[str, Any]

    @classmethod
    def open(cls, path: str, objects: Objects) -> _Source:
        """Open a complete prediction and check ``objects`` against it (one line each)."""
        import zarr

        from tiledseg.runs import is_tiledseg_output

        if not is_tiledseg_output(path):
            raise InputDataError(
                f"{path!r} is not a tiledseg output; give the OUT.zarr that tiledseg predict wrote"
            )
        provenance = dict(zarr.open_group(path, mode="r").attrs["tiledseg"])
        if not provenance.get("complete"):
            raise InputDataError(
                f"output {path!r} is unfinished; rerun the command that made it to finish it, "
                "then make its objects"
            )
        if provenance.get("kind") == "instances":
            raise InputDataError(f"{path!r} holds objects already; give the prediction")
        source = cls(path, open_volume(f"{path.rstrip('/')}/labels", role="prediction"), provenance)
        source.check(objects)
        return source

    @property
    def class_values(self) -> list[int]:
        """The prediction's class values, in the order of its probability channels."""
        return [int(c) for c in self.provenance.get("classes", [])]

    @property
    def has_probabilities(self) -> bool:
        """Whether the prediction wrote its probabilities."""
        return "probabilities" in self.provenance.get("arrays", [])

    def check(self, objects: Objects) -> None:
        """Refuse classes it has not, a threshold without probabilities, a connectivity."""
        missing = [c for c in objects.classes if c not in self.class_values]
        if missing:
            raise InputDataError(
                f"prediction {self.path!r} has no class {missing[0]} (its classes: "
                f"{', '.join(map(str, self.class_values))}); give --class one of them"
            )
        if objects.threshold is not None and not self.has_probabilities:
            raise InputDataError(
                f"--threshold needs the probabilities, and prediction {self.path!r} has none; "
                "predict again with --probabilities, or leave --threshold out (objects of the "
                "labels)"
            )
        ndim = self.labels.ndim
        if objects.connectivity is not None and objects.connectivity not in CONNECTIVITY[ndim]:
            allowed = " or ".join(map(str, CONNECTIVITY[ndim]))
            raise TiledsegError(
                f"--connectivity {objects.connectivity} is not one of a {ndim}D image's: "
                f"give {allowed}"
            )

    def inputs(self, image: Any) -> list[str]:
        """Return the paths an output must never be written over."""
        return [self.path] + ([str(image)] if isinstance(image, str | os.PathLike) else [])


@dataclass(frozen=True)
class Split:
    """How touching objects are split: the distance's cap, the seeds' window, the halos."""

    radius: float
    spacing: tuple[float, ...]

    @property
    def window(self) -> tuple[int, ...]:
        """Voxels along each axis within which a seed is the farthest from the border."""
        return tuple(int(self.radius / 2 // s) for s in self.spacing)

    @property
    def seed_halo(self) -> tuple[int, ...]:
        """How far a block's seeds look: its window's distances need R beyond them."""
        return tuple(
            int(np.ceil(self.radius / s)) + w
            for s, w in zip(self.spacing, self.window, strict=True)
        )

    @property
    def flood_halo(self) -> tuple[int, ...]:
        """How far a block's flood reaches: an object's seed lies within its diameter."""
        return tuple(
            int(np.ceil(2 * self.radius / s)) + w
            for s, w in zip(self.spacing, self.window, strict=True)
        )


@dataclass(frozen=True)
class ObjectsJob:
    """What every block of an instance labelling shares; a method per pass of a block."""

    source: str
    out: str
    shape: tuple[int, ...]
    block: tuple[int, ...]
    classes: tuple[int, ...]
    class_values: tuple[int, ...]
    threshold: float | None
    connectivity: int
    dtype: str
    probabilities: bool
    intensity: Volume | None
    identity: dict[str, Any]
    #: multiscale levels below full resolution: the prediction's (``tiledseg.pyramid``)
    levels: int = 0
    #: how touching objects are split (``None``: they are not)
    split: Split | None = None
    #: what this labelling labels: the ``foreground``, or a split's ``seeds`` or ``pieces``
    labels_of: str = "foreground"
    #: a split's earlier labelling (``components``, ``seeds``): its scratch sub-folder
    stage: str = ""

    @property
    def scratch(self) -> Path:
        """The folder of the blocks' own numbers and of each pass's findings."""
        return Path(self.out) / SCRATCH / self.stage

    @property
    def target(self) -> str:
        """The array the objects are written to: the output's, or a stage's scratch ids."""
        return _stage_ids(self.out, self.stage) if self.stage else f"{self.out}/labels/0"

    @property
    def record(self) -> Path:
        """Where the blocks written in the objects' numbers are marked (``runs``' markers)."""
        return self.scratch if self.stage else Path(self.out)

    def components(self, block: Block) -> int:
        """Label the block's components; keep them and their measures. Return its voxels."""
        import zarr

        keys = None
        if self.labels_of == "pieces":
            values, probability, local, keys = self._pieces(block.region)
            n = len(keys)
        else:
            if self.labels_of == "seeds":
                values, probability = self._seeds(block.region), None
            else:
                values, probability = self._foreground(block.region)
            local, n = local_components(values, self.connectivity)
        zarr.open_array(str(self.scratch / "local"), mode="r+")[block.region] = local
        intensity = None
        if self.intensity is not None:
            intensity = self.intensity.read(block.region)[0]
        measures = block_measures(
            local, n, values, origin=[s.start for s in block.region], shape=self.shape,
            intensity=intensity, probability=probability,
        )  # fmt: skip
        if keys is not None:
            measures["key"] = keys
        _save(self.scratch / f"m-{_name(block.index)}.npz", n=np.int64(n), **measures)
        return int(local.size)

    def pairs(self, block: Block) -> int:
        """Find the block's components that touch a lower neighbour's; keep the pairs."""
        import zarr

        grown = haloed(block.region, (1,) * len(self.shape), self.shape)
        labels = zarr.open_array(str(self.scratch / "local"), mode="r")[grown]
        grid = tuple(-(-n // b) for n, b in zip(self.shape, self.block, strict=True))
        block_of = [np.arange(g.start, g.stop) // b for g, b in zip(grown, self.block, strict=True)]
        found = border_pairs(
            labels, within(block.region, grown), block_of, grid,
            connectivity=self.connectivity,
        )  # fmt: skip
        _save(self.scratch / f"p-{_name(block.index)}.npz", pairs=found)
        return len(found)

    def relabel(self, block: Block) -> int:
        """Write the block in the objects' numbers; mark it done."""
        import zarr

        lut = np.load(self.scratch / f"lut-{_name(block.index)}.npy")
        local = zarr.open_array(str(self.scratch / "local"), mode="r")[block.region]
        zarr.open_array(self.target, mode="r+")[block.region] = lut[local]
        mark_block_done(self.record, block.index)
        return int(local.size)

    def _seeds(self, region: Region) -> np.ndarray:
        """Return the class of each seed voxel of the region, 0 elsewhere."""
        grown = haloed(region, self.split.seed_halo, self.shape)
        values, _ = self._foreground(grown)
        distance = split_distance(values, spacing=self.split.spacing, radius=self.split.radius)
        return split_seeds(values, distance, window=self.split.window)[within(region, grown)]

    def _pieces(
        self, region: Region
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """Return the region's classes, probabilities, own piece numbers and their keys.

        A piece's key is global: twice its seed's number, or twice its plain object's
        number plus one where no seed reaches (an object no seed lies in).
        """
        import zarr

        grown = haloed(region, self.split.flood_halo, self.shape)
        values, probability = self._foreground(grown)
        distance = split_distance(values, spacing=self.split.spacing, radius=self.split.radius)
        seeds = zarr.open_array(_stage_ids(self.out, "seeds"), mode="r")[grown]
        inner = within(region, grown)
        keys = split_pieces(
            values, distance, seeds, connectivity=self.connectivity,
            origin=[g.start for g in grown], shape=self.shape,
        )[inner] * 2  # fmt: skip
        values = values[inner]
        lost = (values > 0) & (keys == 0)
        if lost.any():
            plain = zarr.open_array(_stage_ids(self.out, "components"), mode="r")[region]
            keys[lost] = plain[lost].astype(np.int64) * 2 + 1
        flat = keys.ravel()
        where = np.flatnonzero(flat)
        found, first, inverse = np.unique(flat[where], return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # (own numbers by first voxel)
        rank = np.empty(len(found), np.uint32)
        rank[order] = np.arange(1, len(found) + 1, dtype=np.uint32)
        local = np.zeros(keys.shape, np.uint32)
        local.ravel()[where] = rank[inverse.ravel()]
        if probability is not None:
            probability = probability[inner]
        return values, probability, local, found[order]

    def _foreground(self, region: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray | None]:
        """Return each voxel's object class (0: none), and its probability of that class."""
        import zarr

        labels = None
        if self.threshold is None:
            labels = zarr.open_array(f"{self.source}/labels/0", mode="r")[region]
        proba = None
        if self.threshold is not None or self.probabilities:
            proba = zarr.open_array(f"{self.source}/probabilities/0", mode="r")[
                (slice(None), *region)
            ]
        values = foreground(
            labels, self.classes, probabilities=proba, threshold=self.threshold,
            class_values=self.class_values,
        )  # fmt: skip
        if proba is None:
            return values, None
        channel = np.zeros(values.shape, np.intp)
        for c in self.classes:
            channel[values == c] = self.class_values.index(c)
        own = np.take_along_axis(proba, channel[None], axis=0)[0]
        return values, own.astype(np.float64) / 255.0


def _name(index: tuple[int, ...]) -> str:
    return "_".join(map(str, index))


def _stage_ids(out: str, stage: str) -> str:
    """Return the array of a split's earlier labelling's global numbers."""
    return str(Path(out) / SCRATCH / stage / "ids")


def _save(path: Path, **arrays: Any) -> None:
    """Save ``arrays`` whole or not at all: a kill leaves the file or nothing."""
    part = path.with_name(f".{path.name}.part")
    with open(part, "wb") as f:
        np.savez(f, **arrays)
    os.replace(part, path)


def _job(
    source: _Source, obj: Objects, ex: Execution, out: str, image: Any, notes: list[str]
) -> ObjectsJob:
    """Return the job: blocks, connectivity, output dtype, the image for the intensities."""
    labels = source.labels
    block = ex.block if ex.block is not None else source.provenance.get("block")
    shape = resolve_block(
        block,
        shape=labels.shape,
        halo=(0,) * labels.ndim,
        min_blocks=planned_workers(ex.workers, scheduler=ex.scheduler, cluster=ex.cluster),
    )
    connectivity = obj.connectivity or CONNECTIVITY[labels.ndim][-1]
    levels = int(source.provenance.get("levels") or 0)  # (as many as the prediction has)
    dtype = "uint32" if int(np.prod(labels.shape)) < 2**32 else "uint64"
    # (the mean intensities are the table's: without a table the image is not read)
    intensity = _intensity_image(image, source, notes) if obj.table != "none" else None
    split = None
    if obj.split == "distance":
        spacing = tuple(map(float, labels.spacing))
        split = Split(obj.split_radius or 8 * min(spacing), spacing)
    identity = {
        "prediction": str(Path(source.path).resolve()),
        "prediction_finished": source.provenance.get("finished"),
        "classes": list(obj.classes),
        "threshold": obj.threshold,
        "min_size": obj.min_size,
        "connectivity": connectivity,
        "block": list(shape),
        "image": None if intensity is None else intensity.name,
        "table": obj.table,
        **({"levels": levels} if levels else {}),
        **({"split": obj.split, "split_radius": split.radius} if split else {}),
    }
    return ObjectsJob(
        source.path, out, labels.shape, tuple(shape), tuple(obj.classes),
        tuple(source.class_values), obj.threshold, connectivity, dtype,
        source.has_probabilities, intensity, identity, levels, split,
        "pieces" if split else "foreground",
    )  # fmt: skip


def _intensity_image(image: Any, source: _Source, notes: list[str]) -> Volume | None:
    """Open the image the mean intensities come from (its first channel), or note why not."""
    given = image if image is not None else source.provenance.get("image")
    if given is None:
        notes.append("no image: the table has no mean intensity (give --image)")
        return None
    try:
        volume = open_volume(given)
    except (TiledsegError, OSError) as exc:
        if image is not None:
            raise
        notes.append(f"image {given!r} cannot be read ({exc}): no mean intensity (give --image)")
        return None
    if volume.shape != source.labels.shape:
        raise InputDataError(
            f"image {volume.name} has spatial shape {volume.shape} but the prediction has "
            f"{source.labels.shape}; give the image that was predicted"
        )
    return volume.image_only


def _check_table(table: str, overwrite: bool) -> None:
    if Path(table).exists() and not overwrite:
        raise OutputExistsError(
            f"table {table!r} exists; choose another output or pass --overwrite"
        )


def _create(job: ObjectsJob, source: _Source, command: str | None) -> None:
    """Create the output (an OME-Zarr labels group) and each labelling's scratch."""
    from tiledseg.model import versions

    provenance = {
        "kind": "instances",
        "prediction": str(Path(source.path).resolve()),
        "command": command if command is not None else " ".join(sys.argv),
        "versions": versions(),
        "connectivity": job.connectivity,
        "image": None if job.intensity is None else job.intensity.path,
    }
    create_output(
        job.out, shape=job.shape, block=job.block, spacing=source.labels.spacing,
        label_dtype=np.dtype(job.dtype), classes=job.classes, probabilities=False,
        uncertainty=False, provenance=provenance, overwrite=True, identity=job.identity,
        ngff=source.provenance.get("ngff", "0.5"),  # (a 0.4 prediction's reader opens these)
        levels=job.levels,
    )  # fmt: skip
    job.scratch.mkdir()
    for stage in _stages(job):
        _create_scratch(stage)


def _create_scratch(job: ObjectsJob) -> None:
    """Create a labelling's scratch: its blocks' own numbers (and a stage's global ones)."""
    import zarr

    job.scratch.mkdir(exist_ok=True)
    if job.stage:  # (the output has its own markers' folder)
        (job.scratch / DONE_DIR).mkdir(exist_ok=True)
    arrays = {"local": np.uint32, **({"ids": job.dtype} if job.stage else {})}
    for name, dtype in arrays.items():
        zarr.create_array(
            str(job.scratch / name), shape=job.shape, chunks=job.block, dtype=dtype,
            fill_value=0, zarr_format=3, overwrite=True,
        )  # fmt: skip


def _stages(job: ObjectsJob) -> list[ObjectsJob]:
    """Return the labellings a job runs, in order: a split's plain objects and seeds first."""
    if job.split is None:
        return [job]
    earlier = {"probabilities": False, "intensity": None, "levels": 0}
    return [
        dataclasses.replace(job, labels_of="foreground", stage="components", **earlier),
        dataclasses.replace(job, labels_of="seeds", stage="seeds", **earlier),
        job,
    ]


def _run(
    job: ObjectsJob, plan: BlockPlan, executor: Executor, spacing: tuple[float, ...],
    min_size: int, table: str | None,
) -> dict[str, int]:  # fmt: skip
    """Run each labelling's passes (only where an earlier run has not); return the counts."""
    from tiledseg.runs import record_resume

    first = _stages(job)[0].scratch
    names = {e.name for e in os.scandir(first)}
    skipped = sum(f"m-{_name(b.index)}.npz" in names for b in plan)
    if skipped:
        record_resume(job.out, skipped=skipped, total=len(plan))
    for stage in _stages(job):
        last = stage is job
        counts = _label(
            stage, plan, executor, spacing, min_size if last else 0, table if last else None
        )
    _levels(job, plan, executor)
    return {**counts, "skipped": skipped}


def _label(
    job: ObjectsJob, plan: BlockPlan, executor: Executor, spacing: tuple[float, ...],
    min_size: int, table: str | None,
) -> dict[str, int]:  # fmt: skip
    """Run one labelling's passes: components, pairs (unless keyed), numbers, relabelling."""
    keyed = job.labels_of == "pieces"  # (pieces carry global keys: no pairs to find)
    what = job.stage or "objects"
    steps = 2 if keyed else 3
    passes = [(job.components, "m")] + ([] if keyed else [(job.pairs, "p")])
    for i, (method, prefix) in enumerate(passes, 1):
        names = {e.name for e in os.scandir(job.scratch)}
        todo = [b for b in plan if f"{prefix}-{_name(b.index)}.npz" not in names]
        _pass(executor, method, todo, f"{what} {i}/{steps}", job.out, len(plan))
    numbered = job.scratch / "counts.json"
    if numbered.exists():  # (written once every block's numbers are saved)
        counts = json.loads(numbered.read_text())
    else:
        counts = _number_objects(job, plan, spacing, min_size, table)
        part = numbered.with_name(f".{numbered.name}.part")
        part.write_text(json.dumps(counts))
        os.replace(part, numbered)
    done = done_blocks(job.record)
    todo = [b for b in plan if b.index not in done]
    _pass(executor, job.relabel, todo, f"{what} {steps}/{steps}", job.out, len(plan))
    return counts


def _levels(job: ObjectsJob, plan: BlockPlan, executor: Executor) -> None:
    """Make the objects' multiscale levels (those not done), once every block is written."""
    if not job.levels:
        return
    from tiledseg.pyramid import PyramidJob, level_shapes, stream, tracker

    shapes = tuple(level_shapes(job.shape, job.levels))
    trackers = {
        None: tracker(
            PyramidJob(job.out, ("labels",), job.block, shapes), plan, set(), running=False
        )
    }
    made = stream(executor, iter(()), trackers, desc="objects levels", total=0)
    failures = [r for _, _, r in made if isinstance(r, BlockFailure)]
    raise_failures(job.out, failures, total=len(plan), skipped=len(plan))


def _pass(
    executor: Executor, method: Any, todo: list[Block], desc: str, out: str, total: int
) -> None:
    """Run one pass over ``todo``; raise the failed blocks (the others' work is kept)."""
    failures: list[BlockFailure] = []
    with contextlib.closing(executor.blocks(method, todo, desc=desc, total=len(todo))) as each:
        failures = [r for _, r in each if isinstance(r, BlockFailure)]
    raise_failures(out, failures, total=total, skipped=total - len(todo))


def _number_objects(
    job: ObjectsJob, plan: BlockPlan, spacing: tuple[float, ...], min_size: int,
    table: str | None,
) -> dict[str, int]:  # fmt: skip
    """Join the components into objects, number them, save each block's numbers and the table.

    Returns the objects kept and dropped.
    """
    blocks = list(plan)
    loaded = [_load(job.scratch / f"m-{_name(b.index)}.npz") for b in blocks]
    sizes = [int(m["n"]) for m in loaded]
    per_block = int(np.prod(job.block)) + 1
    linear = [int(np.ravel_multi_index(b.index, plan.grid)) for b in blocks]
    keys = np.concatenate(
        [
            lin * per_block + np.arange(1, n + 1, dtype=np.int64)
            for lin, n in zip(linear, sizes, strict=True)
        ]
        or [np.zeros(0, np.int64)]
    )
    measures = {
        name: np.concatenate([m[name] for m in loaded])
        for name in [*MEASURES, "key"]
        if all(name in m for m in loaded)
    }
    del loaded
    if "key" in measures:  # (a split's pieces: the same key is the same piece)
        group = measures.pop("key")
    else:
        pairs = np.concatenate(
            [_load(job.scratch / f"p-{_name(b.index)}.npz")["pairs"] for b in blocks]
            or [np.zeros((0, 4), np.int64)]
        )
        group = _join(keys, pairs[:, [0, 2]] * per_block + pairs[:, [1, 3]], measures["class"])
    groups, member_of = np.unique(group, return_inverse=True)
    merged = _combine(measures, member_of, len(groups))
    kept = merged["count"] >= min_size
    order = np.argsort(merged["first"][kept], kind="stable")
    final = np.zeros(len(groups), np.uint64)
    final[np.flatnonzero(kept)[order]] = np.arange(1, int(kept.sum()) + 1, dtype=np.uint64)
    start = 0
    for block, n in zip(blocks, sizes, strict=True):
        lut = np.concatenate([np.zeros(1, final.dtype), final[member_of[start : start + n]]])
        lut = lut.astype(job.dtype)
        _save_npy(job.scratch / f"lut-{_name(block.index)}.npy", lut)
        start += n
    if table is not None:  # (kept in the scratch until the output is complete)
        rows = {k: v[kept][order] for k, v in merged.items()}
        _write_table(str(job.scratch / f"table{Path(table).suffix}"), rows, job.shape, spacing)
    return {"objects": int(kept.sum()), "dropped": int((~kept).sum())}


def _join(keys: np.ndarray, ends: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Return each component's object (an index), joining the pairs ``ends`` of one class.

    ``keys``: every component, sorted; ``ends``: ``(m, 2)`` keys of components that touch.
    Only the components that touch a face are in the graph: it grows with them, not with
    the volume.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    group = np.arange(len(keys), dtype=np.int64)
    at = np.searchsorted(keys, ends)
    ends = ends[classes[at[:, 0]] == classes[at[:, 1]]]  # (two classes never join)
    if not len(ends):
        return group
    touching, edges = np.unique(ends, return_inverse=True)
    edges = edges.reshape(ends.shape)
    n = len(touching)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    joined = connected_components(graph, directed=False)[1].astype(np.int64)
    group[np.searchsorted(keys, touching)] = len(keys) + joined
    return group


def _combine(measures: dict[str, np.ndarray], member_of: np.ndarray, n: int) -> dict[str, Any]:
    """Combine the components' measures into their objects' (sums, minima, maxima)."""
    out = {}
    for name, values in measures.items():
        how = MEASURES[name]
        shape = (n, *values.shape[1:])
        if how == "sum":
            combined = np.zeros(shape, np.float64 if values.dtype.kind == "f" else np.int64)
            np.add.at(combined, member_of, values)
        elif how == "min":
            combined = np.full(shape, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(combined, member_of, values)
        else:
            combined = np.full(shape, -1, np.int64)
            np.maximum.at(combined, member_of, values)
        out[name] = combined
    return out


def _load(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` whole and close it (a driver reading every block's keeps no file open)."""
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _save_npy(path: Path, array: np.ndarray) -> None:
    part = path.with_name(f".{path.name}.part")
    with open(part, "wb") as f:
        np.save(f, array)
    os.replace(part, path)


def _write_table(
    path: str, rows: dict[str, np.ndarray], shape: tuple[int, ...], spacing: tuple[float, ...]
) -> None:
    """Write the objects table (Parquet or CSV), one row per object in the order of its id."""
    import pandas as pd

    axes = "zyx"[-len(shape) :]
    count = rows["count"]
    columns: dict[str, Any] = {
        "id": np.arange(1, len(count) + 1),
        "class": rows["class"],
        "voxels": count,
        "volume": count * float(np.prod(spacing)),
    }
    for a, name in enumerate(axes):
        columns[f"centroid_{name}"] = rows["sum"][:, a] / count
    for a, name in enumerate(axes):
        columns[f"bbox_min_{name}"] = rows["low"][:, a]
    for a, name in enumerate(axes):
        columns[f"bbox_max_{name}"] = rows["high"][:, a] + 1  # (exclusive, as regionprops)
    if "intensity" in rows:
        columns["mean_intensity"] = rows["intensity"] / count
    if "probability" in rows:
        columns["mean_probability"] = rows["probability"] / count
    edge = (rows["low"] == 0) | (rows["high"] == np.asarray(shape) - 1)
    columns["touches_edge"] = edge.any(axis=1)
    frame = pd.DataFrame(columns)
    part = Path(path).with_name(f".{Path(path).name}.part")
    if path.endswith(".csv"):
        frame.to_csv(part, index=False)
    else:
        frame.to_parquet(part, index=False)
    os.replace(part, path)


def _remove_scratch(out: str | os.PathLike) -> None:
    import shutil

    shutil.rmtree(Path(out) / SCRATCH, ignore_errors=True)
