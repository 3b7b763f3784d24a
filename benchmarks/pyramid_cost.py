"""What the multiscale levels cost a prediction: --pyramid none against levels, alternated.

A 2D phantom of 2048^2 (auto: 3 levels, 1024^2 to 256^2) and a 3D one of 256^3 (2 levels
asked), each predicted with the default bank into a zarr output, with and without levels,
runs alternated on one machine. Prints the seconds of each run and the median ratio.

    .venv/bin/python benchmarks/pyramid_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import tiledseg
from tiledseg.testing import make_phantom

CASES = {"2D 2048^2": ((2048, 2048), "auto"), "3D 256^3": ((256, 256, 256), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (shape, levels) in CASES.items():
            ph = make_phantom(shape, n_classes=3, seed=0, scribble_fraction=0.001)
            model = tiledseg.train(ph.image, ph.scribbles, cache_dir=None, quiet=True)
            times: dict[str, list[float]] = {"none": [], str(levels): []}
            for _ in range(args.repeats):
                for pyramid in times:
                    started = time.perf_counter()
                    result = tiledseg.predict(
                        ph.image, model, out=work / f"{pyramid}.zarr", pyramid=pyramid,
                        overwrite=True, quiet=True,
                    )  # fmt: skip
                    times[pyramid].append(time.perf_counter() - started)
            with_levels = statistics.median(times[str(levels)])
            without = statistics.median(times["none"])
            print(
                f"{name}: --pyramid none {', '.join(f'{t:.2f}' for t in times['none'])} s; "
                f"--pyramid {levels} {', '.join(f'{t:.2f}' for t in times[str(levels)])} s; "
                f"median ratio {with_levels / without:.3f} ({result.blocks} blocks)"
            )


if __name__ == "__main__":
    main()
