"""Touching objects split: tiledseg instances --split distance against whole-volume splits.

A volume of touching balls (pairs of balls that share a neck, each pair apart from the
others; ``tiledseg.testing.objects.touching_balls``) is stored as a tiledseg prediction in
chunks of 64^3. Three splits of it, each in its own process reporting seconds and peak
resident memory:

- ``tiledseg``: ``tiledseg.instances(..., split="distance")``, blockwise, threads;
- ``whole``: the same definition on the whole volume at once (scipy and scikit-image,
  ``tiledseg.testing.objects.whole_volume_split``), to measure the blockwise agreement;
- ``skimage``: scikit-image's own recipe on the whole volume, as its gallery shows it
  (``scipy.ndimage.distance_transform_edt`` with the spacing, ``peak_local_max`` with
  ``min_distance`` R/2 in voxels of the finest axis, ``watershed`` of the negated
  distance).

Accuracy is counted against the balls: a ball is found when the object at its centre is
no other ball's and fills the ball's core (the 5^3 box around the centre). Prints
objects, balls found, seconds, Mvox/s, peak memory, agreement with ``whole`` and the
ratios.

    .venv/bin/python benchmarks/split_vs_whole_volume.py [--size 256] [--radius 9]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import peak_rss_bytes

SPACING = (1.0, 1.0, 1.0)


def _volume(path: Path, size: int, chunk: int, pairs: int) -> np.ndarray:
    """Write the balls as a prediction; return their centres (in voxels)."""
    import zarr

    from tiledseg.runs import create_output, mark_complete
    from tiledseg.testing.objects import touching_balls

    labels, centres = touching_balls((size,) * 3, SPACING, pairs, seed=0, radii=(5.0, 9.0))
    create_output(
        path, shape=labels.shape, block=(chunk,) * 3, spacing=SPACING, label_dtype=np.uint8,
        classes=[1, 2], probabilities=False, uncertainty=False, provenance={},
        overwrite=False, levels=0,
    )  # fmt: skip
    zarr.open_array(f"{path}/labels/0", mode="r+")[...] = labels
    mark_complete(path)
    return centres / np.asarray(SPACING)


def _run(which: str, pred: str, out: str, chunk: int, radius: float) -> dict:
    import zarr

    started = time.perf_counter()
    if which == "tiledseg":
        import tiledseg

        result = tiledseg.instances(
            pred, out=out, classes=2, block=chunk, quiet=True, table="none",
            split="distance", split_radius=radius,
        )  # fmt: skip
        return {"seconds": time.perf_counter() - started, "objects": result.objects}
    values = (zarr.open_array(f"{pred}/labels/0", mode="r")[...] == 2).astype(np.uint16)
    if which == "whole":
        from tiledseg.testing.objects import whole_volume_split

        objects = whole_volume_split(values, SPACING, radius, 26)
    else:
        from scipy.ndimage import distance_transform_edt
        from skimage.feature import peak_local_max
        from skimage.measure import label
        from skimage.segmentation import watershed

        distance = distance_transform_edt(values, sampling=SPACING)
        mask = values > 0
        peaks = peak_local_max(
            distance, min_distance=max(1, int(radius / 2 / min(SPACING))), labels=label(mask)
        )
        markers = np.zeros(values.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        objects = watershed(-distance, markers, mask=mask)
    seconds = time.perf_counter() - started
    zarr.save_array(out, objects.astype(np.uint32))
    return {"seconds": seconds, "objects": int(len(np.unique(objects)) - 1)}


def _balls_found(objects: np.ndarray, centres: np.ndarray, size: int) -> int:
    """Count the balls whose centre's object is no other ball's and fills the ball's core.

    The core is the 5^3 box around the centre, inside every ball (radius 5 or more).
    """
    at = np.clip(np.round(centres).astype(int), 2, size - 3)
    ids = objects[tuple(at.T)]
    unique, counts = np.unique(ids, return_counts=True)
    alone = set(unique[(counts == 1) & (unique > 0)].tolist())
    found = 0
    for (z, y, x), i in zip(at, ids.tolist(), strict=True):
        core = objects[z - 2 : z + 3, y - 2 : y + 3, x - 2 : x + 3]
        found += bool(i in alone and (core == i).mean() >= 0.9)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--radius", type=float, default=9.0)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, pred, out, chunk, radius = args.child
        result = _run(which, pred, out, int(chunk), float(radius))
        result["peak_gib"] = peak_rss_bytes() / 2**30
        print(json.dumps(result))
        return
    import zarr

    with tempfile.TemporaryDirectory() as tmp:
        pred = Path(tmp) / "pred.zarr"
        pairs = int(args.size**3 * 0.08 / 1400)  # (about 8% of the volume in balls)
        centres = _volume(pred, args.size, args.chunk, pairs)
        print(f"{args.size}^3, {len(centres)} balls in {pairs} touching pairs, R {args.radius}")
        found = {}
        for which in ("tiledseg", "whole", "skimage"):
            out = str(Path(tmp) / f"{which}.zarr")
            cmd = [
                sys.executable, __file__, "--child", which, str(pred), out, str(args.chunk),
                str(args.radius),
            ]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = found[which] = json.loads(done.stdout.strip().splitlines()[-1])
            r["labels"] = zarr.open_array(
                f"{out}/labels/0" if which == "tiledseg" else out, mode="r"
            )[...]
            balls = _balls_found(r["labels"], centres, args.size)
            print(
                f"  {which:8s}: {r['objects']} objects, {balls}/{len(centres)} balls found, "
                f"{r['seconds']:.1f} s, {args.size**3 / 1e6 / r['seconds']:.1f} Mvox/s, "
                f"peak {r['peak_gib']:.2f} GiB",
                flush=True,
            )
        t, w, s = found["tiledseg"], found["whole"], found["skimage"]
        inside = w["labels"] > 0
        agree = float((t["labels"][inside] == w["labels"][inside]).mean())
        print(
            f"  tiledseg equals the whole-volume split on {100 * agree:.4f}% of object voxels; "
            f"speed {w['seconds'] / t['seconds']:.2f}x whole, {s['seconds'] / t['seconds']:.2f}x "
            f"skimage; memory {w['peak_gib'] / t['peak_gib']:.2f}x less than whole, "
            f"{s['peak_gib'] / t['peak_gib']:.2f}x less than skimage"
        )


if __name__ == "__main__":
    main()
