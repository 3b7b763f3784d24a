"""Choose the default bank: candidate banks against scikit-image, over seeds, with their 3D cost.

Runs ``accuracy.py``'s ``skimage`` and ``tiledseg[bank=B]`` (XGBoost unless
``--classifier``) for every candidate bank ``B`` on the 2D sets (superalloy-2d, the 14
nasa-super1 images, a 2D phantom) and the 3D ones (ilastik-3d, a 3D phantom), once
per seed in ``--seeds``: with a few hundred scribbled pixels per class, one seed moves
a single image's mIoU by a few hundredths, so the per-image numbers are means over seeds.

Then, per bank: features and halo per axis in 2D and 3D (``FeatureBank.halo``), and the
3D cost: ``block_features`` on one ``--block`` block (default 64x128x128) read with its
halo, one thread, best of ``--repeat``, in seconds per megavoxel of the block's own voxels.

Candidates are built-in names or ``benchmarks/banks/NAME.yaml``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/choose_bank.py --json benchmarks/results/choose_bank.json
    .venv/bin/python benchmarks/choose_bank.py --banks default wide-st --seeds 0 --cost-only
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import _bench
import accuracy
import numpy as np

CANDIDATES = (
    "default",
    "st-3.5",
    "wide-st",
    "wide-st14",
    "wide-st-gs",
    "skimage-like",
    "ilastik-full",
)
DATASETS_2D = ("superalloy-2d", "nasa-super1", "phantom-2d")
DATASETS_3D = ("ilastik-3d", "phantom-3d")


def bank_cost(bank: str, block: tuple[int, ...], repeat: int) -> dict[str, Any]:
    """Features, halos and the 3D seconds per megavoxel of ``bank`` on one thread.

    Parameters
    ----------
    bank : str
        A built-in bank or a ``benchmarks/banks`` name.
    block : tuple of int
        The 3D block's own shape (it is read with the bank's halo on every side).
    repeat : int
        Timed runs; the best is kept.

    Returns
    -------
    dict
        ``features_2d``, ``features_3d``, ``halo_2d``, ``halo_3d``, ``read_ratio`` (haloed
        voxels / own voxels), ``seconds`` and ``s_per_mvox`` of the 3D block.
    """
    from threadpoolctl import threadpool_limits

    from tiledseg.features import block_features
    from tiledseg.features.bank import resolve_bank

    fb = resolve_bank(accuracy.resolve_bank(bank))
    halo = fb.halo((1.0, 1.0, 1.0))
    rng = np.random.default_rng(0)
    haloed = rng.random((1, *(b + 2 * h for b, h in zip(block, halo, strict=True))), np.float32)
    inner = tuple(slice(h, h + b) for b, h in zip(block, halo, strict=True))
    best = float("inf")
    with threadpool_limits(1):
        for _ in range(repeat):
            start = time.perf_counter()
            block_features(haloed, bank=fb, inner=inner)
            best = min(best, time.perf_counter() - start)
    own = float(np.prod(block))
    return {
        "features_2d": fb.n_features(ndim=2, n_channels=1),
        "features_3d": fb.n_features(ndim=3, n_channels=1),
        "halo_2d": list(fb.halo((1.0, 1.0))),
        "halo_3d": list(halo),
        "read_ratio": haloed[0].size / own,
        "seconds": best,
        "s_per_mvox": best / (own / 1e6),
    }


def study(cases: list, banks: list[str], seeds: list[int], classifier: str) -> list[dict]:
    """Rows of :func:`accuracy.run` for scikit-image and every bank, for every seed."""
    methods = ["skimage"] + [f"tiledseg[bank={b},classifier={classifier}]" for b in banks]
    rows = []
    for seed in seeds:
        for row in accuracy.run(cases, methods, seed=seed, show=False):
            rows.append({**row, "seed": seed})
        print(f"seed {seed} done", flush=True)
    return rows


def summary(rows: list[dict], banks: list[str], classifier: str) -> tuple[str, str, dict]:
    """Per-image table (mean mIoU over seeds) and per-bank summary, both Markdown."""
    method = {b: f"tiledseg[bank={b},classifier={classifier}]" for b in banks}
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, list[float]] = defaultdict(list)
    names = []
    for r in rows:
        case = f"{r['dataset']} {r['case']}"
        if case not in names:
            names.append(case)
        if r["status"] == "ok":
            scores[r["method"]][case].append(r["mean_iou"])
            seconds[r["method"]].append(r["seconds"])
    mean = {m: {c: float(np.mean(v)) for c, v in d.items()} for m, d in scores.items()}
    sk = mean.get("skimage", {})
    per_image = []
    for case in names:
        cells = [case, f"{sk.get(case, float('nan')):.3f}"]
        cells += [
            f"{mean[method[b]].get(case, float('nan')) - sk.get(case, 0):+.3f}" for b in banks
        ]
        per_image.append(cells)
    table = _bench.format_table(["image", "skimage mIoU", *[f"Δ {b}" for b in banks]], per_image)
    agg = {}
    for b in [None, *banks]:
        m = "skimage" if b is None else method[b]
        d2 = [mean[m][c] - sk[c] for c in names if not c.startswith(("ilastik-3d", "phantom-3d"))]
        agg["skimage" if b is None else b] = {
            "mean_miou_2d": float(
                np.mean([mean[m][c] for c in names if c in sk and "3d" not in c])
            ),
            "mean_delta_2d": float(np.mean(d2)),
            "min_delta_2d": float(np.min(d2)),
            "images_at_least_skimage_2d": int(sum(x >= 0 for x in d2)),
            "images_2d": len(d2),
            "mean_seconds": float(np.mean(seconds[m])),
            "per_case": mean[m],
        }
    head = ["bank", "mean mIoU 2D", "mean Δ 2D", "worst Δ 2D", "≥ skimage", "s per image"]
    head += [c for c in names if "3d" in c]
    lines = []
    for b, a in agg.items():
        cells = [b, f"{a['mean_miou_2d']:.3f}", f"{a['mean_delta_2d']:+.3f}"]
        cells += [
            f"{a['min_delta_2d']:+.3f}",
            f"{a['images_at_least_skimage_2d']}/{a['images_2d']}",
        ]
        cells += [f"{a['mean_seconds']:.2f}"]
        cells += [f"{a['per_case'].get(c, float('nan')):.3f}" for c in head[6:]]
        lines.append(cells)
    return table, _bench.format_table(head, lines), agg


def main(argv: list[str] | None = None) -> None:
    """Run the study, print its tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--classifier", default="xgboost", choices=["xgboost", "random-forest"])
    parser.add_argument("--datasets", nargs="+", default=[*DATASETS_2D, *DATASETS_3D])
    parser.add_argument("--phantom-3d", type=int, default=96)
    parser.add_argument("--block", type=int, nargs=3, default=[64, 128, 128])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cost-only", action="store_true", help="only the 3D cost table")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    record: dict[str, Any] = {"machine": _bench.machine_info(), "args": vars(args)}

    if not args.cost_only:
        cases = accuracy.load_cases(args.datasets, phantom_3d=args.phantom_3d)
        rows = study(cases, args.banks, args.seeds, args.classifier)
        per_image, banks_table, agg = summary(rows, args.banks, args.classifier)
        print(f"\nmIoU, mean over seeds {args.seeds}; Δ = bank - skimage\n\n{per_image}")
        print(f"\n{banks_table}")
        record.update(rows=rows, summary=agg)

    cost = {b: bank_cost(b, tuple(args.block), args.repeat) for b in args.banks}
    base = cost.get("default", {}).get("s_per_mvox")
    head = ["bank", "features 2D", "features 3D", "halo 2D", "halo 3D", "read / own"]
    head += ["s per block", "s/Mvox", "× default"]
    lines = [
        [b, c["features_2d"], c["features_3d"], c["halo_2d"][0], c["halo_3d"][0]]
        + [f"{c['read_ratio']:.2f}", f"{c['seconds']:.2f}", f"{c['s_per_mvox']:.2f}"]
        + [f"{c['s_per_mvox'] / base:.2f}" if base else ""]
        for b, c in cost.items()
    ]
    print(f"\n3D cost: block {'x'.join(map(str, args.block))}, one thread, best of {args.repeat}")
    print(_bench.format_table(head, lines))
    record["cost_3d"] = cost
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1, default=str))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
