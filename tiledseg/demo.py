"""The demo: a 3D phantom with scribbles and truth -> train -> predict -> evaluate.

Everything is written under one folder (``demo-output/`` by default): the inputs
as OME-Zarr / zarr stores, the model, the prediction, and a ``segment.yaml``
that reruns the same job with ``tiledseg segment``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg.errors import OutputExistsError

__all__ = ["run_demo", "write_ome_zarr"]

_MARKER = "tiledseg-demo.json"


def write_ome_zarr(
    path: str | Path, data: np.ndarray, *, spacing: Sequence[float], chunks: Sequence[int]
) -> None:
    """Write ``data`` as a one-level OME-Zarr 0.5 image (zarr v3)."""
    import zarr

    axes = "zyx"[-data.ndim :]
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in axes],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": list(spacing)}],
                    }
                ],
            }
        ],
    }
    array = root.create_array("0", shape=data.shape, chunks=tuple(chunks), dtype=data.dtype)
    array[...] = data


def run_demo(
    out: str | Path = "demo-output",
    *,
    size: int = 128,
    workers: int | None = None,
    quiet: bool = False,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the demo and return its scores and timings.

    Parameters
    ----------
    out : path
        Folder for everything the demo writes (replaced if it holds an earlier demo).
    size : int
        Edge of the phantom cube.
    workers : int, optional
        Local worker processes (threads by default).
    quiet : bool
        No progress bars.
    echo : callable
        Where progress lines go.

    Returns
    -------
    dict
        ``mean_iou``, ``accuracy``, ``train_seconds``, ``predict_seconds``,
        ``voxels_per_second`` and ``out``.
    """
    import tiledseg

    out = Path(out)
    _fresh_folder(out, size=size)
    _write_inputs(out, size=size, echo=echo)
    train_s = _train(out, workers=workers, quiet=quiet, echo=echo)
    result = tiledseg.predict(
        out / "image.zarr",
        out / "model.tseg",
        out=out / "prediction.zarr",
        uncertainty=True,
        workers=workers,
        quiet=quiet,
        command="tiledseg demo",
    )
    scores = tiledseg.evaluate(out / "prediction.zarr", out / "truth.zarr")
    report = _report(out, echo=echo)
    (out / "segment.yaml").write_text(
        "# rerun the demo's job: tiledseg segment segment.yaml\n"
        "image: image.zarr\nlabels: scribbles.zarr\nmodel: model-segment.tseg\n"
        "out: prediction-segment.zarr\ntruth: truth.zarr\nuncertainty: true\n"
    )
    voxels = size**3
    echo(
        f"predicted {voxels:,} voxels in {result.seconds:.1f} s: "
        f"{result.voxels_per_second / 1e6:.2f} Mvox/s (read, features, classify, write)"
    )
    iou = ", ".join(f"{k}: {v:.3f}" for k, v in scores["iou"].items())
    echo(f"mIoU {scores['mean_iou']:.3f} (per class {iou}), accuracy {scores['accuracy']:.3f}")
    echo(
        f"outputs: {out / 'prediction.zarr'} (labels/0, uncertainty/0), model {out / 'model.tseg'}"
    )
    if report is not None:
        echo(f"report: {report} (planes, uncertainty, IoU, feature importances)")
    return {
        "mean_iou": scores["mean_iou"],
        "accuracy": scores["accuracy"],
        "train_seconds": train_s,
        "predict_seconds": result.seconds,
        "voxels_per_second": result.voxels_per_second,
        "out": str(out),
    }


#: What the demo writes in its folder (and its segment.yaml's outputs): a rerun replaces
#: these, and only these.
_WRITES = (
    "image.zarr",
    "scribbles.zarr",
    "truth.zarr",
    "model.tseg",
    "prediction.zarr",
    "segment.yaml",
    "report.html",
    "report_files",
    "model-segment.tseg",
    "prediction-segment.zarr",
)


def _fresh_folder(out: Path, *, size: int) -> None:
    """Make ``out`` the demo's folder: new, or an earlier demo's, whose files are replaced.

    Files the demo did not write are left where they are.
    """
    from tiledseg.runs import check_writable

    if out.exists():
        if not (out / _MARKER).is_file():
            raise OutputExistsError(
                f"demo folder {str(out)!r} exists and was not made by the demo; "
                "choose another with --out"
            )
        check_writable(out / _MARKER, what="demo folder")
        for name in (*_WRITES, _MARKER):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    else:
        _make_folder(out)
    (out / _MARKER).write_text(json.dumps({"size": size}))


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True)
    except OSError as exc:
        raise OutputExistsError(
            f"cannot make demo folder {str(out)!r} ({exc.strerror or type(exc).__name__}); "
            "choose another with --out"
        ) from None


def _write_inputs(out: Path, *, size: int, echo: Callable[[str], Any]) -> None:
    """Write the phantom's image, scribbles and truth under ``out``."""
    import zarr

    from tiledseg.testing import make_phantom

    echo(f"making a {size}^3 phantom: 4 phases (two told apart only by texture), noise, scribbles")
    phantom = make_phantom((size, size, size), seed=0)
    chunks = (64, 64, 64)
    write_ome_zarr(out / "image.zarr", phantom.image, spacing=(1.0, 1.0, 1.0), chunks=chunks)
    zarr.save_array(str(out / "scribbles.zarr"), phantom.scribbles, zarr_format=3)
    zarr.save_array(str(out / "truth.zarr"), phantom.truth, zarr_format=3)
    labelled = int(np.count_nonzero(phantom.scribbles))
    echo(f"  {labelled} scribbled voxels ({100 * labelled / phantom.scribbles.size:.2f}%)")


def _train(out: Path, *, workers: int | None, quiet: bool, echo: Callable[[str], Any]) -> float:
    """Train on the written inputs, save ``model.tseg``; return the seconds it took."""
    import tiledseg

    started = time.perf_counter()
    model = tiledseg.train(
        out / "image.zarr", out / "scribbles.zarr", workers=workers, cache_dir=None, quiet=quiet
    )
    train_s = time.perf_counter() - started
    model.save(out / "model.tseg")
    rounds = f"{model.summary['rounds']} rounds, " if "rounds" in model.summary else ""
    echo(
        f"trained {model.classifier.name} on {model.summary['n_features']} features: "
        f"{rounds}accuracy on held-out strokes "
        f"{model.summary.get('held_out_accuracy', float('nan')):.3f}, {train_s:.1f} s"
    )
    return train_s


def _report(out: Path, *, echo: Callable[[str], Any]) -> Path | None:
    """Write the demo's HTML report (middle planes, uncertainty, scores, importances).

    Without matplotlib (the ``report`` extra) the demo says so and goes on.
    """
    from tiledseg.errors import MissingExtraError
    from tiledseg.report import make_report

    try:
        result = make_report(
            out / "prediction.zarr",
            out=out / "report.html",
            truth=out / "truth.zarr",
            model=out / "model.tseg",
            overwrite=True,
        )
    except MissingExtraError as exc:
        echo(f"no report: {exc}")
        return None
    return Path(result.html)
