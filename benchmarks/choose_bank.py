"""Compare candidate default banks on a phantom and on the superalloy SEM image.

Usage: python benchmarks/choose_bank.py [--size 192]

Trains XGBoost (at most 20 rounds) with each bank, predicts, and prints the mean IoU
against dense truth. The superalloy image is read from ../shared/data when present.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import tiledseg
from tiledseg.classifiers import XGBoostClassifier
from tiledseg.testing import make_phantom

BASE = {
    "gaussian_smoothing": [0.7, 1.6, 3.5],
    "laplacian_of_gaussian": [1.6, 3.5],
    "gaussian_gradient_magnitude": [1.6, 3.5],
    "difference_of_gaussians": [1.6, 3.5],
    "structure_tensor_eigenvalues": [1.6],
    "hessian_of_gaussian_eigenvalues": [1.6, 3.5],
}
CANDIDATES = {
    "default": BASE,
    "+smoothing 5": {**BASE, "gaussian_smoothing": [0.7, 1.6, 3.5, 5.0]},
    "+smoothing 5, 10": {**BASE, "gaussian_smoothing": [0.7, 1.6, 3.5, 5.0, 10.0]},
    "+smoothing 5, tensor 3.5": {
        **BASE,
        "gaussian_smoothing": [0.7, 1.6, 3.5, 5.0],
        "structure_tensor_eigenvalues": [1.6, 3.5],
    },
    "lean, wide smoothing": {
        "gaussian_smoothing": [0.7, 1.6, 3.5, 5.0, 10.0],
        "gaussian_gradient_magnitude": [1.6, 3.5],
        "difference_of_gaussians": [1.6, 3.5],
        "structure_tensor_eigenvalues": [1.6],
        "hessian_of_gaussian_eigenvalues": [1.6],
    },
}
SUPERALLOY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "superalloy-2d"


def score(image, scribbles, truth, bank, out: Path, *, classifier) -> float:
    """Train, predict into ``out`` and return the mean IoU."""
    model = tiledseg.train(image, scribbles, features=bank, classifier=classifier, cache_dir=None)
    shutil.rmtree(out, ignore_errors=True)
    tiledseg.predict(image, model, out=out)
    return tiledseg.evaluate(out, truth)["mean_iou"]


def main() -> None:
    """Print the mean IoU of every candidate bank."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=192)
    args = parser.parse_args()
    phantom = make_phantom((args.size,) * 3, seed=0)
    data = {"phantom": (phantom.image, phantom.scribbles, phantom.truth)}
    if SUPERALLOY.is_dir():
        import tifffile

        data["superalloy"] = tuple(
            tifffile.imread(SUPERALLOY / f"{n}.tif") for n in ("image", "scribbles", "ground_truth")
        )
    with tempfile.TemporaryDirectory() as tmp:
        print("| bank | " + " | ".join(data) + " |")
        for name, bank in CANDIDATES.items():
            scores = [
                score(
                    *arrays,
                    bank,
                    Path(tmp) / "out.zarr",
                    classifier=XGBoostClassifier(max_rounds=20),
                )
                for arrays in data.values()
            ]
            print(f"| {name} | " + " | ".join(f"{s:.4f}" for s in scores) + " |", flush=True)


if __name__ == "__main__":
    main()
