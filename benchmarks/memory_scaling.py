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
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _bench

#: Largest allowed ratio of the peak at 256^3 to the peak at 128^3.
TARGET_RATIO_256_128 = 1.3


def task_train(params: dict[str, Any]) -> dict[str, Any]:
    """Train tiledseg's defaults on a small phantom and save the model file.

    Parameters
    ----------
    params : dict
        ``size`` (cube side), ``seed`` and ``model`` (path of the file to write).

    Returns
    -------
    dict
        Training seconds and the model's summary.
    """
    import tiledseg
    from tiledseg.testing import make_phantom

    phantom = make_phantom((int(params["size"]),) * 3, seed=int(params["seed"]))
    started = time.perf_counter()
    model = tiledseg.train(phantom.image, phantom.scribbles, cache_dir=None)
    seconds = time.perf_counter() - started
    model.save(params["model"], overwrite=True)
    return {
        "seconds": seconds,
        "n_features": model.summary.get("n_features"),
        "rounds": model.summary.get("rounds"),
        "halo": list(model.halo),
    }


def task_predict(params: dict[str, Any]) -> dict[str, Any]:
    """Predict from an image path and a model path; report peak memory and time.

    Parameters
    ----------
    params : dict
        ``image`` (zarr array path), ``model`` (model file path), ``out`` (output
        group path), ``block`` (``None`` for tiledseg's default) and ``smooth``
        (true: ``--smooth graphcut`` with its defaults).

    Returns
    -------
    dict
        Voxels, blocks, seconds, base and peak RSS of this process.
    """
    import dask.array  # noqa: F401 - imported before the baseline, like what predict imports
    import scipy.ndimage  # noqa: F401
    import threadpoolctl  # noqa: F401
    import xgboost  # noqa: F401
    import zarr  # noqa: F401

    import tiledseg

    base_rss = _bench.current_rss_bytes()
    cpu0 = _bench.cpu_seconds()
    started = time.perf_counter()
    smooth = {"smooth": "graphcut"} if params.get("smooth") else {}
    result = tiledseg.predict(
        params["image"], params["model"], out=params["out"], block=params.get("block"), **smooth
    )
    seconds = time.perf_counter() - started
    return {
        "voxels": int(result.voxels),
        "blocks": int(result.blocks),
        "seconds": seconds,
        "peak_rss_bytes": _bench.peak_rss_bytes(),
        "base_rss_bytes": base_rss,
        "cpu_seconds": _bench.cpu_seconds() - cpu0,
    }


def task_score(params: dict[str, Any]) -> dict[str, Any]:
    """Score a prediction against the truth (blockwise; not part of the measurement).

    Parameters
    ----------
    params : dict
        ``prediction`` (tiledseg output group) and ``truth`` (zarr array path).

    Returns
    -------
    dict
        ``mean_iou`` and ``accuracy``.
    """
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
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[128, 256, 384],
        help="cube sides to predict on (default: 128 256 384)",
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=96,
        help="cube side of the phantom the model is trained on (default 96)",
    )
    parser.add_argument("--seed", type=int, default=0, help="phantom seed")
    parser.add_argument(
        "--chunks", type=int, default=64, help="chunk edge of the image's zarr array (default 64)"
    )
    parser.add_argument(
        "--block",
        type=int,
        default=None,
        help="tiledseg processing block edge (default: tiledseg's own)",
    )
    parser.add_argument(
        "--smooth", action="store_true", help="predict with --smooth graphcut (its defaults)"
    )
    parser.add_argument("--no-score", action="store_true", help="skip scoring against the truth")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds after which a child process is killed (default 3600)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the images, model, outputs and logs (default: temporary)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(list(argv))
    if min(args.sizes) < 16 or args.train_size < 16:
        parser.error("sizes must be at least 16")
    args.sizes = sorted(set(args.sizes))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the memory-scaling benchmark and print its table.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every size was measured, 1 otherwise.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_bench.CHILD_FLAG]:
        return _bench.child_entry(argv[1:], TASKS)
    args = _parse(argv)
    script = Path(__file__).resolve()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tiledseg-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    machine = _bench.machine_info()
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"python {machine['python']}; tiledseg {machine['versions']['tiledseg']}, "
        f"zarr {machine['versions']['zarr']}"
    )
    print(f"tiledseg checkout: {machine['tiledseg_git']}; work folder: {workdir}")
    model_path = workdir / "model.tsm"
    print(f"training on a {args.train_size}^3 phantom ...", flush=True)
    trained = _bench.run_child(
        script,
        "train",
        {"size": args.train_size, "seed": args.seed, "model": str(model_path)},
        workdir=workdir,
        timeout=args.timeout,
    )
    if not trained.ok:
        print(f"training failed: {trained.reason}", file=sys.stderr)
        return 1
    print(
        f"  {trained.result['n_features']} features, {trained.result['rounds']} rounds, "
        f"halo {trained.result['halo']}"
    )

    rows: list[dict[str, Any]] = []
    failed = False
    for size in args.sizes:
        data = workdir / f"data-{size}"
        print(f"{size}^3: writing the phantom to zarr (chunks {args.chunks}^3) ...", flush=True)
        made = _bench.run_child(
            script,
            "phantom",
            {
                "shape": [size] * 3,
                "seed": args.seed,
                "out": str(data),
                "format": "zarr",
                "chunks": args.chunks,
                "arrays": ["image", "truth"],
            },
            workdir=workdir,
            timeout=args.timeout,
            label=f"phantom-{size}",
        )
        if not made.ok:
            print(f"  phantom failed: {made.reason}")
            failed = True
            continue
        out = workdir / f"out-{size}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        print(f"{size}^3: predicting from {made.result['paths']['image']} ...", flush=True)
        run = _bench.run_child(
            script,
            "predict",
            {
                "image": made.result["paths"]["image"],
                "model": str(model_path),
                "out": str(out),
                "block": args.block,
                "smooth": args.smooth,
            },
            workdir=workdir,
            timeout=args.timeout,
            label=f"predict-{size}",
        )
        if not run.ok:
            print(f"  predict failed: {run.reason}")
            failed = True
            continue
        row = dict(
            run.result,
            size=size,
            others_cores=run.others_cores,
            phantom_peak_rss_bytes=made.result.get("process_peak_rss_bytes"),
        )
        if not args.no_score:
            scored = _bench.run_child(
                script,
                "score",
                {"prediction": str(out), "truth": made.result["paths"]["truth"]},
                workdir=workdir,
                timeout=args.timeout,
                label=f"score-{size}",
            )
            row["mean_iou"] = scored.result.get("mean_iou") if scored.ok else None
        rows.append(row)
        print(
            f"  peak {row['peak_rss_bytes'] / _bench.GIB:.2f} GiB "
            f"(after imports {row['base_rss_bytes'] / _bench.GIB:.2f}), {row['seconds']:.1f} s; "
            f"other processes used {_fmt(run.others_cores, '.2f')} cores meanwhile",
            flush=True,
        )
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)

    smallest = rows[0] if rows else None
    table = []
    for r in rows:
        growth = r["peak_rss_bytes"] - r["base_rss_bytes"]
        table.append(
            [
                f"{r['size']}^3",
                f"{r['voxels']:,}",
                str(r["blocks"]),
                f"{r['seconds']:.1f}",
                f"{r['voxels'] / r['seconds'] / 1e6:.3f}",
                f"{r['base_rss_bytes'] / _bench.GIB:.2f}",
                f"{r['peak_rss_bytes'] / _bench.GIB:.2f}",
                f"{growth / _bench.GIB:.2f}",
                f"{r['peak_rss_bytes'] / smallest['peak_rss_bytes']:.2f}",
                _fmt(r.get("mean_iou"), ".3f"),
                _fmt(r.get("others_cores"), ".2f"),
            ]
        )
    print()
    print(
        f"## tiledseg predict from zarr (chunks {args.chunks}^3), model trained on "
        f"{args.train_size}^3, {machine['cores']} cores"
    )
    print()
    print(
        _bench.format_table(
            [
                "size",
                "voxels",
                "blocks",
                "seconds",
                "Mvox/s",
                "RSS after imports GiB",
                "peak RSS GiB",
                "peak - imports GiB",
                f"peak / peak at {smallest['size']}^3" if smallest else "ratio",
                "mIoU",
                "others' cores",
            ],
            table,
        )
    )
    by_size = {r["size"]: r for r in rows}
    verdicts = []
    if 128 in by_size:
        for size in (256, 384):
            if size in by_size:
                ratio = by_size[size]["peak_rss_bytes"] / by_size[128]["peak_rss_bytes"]
                line = f"peak RSS {size}^3 / 128^3 = {ratio:.2f}"
                if size == 256:
                    ok = ratio <= TARGET_RATIO_256_128
                    line += f" (target <= {TARGET_RATIO_256_128}: {'met' if ok else 'NOT met'})"
                verdicts.append(line)
    if verdicts:
        print()
        print("\n".join(verdicts))
    print()
    print(
        "others' cores: average cores used by other processes during the predict run "
        "(CPU was shared when this is not ~0; seconds are then noisy)."
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "memory_scaling",
                    "command": " ".join([Path(sys.argv[0]).name, *argv]),
                    "machine": machine,
                    "train": trained.result,
                    "chunks": args.chunks,
                    "block": args.block,
                    "smooth": args.smooth,
                    "results": rows,
                    "verdicts": verdicts,
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


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
