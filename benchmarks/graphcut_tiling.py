"""How closely the blockwise graph cut agrees with one whole-volume solve, per setting.

Noisy phantoms (noise 3x the phase step), a small bank (the one tests/test_smoothing.py
uses), XGBoost; each case predicts with ``--smooth graphcut`` once as a single block
and once in blocks, and prints the fraction of voxels that agree:

- the two test phantoms (3 classes, 2D 300x285 and 3D 62x60x64, blocks a third of the
  side);
- 4 classes, 48^3, blocks 16^3, seeds 1-3, at weights 2, 4 and 8, and at weight 4 run
  to convergence (``--smooth-iterations -1``).

    python benchmarks/graphcut_tiling.py [--json results/graphcut_tiling.json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import _bench

BANK = {
    "gaussian_smoothing": [0.7, 1.6],
    "gaussian_gradient_magnitude": [1.0],
    "difference_of_gaussians": [1.0],
}


def agreement(shape, classes, seed, block, *, weight=None, iterations=None) -> float:
    import numpy as np
    import zarr

    import tiledseg as ts
    from tiledseg.testing import make_phantom

    ph = make_phantom(shape, n_classes=classes, noise=3.0, scribbles="strokes", seed=seed)
    model = ts.train(ph.image, ph.scribbles, features=BANK, cache_dir=None)
    smooth = {"smooth": "graphcut", "smooth_weight": weight, "smooth_iterations": iterations}
    with tempfile.TemporaryDirectory() as tmp:
        ts.predict(ph.image, model, out=Path(tmp) / "whole.zarr", block=max(shape), **smooth)
        ts.predict(ph.image, model, out=Path(tmp) / "tiled.zarr", block=block, **smooth)
        whole = zarr.open_array(f"{tmp}/whole.zarr/labels/0")[...]
        tiled = zarr.open_array(f"{tmp}/tiled.zarr/labels/0")[...]
    return float(np.mean(whole == tiled))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=_bench.RESULTS / "graphcut_tiling.json")
    args = parser.parse_args(argv)
    cases = [
        ("3 classes, 2D 300x285", [((300, 285), 3, 4, (100, 95), {})]),
        ("3 classes, 3D 62x60x64", [((62, 60, 64), 3, 4, (21, 20, 22), {})]),
    ]
    for name, extra in [
        ("weight 2", {"weight": 2}),
        ("weight 4", {"weight": 4}),
        ("weight 8", {"weight": 8}),
        ("weight 4, converged", {"weight": 4, "iterations": -1}),
    ]:
        runs = [((48,) * 3, 4, seed, (16,) * 3, extra) for seed in (1, 2, 3)]
        cases.append((f"4 classes, 48^3, blocks 16^3, seeds 1-3, {name}", runs))
    rows, result = [], {"machine": _bench.machine_info(), "cases": {}}
    for name, runs in cases:
        found = [agreement(*run[:4], **run[4]) for run in runs]
        result["cases"][name] = found
        rows.append([name, " / ".join(f"{100 * a:.3f}%" for a in found)])
        print(f"{name}: {rows[-1][1]}", flush=True)
    print(_bench.format_table(["case", "voxels agreeing with the whole-volume solve"], rows))
    _bench.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
