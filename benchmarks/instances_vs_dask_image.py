"""Objects: tiledseg instances against dask-image's ndmeasure.label, same volume and chunks.

A blobby two-class volume (Gaussian-smoothed noise, thresholded: objects of every size,
many crossing chunk borders) is stored as a tiledseg prediction (zarr, chunks of 64^3).
tiledseg labels class 2's objects with 26-connectivity (`tiledseg.instances`, threads);
dask-image labels the same voxels with the same structure over the same chunks
(`dask_image.ndmeasure.label`, written to zarr by dask's threaded scheduler). Each runs in
its own process, which reports its seconds and peak resident memory; the two labellings
are checked to be the same partition. Prints Mvox/s, peak memory and the ratios.

    .venv/bin/pip install dask-image
    .venv/bin/python benchmarks/instances_vs_dask_image.py [--sizes 256 512] [--chunk 64]
        [--only tiledseg|dask-image]
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


def _volume(path: Path, size: int, chunk: int) -> None:
    """Write the blobby prediction (classes 1 and 2) in slabs, never whole in memory at once."""
    import zarr
    from scipy.ndimage import gaussian_filter

    from tiledseg.runs import create_output, mark_complete

    shape = (size,) * 3
    create_output(
        path, shape=shape, block=(chunk,) * 3, spacing=(1.0,) * 3, label_dtype=np.uint8,
        classes=[1, 2], probabilities=False, uncertainty=False, provenance={},
        overwrite=False, levels=0,
    )  # fmt: skip
    labels = zarr.open_array(f"{path}/labels/0", mode="r+")
    rng = np.random.default_rng(0)
    halo = 12
    noise = rng.standard_normal((size + 2 * halo, size, size), dtype=np.float32)
    for start in range(0, size, chunk):
        stop = min(size, start + chunk)
        slab = gaussian_filter(noise[start : stop + 2 * halo], 3.0, mode="wrap")[halo:-halo]
        labels[start:stop] = np.where(slab > 0.06, 2, 1).astype(np.uint8)
    mark_complete(path)


def _run_tiledseg(pred: str, out: str, chunk: int) -> dict:
    import tiledseg

    started = time.perf_counter()
    result = tiledseg.instances(
        pred, out=out, classes=2, block=chunk, quiet=True, table="none", connectivity=26
    )
    return {"seconds": time.perf_counter() - started, "objects": result.objects}


def _run_dask_image(pred: str, out: str, chunk: int) -> dict:
    import dask
    import dask.array as da
    from dask_image import ndmeasure

    started = time.perf_counter()
    labels = da.from_zarr(f"{pred}/labels/0")
    objects, n = ndmeasure.label(labels == 2, structure=np.ones((3, 3, 3), bool))
    with dask.config.set(scheduler="threads"):
        # the labels and their count in one computation (the count alone would label again)
        stored = da.to_zarr(objects.rechunk(chunk), out, overwrite=True, compute=False)
        count = int(dask.compute(stored, n)[1])
    return {"seconds": time.perf_counter() - started, "objects": count}


def _child(which: str, pred: str, out: str, chunk: int) -> None:
    run = _run_tiledseg if which == "tiledseg" else _run_dask_image
    result = run(pred, out, chunk)
    # (VmHWM: a child's ru_maxrss also holds its parent's peak at the fork, _bench.py)
    result["peak_gib"] = peak_rss_bytes() / 2**30
    print(json.dumps(result))


def _same_partition(a_path: str, b_path: str) -> bool:
    """Whether two labellings have the same objects (up to their numbers), slab by slab."""
    import zarr

    a, b = zarr.open_array(a_path, mode="r"), zarr.open_array(b_path, mode="r")
    pairs = set()
    for start in range(0, a.shape[0], 32):
        x, y = a[start : start + 32].ravel(), b[start : start + 32].ravel()
        if not np.array_equal(x > 0, y > 0):
            return False
        pairs |= set(zip(x[x > 0].tolist(), y[y > 0].tolist(), strict=True))
    left, right = {p[0] for p in pairs}, {p[1] for p in pairs}
    return len(pairs) == len(left) == len(right)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--only", nargs="+", choices=["tiledseg", "dask-image"])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, pred, out, chunk = args.child
        _child(which, pred, out, int(chunk))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            pred = Path(tmp) / f"pred{size}.zarr"
            _volume(pred, size, args.chunk)
            found = {}
            for which in args.only or ("tiledseg", "dask-image"):
                out = str(Path(tmp) / f"{which}{size}.zarr")
                cmd = [sys.executable, __file__, "--child", which, str(pred), out, str(args.chunk)]
                started = time.perf_counter()
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:  # (dask-image at 512^3 here: killed for memory)
                    print(
                        f"{size}^3 {which}: died after {time.perf_counter() - started:.0f} s "
                        f"(exit {done.returncode}): {done.stderr.strip()[-300:]}",
                        flush=True,
                    )
                    continue
                found[which] = json.loads(done.stdout.strip().splitlines()[-1])
                found[which]["out"] = out if which == "dask-image" else f"{out}/labels/0"
                r = found[which]
                print(
                    f"{size}^3, chunks {args.chunk}^3 ({-((-size // args.chunk) ** 3)} chunks), "
                    f"{which}: {r['objects']} objects, {r['seconds']:.1f} s, "
                    f"{size**3 / 1e6 / r['seconds']:.1f} Mvox/s, peak {r['peak_gib']:.2f} GiB",
                    flush=True,
                )
            if len(found) == 2:
                t, d = found["tiledseg"], found["dask-image"]
                same = _same_partition(t["out"], d["out"])
                print(
                    f"  same partition: {same}; tiledseg {d['seconds'] / t['seconds']:.2f}x the "
                    f"speed, {d['peak_gib'] / t['peak_gib']:.2f}x less memory",
                    flush=True,
                )


if __name__ == "__main__":
    main()
