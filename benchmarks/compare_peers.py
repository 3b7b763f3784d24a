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
import shutil
import sys
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


def _measured(run: Any) -> Any:
    """A child task: load the phantom's arrays, run ``run(image, scribbles, params)``, which
    times itself, record the peak RSS and CPU of that, then score its labels."""

    def task(params: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        paths = params["data"]
        image, truth, scribbles = (np.load(paths[k]) for k in ("image", "truth", "scribbles"))
        if params.get("slices"):  # nDTomo on evenly spaced slices only
            n = image.shape[0]
            index = np.unique(np.linspace(0, n - 1, int(params["slices"])).round().astype(int))
            image, truth, scribbles = image[index], truth[index], scribbles[index]
        base_rss, cpu0 = _bench.current_rss_bytes(), _bench.cpu_seconds()
        result = run(image, scribbles, params)
        result["peak_rss_bytes"] = _bench.peak_rss_bytes()
        result["base_rss_bytes"] = base_rss
        result["cpu_seconds"] = _bench.cpu_seconds() - cpu0
        result["cpu_utilisation"] = result["cpu_seconds"] / result["seconds"]
        result["voxels"] = int(image.size)
        import tiledseg  # imported only after the peak was recorded

        scores = tiledseg.evaluate(result.pop("labels"), truth)
        result.update({k: scores[k] for k in ("mean_iou", "accuracy", "iou")})
        return result

    return task


@_measured
def peer_tiledseg(image: Any, scribbles: Any, params: dict[str, Any]) -> dict[str, Any]:
    """tiledseg's defaults; the output is an OME-Zarr group on disk (``params["scratch"]``)."""
    import tiledseg

    out = Path(params["scratch"]) / "out.zarr"
    t0 = time.perf_counter()
    model = tiledseg.train(image, scribbles, cache_dir=None)
    t1 = time.perf_counter()
    prediction = tiledseg.predict(image, model, out=out)
    t2 = time.perf_counter()
    details = {k: model.summary.get(k) for k in ("fit_seconds", "rounds", "held_out_accuracy")}
    return {
        "seconds": t2 - t0,
        "train_seconds": t1 - t0,
        "apply_seconds": t2 - t1,
        "n_features": model.summary.get("n_features"),
        "details": {**details, "blocks": prediction.blocks},
        "labels": out,
    }


@_measured
def peer_skimage(image: Any, scribbles: Any, params: dict[str, Any]) -> dict[str, Any]:
    """scikit-image's trainable segmentation at its defaults."""
    from skimage.feature import multiscale_basic_features
    from skimage.future import fit_segmenter, predict_segmenter
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    features = multiscale_basic_features(image, channel_axis=None)
    t1 = time.perf_counter()
    forest = RandomForestClassifier(**SKIMAGE_FOREST, random_state=int(params["seed"]))
    forest = fit_segmenter(scribbles, features, forest)
    t2 = time.perf_counter()
    labels = predict_segmenter(features, forest)
    t3 = time.perf_counter()
    return {
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
        "labels": labels,
    }


@_measured
def peer_ndtomo(image: Any, scribbles: Any, params: dict[str, Any]) -> dict[str, Any]:
    """nDTomo's CPU pipeline (``nDTomo.methods.segmentation``), slice by slice: it is 2D only.

    The features of every slice are computed once; the labelled pixels of all slices train
    one model (XGBoost's fixed default seed), which then labels every slice from them.
    """
    import numpy as np

    try:
        from nDTomo.methods import segmentation as nds
    except ImportError as exc:
        raise RuntimeError(
            f"nDTomo's segmentation pipeline cannot be imported ({exc}); install it with "
            "'pip install --no-deps ndtomo' plus matplotlib (see benchmarks/README.md)"
        ) from exc

    classes = np.flatnonzero(np.bincount(scribbles.ravel()))[1:]
    if not np.array_equal(classes, np.arange(1, len(classes) + 1)):
        raise RuntimeError(f"nDTomo's fit_model needs labels 1..K, got classes {classes.tolist()}")
    config = nds.FeatureConfig()
    t0 = time.perf_counter()
    stacks, rows, targets = [], [], []
    for z in range(image.shape[0]):
        stacks.append(nds.get_features(image[z], config))
        if scribbles[z].any():
            fit_data, target = nds.get_training_data(stacks[-1], scribbles[z], shuffle=False)
            rows.append(fit_data)
            targets.append(target)
    t1 = time.perf_counter()
    model = nds.fit_model(nds.get_model(), np.concatenate(rows), np.concatenate(targets))
    t2 = time.perf_counter()
    labels = np.stack([nds.apply(model, stack) for stack in stacks]).astype(np.uint8)
    t3 = time.perf_counter()
    return {
        "seconds": t3 - t0,
        "train_seconds": t2 - t0,
        "apply_seconds": (t1 - t0) + (t3 - t2),
        "n_features": int(stacks[0].shape[-1]),
        "details": {
            "slices": int(image.shape[0]),
            "features_seconds": t1 - t0,
            "fit_seconds": t2 - t1,
            "predict_seconds": t3 - t2,
            "training_rows": int(sum(len(t) for t in targets)),
            "n_estimators": model.get_params().get("n_estimators"),
            "kept_features_gib": sum(s.nbytes for s in stacks) / _bench.GIB,
        },
        "labels": labels,
    }


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
    parser.add_argument("--shape", type=int, default=256, help="side of the cube (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="phantom and classifier seed")
    parser.add_argument(
        "--scribbles",
        choices=["balls", "strokes"],
        default="strokes",
        help="strokes on 8 z-slices (default) or small balls through the whole volume",
    )
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument(
        "--ndtomo-slices",
        type=int,
        help="nDTomo on this many evenly spaced slices only (scored on those; default: all)",
    )
    parser.add_argument(
        "--no-memory-guard",
        action="store_true",
        help="run scikit-image even when its expected peak exceeds the memory available now",
    )
    _bench.add_run_options(parser, timeout=3600.0)
    args = parser.parse_args(argv)
    if args.shape < 16:
        parser.error("--shape must be at least 16")
    return args


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


def _ratios(results: dict[str, dict[str, Any]], peers: Sequence[str]) -> list[dict[str, Any]]:
    """tiledseg against each other peer: throughput, apply throughput, peak RSS, mIoU."""
    base = results.get("tiledseg")
    out = []
    for peer in peers:
        other = results.get(peer)
        if base is None or other is None or peer == "tiledseg":
            continue
        per_voxel = base["voxels"] / other["voxels"]
        out.append(
            {
                "peer": peer,
                "throughput_ratio": other["seconds"] / base["seconds"] * per_voxel,
                "apply_throughput_ratio": other["apply_seconds"]
                / base["apply_seconds"]
                * per_voxel,
                "rss_ratio": base["peak_rss_bytes"] / other["peak_rss_bytes"],
                "miou_difference": base["mean_iou"] - other["mean_iou"],
            }
        )
    return out


def _skimage_wont_fit(voxels: int) -> str:
    """Why scikit-image is skipped (its expected peak exceeds the memory available), or ''."""
    import psutil

    need, available = SKIMAGE_BYTES_PER_VOXEL * voxels, psutil.virtual_memory().available
    if need <= available:
        return ""
    return (
        f"skipped: expected peak ~{need / _bench.GIB:.1f} GiB > "
        f"{available / _bench.GIB:.1f} GiB available (--no-memory-guard to force)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print the tables; 0 even when a peer could not run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_bench.CHILD_FLAG]:
        return _bench.child_entry(argv[1:], TASKS)
    args = _parse(argv)
    script = Path(__file__).resolve()
    workdir = _bench.open_workdir(args, "tiledseg-peers-")
    machine = _bench.machine_info()
    _bench.print_machine(machine, workdir)
    shape = [args.shape] * 3
    print(f"making phantom {'x'.join(map(str, shape))} (seed {args.seed}) ...", flush=True)
    params = {"shape": shape, "seed": args.seed, "scribbles": args.scribbles}
    params.update(out=str(workdir / "data"), format="npy")
    made = _bench.run_child(script, "phantom", params, workdir=workdir, timeout=args.timeout)
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
        params = {"data": phantom["paths"], "seed": args.seed}
        if peer == "ndtomo":
            params["slices"] = args.ndtomo_slices
        guard = peer == "skimage" and not args.no_memory_guard
        if guard and (why := _skimage_wont_fit(phantom["voxels"])):
            failures[peer] = why
            print(f"{peer}: {why}")
            continue
        if peer == "tiledseg":
            scratch = workdir / "tiledseg-scratch"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            params["scratch"] = str(scratch)
        print(f"running {peer} ...", flush=True)
        outcome = _bench.run_child(script, peer, params, workdir=workdir, timeout=args.timeout)
        runs[peer] = {
            "wall_seconds": outcome.wall_seconds,
            "others_cores": outcome.others_cores,
            "loadavg_before_after": list(outcome.loadavg),
            "log": str(outcome.log),
        }
        if not outcome.ok:
            failures[peer] = outcome.reason
            print(f"  {peer} could not run: {outcome.reason}", flush=True)
            continue
        r = results[peer] = outcome.result
        if peer == "ndtomo":
            slices = args.ndtomo_slices and f"{r['details']['slices']} slices only"
            r["note"] = slices or "2D, slice by slice"
        print(
            f"  {peer}: {r['seconds']:.1f} s, peak {r['peak_rss_bytes'] / _bench.GIB:.2f} "
            f"GiB, mIoU {r['mean_iou']:.3f}; other processes used "
            f"{_bench.fmt(outcome.others_cores, '.2f')} cores meanwhile",
            flush=True,
        )

    title = (
        f"{'x'.join(map(str, shape))} phantom, {args.scribbles} scribbles, seed {args.seed}, "
        f"{machine['cores']} cores"
    )
    print(f"\n## Peers on the same {title}\n")
    headers = ["peer", "voxels", "seconds", "Mvox/s", "apply Mvox/s", "peak RSS GiB", "mIoU"]
    rows = [_row(p, results.get(p), failures.get(p, "")) for p in args.peers]
    print(_bench.format_table([*headers, "CPU util", "note"], rows))
    print(
        "\nseconds: train + label every voxel; apply: label every voxel with a trained model "
        "(tiledseg: predict; peers: features + classify); CPU util: CPU seconds / wall seconds "
        "of the timed part."
    )
    ratios = _ratios(results, args.peers)
    if ratios:
        print("\n## tiledseg vs each peer\n")
        headers = ["peer", "throughput x (>1: tiledseg faster)", "apply throughput x"]
        headers += ["peak RSS x (<1: tiledseg smaller)", "mIoU tiledseg - peer"]
        keys = ("throughput_ratio", "apply_throughput_ratio", "rss_ratio")
        rows = [
            [r["peer"], *(f"{r[k]:.2f}" for k in keys), f"{r['miou_difference']:+.3f}"]
            for r in ratios
        ]
        print(_bench.format_table(headers, rows))
    print(
        "\nProcesses other than the peer's used on average (cores): "
        + ", ".join(f"{p} {_bench.fmt(runs[p]['others_cores'], '.2f')}" for p in runs)
        + " (CPU was shared: timings are noisy when this is not ~0)."
    )
    record = {"benchmark": "compare_peers", "command": " ".join([Path(sys.argv[0]).name, *argv])}
    record.update(shape=shape, seed=args.seed, machine=machine)
    record["phantom"] = {k: v for k, v in phantom.items() if k != "paths"}
    record.update(results=results, failures=failures, runs=runs, ratios=ratios)
    _bench.write_json(args.json, record)
    crashed = [p for p, why in failures.items() if not why.startswith("skipped")]
    _bench.close_workdir(args, workdir, failed=bool(crashed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
