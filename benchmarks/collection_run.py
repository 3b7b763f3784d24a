"""A collection of 2D images predicted in one run against one run per image.

50 phantoms of 512^2 (tiledseg.testing.make_phantom), one model trained on another one;
`tiledseg predict IMG... --out-dir` once against `tiledseg predict IMG --out` per image,
each as a command (a new process, as a user or a job script runs it), and the same in
Python (one call against a call per image). Prints the seconds and the throughput ratio.

    .venv/bin/python benchmarks/collection_run.py [--images 50] [--size 512]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tiledseg
from tiledseg.testing import make_phantom


def _timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "tiledseg.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shape = (args.size, args.size)
        ph = make_phantom(shape, n_classes=3, seed=0, scribble_fraction=0.002)
        model = tiledseg.train(ph.image, ph.scribbles, cache_dir=None).save(work / "m.tseg")
        images = []
        for i in range(args.images):
            images.append(str(work / f"img{i:03d}.npy"))
            np.save(images[-1], make_phantom(shape, n_classes=3, seed=i + 1).image)
        for name in ("one", "each", "py-one", "py-each"):
            (work / name).mkdir()
        quiet = ["--quiet", "--model", str(model)]
        one = _timed(
            lambda: subprocess.run(
                [*cli, "predict", *images, *quiet, "--out-dir", str(work / "one")], check=True
            )
        )  # noqa: E501
        each = _timed(
            lambda: [
                subprocess.run(
                    [*cli, "predict", image, *quiet, "--out", str(work / "each" / f"{i}.zarr")],
                    check=True,
                )
                for i, image in enumerate(images)
            ]
        )
        loaded = tiledseg.load_model(model)
        py_one = _timed(
            lambda: tiledseg.predict_collection(images, loaded, out_dir=work / "py-one")
        )
        py_each = _timed(
            lambda: [
                tiledseg.predict(image, loaded, out=work / "py-each" / f"{i}.zarr")
                for i, image in enumerate(images)
            ]
        )
    print(f"{args.images} images of {args.size}^2")
    print("| | one run | a run per image | ratio |")
    print("|---|---|---|---|")
    print(f"| command | {one:.1f} s | {each:.1f} s | {each / one:.2f}x |")
    print(f"| Python | {py_one:.1f} s | {py_each:.1f} s | {py_each / py_one:.2f}x |")


if __name__ == "__main__":
    main()
