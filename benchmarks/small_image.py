"""A small 2D image end to end, as a user runs it: ``tiledseg segment`` against scikit-image.

Each run is a fresh process timed from its start (imports included) to its labels on disk:

- ``tiledseg``: ``tiledseg segment CONFIG.yaml --overwrite --quiet`` (train on the scribbles,
  write the model, predict every pixel, write OME-Zarr), defaults otherwise, with an empty
  training-table cache each run (numba's compiled kernels are cached from the first run
  after installation, as for a user);
- ``skimage``: a script with scikit-image's trainable segmentation at its defaults
  (``multiscale_basic_features`` + ``fit_segmenter`` with a 50-tree forest of depth 10 on
  2 cores + ``predict_segmenter``), writing the labels as a TIFF.

The two alternate, ``--repeats`` times each, and the medians are compared. Images:
superalloy-2d and one nasa-super1 image from ../shared/data (skipped when absent).

    python benchmarks/small_image.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAGES = {
    "superalloy-2d": (
        DATA / "superalloy-2d" / "image.tif",
        DATA / "superalloy-2d" / "scribbles.tif",
    ),
    "nasa-super1 spot3_0d_3": (
        DATA / "nasa-super1" / "train" / "spot3_0d_3_image.tif",
        DATA / "nasa-super1" / "train" / "spot3_0d_3_scribbles.tif",
    ),
}

SKIMAGE_SCRIPT = """
import sys
import numpy as np, tifffile
from skimage.feature import multiscale_basic_features
from skimage.future import fit_segmenter, predict_segmenter
from sklearn.ensemble import RandomForestClassifier
image, scribbles = tifffile.imread(sys.argv[1]), tifffile.imread(sys.argv[2])
features = multiscale_basic_features(image, channel_axis=None)
forest = RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=2, random_state=0)
labels = predict_segmenter(features, fit_segmenter(scribbles, features, forest))
tifffile.imwrite(sys.argv[3], labels.astype(np.uint8))
"""


def _timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    tiledseg = str(Path(sys.executable).with_name("tiledseg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "skimage_pipeline.py"
        script.write_text(SKIMAGE_SCRIPT)
        for name, (image, scribbles) in IMAGES.items():
            if not image.is_file():
                print(f"{name}: {image} is absent, skipped")
                continue
            config = work / "segment.yaml"
            config.write_text(
                f"image: {image}\nlabels: {scribbles}\nmodel: {work / 'm.tsm'}\n"
                f"out: {work / 'out.zarr'}\n"
            )
            ours, theirs = [], []
            for i in range(args.repeats):
                # an empty training-table cache each time: every run is a first run
                env = {**os.environ, "TILEDSEG_CACHE_DIR": str(work / f"cache-{name}-{i}")}
                command = [tiledseg, "segment", str(config), "--overwrite", "--quiet"]
                ours.append(_timed(command, env))
                theirs.append(
                    _timed(
                        [
                            sys.executable,
                            str(script),
                            str(image),
                            str(scribbles),
                            str(work / "sk.tif"),
                        ]
                    )
                )
            a, b = statistics.median(ours), statistics.median(theirs)
            rows.append((name, a, b))
            print(
                f"{name}: tiledseg segment {a:.2f} s, scikit-image {b:.2f} s "
                f"(runs: {', '.join(f'{t:.2f}' for t in ours)} / "
                f"{', '.join(f'{t:.2f}' for t in theirs)})",
                flush=True,
            )
    print("\n| image | tiledseg segment s | scikit-image s | ratio (>1: tiledseg faster) |")
    print("|---|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
