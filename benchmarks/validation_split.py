"""Held-out voxels drawn from the training strokes against whole held-out strokes.

Usage: python benchmarks/validation_split.py [--phantom 128] [--nasa N] [--json PATH]

XGBoost's early stopping and the held-out accuracy printed after training depend
on which scribbled voxels are held out. This trains the default model twice on the
same scribbles: once holding out voxels drawn per class from the same strokes it
trains on (tiledseg before issue 14), once holding out whole strokes (now), and
prints for each the rounds chosen, the held-out accuracy, the mIoU against dense
truth and the seconds ``predict`` took (more rounds cost prediction time).

Data: the superalloy SEM image and the nasa-super1 images from ../shared/data when
present, and a 3D phantom with strokes (``tiledseg.testing.make_phantom``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import tiledseg
from tiledseg.classifiers import XGBoostClassifier
from tiledseg.testing import make_phantom

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class VoxelSplit(XGBoostClassifier):
    """XGBoost as before strokes: held-out voxels drawn per class, whatever it is given."""

    def fit(self, X, y, *, n_threads, device="cpu", held_out=None):  # noqa: D102
        return super().fit(X, y, n_threads=n_threads, device=device, held_out=None)


def datasets(args: argparse.Namespace) -> dict[str, tuple[Any, Any, Any]]:
    """Name -> (image, scribbles, truth)."""
    import tifffile

    out = {}
    alloy = DATA / "superalloy-2d"
    if alloy.is_dir():
        out["superalloy-2d"] = tuple(
            tifffile.imread(alloy / f) for f in ("image.tif", "scribbles.tif", "ground_truth.tif")
        )
    nasa = sorted((DATA / "nasa-super1" / "val").glob("*_image.tif"))[: args.nasa]
    for path in nasa:
        stem = path.name[: -len("_image.tif")]
        out[f"nasa/{stem}"] = tuple(
            tifffile.imread(path.with_name(f"{stem}_{kind}.tif"))
            for kind in ("image", "scribbles", "truth")
        )
    if args.phantom:
        ph = make_phantom((args.phantom,) * 3, n_classes=4, scribbles="strokes", seed=0)
        out[f"phantom {args.phantom}^3 strokes"] = (ph.image, ph.scribbles, ph.truth)
    return out


def run(image, scribbles, truth, classifier, folder: Path) -> dict[str, Any]:
    """Train, predict, score."""
    started = time.perf_counter()
    model = tiledseg.train(image, scribbles, classifier=classifier, cache_dir=None)
    trained = time.perf_counter()
    out = folder / "out.zarr"
    shutil.rmtree(out, ignore_errors=True)
    tiledseg.predict(image, model, out=out)
    predicted = time.perf_counter()
    scores = tiledseg.evaluate(out, truth)
    return {
        "rounds": model.summary.get("rounds"),
        "held_out_accuracy": model.summary.get("held_out_accuracy"),
        "held_out_voxels": model.summary.get("held_out_voxels"),
        "mean_iou": scores["mean_iou"],
        "train_seconds": trained - started,
        "predict_seconds": predicted - trained,
    }


def main() -> None:
    """Print the table and optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phantom", type=int, default=128, help="3D phantom edge (0: none)")
    parser.add_argument("--nasa", type=int, default=4, help="nasa-super1 val images to use")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (image, scribbles, truth) in datasets(args).items():
            rows[name] = {
                "voxels": run(image, scribbles, truth, VoxelSplit(), Path(tmp)),
                "strokes": run(image, scribbles, truth, "xgboost", Path(tmp)),
            }
            for how, r in rows[name].items():
                print(
                    f"{name:32s} {how:8s} rounds {r['rounds']:3d}  held-out acc "
                    f"{r['held_out_accuracy']:.3f} ({r['held_out_voxels']} vox)  mIoU "
                    f"{r['mean_iou']:.4f}  train {r['train_seconds']:.1f} s  predict "
                    f"{r['predict_seconds']:.1f} s",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    for how in ("voxels", "strokes"):
        mean = np.mean([r[how]["mean_iou"] for r in rows.values()])
        rounds = np.mean([r[how]["rounds"] for r in rows.values()])
        print(f"mean over data sets, {how}: mIoU {mean:.4f}, rounds {rounds:.1f}")


if __name__ == "__main__":
    main()
