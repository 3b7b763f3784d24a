"""A collection of images predicted in one run: one executor, one stream of blocks.

``tiledseg predict IMG [IMG ...] --model M --out-dir DIR`` writes ``DIR/<stem>.zarr`` for
each image. The blocks of every image go to the workers as one stream, so a small image
never leaves workers idle while a large one waits; each output is planned, locked,
resumed and completed on its own, and an image that fails (a bad file, failed blocks)
does not stop the others: the result names each failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiledseg.cluster import Executor, open_executor
from tiledseg.errors import OutputExistsError, TiledsegError
from tiledseg.model import Model, load_model
from tiledseg.options import Execution, ImageInput, Prediction, Smoothing, gather
from tiledseg.predict import (
    PredictionResult,
    Running,
    RunOptions,
    begin,
    finish,
)
from tiledseg.volume import split_dataset, split_options

__all__ = ["CollectionResult", "expanded", "output_paths", "predict_collection"]

_SUFFIXES = (".zarr", ".ome", ".tif", ".tiff", ".npy", ".h5", ".hdf5", ".png", ".jpg", ".jpeg")


@dataclass
class CollectionResult:
    """What a collection run wrote, and which images failed and why (one line each)."""

    results: dict[str, PredictionResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    #: images whose output an earlier run of the same command completed: image -> output
    complete: dict[str, str] = field(default_factory=dict)


def output_paths(images: list[str], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Return ``DIR/<image stem>.zarr`` of each image; two images of one stem are refused."""
    outputs: dict[str, Path] = {}
    for image in images:
        name = Path(split_dataset(str(image))[0].rstrip("/")).name
        while Path(name).suffix.lower() in _SUFFIXES:
            name = Path(name).stem
        target = Path(out_dir) / f"{name}.zarr"
        if target in outputs.values():
            raise OutputExistsError(
                f"two images would write {str(target)!r} ({image!r} and another of stem "
                f"{name!r}); predict them into different --out-dir folders"
            )
        outputs[image] = target
    return outputs


def predict_collection(
    images: Any,
    model: Model | str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    execution: Execution | None = None,
    image_input: ImageInput | None = None,
    prediction: Prediction | None = None,
    smoothing: Smoothing | None = None,
    overwrite: bool = False,
    command: str | None = None,
    **options: Any,
) -> CollectionResult:
    """Classify every voxel of several images with one model, in one run.

    Parameters
    ----------
    images : sequence of path, or a glob pattern
        The images (patterns such as ``"tiles/*.tif"`` are expanded, sorted).
    model : Model or path
        The model.
    out_dir : path
        An existing folder; each image's output is ``out_dir/<stem>.zarr``.
    execution, image_input, prediction, smoothing, overwrite, command, **options
        As for :func:`tiledseg.predict`, for every image.

    Returns
    -------
    CollectionResult
        Each image's result, and each failed image's reason.
    """
    given = gather(
        {
            "execution": execution,
            "image_input": image_input,
            "prediction": prediction,
            "smoothing": smoothing,
        },
        options,
        what="predict_collection",
    )
    paths = output_paths(expanded(images), out_dir)
    model = model if isinstance(model, Model) else load_model(model)
    run = RunOptions(**given, overwrite=overwrite, command=command)
    ex = run.execution
    result = CollectionResult()
    with contextlib.ExitStack() as stack:
        executor = stack.enter_context(
            open_executor(ex.workers, quiet=ex.quiet, scheduler=ex.scheduler, cluster=ex.cluster)
        )
        started = _begin_all(paths, model, run, stack, executor, result)
        outcomes = _run_all(started, executor, smoothed=run.smoothing.smooth != "none")
    for image, running in started.items():
        try:
            result.results[image] = finish(running, *outcomes[image])
        except TiledsegError as exc:
            result.failed[image] = str(exc).splitlines()[0]
    return result


def expanded(images: Any) -> list[str]:
    """Return the images, each glob pattern replaced by the files it matches, sorted."""
    if isinstance(images, str | os.PathLike):
        images = [images]
    out: list[str] = []
    for image in map(str, images):
        path = split_options(image)[0]  # (a pattern may end with [channel_axis=N])
        if glob.has_magic(path) and not Path(path).exists():
            found = sorted(glob.glob(path))
            if not found:
                raise TiledsegError(f"no image matches {image!r}")
            out += [f"{match}{image[len(path) :]}" for match in found]
        else:
            out.append(image)
    if not out:
        raise TiledsegError("no image given; give one or more images")
    return out


def _begin_all(
    paths: dict[str, Path],
    model: Model,
    run: RunOptions,
    stack: contextlib.ExitStack,
    executor: Executor,
    result: CollectionResult,
) -> dict[str, Running]:
    """Start each image's run; an image that cannot start is recorded as failed."""
    started = {}
    for image, out in paths.items():
        try:
            running = begin(image, model, str(out), run, stack, executor, complete_ok=True)
        except TiledsegError as exc:
            result.failed[image] = str(exc).splitlines()[0]
            continue
        if running is None:  # (the same command again: done before)
            result.complete[image] = str(out)
        else:
            started[image] = running
    return started


def _run_all(
    started: dict[str, Running], executor: Executor, *, smoothed: bool
) -> dict[str, tuple[int, list[Any], dict[str, Any]]]:
    """Run every image's blocks: one stream of all of them (smoothing: image by image)."""
    from tiledseg.predict import run_blocks, run_streamed

    if smoothed:  # the graph cut's windows are planned per image
        return {image: run_blocks(r) for image, r in started.items()}
    return {image: (*done, {}) for image, done in run_streamed(started, executor).items()}
