"""Prediction: block -> features -> probabilities -> labels / probabilities / uncertainty.

Each block task reads its haloed block, computes its features with the
function training used, classifies its own voxels and writes whole chunks of
the output store. Nothing larger than one block's features is ever in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg import kept_features
from tiledseg._openmp import passive_waits
from tiledseg.arrays import out_of_memory_hint, to_host
from tiledseg.blocks import Block, BlockPlan, resolve_block
from tiledseg.cluster import Executor, open_executor, planned_workers
from tiledseg.device import check_device, plan_devices, worker_device
from tiledseg.errors import BlocksFailedError, InputDataError, TiledsegError
from tiledseg.features.backend import get_backend
from tiledseg.features.bank import relative_spacing
from tiledseg.features.tiled import read_block, read_finite
from tiledseg.kept_features import KeptFeatures
from tiledseg.model import Model, load_model, versions
from tiledseg.runs import (
    BlockFailure,
    create_output,
    done_blocks,
    guarded,
    mark_block_done,
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
    split_dataset,
    with_extra_channels,
)

__all__ = [
    "DEFAULT_SMOOTH_WEIGHT",
    "PredictionResult",
    "check_finite",
    "block_probabilities",
    "classify_block",
    "predict",
    "smooth_settings",
]

#: Potts weight of ``--smooth graphcut`` when none is given (docs/smoothing.md: choosing it).
DEFAULT_SMOOTH_WEIGHT = 2.0


@dataclass
class PredictionResult:
    """What a prediction wrote, and how fast."""

    path: str
    shape: tuple[int, ...]
    blocks: int
    voxels: int
    seconds: float
    skipped: int = 0

    @property
    def voxels_per_second(self) -> float:
        """Throughput of this run (reading, features, classification, writing), over the
        voxels it computed (not those of blocks skipped as already done)."""
        return self.voxels / self.seconds if self.seconds > 0 else float("inf")


def block_probabilities(
    volume: Volume,
    block: Block,
    model: Model,
    *,
    n_threads: int = 1,
    device: str = "cpu",
    kept: KeptFeatures | None = None,
) -> Any:
    """Return the class probabilities ``(n, k)`` of one block's voxels.

    ``device="cuda"``: the features are computed on the GPU and handed to the
    classifier there; the probabilities are a cupy array when it predicts there.
    An autocontext model computes every stage on the block (read with every
    stage's halo: ``block`` is planned with :attr:`Model.halo`). ``kept``: the
    features ``segment``'s training kept (:mod:`tiledseg.kept_features`), loaded
    instead of computed where the block's are there.
    """
    if kept is not None:
        n_features = model.bank.n_features(ndim=model.ndim, n_channels=model.n_channels)
        features = kept.load(block, n_features)
        if features is not None:
            table = features.reshape(n_features, -1).T
            return model.predict_proba(table, n_threads=n_threads, device=device)
    data = read_block(volume, block, device)
    return model.block_probabilities(data, inner=block.inner, n_threads=n_threads, device=device)


def classify_block(
    volume: Volume, block: Block, model: Model, *, n_threads: int = 1, device: str = "cpu"
) -> tuple[Any, Any]:
    """Return the labels ``block.shape`` and probabilities ``(n, k)`` of one block, in the
    array module the probabilities came in (numpy, or cupy on the GPU)."""
    proba = block_probabilities(volume, block, model, n_threads=n_threads, device=device)
    return _labels(proba, model, block.shape), proba


def _labels(proba: Any, model: Model, shape: tuple[int, ...]) -> Any:
    """The most probable class of each voxel, where ``proba`` is (numpy or cupy)."""
    values = get_backend(proba).xp.asarray(model.classes.astype(model.label_dtype))
    return values[proba.argmax(axis=1)].reshape(shape)


def _to_uint8(values: Any) -> Any:
    xp = get_backend(values).xp
    return xp.rint(xp.clip(values, 0.0, 1.0) * 255.0).astype(xp.uint8)


def _extras(proba: Any, block: Block, want_proba: bool, want_unc: bool) -> dict[str, Any]:
    """The requested per-voxel outputs besides the labels, computed where ``proba`` is."""
    xp = get_backend(proba).xp
    out = {}
    if want_proba:
        out["probabilities"] = _to_uint8(proba.T).reshape((proba.shape[1], *block.shape))
    if want_unc:
        top2 = xp.partition(proba, proba.shape[1] - 2, axis=1)[:, -2:]
        margin = xp.abs(top2[:, 1] - top2[:, 0])
        out["uncertainty"] = _to_uint8(1.0 - margin).reshape(block.shape)
    return out


def _write_extras(out: str, block: Block, proba: Any, want_proba: bool, want_unc: bool):
    import zarr

    for name, values in _extras(proba, block, want_proba, want_unc).items():
        where = (slice(None), *block.region) if name == "probabilities" else block.region
        zarr.open_array(f"{out}/{name}/0", mode="r+")[where] = to_host(values)


def _probabilities_written(args: tuple) -> Any:
    """A block task's probabilities, on its worker's device, with the outputs besides the
    labels (probabilities, uncertainty) already written."""
    volume, block, model, out, want_proba, want_unc, n_threads, device, kept = args
    with out_of_memory_hint(block.shape):
        proba = block_probabilities(
            volume, block, model, n_threads=n_threads, device=worker_device(device), kept=kept
        )
        _write_extras(out, block, proba, want_proba, want_unc)
    return proba


def _predict_block(args: tuple) -> int:
    import zarr

    block, model, out = args[1], args[2], args[3]
    labels = to_host(_labels(_probabilities_written(args), model, block.shape))
    # labels last, then the marker: a block marked done has all its outputs written
    zarr.open_array(f"{out}/labels/0", mode="r+")[block.region] = labels
    mark_block_done(out, block.index)
    return int(labels.size)


def _predict_task(args: tuple) -> int | BlockFailure:
    block = args[1]
    return guarded(_predict_block, block.name, block.index, args)


def _block_costs(args: tuple) -> np.ndarray:
    from tiledseg.smoothing.energy import unary_costs

    # the graph cut runs on the CPU: the probabilities come back
    proba = to_host(_probabilities_written(args))
    return unary_costs(proba).reshape(*args[1].shape, proba.shape[1])


def _costs_task(args: tuple) -> np.ndarray | BlockFailure:
    """Probabilities of a block -> its graph-cut unary costs ``(*block.shape, k)``."""
    block = args[1]
    return guarded(_block_costs, block.name, block.index, args)


def _write_labels(out: str, block: Block, indices: np.ndarray, values: np.ndarray) -> int:
    import zarr

    zarr.open_array(f"{out}/labels/0", mode="r+")[block.region] = values[indices]
    mark_block_done(out, block.index)
    return int(indices.size)


def _write_labels_task(
    out: str, block: Block, indices: np.ndarray | BlockFailure, values: np.ndarray
) -> int | BlockFailure:
    if isinstance(indices, BlockFailure):
        return indices
    return guarded(_write_labels, block.name, block.index, out, block, indices, values)


def smooth_settings(
    smooth: str | None,
    *,
    weight: float | None,
    neighbours: int | None,
    iterations: int | None,
    ndim: int,
    contrast_sigma: float | None = None,
    model: Model | None = None,
) -> Any:
    """Check the smoothing options before anything is written; ``None`` when off.

    ``model`` (when known) must give probabilities; ``segment`` checks the rest
    before it trains.
    """
    if smooth is None or smooth == "none":
        given = (weight, neighbours, iterations, contrast_sigma)
        if any(v is not None for v in given):
            raise TiledsegError(
                "--smooth-weight, --smooth-neighbours, --smooth-iterations and "
                "--smooth-contrast-sigma need --smooth graphcut"
            )
        return None
    if smooth != "graphcut":
        raise TiledsegError(f"--smooth {smooth!r} is unknown; use graphcut (or none)")
    from tiledseg.smoothing import energy
    from tiledseg.smoothing.tiled import SmoothSettings

    settings = SmoothSettings(
        weight=energy.check_weight(DEFAULT_SMOOTH_WEIGHT if weight is None else weight),
        neighbours=energy.check_neighbours(neighbours, ndim),
        iterations=energy.check_iterations(iterations),
        contrast_sigma=energy.check_contrast_sigma(contrast_sigma),
    )
    if model is not None:
        _require_probabilities(model, "--smooth graphcut")
    return settings


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
    probabilities: bool = False,
    uncertainty: bool = False,
    roi: str | Sequence[slice] | None = None,
    block: int | Sequence[int] | str | None = None,
    channel_axis: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: Any = None,
    smooth: str | None = None,
    smooth_weight: float | None = None,
    smooth_neighbours: int | None = None,
    smooth_iterations: int | None = None,
    smooth_contrast_sigma: float | None = None,
    overwrite: bool = False,
    quiet: bool = True,
    command: str | None = None,
    extra_channels: Sequence[Any] | None = None,
    device: str | None = None,
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
    probabilities, uncertainty : bool
        Also write class probabilities / the uncertainty map.
    roi : "z0:z1,y0:y1,x0:x1" or sequence of slice, optional
        Predict only the blocks that meet this region.
    block : int or sequence of int, optional
        Processing block; the output's chunk shape.
    channel_axis : int, optional
        Channel axis of ``image`` (default: the one the model was trained with, when
        the image has one more axis than the model's spatial axes).
    workers : int, optional
        Run on that many local worker processes instead of threads.
    scheduler : str, optional
        Address (or scheduler file) of a running dask scheduler.
    cluster : path or ClusterConfig, optional
        Start a cluster from this config (:mod:`tiledseg.cluster_config`).
    smooth : {None, "graphcut"}
        Smooth the labels with a contrast-sensitive Potts graph cut over the
        probabilities, blockwise without seams (needs the ``graphcut`` extra).
    smooth_weight : float, optional
        Potts weight in nats (default :data:`DEFAULT_SMOOTH_WEIGHT`); larger smooths more.
    smooth_neighbours : int, optional
        4 (default) or 8 in 2D, 6 (default) or 26 in 3D.
    smooth_iterations : int, optional
        Alpha-expansion cycles per window (default 1); -1 runs until convergence.
    smooth_contrast_sigma : float, optional
        Blur of the image the contrast term compares (default 1; 0: raw intensities).
    overwrite : bool
        Replace an existing tiledseg output at ``out``. Without it, an unfinished
        run into ``out`` with the same model, image and options is continued: its
        blocks already done are skipped (:attr:`PredictionResult.skipped`).
    quiet : bool
        No progress bar.
    command : str, optional
        The command line, recorded in the provenance.
    extra_channels : sequence of path or array, optional
        The extra channels the model was trained with, in the same order.
    device : {"cpu", "cuda", "auto"}, optional
        Where blocks are computed (default ``cpu``). ``cuda``: on each worker's GPU
        (features, classifier, argmax and uncertainty there; only the outputs come
        back); a worker without one is an error. ``auto``: each worker uses its GPU
        if it has one. Without ``block``, the block is the largest the GPUs' free
        memory holds (:func:`tiledseg.device.gpu_block`).

    Returns
    -------
    PredictionResult

    Raises
    ------
    BlocksFailedError
        Some blocks failed (e.g. an unreadable chunk of the image); all others are
        written, the output stays unfinished and a rerun redoes only those blocks.
    """
    passive_waits()
    started = time.perf_counter()
    device = check_device(device)
    if not isinstance(model, Model):
        model = load_model(model)
    volume = _open_for_model(image, model, channel_axis, extra_channels)
    if probabilities or uncertainty:
        _require_probabilities(model, "--probabilities" if probabilities else "--uncertainty")
    smoothing = smooth_settings(
        smooth,
        weight=smooth_weight,
        neighbours=smooth_neighbours,
        iterations=smooth_iterations,
        contrast_sigma=smooth_contrast_sigma,
        ndim=model.ndim,
        model=model,
    )
    halo = model.halo
    # an in-memory array has no identity a later run could check: it is never resumed
    if isinstance(image, Volume) and image.path is not None:
        image = image.path  # (its identity is its path, as for a path given directly)
    # (with extra channels: when they are paths too, as the stack's path says)
    resumable = isinstance(image, str | os.PathLike) and (not volume.n_extra or volume.path)
    stored = unfinished_run(out) if resumable and not overwrite else None
    if block is None and stored is not None and "block" in stored:
        # the default block depends on the cores: a rerun elsewhere keeps the run's own
        block = stored["block"]
    with contextlib.ExitStack() as stack:
        executor: Executor | None = None
        if device != "cpu":
            # the workers say what they have (and how much GPU memory) before blocks are planned
            executor = stack.enter_context(
                open_executor(workers, quiet=quiet, scheduler=scheduler, cluster=cluster)
            )
        plan = plan_devices(device, executor)
        if block is None:
            block = plan.gpu_block(
                shape=volume.shape,
                halo=halo,
                n_features=model.n_block_features,
                n_classes=len(model.classes),
            )
        blocks_shape = resolve_block(
            block,
            shape=volume.shape,
            halo=halo,
            min_blocks=planned_workers(workers, scheduler=scheduler, cluster=cluster),
        )
        region = parse_region(roi, volume.shape)
        # made block by block as their tasks are submitted: nothing here grows with the blocks
        blocks = BlockPlan(volume.shape, blocks_shape, halo, roi=region)
        inputs = [image] if isinstance(image, str | os.PathLike) else []
        inputs += [v.path for v in volume.extra_volumes if v.path]  # never written over
        identity = {
            "model_checksum": model.checksum,
            "image": _where(image, volume),
            **(
                {"extra_channels": [_where(v.path, v) for v in volume.extra_volumes]}
                if volume.n_extra
                else {}
            ),
            "image_shape": list(volume.shape),
            "image_dtype": str(volume.dtype),
            "block": list(blocks_shape),
            "roi": None if region is None else [[s.start, s.stop] for s in region],
            "arrays": ["labels"]
            + ["probabilities"] * probabilities
            + ["uncertainty"] * uncertainty,
            "smoothing": None if smoothing is None else smoothing.to_dict(None),
            **({"plugins": model.bank.fingerprints()} if model.bank.plugins else {}),
        }
        resuming = prepare_output(
            out,
            overwrite=overwrite,
            inputs=[str(p) for p in inputs],
            identity=identity if resumable else None,
        )
        if executor is None:
            executor = stack.enter_context(
                open_executor(workers, quiet=quiet, scheduler=scheduler, cluster=cluster)
            )
        if resuming:
            # the run that started this output checked the image (same path, shape, dtype)
            path = Path(out)
            done = done_blocks(path)
            record_resume(path, skipped=len(done), total=len(blocks))
        else:
            volume = check_finite(volume, roi=region, executor=executor)
            done = set()
            path = create_output(
                out,
                shape=volume.shape,
                block=blocks_shape,
                spacing=volume.spacing,
                label_dtype=model.label_dtype,
                classes=model.classes,
                probabilities=probabilities,
                uncertainty=uncertainty,
                provenance={
                    "model_checksum": model.checksum,
                    "bank": model.bank.to_dict(),
                    **({"stages": model.n_stages} if model.stages else {}),
                    "feature_spacing": list(model.spacing),
                    "image": _where(image, volume),
                    "roi": identity["roi"],
                    "command": command if command is not None else " ".join(sys.argv),
                    "versions": versions(),
                    "model_versions": model.versions,
                    "device": plan.to_dict(),
                },
                identity=identity,
                overwrite=overwrite,
            )
        skipped = sum(index in blocks for index in done)
        if done and not quiet:
            print(
                f"resuming {path}: {skipped} of {len(blocks)} blocks already done, skipped",
                file=sys.stderr,
            )
        n_threads = executor.threads_per_task(len(blocks) - skipped)

        kept = _kept_for(model, volume, device)

        def task_of(b: Block) -> tuple:
            return (
                volume,
                b,
                model,
                str(path),
                probabilities,
                uncertainty,
                n_threads,
                device,
                kept,
            )

        extra = {}
        if smoothing is None:
            # each task is made when its wave is submitted, and only counts are kept of its
            # result: the driver's memory does not grow with the number of blocks
            todo = (task_of(b) for b in blocks if b.index not in done)
            with contextlib.closing(
                executor.imap(
                    _predict_task, todo, desc="predict", on_error=_lost, total=len(blocks) - skipped
                )
            ) as results:  # closed here, whatever happens: its tasks are cancelled
                voxels, failures = _tally(results)
        else:
            results, extra["smoothing"] = _predict_smoothed(
                task_of,
                list(blocks),  # the graph cut's plan needs them all, by position
                done=done,
                beta=stored.get("smoothing_beta") if resuming else None,
                out=str(path),
                volume=volume,
                model=model,
                settings=smoothing,
                executor=executor,
            )
            voxels, failures = _tally(enumerate(results))
    raise_failures(path, failures, total=len(blocks), skipped=skipped)
    seconds = time.perf_counter() - started
    mark_complete(path, voxels=voxels, seconds=round(seconds, 3), **extra)
    return PredictionResult(str(path), volume.shape, len(blocks), voxels, seconds, skipped)


def _tally(results: Iterable[tuple[int, int | BlockFailure]]) -> tuple[int, list[BlockFailure]]:
    """The voxels the blocks wrote and the blocks that failed (in block order), from their
    ``(position, result)`` in any order: only the failures are kept, not every result."""
    voxels, failed = 0, []
    for i, result in results:
        if isinstance(result, BlockFailure):
            failed.append((i, result))
        else:
            voxels += result
    return voxels, [failure for _, failure in sorted(failed, key=lambda pair: pair[0])]


def _lost(i: int, task: tuple, exc: BaseException) -> BlockFailure:
    """``on_error`` of :meth:`Executor.imap`: a block whose task the cluster lost."""
    block = task[1]
    return BlockFailure(block.name, block.index, f"{type(exc).__name__}: {exc}")


def _kept_for(model: Model, volume: Volume, device: str) -> KeptFeatures | None:
    """The features ``segment``'s training kept, when this prediction can use them as
    they are: the same image and bank, one stage, features on the CPU."""
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
    task_of: Any,
    blocks: list[Block],
    *,
    done: set[tuple[int, ...]],
    beta: float | None,
    out: str,
    volume: Volume,
    model: Model,
    settings: Any,
    executor: Executor,
) -> tuple[list[Any], dict[str, Any]]:
    import dask

    from tiledseg.smoothing.tiled import SmoothingPlan, image_beta

    if beta is None:
        # a whole-image pass: computed once per output, kept for a resumed run
        beta = image_beta(
            volume,
            executor,
            sigma=settings.contrast_sigma,
            spacing=relative_spacing(model.spacing),
        )
        update_provenance(out, smoothing_beta=beta)
    plan = SmoothingPlan(blocks, volume=volume, beta=beta, spacing=model.spacing, settings=settings)
    values = model.classes.astype(model.label_dtype)
    with executor.progress(len(blocks) - len(done), "predict + graph cut") as bar:
        try:
            written = plan.run(
                costs=lambda b: dask.delayed(_costs_task)(
                    task_of(b), dask_key_name=f"costs-{plan.token}-{b.index}"
                ),
                write=lambda b, labels: dask.delayed(_write_labels_task)(
                    out, b, labels, values, dask_key_name=f"write-{plan.token}-{b.index}"
                ),
                persist=executor.persist,
                progress=bar.update,
                workers=executor.n_workers,
                done=done,
            )
        except Exception as exc:  # a task the cluster lost (its workers kept dying)
            raise BlocksFailedError(
                f"the graph cut stopped: {type(exc).__name__}: {' '.join(str(exc).split())}. "
                f"The blocks written so far are kept in {out!r}: rerun the same command to "
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
    whole is not read again.

    Returns
    -------
    Volume
        The image, as a copy that remembers a whole-image check (``checked_finite``),
        so that later steps given it skip the read; ``image`` itself is not changed.
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
    """The image's absolute path for the provenance (or a description of an array)."""
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
    # features must be computed as in training: the model carries the spacing, and an
    # image whose metadata says otherwise would get features at the wrong scale
    if volume.spacing_from_metadata and not np.allclose(
        relative_spacing(volume.spacing), relative_spacing(model.spacing), rtol=1e-3
    ):
        raise InputDataError(
            f"image {volume.name} has spacing {list(volume.spacing)} in its metadata but the "
            f"model was trained with spacing {list(model.spacing)}; its features would be at "
            "other scales: retrain with this image's spacing"
        )
    # a copy: the caller's volume (segment's, or one a user opened) keeps its own spacing
    return dataclasses.replace(volume, spacing=tuple(model.spacing))


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
