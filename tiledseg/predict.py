"""Prediction: block -> features -> probabilities -> labels / probabilities / uncertainty.

Each block task reads its haloed block, computes its features with the
function training used, classifies its own voxels and writes whole chunks of
the output store. Nothing larger than one block's features is ever in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg import kept_features
from tiledseg._openmp import passive_waits
from tiledseg.blocks import Block, BlockPlan, resolve_block
from tiledseg.cluster import Executor, open_executor, planned_workers
from tiledseg.device import plan_devices
from tiledseg.errors import BlocksFailedError, InputDataError, OutputExistsError, TiledsegError
from tiledseg.features.bank import relative_spacing
from tiledseg.features.tiled import NonFiniteValuesError, read_finite, with_nan_fill
from tiledseg.kept_features import KeptFeatures
from tiledseg.locks import output_lock
from tiledseg.masks import MASK_SIGMA, blocks_meeting, mask_path, open_mask
from tiledseg.model import Model, load_model, versions
from tiledseg.options import (
    DEFAULT_SMOOTH_WEIGHT,
    Execution,
    ImageInput,
    Prediction,
    Smoothing,
    gather,
)
from tiledseg.prediction_job import (
    PredictionJob,
    _costs_task,
    _write_labels_task,
    block_probabilities,
    classify_block,
)
from tiledseg.pyramid import PyramidJob, level_count, level_shapes, stream, tracker
from tiledseg.runs import (
    BlockFailure,
    check_apart,
    check_writable,
    completed_with,
    create_output,
    done_blocks,
    mark_complete,
    prepare_output,
    raise_failures,
    record_resume,
    unfinished_run,
    update_provenance,
)
from tiledseg.volume import (
    Volume,
    open_volume,
    parse_region,
    parse_spacing,
    split_dataset,
    with_extra_channels,
)

__all__ = [
    "DEFAULT_SMOOTH_WEIGHT",
    "PredictionJob",
    "PredictionResult",
    "check_finite",
    "block_probabilities",
    "classify_block",
    "intensity_warnings",
    "predict",
]


@dataclass
class PredictionResult:
    """What a prediction wrote, and how fast."""

    path: str
    shape: tuple[int, ...]
    blocks: int
    voxels: int
    seconds: float
    skipped: int = 0
    #: the warnings printed on stderr before the blocks ran (one line each)
    warnings: tuple[str, ...] = ()
    #: of the blocks skipped, those without a voxel inside the mask (never read)
    masked: int = 0

    @property
    def voxels_per_second(self) -> float:
        """Throughput of this run (reading, features, classification, writing).

        It is over the voxels it computed (not those of blocks skipped as already done).
        """
        return self.voxels / self.seconds if self.seconds > 0 else float("inf")


def _check_finite(args: tuple[Volume, Block]) -> bool:
    """Whether the block could be read (a NaN or infinity raises)."""
    volume, block = args
    try:
        read_finite(volume, block.region)
    except TiledsegError:
        raise
    except Exception:  # unreadable: the blocks that need it report it when they run
        return False
    return True


def predict(
    image: Any,
    model: Model | str | os.PathLike,
    *,
    out: str | os.PathLike,
    execution: Execution | None = None,
    image_input: ImageInput | None = None,
    prediction: Prediction | None = None,
    smoothing: Smoothing | None = None,
    overwrite: bool = False,
    command: str | None = None,
    **options: Any,
) -> PredictionResult:
    """Classify every voxel of ``image`` (or of the blocks ``roi`` needs) into an OME-Zarr group.

    Parameters
    ----------
    image : path or array
        The image (see :func:`tiledseg.volume.open_volume`).
    model : Model or path
        A trained model, or the path of a model file.
    out : path
        The output group ``OUT.zarr`` (see :mod:`tiledseg.runs`).
    execution, image_input, prediction, smoothing : option models, optional
        Where blocks run (:class:`~tiledseg.options.Execution`), how the image is read
        (:class:`~tiledseg.options.ImageInput`: ``channel_axis``, default the model's
        when the image has one more axis than the model's spatial axes;
        ``extra_channels``, the model's extras in the same order; ``nan_fill``, default
        the model's; ``spacing``, needed only by a model of several anisotropies:
        :func:`feature_spacing`), which outputs are written
        (:class:`~tiledseg.options.Prediction`: ``probabilities``, ``uncertainty``,
        ``roi``) and the graph-cut smoothing (:class:`~tiledseg.options.Smoothing`).
        ``device="cuda"`` computes features, classifier, argmax and uncertainty on each
        worker's GPU; without ``block`` the block is then the largest the GPUs' free
        memory holds (:func:`tiledseg.device.gpu_block`).
    overwrite : bool
        Replace an existing tiledseg output at ``out``. Without it, an unfinished
        run into ``out`` with the same model, image and options is continued: its
        blocks already done are skipped (:attr:`PredictionResult.skipped`).
    command : str, optional
        The command line, recorded in the provenance.
    **options
        Any field of those models by name (``block=``, ``probabilities=``,
        ``smooth="graphcut"``, ...), set on top of the models given.

    Returns
    -------
    PredictionResult

    Raises
    ------
    BlocksFailedError
        Some blocks failed (e.g. an unreadable chunk of the image); all others are
        written, the output stays unfinished and a rerun redoes only those blocks.
    NonFiniteValuesError
        Without ``nan_fill``, the blocks that read NaN or infinite values failed (and
        nothing else): the one line names the first; a rerun with ``nan_fill`` computes
        only them.

    Notes
    -----
    An image whose dtype or values are far from those the model was trained on gets one
    warning line on stderr (:func:`intensity_warnings`; also in
    :attr:`PredictionResult.warnings`); the run goes on.
    """
    passive_waits()
    given = gather(
        {
            "execution": execution,
            "image_input": image_input,
            "prediction": prediction,
            "smoothing": smoothing,
        },
        options,
        what="predict",
    )
    return _run(image, model, out=str(out), overwrite=overwrite, command=command, **given)


@dataclass(frozen=True)
class _Plan:
    """What a prediction will do, decided before anything is written."""

    volume: Volume
    model: Model
    image: Any  # the path (its identity for a resumed run), or the array
    shape: tuple[int, ...]  # of a block
    blocks: BlockPlan
    region: tuple[slice, ...] | None
    identity: dict[str, Any]
    resumable: bool
    smoothing: Any  # SmoothSettings, or None
    mask: Any = None  # a tiledseg.masks mask, or None
    #: blocks of the region without a voxel inside the mask: left out of ``blocks``
    masked: int = 0

    @property
    def inputs(self) -> list[str]:
        """The paths an output must never be written over."""
        paths = [self.image] if isinstance(self.image, str | os.PathLike) else []
        paths += [v.path for v in self.volume.extra_volumes if v.path]
        mask = getattr(self.mask, "volume", None)  # (a mask image's)
        paths += [mask.path] if mask is not None and mask.path else []
        return [str(p) for p in paths]

    @property
    def total(self) -> int:
        """The blocks of the region, those outside the mask included."""
        return len(self.blocks) + self.masked


def _run(
    image: Any,
    model: Model | str | os.PathLike,
    *,
    out: str,
    overwrite: bool,
    command: str | None,
    execution: Execution,
    image_input: ImageInput,
    prediction: Prediction,
    smoothing: Smoothing,
) -> PredictionResult:
    model = model if isinstance(model, Model) else load_model(model)
    ex = execution
    with contextlib.ExitStack() as stack:

        def executor_() -> Executor:
            return stack.enter_context(
                open_executor(
                    ex.workers, quiet=ex.quiet, scheduler=ex.scheduler, cluster=ex.cluster
                )
            )

        # on a GPU the workers say what they have before blocks are planned; on the CPU
        # the output is checked before a cluster starts
        executor = executor_() if ex.device != "cpu" else None
        options = RunOptions(ex, image_input, prediction, smoothing, overwrite, command)
        running = begin(image, model, out, options, stack, executor or executor_)
        voxels, failures, extra = run_blocks(running)
    return finish(running, voxels, failures, extra)


@dataclass(frozen=True)
class RunOptions:
    """What every image of a run shares: its options, and how it treats existing outputs."""

    execution: Execution
    image_input: ImageInput
    prediction: Prediction
    smoothing: Smoothing
    overwrite: bool
    command: str | None


@dataclass(frozen=True)
class Running:
    """One image's prediction, started: its job, plan, blocks done and output."""

    job: PredictionJob
    plan: _Plan
    done: set[tuple[int, ...]]
    path: Path
    notes: tuple[str, ...]
    started: float
    resuming: bool
    executor: Executor
    #: the output's levels below full resolution, or ``None`` without any
    pyramid: PyramidJob | None = None


def begin(
    image: Any,
    model: Model,
    out: str,
    options: RunOptions,
    stack: contextlib.ExitStack,
    executor: Executor | Any,
    *,
    complete_ok: bool = False,
) -> Running | None:
    """Plan one image's prediction, check and lock its output, and create (or take up) it.

    ``executor``: the executor, or a function that opens it (once the output is known to
    be writable). The output's lock is held until ``stack`` closes. ``complete_ok``: an
    output this run completed already (the same identity) is no error; ``None`` is returned.
    """
    started = time.perf_counter()
    ex, prediction = options.execution, options.prediction
    volume, model, settings, fill, notes = _inputs(
        image, model, options.image_input, prediction, options.smoothing
    )
    devices = plan_devices(ex.device, executor if isinstance(executor, Executor) else None)
    plan = _plan(
        image, volume, model, out, options.overwrite, ex, prediction, settings, devices, fill
    )
    check_apart(out, plan.inputs, what="output")
    check_writable(out, what="output")
    # one run per output: a second one into it is refused here, before it looks at the output
    stack.enter_context(output_lock(out))
    if complete_ok and completed_with(out, plan.identity) and not options.overwrite:
        return None
    resuming = prepare_output(
        out,
        overwrite=options.overwrite,
        inputs=plan.inputs,
        identity=plan.identity if plan.resumable else None,
    )
    for note in notes:  # (once the run is known to start)
        print(note, file=sys.stderr)
    executor = executor if isinstance(executor, Executor) else executor()
    path, done, plan = _start(
        plan, out, resuming, executor, options.overwrite, options.command, devices
    )
    n_threads = executor.threads_per_task(len(plan.blocks) - len(done))
    job = _job(plan, path, prediction, n_threads, ex.device)
    levels = _levels_job(plan, path)
    return Running(job, plan, done, path, tuple(notes), started, resuming, executor, levels)


def finish(
    running: Running, voxels: int, failures: list[BlockFailure], extra: dict[str, Any]
) -> PredictionResult:
    """Report the failed blocks (raising), or mark the output complete; return the result."""
    plan, path = running.plan, running.path
    skipped = sum(index in plan.blocks for index in running.done) + plan.masked  # (as done)
    _raise_failures(path, failures, plan, skipped)
    seconds = time.perf_counter() - running.started
    mark_complete(path, voxels=voxels, seconds=round(seconds, 3), **extra)
    return PredictionResult(
        str(path),
        plan.volume.shape,
        plan.total,
        voxels,
        seconds,
        skipped,
        running.notes,
        plan.masked,
    )


def _job(
    plan: _Plan, path: Path, prediction: Prediction, n_threads: int, device: str
) -> PredictionJob:
    """Return the job every block of ``plan`` shares."""
    return PredictionJob(
        plan.volume,
        plan.model,
        str(path),
        prediction.probabilities,
        prediction.uncertainty,
        n_threads,
        device,
        _kept_for(plan.model, plan.volume, device),
        plan.mask,
    )


def _levels_job(plan: _Plan, path: Path) -> PyramidJob | None:
    """Return the job that makes the output's levels below full resolution, if it has any."""
    levels = plan.identity.get("levels", 0)
    if not levels:
        return None
    arrays = tuple(plan.identity["arrays"])
    return PyramidJob(str(path), arrays, plan.shape, tuple(level_shapes(plan.volume.shape, levels)))


def _inputs(
    image: Any,
    model: Model,
    image_input: ImageInput,
    prediction: Prediction,
    smoothing: Smoothing,
) -> tuple[Volume, Model, Any, float | None, list[str]]:
    """Open the image as the model reads it and check the outputs the model can give.

    Returns the volume (reading NaN and infinite values as the fill, if there is one), the
    model at the spacing the image's features are computed at (:func:`feature_spacing`),
    the smoothing's settings, the fill and the warnings, one line each (printed on stderr
    once the output may be written).
    """
    volume, model = volume_for_model(
        image, model, channel_axis=image_input.channel_axis,
        extra_channels=image_input.extra_channels, spacing=image_input.spacing,
    )  # fmt: skip
    if prediction.probabilities or prediction.uncertainty:
        option = "--probabilities" if prediction.probabilities else "--uncertainty"
        _require_probabilities(model, option)
    settings = smoothing.settings(model.ndim)
    if settings is not None:
        _require_probabilities(model, "--smooth graphcut")
    fill, notes = _nan_fill(model, image_input.nan_fill)
    volume = with_nan_fill(volume, fill)
    notes += _anisotropy_warning(model, volume)
    return volume, model, settings, fill, notes + intensity_warnings(model, volume)


def _anisotropy_warning(model: Model, volume: Volume) -> list[str]:
    """Warn when a model of several anisotropies meets one outside the range it saw."""
    seen = np.asarray(model.spacings)
    if len(seen) < 2:
        return []
    own = np.asarray(relative_spacing(volume.spacing))
    low, high = seen.min(axis=0) * (1 - 1e-3), seen.max(axis=0) * (1 + 1e-3)
    if np.all((own >= low) & (own <= high)):
        return []
    return [
        f"warning: the model was trained at anisotropies {'; '.join(map(_ratio, seen))}; "
        f"image {volume.name}'s {_ratio(own)} is outside them, so its features are at scales "
        "the model has not seen: check its result, or train on such an image too"
    ]


def volume_for_model(
    image: Any,
    model: Model,
    *,
    channel_axis: int | None = None,
    extra_channels: Sequence[Any] | None = None,
    spacing: Sequence[float] | None = None,
) -> tuple[Volume, Model]:
    """Open the image as ``model`` reads it: channels checked, at its features' spacing.

    Returns the volume and the model, both at the spacing the features are computed at
    (:func:`feature_spacing`).
    """
    volume = _open_for_model(image, model, channel_axis, extra_channels)
    at = feature_spacing(volume, model, spacing)
    if at != tuple(model.spacing):
        model = dataclasses.replace(model, spacing=at)
    # a copy: the caller's volume (segment's, or one a user opened) keeps its own spacing
    return dataclasses.replace(volume, spacing=at), model


def feature_spacing(
    volume: Volume, model: Model, given: Sequence[float] | None
) -> tuple[float, ...]:
    """Return the spacing the image's features are computed at: the model's, or its own.

    A model trained at one anisotropy computes every image's features at its spacing; an
    image whose own spacing (``given``, or its metadata) has another anisotropy is refused,
    since its features would be at other scales (one of the same anisotropy in other units
    keeps its own: the features are the same, and the output's scale is the image's). A
    model trained on images of several anisotropies (:attr:`Model.spacings`) computes them
    at the image's own spacing, which must then be known.
    """
    own = given if given is not None else volume.spacing if volume.spacing_from_metadata else None
    where = "--spacing" if given is not None else "its metadata"
    several = len(model.spacings) > 1
    if own is None:
        if several:
            raise InputDataError(
                f"the model was trained on images of {len(model.spacings)} anisotropies "
                f"({'; '.join(map(_ratio, model.spacings))}) and image {volume.name} has no "
                "spacing in its metadata; give its spacing (--spacing Z,Y,X, or spacing: in a "
                "config) so that its features are computed at its own"
            )
        return tuple(model.spacing)
    own = parse_spacing(own, volume.ndim)
    if np.allclose(relative_spacing(own), relative_spacing(model.spacing), rtol=1e-3):
        # the same features (they depend on the anisotropy alone); the output keeps the
        # image's own spacing as its scale, so that it overlays the image in a viewer
        return tuple(float(s) for s in own)
    if not several:
        raise InputDataError(
            f"image {volume.name} has spacing {list(own)} ({where}) but the model was trained "
            f"with spacing {list(model.spacing)}; its features would be at other scales: "
            "retrain with this image's spacing, or on images of both anisotropies"
        )
    return tuple(float(s) for s in own)


def _ratio(spacing: Sequence[float]) -> str:
    return ":".join(f"{s:g}" for s in spacing)


def _nan_fill(model: Model, given: float | None) -> tuple[float | None, list[str]]:
    """Return the value NaN and infinite values read as, and a warning if it is not the model's.

    Without one given, the model's (the one it was trained with, if any).
    """
    trained = model.nan_fill
    if given is None or trained is None or given == trained:
        return (trained if given is None else given), []
    return given, [
        f"warning: the model was trained with NaN and infinite values read as {trained:g}; "
        f"this prediction reads them as {given:g}"
    ]


#: Voxels of the image's centre read to compare its values with the model's record.
INTENSITY_SAMPLE_VOXELS = 1 << 18
#: A sample whose range is this many times wider than the trained one is far from it, as
#: is one of which less than :data:`INTENSITY_OVERLAP` lies in (or near) the trained range.
INTENSITY_WIDTH_RATIO = 4.0
INTENSITY_OVERLAP = 0.5
#: A sample this many times narrower than the trained range is on another scale.
INTENSITY_NARROW_RATIO = 50.0


def intensity_warnings(model: Model, volume: Volume) -> list[str]:
    """Return a warning when ``volume``'s values are far from those the model was trained on.

    The model records the dtype and the 0.1 and 99.9 percentiles of the image's values
    in its boxes of scribbles (``summary["intensity"]``); the image's own channels are
    sampled in a central region of :data:`INTENSITY_SAMPLE_VOXELS`. A dtype of another
    kind or size (float32 against float64 is the same) or ranges far apart
    (:data:`INTENSITY_WIDTH_RATIO`, :data:`INTENSITY_OVERLAP`) give one line; a model
    without the record (saved before it was kept) gives none.

    Returns
    -------
    list of str
        No line, or one.
    """
    from tiledseg.training import INTENSITY_PERCENTILES

    record = model.intensity
    if record is None:
        return []
    own = volume.image_only
    edge = max(1, round((INTENSITY_SAMPLE_VOXELS / own.n_channels) ** (1 / own.ndim)))
    centre = tuple(
        slice(max(0, (n - edge) // 2), max(0, (n - edge) // 2) + edge) for n in own.shape
    )
    try:
        values = own.read(centre).ravel()
    except Exception:  # unreadable (a damaged chunk): the blocks that need it report it
        return []
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return []
    low, high = (float(v) for v in np.percentile(values, INTENSITY_PERCENTILES, method="nearest"))
    trained = (float(record["low"]), float(record["high"]))
    dtype, was = np.dtype(own.dtype), np.dtype(record["dtype"])
    other_dtype = dtype != was and not (dtype.kind == was.kind == "f")
    if not other_dtype and not _far(values, trained, (low, high)):
        return []
    return [
        f"warning: the model was trained on {was} values {trained[0]:.6g}..{trained[1]:.6g}; "
        f"image {own.name} is {dtype} {low:.6g}..{high:.6g}: rescale it if that is not on "
        "purpose"
    ]


def _far(values: np.ndarray, trained: tuple[float, float], seen: tuple[float, float]) -> bool:
    """Whether sampled values lie far from the trained range.

    Far: most of them outside it (grown by a tenth of its width each side), or their
    range :data:`INTENSITY_WIDTH_RATIO` times wider, or :data:`INTENSITY_NARROW_RATIO`
    times narrower (0..1 where training saw 0..255). A sample a few times narrower is not
    far: a central region may hold one phase only.
    """
    low, high = trained
    width = max(high - low, np.finfo(np.float64).eps)
    margin = 0.1 * width
    outside = np.count_nonzero((values < low - margin) | (values > high + margin))
    spread = seen[1] - seen[0]
    return (
        outside > (1 - INTENSITY_OVERLAP) * values.size
        or spread > INTENSITY_WIDTH_RATIO * width
        or spread * INTENSITY_NARROW_RATIO < width
    )


def _raise_failures(path: Path, failures: list[BlockFailure], plan: _Plan, skipped: int) -> None:
    """Raise the failed blocks' error; NaN or infinite values in every one are one line.

    A failed block whose read met NaN or infinite values names its region: the first in
    block order is named, with the fix (``--nan-fill``). With other failures too, the
    report of every failed block ends with that line.
    """
    total = plan.total
    marker = f"{NonFiniteValuesError.__name__}: "
    bad = [f for f in failures if f.error.startswith(marker)]
    if not bad:
        raise_failures(path, failures, total=total, skipped=skipped)
        return
    found = re.search(r"\(in region ([^)]*)\)", bad[0].error)
    where = f"block {bad[0].name}" + (f", read as region {found.group(1)}" if found else "")
    line = (
        f"image {plan.volume.name} holds NaN or infinite values: {len(bad)} of {total} blocks "
        f"read some and were not computed (the first {where}); the other blocks are written "
        f"to {str(path)!r}. Rerun with --nan-fill VALUE (nan_fill: in a config) to compute "
        "those blocks with VALUE in their place, or replace them (e.g. with numpy.nan_to_num)"
    )
    if len(bad) == len(failures):
        raise NonFiniteValuesError(line)
    try:
        raise_failures(path, failures, total=total, skipped=skipped)
    except BlocksFailedError as exc:
        raise BlocksFailedError(f"{exc}\n{line}", exc.failures) from None


def _plan(
    image: Any,
    volume: Volume,
    model: Model,
    out: str,
    overwrite: bool,
    ex: Execution,
    prediction: Prediction,
    settings: Any,
    devices: Any,
    fill: float | None = None,
) -> _Plan:
    """Decide the blocks and the output's identity (nothing is written)."""
    # an in-memory array has no identity a later run could check: it is never resumed
    if isinstance(image, Volume) and image.path is not None:
        image = image.path  # (its identity is its path, as for a path given directly)
    # (with extra channels: when they are paths too, as the stack's path says; a mask too)
    resumable = (
        isinstance(image, str | os.PathLike)
        and bool(not volume.n_extra or volume.path)
        and (prediction.mask is None or mask_path(prediction.mask) is not None)
    )
    mask = open_mask(
        prediction.mask, prediction.mask_threshold, volume, smoothed=settings is not None
    )
    stored = unfinished_run(out) if resumable and not overwrite else None
    block = ex.block
    if block is None and stored is not None and "block" in stored:
        # the default block depends on the cores: a rerun elsewhere keeps the run's own
        block = stored["block"]
    halo = model.halo
    if block is None:
        block = devices.gpu_block(
            shape=volume.shape,
            halo=halo,
            n_features=model.n_block_features,
            n_classes=len(model.classes),
        )
    shape = resolve_block(
        block,
        shape=volume.shape,
        halo=halo,
        min_blocks=planned_workers(ex.workers, scheduler=ex.scheduler, cluster=ex.cluster),
    )
    region = parse_region(prediction.roi, volume.shape)
    # made block by block as their tasks are submitted: nothing here grows with the blocks
    blocks = BlockPlan(volume.shape, shape, halo, roi=region)
    identity = _identity(image, volume, model, shape, region, prediction, settings)
    if stored is not None and "levels" not in (stored.get("identity") or {}):
        # an output begun without levels (before they existed, or with none) is continued
        # without them when they were not asked for by number
        if prediction.pyramid == "auto":
            identity.pop("levels", None)
    identity.update(_mask_identity(prediction, mask))
    if fill is not None:
        identity["nan_fill"] = fill
    if stored is not None:
        _check_fill(out, stored.get("identity") or {}, identity)
        _check_mask(out, stored.get("identity") or {}, identity)
    return _Plan(volume, model, image, shape, blocks, region, identity, resumable, settings, mask)


def _identity(
    image: Any,
    volume: Volume,
    model: Model,
    shape: tuple[int, ...],
    region: tuple[slice, ...] | None,
    prediction: Prediction,
    settings: Any,
) -> dict[str, Any]:
    """Return what a resumed run must share with the run that started the output."""
    extras = [_where(v.path, v) for v in volume.extra_volumes]
    return {
        "model_checksum": model.checksum,
        "image": _where(image, volume),
        **({"extra_channels": extras} if volume.n_extra else {}),
        "image_shape": list(volume.shape),
        "image_dtype": str(volume.dtype),
        "block": list(shape),
        "roi": None if region is None else [[s.start, s.stop] for s in region],
        "arrays": ["labels"]
        + ["probabilities"] * prediction.probabilities
        + ["uncertainty"] * prediction.uncertainty,
        "smoothing": None if settings is None else settings.to_dict(None),
        **({"plugins": model.bank.fingerprints()} if model.bank.plugins else {}),
        **_output_kind(volume.shape, prediction),
        # (a model of several anisotropies computes each image's features at its own)
        **({"spacing": list(model.spacing)} if len(model.spacings) > 1 else {}),
    }


def _output_kind(shape: tuple[int, ...], prediction: Prediction) -> dict[str, Any]:
    """Return the identity's levels and OME-Zarr version, where not the former defaults.

    (An output made before either existed keeps its identity, and can be continued.)
    """
    levels = level_count(shape, prediction.pyramid)
    return {
        **({"levels": levels} if levels else {}),
        **({"ngff": prediction.ngff} if prediction.ngff != "0.5" else {}),
    }


def _mask_identity(prediction: Prediction, mask: Any) -> dict[str, Any]:
    """Return the mask's part of the identity: the mask image's path, or the threshold.

    Nothing without a mask (the identity of an output written before masks is unchanged).
    """
    if prediction.mask is not None:
        return {"mask": _where(mask_path(prediction.mask) or prediction.mask, mask.volume)}
    if prediction.mask_threshold is not None:
        return {"mask": {"threshold": prediction.mask_threshold, "sigma": MASK_SIGMA}}
    return {}


def _check_mask(out: str, stored: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse to continue a run made with another mask (or none, or one where it had none)."""
    was, now = stored.get("mask"), identity.get("mask")
    if was == now:
        return
    raise OutputExistsError(
        f"output {out!r} holds an unfinished run with a different mask (it had "
        f"{_mask_text(was)}, this run has {_mask_text(now)}); rerun it as it was to continue "
        "it, pass --overwrite to start afresh, or choose another path"
    )


def _mask_text(mask: Any) -> str:
    if mask is None:
        return "none"
    if isinstance(mask, dict):
        return f"--mask-threshold {mask.get('threshold')}"
    return f"--mask {mask}"


def _check_fill(out: str, stored: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse to continue a run that read NaN and infinite values as another value.

    A run that refused them may be continued with a fill: its blocks that met one failed,
    and only they are computed again, with the fill.
    """
    was, now = stored.get("nan_fill"), identity.get("nan_fill")
    if was is None or was == now:
        return
    this = "refuses them" if now is None else f"reads them as {now:g}"
    raise OutputExistsError(
        f"output {out!r} holds an unfinished run that read NaN and infinite values as {was:g} "
        f"(this run {this}); rerun it with --nan-fill {was:g} to continue it, pass "
        "--overwrite to start afresh, or choose another path"
    )


def _record_fill(path: Path, identity: dict[str, Any]) -> None:
    """Record the fill a continued run adds in the output's identity."""
    stored = (unfinished_run(path) or {}).get("identity") or {}
    if "nan_fill" in identity and stored.get("nan_fill") != identity["nan_fill"]:
        update_provenance(path, identity={**stored, "nan_fill": identity["nan_fill"]})


def _start(
    plan: _Plan,
    out: str,
    resuming: bool,
    executor: Executor,
    overwrite: bool,
    command: str | None,
    devices: Any,
) -> tuple[Path, set[tuple[int, ...]], _Plan]:
    """Create the output, or take up the unfinished one.

    Returns the output's path, the blocks already done and the plan. The image is not
    read here: each block refuses NaN or infinite values as it is read (or reads the
    fill, with one). With a mask, the blocks without a voxel inside it are left out of the
    plan's blocks here (:func:`tiledseg.masks.blocks_meeting`).
    """
    if plan.mask is not None:
        kept = plan.blocks.only(blocks_meeting(plan.mask, plan.blocks, executor))
        plan = dataclasses.replace(plan, blocks=kept, masked=len(plan.blocks) - len(kept))
    if resuming:
        path = Path(out)
        done = done_blocks(path)
        record_resume(path, skipped=len(done) + plan.masked, total=plan.total)
        _record_fill(path, plan.identity)
        if done and not executor.quiet:
            skipped = sum(index in plan.blocks for index in done) + plan.masked
            outside = f" ({plan.masked} outside the mask)" if plan.masked else ""
            print(
                f"resuming {path}: {skipped} of {plan.total} blocks already done{outside}, skipped",
                file=sys.stderr,
            )
        return path, done, plan
    volume, model = plan.volume, plan.model
    path = create_output(
        out,
        shape=volume.shape,
        block=plan.shape,
        spacing=volume.spacing,
        label_dtype=model.label_dtype,
        classes=model.classes,
        probabilities="probabilities" in plan.identity["arrays"],
        uncertainty="uncertainty" in plan.identity["arrays"],
        provenance=_provenance(plan, command, devices),
        identity=plan.identity,
        overwrite=overwrite,
        levels=plan.identity.get("levels", 0),
        ngff=plan.identity.get("ngff", "0.5"),
    )
    return path, set(), plan


def _provenance(plan: _Plan, command: str | None, devices: Any) -> dict[str, Any]:
    """Return what the output records of its making.

    The identity's model, image and region, and what made them (bank, spacing, command,
    versions, devices).
    """
    model, identity = plan.model, plan.identity
    return {
        **{key: identity[key] for key in ("model_checksum", "image", "roi")},
        "bank": model.bank.to_dict(),
        **({"stages": model.n_stages} if model.stages else {}),
        "feature_spacing": list(model.spacing),
        "command": command if command is not None else " ".join(sys.argv),
        "versions": versions(),
        "model_versions": model.versions,
        "device": devices.to_dict(),
    }


def run_blocks(running: Running) -> tuple[int, list[BlockFailure], dict[str, Any]]:
    """Run the blocks not done, then (or meanwhile) the output's levels.

    Return the voxels written, the failures and what the completion record adds (the
    smoothing's settings).
    """
    if running.plan.smoothing is None:
        return (*run_streamed({None: running}, running.executor)[None], {})
    stored = unfinished_run(running.path) if running.resuming else None
    results, record = _predict_smoothed(
        running.job,
        list(running.plan.blocks),  # the graph cut's plan needs them all, by position
        done=running.done,
        beta=(stored or {}).get("smoothing_beta"),
        settings=running.plan.smoothing,
        executor=running.executor,
    )
    voxels, failures = _tally(enumerate(results))
    if running.pyramid is not None and not failures:
        # the labels are final only once the graph cut has written them all
        trackers = {None: tracker(running.pyramid, running.plan.blocks, set(), running=False)}
        levels = stream(running.executor, iter(()), trackers, desc="levels", total=0)
        failures = _tally((i, r) for i, (_, _, r) in enumerate(levels))[1]
    return voxels, failures, {"smoothing": record}


def run_streamed(
    started: dict[Any, Running], executor: Executor
) -> dict[Any, tuple[int, list[BlockFailure]]]:
    """Run the blocks not done of each started run, and their levels, in one stream.

    Each run's result is its voxels written and its failed blocks (and level chunks).
    Nothing kept grows with the blocks but the failures: each task is made when its wave
    is submitted, and only counts are kept of its result.
    """
    calls = (
        (key, r.job.predict, block)
        for key, r in started.items()
        for block in r.plan.blocks
        if block.index not in r.done
    )
    total = sum(
        len(r.plan.blocks) - sum(index in r.plan.blocks for index in r.done)
        for r in started.values()
    )
    trackers = {
        key: tracker(r.pyramid, r.plan.blocks, r.done)
        for key, r in started.items()
        if r.pyramid is not None
    }
    results: dict[Any, list[tuple[int, Any]]] = {key: [] for key in started}
    order = itertools.count()
    with contextlib.closing(stream(executor, calls, trackers, desc="predict", total=total)) as each:
        for owner, _, result in each:  # (closed here, whatever happens: its tasks are cancelled)
            results[owner].append((next(order), result))
    return {key: _tally(pairs) for key, pairs in results.items()}


def _tally(results: Iterable[tuple[int, int | BlockFailure]]) -> tuple[int, list[BlockFailure]]:
    """Return the voxels the blocks wrote and the blocks that failed (in block order).

    They are tallied from their ``(position, result)`` in any order: only the failures are
    kept, not every result.
    """
    voxels, failed = 0, []
    for i, result in results:
        if isinstance(result, BlockFailure):
            failed.append((i, result))
        else:
            voxels += result
    return voxels, [failure for _, failure in sorted(failed, key=lambda pair: pair[0])]


def _kept_for(model: Model, volume: Volume, device: str) -> KeptFeatures | None:
    """Return the features ``segment``'s training kept, if this prediction can use them.

    It can use them as they are when it has the same image and bank, one stage, and
    features on the CPU.
    """
    scratch = kept_features.active()
    kept = scratch.kept if scratch is not None else None
    if kept is None or device != "cpu" or not kept.serves(model, volume):
        return None
    return kept


def _require_probabilities(model: Model, option: str) -> None:
    if not model.classifier.has_probabilities:
        raise TiledsegError(
            f"the model's classifier ({model.classifier.name}) gives labels, not "
            f"probabilities; {option} needs them: retrain with xgboost, random-forest or an "
            "estimator with predict_proba"
        )


def _predict_smoothed(
    job: PredictionJob,
    blocks: list[Block],
    *,
    done: set[tuple[int, ...]],
    beta: float | None,
    settings: Any,
    executor: Executor,
) -> tuple[list[Any], dict[str, Any]]:
    import dask

    from tiledseg.smoothing.tiled import SmoothingPlan, image_beta

    model = job.model
    if beta is None:
        # a whole-image pass: computed once per output, kept for a resumed run
        beta = image_beta(
            # a pass over the whole image: NaN or infinity would make the scale NaN
            with_nan_fill(job.volume, None, refuse=True),
            executor,
            sigma=settings.contrast_sigma,
            spacing=relative_spacing(model.spacing),
        )
        update_provenance(job.out, smoothing_beta=beta)
    plan = SmoothingPlan(
        blocks, volume=job.volume, beta=beta, spacing=model.spacing, settings=settings
    )
    with executor.progress(len(blocks) - len(done), "predict + graph cut") as bar:
        try:
            written = plan.run(
                costs=lambda b: dask.delayed(_costs_task)(
                    job, b, dask_key_name=f"costs-{plan.token}-{b.index}"
                ),
                write=lambda b, labels: dask.delayed(_write_labels_task)(
                    job, b, labels, dask_key_name=f"write-{plan.token}-{b.index}"
                ),
                persist=executor.persist,
                progress=bar.update,
                workers=executor.n_workers,
                done=done,
            )
        except Exception as exc:  # a task the cluster lost (its workers kept dying)
            raise BlocksFailedError(
                f"the graph cut stopped: {type(exc).__name__}: {' '.join(str(exc).split())}. "
                f"The blocks written so far are kept in {job.out!r}: rerun the same command to "
                "continue",
                [],
            ) from exc
    # every write has run when run() returns (persist waits for its wave)
    return executor.gather(written), settings.to_dict(beta)


def check_finite(
    image: Any,
    *,
    roi: Sequence[slice] | None = None,
    workers: int | None = None,
    executor: Executor | None = None,
) -> Volume:
    """Refuse NaN or infinite values anywhere in ``image`` (or ``roi``), reading it blockwise.

    Integer images cannot hold them and are not read; a volume already checked
    whole is not read again. The runs do not call it (each block refuses them as it is
    read, :func:`tiledseg.features.tiled.read_finite`): it is for a caller who wants the
    whole image checked up front, at the cost of reading it once more.

    Returns
    -------
    Volume
        The image, as a copy that remembers a whole-image check (``checked_finite``);
        ``image`` itself is not changed.
    """
    volume = open_volume(image)
    if volume.dtype.kind != "f" or volume.checked_finite:
        return volume
    blocks = BlockPlan(
        volume.shape,
        resolve_block(None, shape=volume.shape, halo=(0,) * volume.ndim),
        (0,) * volume.ndim,
        roi=roi,
    )
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(open_executor(workers, quiet=True))
        readable = stack.enter_context(
            contextlib.closing(
                executor.imap(
                    _check_finite,
                    ((volume, b) for b in blocks),
                    desc="checking image",
                    total=len(blocks),
                )
            )
        )
        # every block is read (not all(), which would stop at the first unreadable one): a
        # NaN in any of them is an error
        unreadable = sum(not ok for _, ok in readable)
    # a copy that remembers the check: the caller's object is not changed
    return dataclasses.replace(volume, checked_finite=roi is None and unreadable == 0)


def _where(image: Any, volume: Volume) -> str:
    """Return the image's absolute path for the provenance (or a description of an array)."""
    if isinstance(image, str | os.PathLike):
        path, dataset = split_dataset(str(image))
        path = str(Path(path).resolve())
        return path if dataset is None else f"{path}:{dataset}"
    return volume.name


def _open_for_model(
    image: Any, model: Model, channel_axis: int | None, extra_channels: Sequence[Any] | None
) -> Volume:
    if isinstance(image, Volume) and image.n_extra:
        volume = image  # already stacked (segment opens it once for both steps)
    else:
        volume = _open_image_for_model(image, model, channel_axis)
        if extra_channels:
            volume = with_extra_channels(volume, extra_channels)
    _check_extra_channels(volume, model)
    if volume.n_channels != model.n_channels:
        raise InputDataError(
            f"image {volume.name} has {volume.n_channels} channel(s) but the model was trained "
            f"on {model.n_channels}; predict on images with the training image's channels"
        )
    return volume


def _check_extra_channels(volume: Volume, model: Model) -> None:
    need = model.bank.extra_channels
    if volume.n_extra == need:
        return
    trained = model.summary.get("extra_channels") or []
    which = f" ({', '.join(map(str, trained))})" if trained else ""
    if not volume.n_extra:
        raise InputDataError(
            f"the model was trained with {need} extra channel(s){which}; give the same "
            "co-registered images with --extra-channels, in the same order"
        )
    if not need:
        raise InputDataError(
            "the model was trained without extra channels; leave --extra-channels out "
            "(or retrain with them)"
        )
    raise InputDataError(
        f"the extra channels give {volume.n_extra} channel(s) but the model was trained with "
        f"{need}{which}; give the same extras in the same order"
    )


def _open_image_for_model(image: Any, model: Model, channel_axis: int | None) -> Volume:
    try:
        volume = open_volume(image, channel_axis=channel_axis)
    except InputDataError:
        # a 3D + channel image has 4 axes and cannot open without its channel axis:
        # fall back to the model's, as for a 2D + channel image below
        if channel_axis is not None or model.channel_axis is None:
            raise
        volume = open_volume(image, channel_axis=model.channel_axis)
    if (
        channel_axis is None
        and volume.channel_axis is None
        and model.channel_axis is not None
        and len(volume.source.shape) == model.ndim + 1
    ):
        volume = open_volume(image, channel_axis=model.channel_axis)
    if volume.ndim != model.ndim:
        raise InputDataError(
            f"image {volume.name} has {volume.ndim} spatial axes but the model was trained on "
            f"{model.ndim}D images"
        )
    return volume
