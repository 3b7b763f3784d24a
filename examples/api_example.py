"""The Python API on in-memory arrays and zarr stores.

Usage: python examples/api_example.py OUTDIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import tiledseg
from tiledseg.testing import make_phantom


def main(out: Path) -> None:
    """Train on a phantom's scribbles, predict into a zarr group, score it."""
    out.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom((64, 96, 96), seed=1)
    model = tiledseg.train(
        phantom.image,
        phantom.scribbles,
        features="default",
        classifier="xgboost",
        spacing=(2.0, 1.0, 1.0),  # z is sampled twice as coarsely
    )
    model.save(out / "model.tseg", overwrite=True)
    result = tiledseg.predict(
        phantom.image, model, out=out / "prediction.zarr", uncertainty=True, overwrite=True
    )
    scores = tiledseg.evaluate(result.path, phantom.truth)
    print(f"{result.voxels_per_second / 1e6:.2f} Mvox/s, mean IoU {scores['mean_iou']:.3f}")
    # The features themselves, lazily: one chunk per processing block.
    features = tiledseg.feature_array(phantom.image, features="minimal", spacing=(2.0, 1.0, 1.0))
    print(f"feature stack {features.shape} in chunks {features.chunksize}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "example-output"))
