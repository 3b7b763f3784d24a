"""Seconds per megavoxel of each feature family at one scale, single thread.

Each family alone is computed on one block of ``--shape`` voxels per side, read with
the halo the family needs (random float32 data), by :func:`tiledseg.block_features`:
the feature kernel only, no I/O, no classifier. The time is the best of ``--repeat``
runs and is divided by the block's own voxels (not the halo's).

Usage (from the repository root)::

    .venv/bin/python benchmarks/feature_cost.py                    # 128^3, scale 1.6, gabor 4
    .venv/bin/python benchmarks/feature_cost.py --shape 64 --families sobel median
    .venv/bin/python benchmarks/feature_cost.py --scale 3.5 --gabor-wavelength 8 --json out.json
    .venv/bin/python benchmarks/feature_cost.py --in-2d     # also each family per plane
"""

from __future__ import annotations

import os

# single thread: set before numpy/scipy are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from tiledseg.features import FAMILIES, FeatureBank, block_features  # noqa: E402


def measure(
    family: str, scale: float, side: int, repeat: int, seed: int = 0, in_2d: bool = False
) -> dict:
    """Time one family at one scale on a ``side``^3 block read with its halo
    (``in_2d``: computed on each plane, ilastik's "compute in 2D")."""
    bank = FeatureBank({family: [scale]}, in_2d=[family] if in_2d else ())
    halo = bank.halo((1.0, 1.0, 1.0))
    rng = np.random.default_rng(seed)
    haloed = rng.random((1, *(side + 2 * h for h in halo)), dtype=np.float32)
    inner = tuple(slice(h, h + side) for h in halo)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = block_features(haloed, bank=bank, inner=inner)
        best = min(best, time.perf_counter() - start)
    mvox = side**3 / 1e6
    return {
        "family": family,
        "in_2d": in_2d,
        "scale": scale,
        "features": int(out.shape[0]),
        "halo": list(halo),
        "seconds": best,
        "s_per_mvox": best / mvox,
        "s_per_mvox_per_feature": best / mvox / out.shape[0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=128, help="block side (default 128)")
    parser.add_argument("--scale", type=float, default=1.6, help="sigma or radius (default 1.6)")
    parser.add_argument(
        "--gabor-wavelength", type=float, default=4.0, help="gabor's scale (default 4)"
    )
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--repeat", type=int, default=3, help="runs per family; best is kept")
    parser.add_argument(
        "--in-2d", action="store_true", help="also time each family computed per plane"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    # warm up (imports, backend, first-call costs) outside the timed runs
    for family in args.families:
        measure(family, args.gabor_wavelength if family == "gabor" else args.scale, 8, 1)
    print(f"block {args.shape}^3, single thread, best of {args.repeat}")
    print(f"{'family':34} {'scale':>6} {'feat':>4} {'halo':>5} {'s':>8} {'s/Mvox':>8}")
    rows = []
    for family in args.families:
        scale = args.gabor_wavelength if family == "gabor" else args.scale
        for planar in (False, True) if args.in_2d else (False,):
            row = measure(family, scale, args.shape, args.repeat, in_2d=planar)
            rows.append(row)
            name = family + (" (in 2D)" if planar else "")
            print(
                f"{name:34} {scale:6g} {row['features']:4d} {max(row['halo']):5d} "
                f"{row['seconds']:8.3f} {row['s_per_mvox']:8.3f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"shape": args.shape, "results": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
