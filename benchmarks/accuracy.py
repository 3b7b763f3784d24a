"""Accuracy of tiledseg against scikit-image's default pipeline on every real data set and phantoms.

Every method trains on the same scribbles and labels every pixel; the labels are scored
on every pixel of the dense truth (mean IoU and IoU per class, ``tiledseg.evaluate``).
ilastik-3d has no dense truth: there the reference is ilastik 1.4.1's own prediction,
scored as IoU against its argmax, argmax agreement and the Pearson r of probabilities.

Data sets (``--datasets``; real ones from ``../shared/data``, skipped when absent):

- ``superalloy-2d``: one SEM image, its scribbles, its dense truth (85/170/255).
- ``nasa-super1``: 14 SEM images (train/ and val/), each trained on its own scribbles
  and scored on its own truth (``--limit N``: the first N).
- ``ilastik-3d``: ilastik's 64^3 test volume and project scribbles.
- ``phantom-2d``, ``phantom-3d``: ``make_phantom`` (strokes), ``--phantom-2d`` and
  ``--phantom-3d`` pixels per side.

Methods (``--methods``; each ``NAME`` or ``NAME[key=value,...]`` with keys ``bank`` (a
built-in name, ``benchmarks/banks/NAME.yaml`` or a YAML path) and ``classifier``):

- ``skimage``: ``multiscale_basic_features(image, channel_axis=None)`` +
  ``fit_segmenter(RandomForestClassifier(n_estimators=50, max_depth=10))`` +
  ``predict_segmenter`` (benchmarks/compare_peers.py's peer).
- ``tiledseg``: ``train(image, scribbles, cache_dir=None, seed=0)`` + ``predict``.
- ``tiledseg-stages2``: ``train(..., stages=2)`` (option ``context``: its ``context``).
- ``tiledseg-graphcut``: the ``tiledseg`` model, ``predict(..., smooth="graphcut")``.

On ilastik-3d ``tiledseg[bank=ilastik-project,classifier=random-forest]`` (the project's
own features and a forest, as ilastik ran it) is added. Seconds are wall seconds of
train + predict (features included; a reused model counts its training seconds).

Usage (from the repository root)::

    .venv/bin/python benchmarks/accuracy.py --json benchmarks/results/accuracy_all.json
    .venv/bin/python benchmarks/accuracy.py --datasets nasa-super1 --limit 3 \
        --methods skimage "tiledseg[bank=benchmarks/banks/wide.yaml]"
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _bench
import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
BANKS = HERE / "banks"
DATASETS = ("superalloy-2d", "nasa-super1", "ilastik-3d", "phantom-2d", "phantom-3d")
METHODS = ("skimage", "tiledseg", "tiledseg-stages2", "tiledseg-graphcut")
ILASTIK_METHOD = "tiledseg[bank=ilastik-project,classifier=random-forest]"
SKIMAGE_FOREST = {"n_estimators": 50, "max_depth": 10, "n_jobs": 2}


@dataclass
class Case:
    """One image to segment: scribbles, and dense truth or reference probabilities."""

    dataset: str
    name: str
    image: np.ndarray
    scribbles: np.ndarray
    truth: np.ndarray
    reference: np.ndarray | None = None  # class-first probabilities (ilastik-3d)
    classes: list[int] = field(default_factory=list)


def load_cases(
    datasets: list[str], *, limit: int | None = None, phantom_2d: int = 512, phantom_3d: int = 96
) -> list[Case]:
    """The images, scribbles and truths of ``datasets`` (absent real data is skipped): at
    most ``limit`` nasa-super1 images, phantoms of the sides ``phantom_2d`` and ``phantom_3d``."""
    import tifffile

    from tiledseg.testing import make_phantom

    def tif(path: Path) -> np.ndarray:
        return np.asarray(tifffile.imread(path))

    cases = []
    for dataset in datasets:
        root = DATA / dataset
        if dataset.startswith("phantom"):
            side = phantom_2d if dataset == "phantom-2d" else phantom_3d
            ph = make_phantom((side,) * (2 if dataset == "phantom-2d" else 3), scribbles="strokes")
            cases.append(Case(dataset, f"{side}^{ph.image.ndim}", ph.image, ph.scribbles, ph.truth))
        elif not root.is_dir():
            print(f"{dataset}: {root} is absent, skipped")
        elif dataset == "superalloy-2d":
            arrays = [tif(root / f"{n}.tif") for n in ("image", "scribbles", "ground_truth")]
            cases.append(Case(dataset, "45kx_SE_15kV-etched_0", *arrays))
        elif dataset == "nasa-super1":
            paths = sorted(root.glob("*/*_image.tif"))[:limit]
            for p in paths:
                stem = p.name[: -len("_image.tif")]
                arrays = [
                    tif(p.with_name(f"{stem}_{n}.tif")) for n in ("image", "scribbles", "truth")
                ]
                cases.append(Case(dataset, f"{p.parent.name}/{stem}", *arrays))
        elif dataset == "ilastik-3d":
            reference = np.moveaxis(np.load(root / "ilastik_probabilities.npy"), -1, 0)
            truth = (reference.argmax(axis=0) + 1).astype(np.uint8)
            image = np.load(root / "image.npy")[..., 0]
            cases.append(
                Case(dataset, "64^3", image, tif(root / "scribbles.tif"), truth, reference)
            )
        else:
            raise ValueError(f"unknown data set {dataset!r}; choose from {DATASETS}")
    for case in cases:
        case.classes = [int(c) for c in np.unique(case.scribbles) if c]
    return cases


def parse_method(text: str) -> tuple[str, dict[str, str]]:
    """Split ``NAME[key=value,...]`` into the name and its options."""
    match = re.fullmatch(r"([\w-]+)(?:\[(.*)\])?", text.strip())
    if not match or match.group(1) not in METHODS:
        raise ValueError(f"unknown method {text!r}; use one of {METHODS}, optionally NAME[bank=B]")
    pairs = re.split(r",(?=\w+=)", match.group(2) or "")
    options = dict(kv.split("=", 1) for kv in pairs if kv)
    unknown = set(options) - {"bank", "classifier", "context"}
    if unknown:
        raise ValueError(f"method {text!r}: unknown option(s) {sorted(unknown)}")
    return match.group(1), options


def resolve_bank(bank: str | None) -> Any:
    """Return a bank name or YAML path: ``benchmarks/banks/NAME.yaml`` when it exists."""
    if bank is None:
        return None
    local = BANKS / f"{bank}.yaml"
    return str(local) if local.is_file() else bank


def _skimage(case: Case, seed: int) -> dict[str, Any]:
    from skimage.feature import multiscale_basic_features
    from skimage.future import fit_segmenter, predict_segmenter
    from sklearn.ensemble import RandomForestClassifier

    classes = np.asarray(case.classes)
    labels = np.where(case.scribbles > 0, np.searchsorted(classes, case.scribbles) + 1, 0)
    t0 = time.perf_counter()
    features = multiscale_basic_features(case.image, channel_axis=None)
    forest = fit_segmenter(
        labels, features, RandomForestClassifier(**SKIMAGE_FOREST, random_state=seed)
    )
    t1 = time.perf_counter()
    predicted = classes[predict_segmenter(features, forest) - 1]
    t2 = time.perf_counter()
    out = {"train_seconds": t1 - t0, "predict_seconds": t2 - t1, "n_features": features.shape[-1]}
    out["labels"] = predicted
    if case.reference is not None:
        proba = forest.predict_proba(features.reshape(-1, features.shape[-1]))
        out["probabilities"] = proba.T.reshape(-1, *case.image.shape)
    return out


_MODELS: dict[tuple, tuple[Any, float]] = {}  # trained models kept for -graphcut within a run


def _tiledseg(case: Case, name: str, options: dict[str, str], seed: int, tmp: Path) -> dict:
    import tiledseg

    kwargs: dict[str, Any] = {"features": resolve_bank(options.get("bank"))}
    if "classifier" in options:
        kwargs["classifier"] = options["classifier"]
    if name == "tiledseg-stages2":
        kwargs["stages"] = 2
        if "context" in options:
            kwargs["context"] = options["context"]
    key = (case.dataset, case.name, seed, tuple(sorted(kwargs.items())))
    t0 = time.perf_counter()
    if key not in _MODELS:
        model = tiledseg.train(case.image, case.scribbles, cache_dir=None, seed=seed, **kwargs)
        _MODELS.clear()
        _MODELS[key] = (model, time.perf_counter() - t0)
    model, train_seconds = _MODELS[key]
    out_path = tmp / "out.zarr"
    shutil.rmtree(out_path, ignore_errors=True)
    smooth = "graphcut" if name == "tiledseg-graphcut" else None
    wants_proba = case.reference is not None and smooth is None
    t1 = time.perf_counter()
    tiledseg.predict(case.image, model, out=out_path, smooth=smooth, probabilities=wants_proba)
    t2 = time.perf_counter()
    import zarr

    group = zarr.open_group(str(out_path), mode="r")
    out = {"train_seconds": train_seconds, "predict_seconds": t2 - t1}
    out["n_features"] = model.summary.get("n_features")
    out["labels"] = np.asarray(group["labels/0"][...])
    if wants_proba:
        out["probabilities"] = np.asarray(group["probabilities/0"][...], np.float32) / 255
    return out


def run_method(case: Case, method: str, *, seed: int = 0, tmp: Path) -> dict[str, Any]:
    """Train and predict ``case`` with ``method`` (``NAME[key=value,...]``, every classifier
    seeded with ``seed``; tiledseg writes into ``tmp``): ``mean_iou``, ``iou`` per class,
    ``accuracy``, ``seconds`` (train + predict), ``n_features``; on ilastik-3d also
    ``agreement`` and ``pearson_r``; ``status`` is ``"ok"`` or ``"failed: ..."``."""
    import tiledseg

    name, options = parse_method(method)
    row: dict[str, Any] = {"dataset": case.dataset, "case": case.name, "method": method}
    try:
        got = (
            _skimage(case, seed) if name == "skimage" else _tiledseg(case, name, options, seed, tmp)
        )
    except Exception as exc:  # noqa: BLE001 - a failed method is reported, the run goes on
        got = {"status": f"failed: {type(exc).__name__}: {exc}"}
    if "labels" not in got:
        return {**row, **got}
    scores = tiledseg.evaluate(got.pop("labels"), case.truth)
    row.update(status="ok", mean_iou=scores["mean_iou"], accuracy=scores["accuracy"])
    row["iou"] = {str(k): float(v) for k, v in scores["iou"].items()}
    row["seconds"] = got["train_seconds"] + got["predict_seconds"]
    proba = got.pop("probabilities", None)
    if case.reference is not None:
        row["agreement"] = scores["accuracy"]
        if proba is not None:
            rs = [
                np.corrcoef(p.ravel(), r.ravel())[0, 1]
                for p, r in zip(proba, case.reference, strict=True)
            ]
            row["pearson_r"] = float(np.mean(rs))
    return {**row, **got}


def format_rows(rows: list[dict[str, Any]], classes: list[int]) -> str:
    """One Markdown table: a row per method, IoU per class, seconds, difference to skimage."""
    base = next((r for r in rows if r["method"] == "skimage" and r["status"] == "ok"), None)
    extra = any("pearson_r" in r for r in rows)
    headers = ["method", "mIoU", *[f"IoU {c}" for c in classes], "s", "Δ skimage"]
    headers += ["agree", "r"] if extra else []
    table, notes = [], []
    for r in rows:
        if r["status"] != "ok":
            notes.append(f"- {r['method']}: {r['status']}")
            table.append([r["method"], "n/a", *[""] * (len(headers) - 2)])
            continue
        delta = f"{r['mean_iou'] - base['mean_iou']:+.3f}" if base else ""
        cells = [r["method"], f"{r['mean_iou']:.3f}"]
        cells += [f"{r['iou'].get(str(c), float('nan')):.3f}" for c in classes]
        cells += [f"{r['seconds']:.1f}", delta]
        if extra:
            cells += [
                f"{r.get('agreement', float('nan')):.3f}",
                f"{r.get('pearson_r', float('nan')):.3f}",
            ]
        table.append(cells)
    return "\n".join([_bench.format_table(headers, table), *notes])


def run(cases: list[Case], methods: list[str], *, seed: int = 0, show: bool = True) -> list[dict]:
    """Run every method on every case; print a table per case; return all rows."""
    results = []
    with tempfile.TemporaryDirectory(prefix="tiledseg-accuracy-") as tmp:
        for case in cases:
            extra = [ILASTIK_METHOD] if case.reference is not None and "tiledseg" in methods else []
            rows = [run_method(case, m, seed=seed, tmp=Path(tmp)) for m in [*methods, *extra]]
            results += rows
            if show:
                print(f"\n### {case.dataset} {case.name} {case.image.shape}\n", flush=True)
                print(format_rows(rows, case.classes), flush=True)
    _MODELS.clear()
    return results


def summarise(results: list[dict[str, Any]]) -> str:
    """Per method, over the cases with dense truth in 2D and in 3D (seeds averaged): the mean
    mIoU, the mean difference to skimage, and on how many cases it is at least skimage's."""
    by: dict[tuple[str, str, str], list[float]] = {}
    for r in results:
        if r.get("status") == "ok" and r["dataset"] != "ilastik-3d":
            ndim = "3D" if r["dataset"] == "phantom-3d" else "2D"
            by.setdefault((ndim, r["case"], r["method"]), []).append(r["mean_iou"])
    mean = {k: float(np.mean(v)) for k, v in by.items()}
    rows = []
    for ndim in ("2D", "3D"):
        cases = sorted({c for d, c, _ in mean if d == ndim})
        methods = list(dict.fromkeys(m for d, _, m in mean if d == ndim))
        for m in methods:
            got = [(mean[ndim, c, m], mean.get((ndim, c, "skimage"))) for c in cases]
            got = [(a, b) for a, b in got if b is not None]
            if not got:
                continue
            delta = [a - b for a, b in got]
            rows.append(
                [
                    ndim,
                    m,
                    f"{np.mean([a for a, _ in got]):.3f}",
                    f"{np.mean(delta):+.3f}",
                    f"{min(delta):+.3f}",
                    f"{sum(d >= 0 for d in delta)} of {len(got)}",
                ]
            )
    headers = ["images", "method", "mean mIoU", "mean Δ skimage", "worst Δ", ">= skimage"]
    return _bench.format_table(headers, rows)


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--bank", action="append", default=[], help="add tiledseg[bank=B]")
    parser.add_argument("--limit", type=int, help="at most N nasa-super1 images")
    parser.add_argument("--phantom-2d", type=int, default=512)
    parser.add_argument("--phantom-3d", type=int, default=96)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="averaged")
    parser.add_argument("--json", type=Path, help="write every row and the machine here")
    args = parser.parse_args(argv)
    methods = [*args.methods, *(f"tiledseg[bank={b}]" for b in args.bank)]
    for m in methods:
        parse_method(m)
    cases = load_cases(
        args.datasets, limit=args.limit, phantom_2d=args.phantom_2d, phantom_3d=args.phantom_3d
    )
    results = []
    for seed in args.seeds:
        rows = run(cases, methods, seed=seed)
        results += [{**r, "seed": seed} for r in rows]
    print("\n### Summary (mean over seeds " + ", ".join(map(str, args.seeds)) + ")\n")
    print(summarise(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"machine": _bench.machine_info(), "args": vars(args), "results": results}
        args.json.write_text(json.dumps(record, indent=1, default=str))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
