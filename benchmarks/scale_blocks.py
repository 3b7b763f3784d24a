"""Scheduling at scale: ``tiledseg.predict`` on a LocalCluster over 10^3 .. 10^5 tiny blocks.

The image is 2D, ``16*rows x 16*cols`` pixels (uint8, a tiled phantom stored as zarr with
256^2 chunks), cut into 16x16 blocks (the ``minimal`` bank's halo is 12, so a block
reads 40x40): the per-block compute is a few milliseconds and what grows with the
number of blocks is the driver's and the scheduler's bookkeeping. Steps, each in its
own fresh child process (``_bench.run_child``):

1. train once, ``features="minimal"``, on a 64x64 phantom's scribbles; save the model;
2. for each block count: write the image (``rows x cols`` blocks, ``rows * cols`` =
   the count);
3. for each block count and ``--modes``:

   - ``predict``: ``tiledseg.predict(IMAGE.zarr, MODEL, out=..., block=16, workers=2)``
     (a LocalCluster of 2 single-threaded worker processes; its scheduler runs in the
     measured process, so the driver's memory includes the scheduler's), timed whole;
   - ``map``: scheduling alone. ``Executor.map`` on the same kind of LocalCluster over
     the same items ``predict`` submits (the volume, the block, the model, ...) with a
     function that returns at once; the cluster's start is not timed.

Reported per run: blocks, wall seconds, the process's RSS before the timed part, its
peak during it (``VmHWM`` reset through ``/proc/self/clear_refs`` when the kernel allows,
else the process's peak), the increase, seconds per block, the marginal seconds per
block between consecutive counts (which leaves out fixed costs such as the cluster's
start) and the process's CPU seconds per block (the client's and the scheduler's work;
the workers are other processes). Other processes sharing the cores make the seconds
noisy ("others' cores"); the CPU seconds less so.

    python benchmarks/scale_blocks.py [--blocks 1000 10000 100000] [--modes predict map]
        [--json benchmarks/results/scale_blocks.json]
    python benchmarks/scale_blocks.py --blocks 1000000 --modes map     # simulate 10^6
    python benchmarks/scale_blocks.py --show before.json after.json    # one table of both

The last lines estimate what a 10k^3 volume would cost in scheduling alone at the
default 3D block (64, 128, 128), from the largest ``map`` run's seconds per block.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _bench

#: Block edge (pixels); the ``minimal`` bank's halo is 12 and a block may not be smaller.
BLOCK = 16
#: Zarr chunk edge of the image: a block's read touches at most four chunks.
IMAGE_CHUNK = 256
#: The volume of the estimate and tiledseg's default 3D block.
BIG_VOLUME = (10_000, 10_000, 10_000)
DEFAULT_3D_BLOCK = (64, 128, 128)


def _grid(blocks: int) -> tuple[int, int]:
    """Rows and columns of blocks, ``rows * cols == blocks`` with rows a power of ten."""
    rows = 10 ** (int(math.log10(blocks)) // 2)
    if blocks % rows:
        raise ValueError(f"--blocks {blocks}: give a multiple of {rows} (e.g. a power of ten)")
    return rows, blocks // rows


def task_train(params: dict[str, Any]) -> dict[str, Any]:
    """Train on a small 2D phantom with the ``minimal`` bank and save the model.

    Parameters
    ----------
    params : dict
        ``seed`` and ``model`` (path of the file to write).

    Returns
    -------
    dict
        Training seconds and the model's halo.
    """
    import tiledseg
    from tiledseg.testing import make_phantom

    phantom = make_phantom((64, 64), n_classes=2, seed=int(params["seed"]))
    started = time.perf_counter()
    model = tiledseg.train(phantom.image, phantom.scribbles, features="minimal", cache_dir=None)
    seconds = time.perf_counter() - started
    model.save(params["model"], overwrite=True)
    return {"seconds": seconds, "halo": list(model.halo)}


def task_image(params: dict[str, Any]) -> dict[str, Any]:
    """Write a ``16*rows x 16*cols`` uint8 image (a phantom tiled) as a zarr array.

    Parameters
    ----------
    params : dict
        ``blocks``, ``seed`` and ``out`` (zarr array path).

    Returns
    -------
    dict
        Shape and seconds.
    """
    import numpy as np
    import zarr

    from tiledseg.testing import make_phantom

    started = time.perf_counter()
    rows, cols = _grid(int(params["blocks"]))
    shape = (BLOCK * rows, BLOCK * cols)
    tile = make_phantom((IMAGE_CHUNK,) * 2, n_classes=2, seed=int(params["seed"])).image
    array = zarr.create_array(
        store=params["out"],
        shape=shape,
        chunks=(IMAGE_CHUNK,) * 2,
        dtype=np.uint8,
        overwrite=True,
    )
    for y in range(0, shape[0], IMAGE_CHUNK):
        for x in range(0, shape[1], IMAGE_CHUNK):
            h, w = min(IMAGE_CHUNK, shape[0] - y), min(IMAGE_CHUNK, shape[1] - x)
            array[y : y + h, x : x + w] = tile[:h, :w]
    return {"shape": list(shape), "seconds": time.perf_counter() - started}


def _reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _noop(args: tuple) -> int:
    """The ``map`` mode's task: as little work as a task can do (the block's pixel count)."""
    block = args[1]
    return int(math.prod(block.shape))


def task_run(params: dict[str, Any]) -> dict[str, Any]:
    """Predict (or map a no-op) over the image's blocks on a 2-worker LocalCluster.

    Parameters
    ----------
    params : dict
        ``mode`` (``predict`` or ``map``), ``image``, ``model``, ``out`` and ``blocks``.

    Returns
    -------
    dict
        Seconds, this process's CPU seconds (driver and scheduler threads; the workers are
        other processes), RSS before the timed part and its peak, blocks.
    """
    import tiledseg
    from tiledseg.blocks import plan_blocks
    from tiledseg.cluster import open_executor
    from tiledseg.model import load_model
    from tiledseg.volume import open_volume

    mode = params["mode"]
    model = load_model(params["model"])
    if mode == "predict":
        import distributed  # noqa: F401  (imported before the clock starts, as a user's would be)

        base = _bench.current_rss_bytes()
        reset = _reset_peak()
        cpu, started = _bench.cpu_seconds(), time.perf_counter()
        result = tiledseg.predict(
            params["image"], model, out=params["out"], block=BLOCK, workers=2, overwrite=True
        )
        seconds, cpu = time.perf_counter() - started, _bench.cpu_seconds() - cpu
        blocks = result.blocks
    else:
        volume = open_volume(params["image"])
        planned = plan_blocks(volume.shape, (BLOCK,) * 2, model.halo)
        with open_executor(2, quiet=True) as executor:
            # the items predict submits: volume, block, model, out, proba, unc, threads, device
            items = [(volume, b, model, params["out"], False, False, 1, "cpu") for b in planned]
            base = _bench.current_rss_bytes()
            reset = _reset_peak()
            cpu, started = _bench.cpu_seconds(), time.perf_counter()
            counts = executor.map(_noop, items, desc="map")
            seconds, cpu = time.perf_counter() - started, _bench.cpu_seconds() - cpu
            del items
        assert sum(counts) == math.prod(volume.shape)
        blocks = len(counts)
    return {
        "mode": mode,
        "blocks": int(blocks),
        "seconds": seconds,
        "driver_cpu_seconds": cpu,
        "base_rss_bytes": base,
        "peak_rss_bytes": _bench.peak_rss_bytes(),
        "peak_reset": reset,
    }


TASKS = {"train": task_train, "image": task_image, "run": task_run}


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--blocks",
        type=int,
        nargs="+",
        default=[1000, 10_000, 100_000],
        help="block counts (default 1000 10000 100000)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["predict", "map"],
        default=["predict", "map"],
        help="what runs over the blocks (default both)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--label", default="", help="a name for this run in the table (e.g. before)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    parser.add_argument(
        "--show",
        type=Path,
        nargs="+",
        default=None,
        help="run nothing: print one table of the runs in these --json files (before, after)",
    )
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scale benchmark and print its table.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every run finished, 1 otherwise.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_bench.CHILD_FLAG]:
        return _bench.child_entry(argv[1:], TASKS)
    args = _parse(argv)
    if args.show:
        return _show(args.show)
    for blocks in args.blocks:
        _grid(blocks)  # a bad count is refused before anything runs
    script = Path(__file__).resolve()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tiledseg-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    machine = _bench.machine_info()
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"tiledseg checkout {machine['tiledseg_git']}, dask {machine['versions']['dask']}"
    )
    model_path = workdir / "model.tsm"
    trained = _bench.run_child(
        script, "train", {"seed": args.seed, "model": str(model_path)}, workdir=workdir
    )
    if not trained.ok:
        print(f"training failed: {trained.reason}", file=sys.stderr)
        return 1
    rows: list[dict[str, Any]] = []
    failed = False
    for blocks in args.blocks:
        image = workdir / f"image-{blocks}.zarr"
        made = _bench.run_child(
            script,
            "image",
            {"blocks": blocks, "seed": args.seed, "out": str(image)},
            workdir=workdir,
            label=f"image-{blocks}",
        )
        if not made.ok:
            print(f"{blocks} blocks: image failed: {made.reason}")
            failed = True
            continue
        for mode in args.modes:
            out = workdir / f"out-{blocks}-{mode}.zarr"
            print(f"{blocks} blocks, {mode} ...", flush=True)
            run = _bench.run_child(
                script,
                "run",
                {
                    "mode": mode,
                    "image": str(image),
                    "model": str(model_path),
                    "out": str(out),
                    "blocks": blocks,
                },
                workdir=workdir,
                timeout=args.timeout,
                label=f"run-{blocks}-{mode}",
            )
            shutil.rmtree(out, ignore_errors=True)
            if not run.ok:
                print(f"  failed: {run.reason}")
                rows.append(
                    {"mode": mode, "blocks": blocks, "error": run.reason, "label": args.label}
                )
                failed = True
                continue
            row = dict(run.result, others_cores=run.others_cores, label=args.label)
            rows.append(row)
            print(
                f"  {row['seconds']:.1f} s, {row['seconds'] / blocks * 1e3:.2f} ms/block, peak RSS "
                f"+{(row['peak_rss_bytes'] - row['base_rss_bytes']) / 2**20:.0f} MiB",
                flush=True,
            )
        shutil.rmtree(image, ignore_errors=True)

    print()
    print(_table(rows))
    estimate = _estimate(rows)
    if estimate:
        print()
        print(estimate)
    print()
    print(
        "RSS: the measuring process (driver + the LocalCluster's scheduler); peak during the "
        "timed part. marginal: (seconds - previous seconds) / (blocks - previous blocks), same "
        "mode. driver CPU: CPU seconds of the measuring process (client and scheduler threads; "
        "less sensitive to other processes' load than seconds). others' cores: cores other "
        "processes kept busy meanwhile (seconds are noisy when this is not ~0)."
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "scale_blocks",
                    "command": " ".join([Path(sys.argv[0]).name, *argv]),
                    "label": args.label,
                    "machine": machine,
                    "block": [BLOCK, BLOCK],
                    "train": trained.result,
                    "results": rows,
                    "estimate": estimate,
                },
                indent=1,
            )
        )
        print(f"results written to {args.json}")
    if failed:
        print(f"logs kept in {workdir}")
    elif args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def _show(paths: Sequence[Path]) -> int:
    """Print the runs of earlier ``--json`` files as one table, and the estimate of the last."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        saved = json.loads(path.read_text())
        rows += [dict(r, label=r.get("label") or saved.get("label", "")) for r in saved["results"]]
    print(_table(rows))
    estimate = _estimate([r for r in rows if r.get("label") == rows[-1].get("label")])
    if estimate:
        print()
        print(estimate)
    return 0


def _table(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown table of the runs, with marginal seconds per block within a mode."""
    table, previous = [], {}
    for r in rows:
        name = f"{r.get('label', '')} {r['mode']}".strip()
        if "error" in r:
            table.append([name, f"{r['blocks']:,}", "failed", *[""] * 7])
            continue
        marginal = "n/a"
        if (name, r["mode"]) in previous:
            p = previous[name, r["mode"]]
            marginal = f"{(r['seconds'] - p['seconds']) / (r['blocks'] - p['blocks']) * 1e3:.2f}"
        previous[name, r["mode"]] = r
        table.append(
            [
                name,
                f"{r['blocks']:,}",
                f"{r['seconds']:.1f}",
                f"{r['base_rss_bytes'] / 2**20:.0f}",
                f"{r['peak_rss_bytes'] / 2**20:.0f}",
                f"{(r['peak_rss_bytes'] - r['base_rss_bytes']) / 2**20:.0f}",
                f"{r['seconds'] / r['blocks'] * 1e3:.2f}",
                marginal,
                _cpu_per_block(r),
                "n/a" if r.get("others_cores") is None else f"{r['others_cores']:.2f}",
            ]
        )
    return _bench.format_table(
        [
            "run",
            "blocks",
            "seconds",
            "RSS before MiB",
            "peak RSS MiB",
            "peak - before MiB",
            "ms/block",
            "marginal ms/block",
            "driver CPU ms/block",
            "others' cores",
        ],
        table,
    )


def _cpu_per_block(row: dict[str, Any]) -> str:
    cpu = row.get("driver_cpu_seconds")  # absent in results of older runs
    return "n/a" if cpu is None else f"{cpu / row['blocks'] * 1e3:.2f}"


def _estimate(rows: Sequence[dict[str, Any]]) -> str:
    """Scheduling alone for a 10k^3 volume at the default 3D block, from the largest map run."""
    mapped = [r for r in rows if r["mode"] == "map" and "error" not in r]
    if not mapped:
        return ""
    largest = max(mapped, key=lambda r: r["blocks"])
    per_block = largest["seconds"] / largest["blocks"]
    n = math.prod(math.ceil(s / b) for s, b in zip(BIG_VOLUME, DEFAULT_3D_BLOCK, strict=True))
    return (
        f"scheduling alone, 10k^3 at blocks {DEFAULT_3D_BLOCK}: {n:,} blocks x "
        f"{per_block * 1e3:.2f} ms/block (map, {largest['blocks']:,} blocks, 2 workers) = "
        f"{n * per_block:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
