"""The napari plugin's live preview: seconds to predict the plane being shown.

What the widget runs in its worker thread after a training and on each change of plane
(``tiledseg.napari.session.Session.preview``): one 1024^2 2D image, and one 1024^2 plane
of a 3D volume (its features read with the model's halo along z), after training on a
phantom's scribbles with the default banks (``default-2d`` and ``default``), a random
forest. Threads: all cores. Prints the median of repeated previews. Qt is not involved:
the widget adds only the swap of the layer's data.

    .venv/bin/python benchmarks/napari_preview.py [--size 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from tiledseg.napari.session import Session
from tiledseg.testing import make_phantom


def _median_preview(session: Session, image: np.ndarray, plane: int | None, repeats: int):
    session.preview(image, plane=plane)  # (warm: compiled kernels, caches)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.preview(image, plane=plane)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), min(seconds), max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores")
    for shape, bank in (
        ((args.size,) * 2, "default-2d"),
        ((args.depth, args.size, args.size), "default"),
    ):
        ph = make_phantom(shape, n_classes=3, scribble_fraction=0.002, seed=0)
        session = Session()
        started = time.perf_counter()
        session.train(ph.image, ph.scribbles, features=bank)
        trained = time.perf_counter() - started
        plane = None if len(shape) == 2 else shape[0] // 2
        median, low, high = _median_preview(session, ph.image, plane, args.repeats)
        what = "2D image" if plane is None else f"plane {plane} of a {shape} volume"
        print(
            f"{args.size}^2 {what}, bank {bank}: preview median {median:.3f} s "
            f"(min {low:.3f}, max {high:.3f}; training took {trained:.1f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
