"""End-to-end throughput of the GPU path against the CPU path, in one run, on one machine.

A phantom of ``--size``^3 (default 512^3, float32, 4 phases, scribbles as balls) is
written to a zarr store (128^3 chunks). The default bank and XGBoost are trained
once (on the GPU when there is one: ``--train-device``); then ``tiledseg.predict``
reads the zarr store and writes the labels' zarr store, once per ``--devices``
entry, on dask's threads over all cores (the CPU path) or on this machine's GPU
(``cuda``; the first GPU run also compiles cupy's kernels, so it is run twice and
both are reported: ``cold`` and ``warm``). Reported per run: wall seconds,
Mvox/s (read zarr -> labels zarr), the block the run chose, mIoU against the
phantom's truth; and the number of voxels whose label differs between the GPU and
the CPU run (float32 filters in another summation order). Goal: 100 Mvox/s on one
H100/H200 at 512^3.

    python benchmarks/gpu_throughput.py [--size 512] [--devices cuda cpu] [--json PATH]

Needs tiledseg with cupy (``pip install 'tiledseg[gpu]'``) for ``cuda``; see
benchmarks/README.md for the wheels a GPU machine without a registry needs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _bench

GOAL_MVOX_S = 100.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="cube side (default 512)")
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"], choices=["cuda", "cpu"])
    parser.add_argument(
        "--train-device", default="auto", choices=["cpu", "cuda", "auto"], help="(default auto)"
    )
    parser.add_argument("--block", default=None, help="--block for every run (default: chosen)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep the stores here")
    parser.add_argument("--json", type=Path, default=_bench.RESULTS / "gpu_throughput.json")
    args = parser.parse_args(argv)

    import numpy as np
    import zarr

    import tiledseg as ts

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        made = _bench.make_phantom_files(
            {
                "shape": [args.size] * 3,
                "seed": args.seed,
                "out": str(work),
                "format": "zarr",
                "chunks": 128,
            }
        )
        image, scribbles = made["paths"]["image"], made["paths"]["scribbles"]
        truth = zarr.open_array(made["paths"]["truth"], mode="r")[...]
        print(f"phantom {args.size}^3 written in {made['total_seconds']:.1f} s", file=sys.stderr)
        started = time.perf_counter()
        model = ts.train(image, scribbles, device=args.train_device, cache_dir=False)
        train_seconds = time.perf_counter() - started
        print(
            f"trained ({model.summary.get('device', 'cpu')}) in {train_seconds:.1f} s",
            file=sys.stderr,
        )
        runs, labels = [], {}
        plan = [("cuda", "cold"), ("cuda", "warm")] if "cuda" in args.devices else []
        plan += [("cpu", "")] if "cpu" in args.devices else []
        for device, note in plan:
            out = work / f"labels-{device}{note}.zarr"
            started = time.perf_counter()
            result = ts.predict(image, model, out=out, device=device, block=args.block)
            seconds = time.perf_counter() - started
            pool = None
            if device == "cuda":
                import cupy

                # cupy's pool keeps what the run's concurrent blocks needed at once: its
                # size is the run's peak, to check tiledseg.device's working-set estimate
                pool = int(cupy.get_default_memory_pool().total_bytes())
            got = zarr.open_array(f"{out}/labels/0", mode="r")
            labels[device] = got[...]
            score = ts.evaluate(labels[device], truth)
            runs.append(
                {
                    "device": device,
                    "run": note,
                    "seconds": round(seconds, 3),
                    "mvox_s": round(result.voxels / seconds / 1e6, 2),
                    "block": list(got.chunks),
                    "blocks": result.blocks,
                    "miou": round(float(score["mean_iou"]), 4),
                    **({"gpu_pool_gib": round(pool / 2**30, 2)} if pool is not None else {}),
                }
            )
            print(f"{device} {note}: {runs[-1]}", file=sys.stderr)
    record = {
        "size": args.size,
        "voxels": made["voxels"],
        "train_seconds": round(train_seconds, 2),
        "train_device": model.summary.get("device", "cpu"),
        "runs": runs,
        "machine": _bench.machine_info(),
    }
    if "cuda" in labels and "cpu" in labels:
        flipped = int(np.count_nonzero(labels["cuda"] != labels["cpu"]))
        record["labels_differing_gpu_cpu"] = flipped
        record["labels_differing_share"] = flipped / made["voxels"]
    rows = [
        [
            r["device"],
            r["run"],
            r["seconds"],
            r["mvox_s"],
            "x".join(map(str, r["block"])),
            r["miou"],
        ]
        for r in runs
    ]
    print(_bench.format_table(["device", "run", "s", "Mvox/s", "block", "mIoU"], rows))
    by = {(r["device"], r["run"]): r["mvox_s"] for r in runs}
    if ("cuda", "warm") in by and ("cpu", "") in by:
        ratio = by[("cuda", "warm")] / by[("cpu", "")]
        record["gpu_over_cpu"] = round(ratio, 2)
        print(f"GPU (warm) / CPU throughput: {ratio:.2f}x")
        print(
            f"GPU warm {by[('cuda', 'warm')]:.1f} Mvox/s; goal {GOAL_MVOX_S:.0f} Mvox/s: "
            + ("met" if by[("cuda", "warm")] >= GOAL_MVOX_S else "NOT met")
        )
    if "labels_differing_gpu_cpu" in record:
        print(
            f"labels differing GPU vs CPU: {record['labels_differing_gpu_cpu']} of "
            f"{made['voxels']} ({100 * record['labels_differing_share']:.4f}%)"
        )
    _bench.write_json(args.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
