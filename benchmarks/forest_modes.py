"""The two random forests of tiledseg side by side on the CPU: scikit-learn's and XGBoost's.

``random-forest`` is scikit-learn's forest on the CPU and XGBoost's random-forest mode
on a GPU (docs/gpu.md). This runs both on the CPU, with boosted XGBoost (the default)
for reference, on one phantom with the default bank, and reports training seconds,
prediction Mvox/s (``tiledseg.predict`` to zarr, threads on all cores) and mIoU
against the truth, so that the GPU's forest is known to be as good as the CPU's.

    python benchmarks/forest_modes.py [--size 128] [--scribbles strokes]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--scribbles", default="strokes", choices=["strokes", "balls"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", default=str(Path(__file__).parent / "results" / "forest_modes.json")
    )
    args = parser.parse_args(argv)

    import tiledseg as ts
    from tiledseg.classifiers import XGBoostClassifier, make_classifier
    from tiledseg.testing import make_phantom

    ph = make_phantom((args.size,) * 3, scribbles=args.scribbles, seed=args.seed)
    candidates = {
        "scikit-learn forest (random-forest, cpu)": lambda: make_classifier("random-forest"),
        "XGBoost forest mode (random-forest, cuda)": lambda: XGBoostClassifier(forest=True),
        "XGBoost boosted (xgboost)": lambda: "xgboost",
    }
    rows, record = [], {"size": args.size, "scribbles": args.scribbles, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make) in enumerate(candidates.items()):
            started = time.perf_counter()
            model = ts.train(ph.image, ph.scribbles, classifier=make(), cache_dir=False)
            trained = time.perf_counter() - started
            started = time.perf_counter()
            result = ts.predict(ph.image, model, out=Path(tmp) / f"{i}.zarr")
            predicted = time.perf_counter() - started
            miou = ts.evaluate(result.path, ph.truth)["mean_iou"]
            run = {
                "classifier": name,
                "train_s": round(trained, 2),
                "predict_s": round(predicted, 2),
                "predict_mvox_s": round(ph.image.size / predicted / 1e6, 2),
                "miou": round(float(miou), 4),
            }
            record["runs"].append(run)
            rows.append(
                [name, run["train_s"], run["predict_s"], run["predict_mvox_s"], run["miou"]]
            )
            print(run, file=sys.stderr)
    print(_bench.format_table(["classifier", "train s", "predict s", "Mvox/s", "mIoU"], rows))
    record["machine"] = _bench.machine_info()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
