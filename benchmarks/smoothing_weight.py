"""Mean IoU of graph-cut smoothing as its Potts weight changes, on real and synthetic images.

Usage: python benchmarks/smoothing_weight.py [--quick] [--json PATH]

For each dataset a fresh child process trains one model (XGBoost, the default
bank, ``cache_dir=False``) on the scribbles, then predicts the same image once
without smoothing and once per setting of ``smooth="graphcut"``
(``smooth_weight`` W, ``smooth_neighbours`` N), and scores every prediction
against the dense truth with ``tiledseg.evaluate``. The model is the same for
every setting, so the differences are the smoothing's alone.

Datasets:

- ``superalloy-2d``: the SEM image of ../shared/data/superalloy-2d (its README),
  trained on ``scribbles.tif`` and scored on ``ground_truth.tif``, as
  ``tests/test_realdata.py`` does; skipped with a message when the folder is absent;
- ``phantom-3d``: ``make_phantom((96, 96, 96), n_classes=3, noise=3.0,
  scribbles="strokes", seed=1)``;
- ``phantom-2d``: ``make_phantom((384, 384), n_classes=3, noise=3.0, seed=1)``.

Settings: weights 0.5, 1, 2, 4 and 8 with the smallest neighbourhood (4 in 2D,
6 in 3D), and weight 2 with the largest (8 in 2D, 26 in 3D); ``--weights`` and
``--wide-weights`` change them. ``--quick`` runs
weights 1, 2 and 4 (smallest neighbourhood) on 64^3 and 256^2 phantoms and
writes no JSON unless ``--json`` is given.

Only accuracy is measured, never time: the numbers do not depend on the load of
the machine. Outputs go to a temporary folder; the JSON (by default
``benchmarks/results/smoothing_weight.json`` for a full run) records the
command, the machine, the per-class IoU and each gain over the unsmoothed baseline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _bench

SUPERALLOY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "superalloy-2d"
RESULTS_JSON = Path(__file__).resolve().parent / "results" / "smoothing_weight.json"
WEIGHTS = (0.5, 1.0, 2.0, 4.0, 8.0)
QUICK_WEIGHTS = (1.0, 2.0, 4.0)
#: Neighbourhoods per dimensionality: (smallest, largest).
NEIGHBOURHOODS = {2: (4, 8), 3: (6, 26)}
#: Weights of the runs with the largest neighbourhood.
WIDE_WEIGHTS = (2.0,)


def datasets(quick: bool) -> dict[str, dict[str, Any]]:
    """Return the datasets of a run, by name, as child parameters.

    Parameters
    ----------
    quick : bool
        Smaller phantoms.

    Returns
    -------
    dict
        Name to ``{"kind": "superalloy", "folder": ...}`` or
        ``{"kind": "phantom", "shape": ..., "n_classes": ..., "noise": ...,
        "scribbles": ..., "seed": ...}``.
    """
    side3, side2 = (64, 256) if quick else (96, 384)
    return {
        "superalloy-2d": {"kind": "superalloy", "folder": str(SUPERALLOY), "ndim": 2},
        "phantom-3d": {
            "kind": "phantom",
            "shape": [side3] * 3,
            "n_classes": 3,
            "noise": 3.0,
            "scribbles": "strokes",
            "seed": 1,
            "ndim": 3,
        },
        "phantom-2d": {
            "kind": "phantom",
            "shape": [side2] * 2,
            "n_classes": 3,
            "noise": 3.0,
            "scribbles": "balls",
            "seed": 1,
            "ndim": 2,
        },
    }


def settings(
    ndim: int, weights: Sequence[float], wide_weights: Sequence[float]
) -> list[dict[str, Any]]:
    """Return the smoothing settings to try: ``None`` weight first (no smoothing).

    Parameters
    ----------
    ndim : int
        2 or 3.
    weights : sequence of float
        Weights to try with the smallest neighbourhood.
    wide_weights : sequence of float
        Weights to try with the largest neighbourhood.

    Returns
    -------
    list of dict
        ``{"weight": W or None, "neighbours": N or None}``.
    """
    small, large = NEIGHBOURHOODS[ndim]
    found = [{"weight": None, "neighbours": None}]
    found += [{"weight": float(w), "neighbours": small} for w in weights]
    found += [{"weight": float(w), "neighbours": large} for w in wide_weights]
    return found


def _load(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Image, scribbles and truth of a dataset (paths for files, arrays for phantoms)."""
    if spec["kind"] == "superalloy":
        folder = Path(spec["folder"])
        return tuple(str(folder / f"{n}.tif") for n in ("image", "scribbles", "ground_truth"))
    from tiledseg.testing.phantoms import make_phantom

    phantom = make_phantom(
        tuple(spec["shape"]),
        n_classes=int(spec["n_classes"]),
        noise=float(spec["noise"]),
        scribbles=spec["scribbles"],
        seed=int(spec["seed"]),
    )
    return phantom.image, phantom.scribbles, phantom.truth


def task_sweep(params: dict[str, Any]) -> dict[str, Any]:
    """Train once on one dataset, then predict and score it with every setting.

    Parameters
    ----------
    params : dict
        ``dataset`` (a value of :func:`datasets`), ``settings`` (from
        :func:`settings`) and ``out`` (a folder for the outputs).

    Returns
    -------
    dict
        The model's classes and feature count, and one row per setting with
        ``mean_iou``, ``accuracy``, ``iou`` (per class), ``blocks`` and, when
        smoothed, the provenance's ``smoothing`` record (with the image's ``beta``).
    """
    import zarr

    import tiledseg

    image, scribbles, truth = _load(params["dataset"])
    model = tiledseg.train(image, scribbles, classifier="xgboost", cache_dir=False)
    out_dir = Path(params["out"])
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, setting in enumerate(params["settings"]):
        out = out_dir / f"out-{i}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        smooth = {}
        if setting["weight"] is not None:
            smooth = {
                "smooth": "graphcut",
                "smooth_weight": setting["weight"],
                "smooth_neighbours": setting["neighbours"],
                "smooth_contrast_sigma": params.get("contrast_sigma"),
            }
        result = tiledseg.predict(image, model, out=out, **smooth)
        scores = tiledseg.evaluate(result.path, truth)
        info = dict(zarr.open_group(result.path, mode="r").attrs["tiledseg"])
        rows.append(
            {
                **setting,
                "mean_iou": scores["mean_iou"],
                "accuracy": scores["accuracy"],
                "iou": scores["iou"],
                "scored_voxels": scores["scored_voxels"],
                "unpredicted_voxels": scores["unpredicted_voxels"],
                "blocks": result.blocks,
                "smoothing": info.get("smoothing"),
            }
        )
        shutil.rmtree(out, ignore_errors=True)
        print(f"{setting}: mIoU {scores['mean_iou']:.4f}", flush=True)
    return {
        "shape": list(result.shape),
        "classes": model.classes.tolist(),
        "training": dict(model.summary),
        "rows": rows,
    }


TASKS = {"sweep": task_sweep}


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Mean IoU of tiledseg's graph-cut smoothing per Potts weight, on the "
        "superalloy SEM image and noisy 2D and 3D phantoms.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="weights 1 2 4 only, 64^3 and 256^2 phantoms, no JSON unless --json (a check)",
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=None,
        help="Potts weights with the smallest neighbourhood (default 0.5 1 2 4 8)",
    )
    parser.add_argument(
        "--wide-weights",
        type=float,
        nargs="*",
        default=None,
        help="Potts weights with the largest neighbourhood, 8 in 2D and 26 in 3D (default 2; "
        "none with --quick)",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=sorted(datasets(False)),
        default=None,
        help="datasets to run (default: all)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write the results here (default: benchmarks/results/smoothing_weight.json for a "
        "full run, none with --quick)",
    )
    parser.add_argument(
        "--contrast-sigma",
        type=float,
        default=None,
        help="blur of the contrast image (smooth_contrast_sigma; default tiledseg's, 1)",
    )
    parser.add_argument("--no-json", action="store_true", help="write no JSON")
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds after which a dataset's child process is killed (default 3600)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the outputs and logs (default: temporary)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(list(argv))
    if args.weights is None:
        args.weights = list(QUICK_WEIGHTS if args.quick else WEIGHTS)
    if args.wide_weights is None:
        args.wide_weights = [] if args.quick else list(WIDE_WEIGHTS)
    if args.json is None and not args.quick and not args.no_json:
        args.json = RESULTS_JSON
    if args.no_json:
        args.json = None
    return args


def _label(row: dict[str, Any]) -> str:
    if row["weight"] is None:
        return "none"
    return f"w={row['weight']:g}, n={row['neighbours']}"


def _fmt_iou(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep and print its table.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every dataset that was present was measured, 1 otherwise.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_bench.CHILD_FLAG]:
        return _bench.child_entry(argv[1:], TASKS)
    args = _parse(argv)
    script = Path(__file__).resolve()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tiledseg-smoothing-"))
    workdir.mkdir(parents=True, exist_ok=True)
    machine = _bench.machine_info()
    print(f"tiledseg checkout: {machine['tiledseg_git']}; work folder: {workdir}")
    chosen = datasets(args.quick)
    if args.datasets:
        chosen = {k: v for k, v in chosen.items() if k in args.datasets}
    results: dict[str, Any] = {}
    failed = []
    for name, spec in chosen.items():
        if spec["kind"] == "superalloy" and not Path(spec["folder"]).is_dir():
            print(f"{name}: skipped, {spec['folder']} is absent")
            results[name] = {"dataset": spec, "skipped": f"{spec['folder']} is absent"}
            continue
        tried = settings(spec["ndim"], args.weights, args.wide_weights)
        print(f"{name}: training, then {len(tried)} predictions ...", flush=True)
        outcome = _bench.run_child(
            script,
            "sweep",
            {
                "dataset": spec,
                "settings": tried,
                "out": str(workdir / name),
                "contrast_sigma": args.contrast_sigma,
            },
            workdir=workdir,
            timeout=args.timeout,
            label=name,
        )
        if not outcome.ok:
            print(f"{name}: FAILED: {outcome.reason}")
            failed.append(name)
            results[name] = {"dataset": spec, "error": outcome.reason}
            continue
        rows = outcome.result["rows"]
        baseline = rows[0]["mean_iou"]
        for row in rows:
            row["gain"] = row["mean_iou"] - baseline
        results[name] = {"dataset": spec, **outcome.result}

    measured = {k: v for k, v in results.items() if "rows" in v}
    if measured:
        labels = []
        for entry in measured.values():
            for row in entry["rows"]:
                if _label(row) not in labels:
                    labels.append(_label(row))
        table = []
        for label in labels:
            cells = [label]
            for entry in measured.values():
                row = next((r for r in entry["rows"] if _label(r) == label), None)
                if row is None:
                    cells += ["", ""]
                elif row["weight"] is None:
                    cells += [f"{row['mean_iou']:.4f}", ""]
                else:
                    cells += [f"{row['mean_iou']:.4f}", f"{row['gain']:+.4f}"]
            table.append(cells)
        headers = ["smoothing"]
        for name in measured:
            headers += [f"{name} mIoU", "gain"]
        print()
        print(
            "n: neighbourhood (4/8 in 2D, 6/26 in 3D); gain: mIoU minus the unsmoothed mIoU "
            "of the same model"
        )
        print(_bench.format_table(headers, table))
        print()
        for name, entry in measured.items():
            classes = entry["classes"]
            iou_rows = [
                [_label(r), *(_fmt_iou(r["iou"].get(str(c))) for c in classes)]
                for r in entry["rows"]
            ]
            print(f"{name}: per-class IoU")
            print(_bench.format_table(["smoothing", *(str(c) for c in classes)], iou_rows))
            print()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "smoothing_weight",
                    "command": " ".join([Path(sys.argv[0]).name, *argv]),
                    "machine": machine,
                    "weights": args.weights,
                    "wide_weights": args.wide_weights,
                    "results": results,
                },
                indent=1,
            )
        )
        print(f"results written to {args.json}")
    if failed:
        print(f"logs kept in {workdir}")
    elif not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
