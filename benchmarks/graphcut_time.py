"""Time of graph-cut smoothing relative to prediction, on one noisy 3D phantom.

One process trains tiledseg's defaults on a noisy phantom (noise 3x the step between
phase means, 3 classes, strokes on 8 slices), then, after unmeasured warm-ups
(a prediction, and a graph cut of a corner that loads the solver's compiled kernels),
alternates for ``--repeats`` rounds:

- ``predict``: the plain prediction (features, XGBoost, labels written to zarr);
- ``predict --smooth graphcut``: the same plus the blockwise graph cut.

The graph cut's own time is the difference; the goal is at most 2x the prediction.
mIoU against the phantom's truth is printed for both. Times are medians of the
rounds, wall clock, on the default threaded scheduler.

    python benchmarks/graphcut_time.py [--size 128] [--repeats 3] [--weight 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _bench

GOAL_RATIO = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="cube side (default 128)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weight", type=float, default=None, help="--smooth-weight")
    parser.add_argument("--iterations", type=int, default=None, help="expansion cycles")
    parser.add_argument("--neighbours", type=int, default=None, help="--smooth-neighbours")
    parser.add_argument("--json", type=Path, default=_bench.RESULTS / "graphcut_time.json")
    args = parser.parse_args(argv)

    import tiledseg as ts
    from tiledseg.testing import make_phantom

    ph = make_phantom((args.size,) * 3, n_classes=3, noise=3.0, scribbles="strokes", seed=1)
    model = ts.train(ph.image, ph.scribbles, cache_dir=False)
    plain, smoothed, scores = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        ts.predict(ph.image, model, out=Path(tmp) / "warm.zarr")
        # loads (or compiles, on a first run) the solver's numba kernels outside the rounds
        ts.predict(
            ph.image[:32, :32, :32], model, out=Path(tmp) / "warm-cut.zarr", smooth="graphcut"
        )
        for r in range(args.repeats):
            started = time.perf_counter()
            a = ts.predict(ph.image, model, out=Path(tmp) / f"plain{r}.zarr")
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            b = ts.predict(
                ph.image,
                model,
                out=Path(tmp) / f"smooth{r}.zarr",
                smooth="graphcut",
                smooth_weight=args.weight,
                smooth_iterations=args.iterations,
                smooth_neighbours=args.neighbours,
            )
            smoothed.append(time.perf_counter() - started)
        scores["plain"] = ts.evaluate(a.path, ph.truth)["mean_iou"]
        scores["graphcut"] = ts.evaluate(b.path, ph.truth)["mean_iou"]
        blocks = a.blocks
    t_plain = statistics.median(plain)
    t_smooth = statistics.median(smoothed)
    t_cut = t_smooth - t_plain
    result = {
        "size": args.size,
        "blocks": blocks,
        "weight": args.weight,
        "iterations": args.iterations,
        "neighbours": args.neighbours,
        "predict_seconds": plain,
        "smoothed_seconds": smoothed,
        "median_predict_s": t_plain,
        "median_smoothed_s": t_smooth,
        "graphcut_s": t_cut,
        "graphcut_over_predict": t_cut / t_plain,
        "goal": GOAL_RATIO,
        "miou": scores,
        "machine": _bench.machine_info(),
        "command": " ".join(["python", "benchmarks/graphcut_time.py", *sys.argv[1:]]),
    }
    print(
        _bench.format_table(
            ["size", "blocks", "predict s", "predict+graphcut s", "graphcut s", "ratio", "mIoU"],
            [
                [
                    f"{args.size}^3",
                    blocks,
                    f"{t_plain:.2f}",
                    f"{t_smooth:.2f}",
                    f"{t_cut:.2f}",
                    f"{t_cut / t_plain:.2f} (goal <= {GOAL_RATIO})",
                    f"{scores['plain']:.3f} -> {scores['graphcut']:.3f}",
                ]
            ],
        )
    )
    _bench.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
