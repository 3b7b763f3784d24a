"""Compare tiledseg with scikit-image's and nDTomo's trainable segmentation on one 3D phantom.

One run makes a phantom (``tiledseg.testing.make_phantom``) in a child process
and writes it to ``.npy`` files; then each peer runs in its own fresh child
process, loads the same image, scribbles and truth, trains on the scribbles,
labels every voxel, and reports its time, its peak resident memory (the
child's own ``VmHWM``) and the mean IoU of its labels against the truth:

- ``tiledseg``: defaults, ``train(image, scribbles, cache_dir=None)`` then
  ``predict(image, model, out=OUT.zarr)`` (zarr writing included).
- ``skimage``: ``multiscale_basic_features(image, channel_axis=None)`` (defaults:
  intensity, edges, texture, sigma 0.5-16) + ``fit_segmenter`` with
  ``RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=2)`` +
  ``predict_segmenter``.
- ``ndtomo``: ``nDTomo.methods.segmentation`` (2D only: 58 Weka-style features
  per slice, XGBoost with its defaults), slice by slice along the first axis;
  features of each slice are computed once and kept for prediction.

Throughput is voxels / (train + label every voxel) seconds. "apply" is what
labelling the volume costs once a model exists: tiledseg's ``predict``; for the
peers, features + classification of every voxel. Peak RSS is measured up to the
end of the timed part (scoring, done afterwards, is not counted).

Run ``python benchmarks/compare_peers.py --help`` for the options; see
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _bench

PEERS: tuple[str, ...] = ("tiledseg", "skimage", "ndtomo")

#: Random forest of the scikit-image peer (its trainable-segmentation example's settings).
SKIMAGE_FOREST: dict[str, int] = {"n_estimators": 50, "max_depth": 10, "n_jobs": 2}

#: Rough peak memory of ``multiscale_basic_features`` + forest in 3D, bytes per voxel
#: (../shared/reference/performance-notes.md: ~960 B/voxel). Used only to refuse a run
#: that cannot fit in the memory available now, rather than invite the OOM killer.
SKIMAGE_BYTES_PER_VOXEL = 960

_NOTE_WIDTH = 72  # a failed peer's reason is cut to this in the table (printed whole above)


# -- the peers (each runs in a child process) -----------------------------------------------------


def _load(params: dict[str, Any]) -> tuple[Any, Any, Any]:
    import numpy as np

    paths = params["data"]
    return (np.load(paths["image"]), np.load(paths["truth"]), np.load(paths["scribbles"]))


def _score(prediction: Any, truth: Any) -> dict[str, Any]:
    """Mean IoU with tiledseg's evaluate (imported only after the peak was recorded)."""
    import tiledseg

    scores = tiledseg.evaluate(prediction, truth)
    return {"mean_iou": scores["mean_iou"], "accuracy": scores["accuracy"], "iou": scores["iou"]}


def _finish(result: dict[str, Any], *, started_cpu: float, base_rss: int) -> dict[str, Any]:
    """Record peak memory and CPU of the timed part (call right after it)."""
    result["peak_rss_bytes"] = _bench.peak_rss_bytes()
    result["base_rss_bytes"] = base_rss
    result["cpu_seconds"] = _bench.cpu_seconds() - started_cpu
    result["cpu_utilisation"] = result["cpu_seconds"] / result["seconds"]
    return result


def peer_tiledseg(params: dict[str, Any]) -> dict[str, Any]:
    """Train and predict with tiledseg's defaults; the output is an OME-Zarr group on disk.

    Parameters
    ----------
    params : dict
        ``data`` (paths of the phantom's ``.npy`` files) and ``scratch`` (a folder).

    Returns
    -------
    dict
        Timings, memory, CPU and scores.
    """
    import tiledseg

    image, truth, scribbles = _load(params)
    out = Path(params["scratch"]) / "out.zarr"
    base_rss = _bench.current_rss_bytes()
    cpu0 = _bench.cpu_seconds()
    t0 = time.perf_counter()
    model = tiledseg.train(image, scribbles, cache_dir=None)
    t1 = time.perf_counter()
    prediction = tiledseg.predict(image, model, out=out)
    t2 = time.perf_counter()
    result = {
        "voxels": int(image.size),
        "seconds": t2 - t0,
        "train_seconds": t1 - t0,
        "apply_seconds": t2 - t1,
        "n_features": model.summary.get("n_features"),
        "details": {
            "fit_seconds": model.summary.get("fit_seconds"),
            "rounds": model.summary.get("rounds"),
            "held_out_accuracy": model.summary.get("held_out_accuracy"),
            "blocks": prediction.blocks,
        },
    }
    _finish(result, started_cpu=cpu0, base_rss=base_rss)
    result.update(_score(out, truth))
    return result


def peer_skimage(params: dict[str, Any]) -> dict[str, Any]:
    """Train and predict with scikit-image's trainable segmentation at its defaults.

    Parameters
    ----------
    params : dict
        ``data`` (paths of the phantom's ``.npy`` files) and ``seed``.

    Returns
    -------
    dict
        Timings, memory, CPU and scores.
    """
    from skimage.feature import multiscale_basic_features
    from skimage.future import fit_segmenter, predict_segmenter
    from sklearn.ensemble import RandomForestClassifier

    image, truth, scribbles = _load(params)
    base_rss = _bench.current_rss_bytes()
    cpu0 = _bench.cpu_seconds()
    t0 = time.perf_counter()
    features = multiscale_basic_features(image, channel_axis=None)
    t1 = time.perf_counter()
    forest = RandomForestClassifier(**SKIMAGE_FOREST, random_state=int(params["seed"]))
    forest = fit_segmenter(scribbles, features, forest)
    t2 = time.perf_counter()
    labels = predict_segmenter(features, forest)
    t3 = time.perf_counter()
    result = {
        "voxels": int(image.size),
        "seconds": t3 - t0,
        "train_seconds": t2 - t0,
        "apply_seconds": (t1 - t0) + (t3 - t2),
        "n_features": int(features.shape[-1]),
        "details": {
            "features_seconds": t1 - t0,
            "fit_seconds": t2 - t1,
            "predict_seconds": t3 - t2,
            "features_dtype": str(features.dtype),
            "features_gib": features.nbytes / _bench.GIB,
        },
    }
    _finish(result, started_cpu=cpu0, base_rss=base_rss)
    del features
    result.update(_score(labels, truth))
    return result


def peer_ndtomo(params: dict[str, Any]) -> dict[str, Any]:
    """Train and predict with nDTomo's CPU pipeline, slice by slice (it is 2D only).

    The pipeline is ``nDTomo.methods.segmentation``: ``FeatureConfig()``,
    ``get_features``, ``get_training_data``, ``get_model``, ``fit_model``, ``apply``.
    Features of every slice are computed once; the labelled pixels of all slices
    train one model, which then labels every slice from the kept features.

    Parameters
    ----------
    params : dict
        ``data`` (paths of the phantom's ``.npy`` files) and ``slices`` (``None``:
        every slice; an int: that many evenly spaced slices, scored alone). nDTomo's
        model has XGBoost's fixed default seed.

    Returns
    -------
    dict
        Timings, memory, CPU and scores.
    """
    import numpy as np

    try:
        from nDTomo.methods import segmentation as nds
    except ImportError as exc:
        raise RuntimeError(
            f"nDTomo's segmentation pipeline cannot be imported ({exc}); install it with "
            "'pip install --no-deps ndtomo' plus matplotlib (see benchmarks/README.md)"
        ) from exc

    image, truth, scribbles = _load(params)
    n_slices = image.shape[0]
    if params.get("slices"):
        index = np.unique(np.linspace(0, n_slices - 1, int(params["slices"])).round().astype(int))
        image, truth, scribbles = image[index], truth[index], scribbles[index]
    classes = np.unique(scribbles[scribbles > 0])
    if not np.array_equal(classes, np.arange(1, len(classes) + 1)):
        raise RuntimeError(f"nDTomo's fit_model needs labels 1..K, got classes {classes.tolist()}")
    config = nds.FeatureConfig()
    base_rss = _bench.current_rss_bytes()
    cpu0 = _bench.cpu_seconds()
    t0 = time.perf_counter()
    stacks = []
    rows, targets = [], []
    for z in range(image.shape[0]):
        stack = nds.get_features(image[z], config)
        stacks.append(stack)
        if scribbles[z].any():
            fit_data, target = nds.get_training_data(stack, scribbles[z], shuffle=False)
            rows.append(fit_data)
            targets.append(target)
    t1 = time.perf_counter()
    model = nds.fit_model(nds.get_model(), np.concatenate(rows), np.concatenate(targets))
    t2 = time.perf_counter()
    labels = np.stack([nds.apply(model, stack) for stack in stacks]).astype(np.uint8)
    t3 = time.perf_counter()
    result = {
        "voxels": int(image.size),
        "seconds": t3 - t0,
        "train_seconds": t2 - t0,
        "apply_seconds": (t1 - t0) + (t3 - t2),
        "n_features": int(stacks[0].shape[-1]),
        "details": {
            "mode": "every slice" if not params.get("slices") else f"{image.shape[0]} slices",
            "slices": int(image.shape[0]),
            "features_seconds": t1 - t0,
            "fit_seconds": t2 - t1,
            "predict_seconds": t3 - t2,
            "training_rows": int(sum(len(t) for t in targets)),
            "n_estimators": model.get_params().get("n_estimators"),
            "kept_features_gib": sum(s.nbytes for s in stacks) / _bench.GIB,
        },
    }
    _finish(result, started_cpu=cpu0, base_rss=base_rss)
    del stacks
    result.update(_score(labels, truth))
    return result


TASKS = {
    "phantom": _bench.make_phantom_files,
    "tiledseg": peer_tiledseg,
    "skimage": peer_skimage,
    "ndtomo": peer_ndtomo,
}


# -- the parent ---------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time tiledseg, scikit-image and nDTomo on the same 3D phantom and scribbles, "
        "each peer in its own process (peak RSS per peer).",
    )
    parser.add_argument(
        "--shape",
        type=int,
        default=256,
        help="side of the cubic 3D phantom (default 256; e.g. 64, 192)",
    )
    parser.add_argument("--seed", type=int, default=0, help="phantom and classifier seed")
    parser.add_argument(
        "--scribbles",
        choices=["balls", "strokes"],
        default="strokes",
        help="strokes on 8 z-slices, as painted in a slice viewer (default), or small "
        "balls spread through the whole volume",
    )
    parser.add_argument(
        "--peers",
        nargs="+",
        choices=PEERS,
        default=list(PEERS),
        help="which peers to run (default: all)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--ndtomo-slices",
        type=int,
        default=None,
        help="run nDTomo on this many evenly spaced slices only (default: every "
        "slice); its mIoU is then over those slices",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds after which a peer's process is killed (default 3600)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the phantom, outputs and logs (default: a temporary one)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--no-memory-guard",
        action="store_true",
        help="run scikit-image even when its expected peak exceeds the memory available now",
    )
    args = parser.parse_args(argv)
    if args.shape < 16:
        parser.error("--shape must be at least 16")
    return args


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _row(name: str, r: dict[str, Any] | None, reason: str = "") -> list[str]:
    if r is None:
        first = reason.splitlines()[0] if reason else "did not run"
        note = first if len(first) <= _NOTE_WIDTH else first[: _NOTE_WIDTH - 3] + "..."
        return [name, "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", note]
    return [
        name,
        f"{r['voxels']:,}",
        f"{r['seconds']:.1f}",
        f"{r['voxels'] / r['seconds'] / 1e6:.3f}",
        f"{r['voxels'] / r['apply_seconds'] / 1e6:.3f}",
        f"{r['peak_rss_bytes'] / _bench.GIB:.2f}",
        f"{r['mean_iou']:.3f}",
        f"{r['cpu_utilisation']:.2f}",
        r.get("note", ""),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print the tables.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0, even when a peer could not run (its reason is printed).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_bench.CHILD_FLAG]:
        return _bench.child_entry(argv[1:], TASKS)
    args = _parse(argv)
    script = Path(__file__).resolve()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tiledseg-peers-"))
    workdir.mkdir(parents=True, exist_ok=True)
    machine = _bench.machine_info()
    shape = [args.shape] * 3
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB "
        f"({machine['available_gib_at_start']} GiB available), python {machine['python']}"
    )
    print(f"versions: {json.dumps(machine['versions'])}")
    if machine["omp_num_threads"]:
        print(f"warning: OMP_NUM_THREADS={machine['omp_num_threads']} caps XGBoost's threads")
    print(f"tiledseg checkout: {machine['tiledseg_git']}; work folder: {workdir}")
    print(f"making phantom {'x'.join(map(str, shape))} (seed {args.seed}) ...", flush=True)
    made = _bench.run_child(
        script,
        "phantom",
        {
            "shape": shape,
            "seed": args.seed,
            "scribbles": args.scribbles,
            "out": str(workdir / "data"),
            "format": "npy",
        },
        workdir=workdir,
        timeout=args.timeout,
    )
    if not made.ok:
        print(f"could not make the phantom: {made.reason}", file=sys.stderr)
        return 1
    phantom = made.result
    print(
        f"phantom: {phantom['voxels']:,} voxels, {phantom['labelled_voxels']:,} labelled "
        f"({100 * phantom['labelled_voxels'] / phantom['voxels']:.3f}%), "
        f"{phantom['classes']} classes, made in {phantom['make_seconds']:.1f} s"
    )

    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    runs: dict[str, dict[str, Any]] = {}
    for peer in args.peers:
        params: dict[str, Any] = {"data": phantom["paths"], "seed": args.seed}
        if peer == "skimage" and not args.no_memory_guard:
            import psutil

            need = SKIMAGE_BYTES_PER_VOXEL * phantom["voxels"]
            available = psutil.virtual_memory().available
            if need > available:
                failures[peer] = (
                    f"skipped: expected peak ~{need / _bench.GIB:.1f} GiB > "
                    f"{available / _bench.GIB:.1f} GiB available (--no-memory-guard to force)"
                )
                print(f"{peer}: {failures[peer]}")
                continue
        if peer == "tiledseg":
            scratch = workdir / "tiledseg-scratch"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            params["scratch"] = str(scratch)
        if peer == "ndtomo":
            params["slices"] = args.ndtomo_slices
        print(f"running {peer} ...", flush=True)
        outcome = _bench.run_child(script, peer, params, workdir=workdir, timeout=args.timeout)
        runs[peer] = {
            "wall_seconds": outcome.wall_seconds,
            "others_cores": outcome.others_cores,
            "loadavg_before_after": list(outcome.loadavg),
            "log": str(outcome.log),
        }
        if outcome.ok:
            results[peer] = outcome.result
            if peer == "ndtomo" and args.ndtomo_slices:
                results[peer]["note"] = f"{outcome.result['details']['slices']} slices only"
            elif peer == "ndtomo":
                results[peer]["note"] = "2D, slice by slice"
            r = outcome.result
            others = outcome.others_cores
            print(
                f"  {peer}: {r['seconds']:.1f} s, peak {r['peak_rss_bytes'] / _bench.GIB:.2f} "
                f"GiB, mIoU {r['mean_iou']:.3f}; other processes used "
                f"{_fmt(others, '.2f')} cores meanwhile",
                flush=True,
            )
        else:
            failures[peer] = outcome.reason
            print(f"  {peer} could not run: {outcome.reason}", flush=True)

    title = (
        f"{'x'.join(map(str, shape))} phantom, {args.scribbles} scribbles, seed {args.seed}, "
        f"{machine['cores']} cores"
    )
    print()
    print(f"## Peers on the same {title}")
    print()
    headers = [
        "peer",
        "voxels",
        "seconds",
        "Mvox/s",
        "apply Mvox/s",
        "peak RSS GiB",
        "mIoU",
        "CPU util",
        "note",
    ]
    rows = [_row(p, results.get(p), failures.get(p, "")) for p in args.peers]
    print(_bench.format_table(headers, rows))
    print()
    print(
        "seconds: train + label every voxel; apply: label every voxel with a trained model "
        "(tiledseg: predict; peers: features + classify); CPU util: CPU seconds / wall seconds "
        "of the timed part."
    )
    ratios = []
    base = results.get("tiledseg")
    if base is not None:
        for peer in args.peers:
            other = results.get(peer)
            if peer == "tiledseg" or other is None:
                continue
            ratios.append(
                {
                    "peer": peer,
                    "throughput_ratio": other["seconds"]
                    / base["seconds"]
                    * base["voxels"]
                    / other["voxels"],
                    "apply_throughput_ratio": other["apply_seconds"]
                    / base["apply_seconds"]
                    * base["voxels"]
                    / other["voxels"],
                    "rss_ratio": base["peak_rss_bytes"] / other["peak_rss_bytes"],
                    "miou_difference": base["mean_iou"] - other["mean_iou"],
                }
            )
    if ratios:
        print()
        print("## tiledseg vs each peer")
        print()
        print(
            _bench.format_table(
                [
                    "peer",
                    "throughput x (>1: tiledseg faster)",
                    "apply throughput x",
                    "peak RSS x (<1: tiledseg smaller)",
                    "mIoU tiledseg - peer",
                ],
                [
                    [
                        r["peer"],
                        f"{r['throughput_ratio']:.2f}",
                        f"{r['apply_throughput_ratio']:.2f}",
                        f"{r['rss_ratio']:.2f}",
                        f"{r['miou_difference']:+.3f}",
                    ]
                    for r in ratios
                ],
            )
        )
    print()
    print(
        "Processes other than the peer's used on average (cores): "
        + ", ".join(f"{p} {_fmt(runs[p]['others_cores'], '.2f')}" for p in runs)
        + " (CPU was shared: timings are noisy when this is not ~0)."
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "compare_peers",
                    "command": " ".join([Path(sys.argv[0]).name, *argv]),
                    "shape": shape,
                    "seed": args.seed,
                    "machine": machine,
                    "phantom": {k: v for k, v in phantom.items() if k != "paths"},
                    "results": results,
                    "failures": failures,
                    "runs": runs,
                    "ratios": ratios,
                },
                indent=1,
            )
        )
        print(f"results written to {args.json}")
    crashed = [p for p, why in failures.items() if not why.startswith("skipped")]
    if crashed:
        print(f"logs of {', '.join(crashed)} kept in {workdir}")
    elif not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
