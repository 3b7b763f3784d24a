"""Which classifier for scribbles: XGBoost settings against random forests, on the same bank.

Usage: python benchmarks/classifier_variants.py [--variants cur rf ...] [--bank wide-st]
       [--datasets superalloy-2d ilastik-3d nasa-super1 phantom-3d] [--seeds 0 1 2]

Trains each variant on each image's own scribbles (benchmarks/accuracy.py's data sets),
predicts with tiledseg and prints the mean IoU against dense truth (ilastik-3d: against
ilastik's argmax) for each seed (of the forest and of the held-out split), and the
means. The studies that made the random forest tiledseg's default classifier, chose its
size and checked its own grower against scikit-learn's (``forest`` against ``rf50d10``;
benchmarks/RESULTS.md, sections 9 and 10).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import accuracy
import numpy as np

import tiledseg
from tiledseg.classifiers import ForestClassifier, XGBoostClassifier


def _xgboost(init: dict[str, Any] | None = None, **booster: Any) -> Any:
    """An XGBoost classifier with constructor settings and extra booster parameters."""

    class Variant(XGBoostClassifier):
        def __init__(self, **kw: Any):
            super().__init__(**{**(init or {}), **kw})

        def _booster_params(self, n_classes: int, n_threads: int, **kw: Any) -> dict:
            return {**super()._booster_params(n_classes, n_threads, **kw), **booster}

    return Variant()


def _forest(seed: int = 0, **settings: Any) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(random_state=seed, **settings)


VARIANTS = {
    "cur": lambda seed: _xgboost({"seed": seed}),
    "mcw0": lambda seed: _xgboost({"seed": seed}, min_child_weight=0),
    "eta0.1": lambda seed: _xgboost(
        {"learning_rate": 0.1, "max_rounds": 150, "patience": 20, "min_rounds": 30, "seed": seed},
        subsample=0.7,
    ),
    "d4sub": lambda seed: _xgboost({"max_depth": 4, "seed": seed}, subsample=0.7),
    "d8sub": lambda seed: _xgboost(
        {"max_depth": 8, "min_rounds": 20, "seed": seed}, subsample=0.632
    ),
    "rf": lambda seed: _forest(seed, n_estimators=100),
    "rf50": lambda seed: _forest(seed, n_estimators=50),
    "rf50d10": lambda seed: _forest(seed, n_estimators=50, max_depth=10),
    "rf50d12": lambda seed: _forest(seed, n_estimators=50, max_depth=12),
    "rf100d12": lambda seed: _forest(seed, n_estimators=100, max_depth=12),
    # tiledseg's own grower (tiledseg.forest.PackedForest.grow) at the default size
    "forest": lambda seed: ForestClassifier(seed=seed),
}


def main() -> None:
    """Print one line per image and the means."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["cur", "rf"], choices=VARIANTS)
    parser.add_argument("--bank", default="wide-st")
    parser.add_argument(
        "--datasets", nargs="+", default=["superalloy-2d", "ilastik-3d", "nasa-super1"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args()
    bank = accuracy.resolve_bank(args.bank)
    scores: dict[str, list[float]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.zarr"
        for case in accuracy.load_cases(args.datasets):
            line = f"{case.dataset}/{case.name:24s}"
            for name in args.variants:
                started = time.perf_counter()
                values = []
                for seed in args.seeds:
                    model = tiledseg.train(
                        case.image,
                        case.scribbles,
                        features=bank,
                        classifier=VARIANTS[name](seed),
                        cache_dir=None,
                        seed=seed,
                    )
                    shutil.rmtree(out, ignore_errors=True)
                    tiledseg.predict(case.image, model, out=out)
                    values.append(tiledseg.evaluate(out, case.truth)["mean_iou"])
                scores[name].append(float(np.mean(values)))
                seconds = (time.perf_counter() - started) / len(args.seeds)
                line += f"  {name} {scores[name][-1]:.3f} ({seconds:.1f} s)"
            print(line, flush=True)
    for name, values in scores.items():
        print(f"mean {name}: {np.mean(values):.4f}")


if __name__ == "__main__":
    main()
