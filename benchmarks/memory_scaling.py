"""Peak memory of ``tiledseg.predict`` as the 3D image grows, image read from a zarr array on disk.

Steps, each in its own fresh child process:

1. train once on a small phantom (``--train-size``), ``model.save(model.tsm)``;
2. for each size: make the phantom and write its image (and truth) as zarr
   arrays (chunks ``--chunks``), then exit, so the phantom's GiBs never touch
   the measured process;
3. for each size: ``tiledseg.predict(IMAGE.zarr, model.tsm, out=OUT.zarr)`` from
   the paths (the image is never loaded whole), reporting the process's peak
   resident memory (its own ``VmHWM``), its memory after the imports, and time;
4. for each size: score the labels against the truth (blockwise, not measured).

The target is a peak at 256^3 of at most 1.3x the peak at 128^3: with blockwise
prediction the working memory should depend on the block, not the image.

Run ``python benchmarks/memory_scaling.py --help`` for the options; see
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

#: Largest allowed ratio of the peak at 256^3 to the peak at 128^3.
TARGET_RATIO_256_128 = 1.3


def task_train(params: dict[str, Any]) -> dict[str, Any]:
    """Train tiledseg's defaults on a ``size``^3 phantom and save the model to ``model``."""
    import tiledseg
    from tiledseg.testing import make_phantom

    phantom = make_phantom((int(params["size"]),) * 3, seed=int(params["seed"]))
    started = time.perf_counter()
    model = tiledseg.train(phantom.image, phantom.scribbles, cache_dir=None)
    seconds = time.perf_counter() - started
    model.save(params["model"], overwrite=True)
    summary = {k: model.summary.get(k) for k in ("n_features", "rounds")}
    return {"seconds": seconds, **summary, "halo": list(model.halo)}


def task_predict(params: dict[str, Any]) -> dict[str, Any]:
    """``predict`` from the ``image`` and ``model`` paths to ``out`` (``block``; ``smooth``:
    the graph cut's defaults); the voxels, blocks, seconds, base and peak RSS."""
    import dask.array  # noqa: F401 - imported before the baseline, like what predict imports
    import scipy.ndimage  # noqa: F401
    import threadpoolctl  # noqa: F401
    import xgboost  # noqa: F401
    import zarr  # noqa: F401

    import tiledseg

    base_rss, cpu0 = _bench.current_rss_bytes(), _bench.cpu_seconds()
    started = time.perf_counter()
    smooth = {"smooth": "graphcut"} if params.get("smooth") else {}
    result = tiledseg.predict(
        params["image"], params["model"], out=params["out"], block=params.get("block"), **smooth
    )
    return {
        "voxels": int(result.voxels),
        "blocks": int(result.blocks),
        "seconds": time.perf_counter() - started,
        "peak_rss_bytes": _bench.peak_rss_bytes(),
        "base_rss_bytes": base_rss,
        "cpu_seconds": _bench.cpu_seconds() - cpu0,
    }


def task_score(params: dict[str, Any]) -> dict[str, Any]:
    """Score the ``prediction`` against the ``truth`` (not part of the measurement)."""
    import tiledseg

    scores = tiledseg.evaluate(params["prediction"], params["truth"])
    return {"mean_iou": scores["mean_iou"], "accuracy": scores["accuracy"]}


TASKS = {
    "phantom": _bench.make_phantom_files,
    "train": task_train,
    "predict": task_predict,
    "score": task_score,
}


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Peak RSS of tiledseg predict (image read from a zarr path) on growing 3D "
        "phantoms, each in a fresh process.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 384], help="cube sides")
    parser.add_argument("--train-size", type=int, default=96, help="the model's phantom (96)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed")
    parser.add_argument("--chunks", type=int, default=64, help="the image's zarr chunk edge (64)")
    parser.add_argument("--block", type=int, help="tiledseg's block edge (default: its own)")
    parser.add_argument("--smooth", action="store_true", help="predict with --smooth graphcut")
    parser.add_argument("--no-score", action="store_true", help="skip scoring against the truth")
    _bench.add_run_options(parser, timeout=3600.0)
    args = parser.parse_args(list(argv))
    if min(args.sizes) < 16 or args.train_size < 16:
        parser.error("sizes must be at least 16")
    args.sizes = sorted(set(args.sizes))
    return args


def _measure(script: Path, size: int, args: argparse.Namespace, workdir: Path, model: Path):
    """Write the ``size``^3 phantom, predict it and score it, each in a child; the row."""
    data, out = workdir / f"data-{size}", workdir / f"out-{size}.zarr"
    print(f"{size}^3: writing the phantom to zarr (chunks {args.chunks}^3) ...", flush=True)
    params = {"shape": [size] * 3, "seed": args.seed, "out": str(data), "format": "zarr"}
    params.update(chunks=args.chunks, arrays=["image", "truth"])
    run = dict(workdir=workdir, timeout=args.timeout)
    made = _bench.run_child(script, "phantom", params, label=f"phantom-{size}", **run)
    if not made.ok:
        print(f"  phantom failed: {made.reason}")
        return None
    paths = made.result["paths"]
    shutil.rmtree(out, ignore_errors=True)
    print(f"{size}^3: predicting from {paths['image']} ...", flush=True)
    params = {"image": paths["image"], "model": str(model), "out": str(out)}
    params.update(block=args.block, smooth=args.smooth)
    done = _bench.run_child(script, "predict", params, label=f"predict-{size}", **run)
    if not done.ok:
        print(f"  predict failed: {done.reason}")
        return None
    row = dict(done.result, size=size, others_cores=done.others_cores)
    row["phantom_peak_rss_bytes"] = made.result.get("process_peak_rss_bytes")
    if not args.no_score:
        params = {"prediction": str(out), "truth": paths["truth"]}
        scored = _bench.run_child(script, "score", params, label=f"score-{size}", **run)
        row["mean_iou"] = scored.result.get("mean_iou") if scored.ok else None
    print(
        f"  peak {row['peak_rss_bytes'] / _bench.GIB:.2f} GiB "
        f"(after imports {row['base_rss_bytes'] / _bench.GIB:.2f}), {row['seconds']:.1f} s; "
        f"other processes used {_bench.fmt(done.others_cores, '.2f')} cores meanwhile",
        flush=True,
    )
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    """Run the memory-scaling benchmark and print its table; 1 when a size failed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_bench.CHILD_FLAG]:
        return _bench.child_entry(argv[1:], TASKS)
    args = _parse(argv)
    script = Path(__file__).resolve()
    workdir = _bench.open_workdir(args, "tiledseg-memory-")
    machine = _bench.machine_info()
    _bench.print_machine(machine, workdir)
    model_path = workdir / "model.tsm"
    print(f"training on a {args.train_size}^3 phantom ...", flush=True)
    params = {"size": args.train_size, "seed": args.seed, "model": str(model_path)}
    trained = _bench.run_child(script, "train", params, workdir=workdir, timeout=args.timeout)
    if not trained.ok:
        print(f"training failed: {trained.reason}", file=sys.stderr)
        return 1
    t = trained.result
    print(f"  {t['n_features']} features, {t['rounds']} rounds, halo {t['halo']}")
    measured = [_measure(script, size, args, workdir, model_path) for size in args.sizes]
    rows = [r for r in measured if r is not None]

    smallest = rows[0] if rows else None
    table = []
    for r in rows:
        table.append(
            [
                f"{r['size']}^3",
                f"{r['voxels']:,}",
                str(r["blocks"]),
                f"{r['seconds']:.1f}",
                f"{r['voxels'] / r['seconds'] / 1e6:.3f}",
                f"{r['base_rss_bytes'] / _bench.GIB:.2f}",
                f"{r['peak_rss_bytes'] / _bench.GIB:.2f}",
                f"{(r['peak_rss_bytes'] - r['base_rss_bytes']) / _bench.GIB:.2f}",
                f"{r['peak_rss_bytes'] / smallest['peak_rss_bytes']:.2f}",
                _bench.fmt(r.get("mean_iou"), ".3f"),
                _bench.fmt(r.get("others_cores"), ".2f"),
            ]
        )
    print(
        f"\n## tiledseg predict from zarr (chunks {args.chunks}^3), model trained on "
        f"{args.train_size}^3, {machine['cores']} cores\n"
    )
    headers = ["size", "voxels", "blocks", "seconds", "Mvox/s", "RSS after imports GiB"]
    headers += ["peak RSS GiB", "peak - imports GiB"]
    headers += [f"peak / peak at {smallest['size']}^3" if smallest else "ratio"]
    print(_bench.format_table([*headers, "mIoU", "others' cores"], table))
    by_size = {r["size"]: r["peak_rss_bytes"] for r in rows}
    verdicts = []
    for size in (256, 384):
        if 128 in by_size and size in by_size:
            ratio = by_size[size] / by_size[128]
            verdicts.append(f"peak RSS {size}^3 / 128^3 = {ratio:.2f}")
            if size == 256:
                met = "met" if ratio <= TARGET_RATIO_256_128 else "NOT met"
                verdicts[-1] += f" (target <= {TARGET_RATIO_256_128}: {met})"
    if verdicts:
        print("\n" + "\n".join(verdicts))
    print(
        "\nothers' cores: average cores used by other processes during the predict run "
        "(CPU was shared when this is not ~0; seconds are then noisy)."
    )
    record = {"benchmark": "memory_scaling", "command": " ".join([Path(sys.argv[0]).name, *argv])}
    record.update(machine=machine, train=trained.result, chunks=args.chunks, block=args.block)
    record.update(smooth=args.smooth, results=rows, verdicts=verdicts)
    _bench.write_json(args.json, record)
    failed = len(rows) < len(args.sizes)
    _bench.close_workdir(args, workdir, failed=failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
