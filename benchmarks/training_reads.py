"""Training's reads: extra channels as zarr against ``.npy``, without and with the chunk cache;
and the training / predict time ratio for strokes on a few planes and for scribbles everywhere.

    .venv/bin/python benchmarks/training_reads.py --json benchmarks/results/training_reads.json
    .venv/bin/python benchmarks/training_reads.py --shape 128 --ratio-shape 96 --repeats 1  # quick

Part ``reads`` (issue 15: "training with extra channels stored as zarr took 23 s against 4 s
for the same arrays as .npy"): a ``--shape``³ phantom (``tiledseg.testing.make_phantom``) with
many short strokes (``--slices`` planes, ``--fraction`` of the voxels: several hundred boxes
of scribbles), its uint8 image as ``.npy`` and two float32 extra channels stored twice, as
``.npy`` and as zarr (``--chunks``³ chunks, zarr's default codec). Each run is
``tiledseg.train(image.npy, labels.npy, extra_channels=[...], cache_dir=FRESH_FOLDER)``, as a
user runs it (the table cache is on by default, so every box is read to hash it, then read
again for its features; a fresh folder each time so the table is always built). Three
configurations, in turn in every repeat: the extras as ``.npy``; as zarr without the chunk
cache (``TILEDSEG_CHUNK_CACHE_BYTES=0``, what tiledseg did before); as zarr with the default
cache. "table s" is the run's seconds less its fit. One more run of each zarr configuration,
untimed, reads the extras through a store that counts the chunk keys asked for, to give the
reads (= decodes) per chunk.

Part ``ratio``: ``train(image, scribbles, cache_dir=None)`` then ``predict(image, model,
out=OUT.zarr)`` (``compare_peers.py``'s tiledseg peer, on ``_bench.make_phantom_files``'s
``.npy`` files) for ``strokes`` (8 z-planes) and ``balls`` (small balls everywhere), in turn in
every repeat; the ratio is the median train seconds over the median predict seconds.

Everything runs in this process after a small warm-up run (imports, compiled kernels).
Medians of ``--repeats``; "others' cores" is how many cores other processes used on average
meanwhile (the machine may be shared: seconds are then noisy, read counts are not).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import _bench

ENV = "TILEDSEG_CHUNK_CACHE_BYTES"

#: The configurations of part ``reads``: (name, extras' format, chunk cache bytes; None: default).
READ_CONFIGS: tuple[tuple[str, str, int | None], ...] = (
    ("npy", "npy", None),
    ("zarr, no cache (before)", "zarr", 0),
    ("zarr, chunk cache (after)", "zarr", None),
)


@contextlib.contextmanager
def _cache_bytes(value: int | None) -> Iterator[None]:
    """Set (``None``: unset) the chunk cache bound for the runs inside."""
    old = os.environ.pop(ENV, None)
    if value is not None:
        os.environ[ENV] = str(value)
    try:
        yield
    finally:
        os.environ.pop(ENV, None)
        if old is not None:
            os.environ[ENV] = old


def _timed(run: Callable[[], Any]) -> tuple[Any, float, float | None]:
    """Run, returning its result, its wall seconds and the cores others used meanwhile."""
    busy0, own0, t0 = _bench._busy_cpu_seconds(), _bench.cpu_seconds(), time.perf_counter()
    result = run()
    wall = time.perf_counter() - t0
    busy1, own1 = _bench._busy_cpu_seconds(), _bench.cpu_seconds()
    others = None if busy0 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
    return result, wall, others


# -- part reads -----------------------------------------------------------------------------------


def make_read_data(folder: Path, *, shape: int, slices: int, fraction: float, chunks: int) -> dict:
    """The phantom's image and strokes as .npy, two extra channels as .npy and zarr."""
    import numpy as np
    import zarr
    from scipy import ndimage as ndi

    from tiledseg.testing import make_phantom

    phantom = make_phantom(
        (shape,) * 3, scribbles="strokes", stroke_slices=slices, scribble_fraction=fraction
    )
    image = phantom.image
    rng = np.random.default_rng(1)
    extras = {
        "extra0": (image * 0.5 + rng.normal(0, 3, image.shape)).astype(np.float32),
        "extra1": ndi.gaussian_filter(image.astype(np.float32), 2.0),
    }
    np.save(folder / "image.npy", image)
    np.save(folder / "labels.npy", phantom.scribbles)
    paths: dict[str, Any] = {"npy": [], "zarr": []}
    for name, data in extras.items():
        np.save(folder / f"{name}.npy", data)
        array = zarr.create_array(
            store=str(folder / f"{name}.zarr"), shape=data.shape, chunks=(chunks,) * 3, dtype="f4"
        )
        array[...] = data
        paths["npy"].append(str(folder / f"{name}.npy"))
        paths["zarr"].append(str(folder / f"{name}.zarr"))
    return {
        "image": str(folder / "image.npy"),
        "labels": str(folder / "labels.npy"),
        "extras": paths,
        "labelled_voxels": int(np.count_nonzero(phantom.scribbles)),
    }


def _boxes(data: dict) -> int:
    """How many boxes of scribbles training filters (its default block and bank)."""
    import tiledseg as ts
    from tiledseg.blocks import plan_blocks, resolve_block
    from tiledseg.training import _scan

    image = ts.open_volume(data["image"])
    labels = ts.open_volume(data["labels"], role="labels")
    halo = ts.resolve_bank(None, ndim=3).halo(image.spacing)
    block = resolve_block(None, shape=image.shape, halo=halo)
    return sum(
        len(_scan(image, labels, b, halo, False)) for b in plan_blocks(image.shape, block, halo)
    )


def _train_reads(data: dict, fmt: str, workdir: Path) -> dict[str, Any]:
    import tiledseg as ts

    with tempfile.TemporaryDirectory(dir=workdir) as tables:
        model, wall, others = _timed(
            lambda: ts.train(
                data["image"], data["labels"], extra_channels=data["extras"][fmt], cache_dir=tables
            )
        )
    fit = float(model.summary["fit_seconds"])
    return {"seconds": wall, "table_seconds": wall - fit, "others_cores": others}


def _counted_reads(data: dict, workdir: Path) -> dict[str, int]:
    """Chunk gets of the zarr extras in one training run (the store's own count)."""
    import zarr
    from zarr.storage import LocalStore, WrapperStore

    import tiledseg as ts

    counts: collections.Counter = collections.Counter()

    class Counting(WrapperStore):
        async def get(self, key, prototype, byte_range=None):  # noqa: ANN001, ANN202
            if key.startswith("c/"):
                counts[(str(self._store.root), key)] += 1
            return await super().get(key, prototype, byte_range)

    extras = [
        zarr.open_array(Counting(LocalStore(p, read_only=True)), mode="r")
        for p in data["extras"]["zarr"]
    ]
    with tempfile.TemporaryDirectory(dir=workdir) as tables:
        ts.train(data["image"], data["labels"], extra_channels=extras, cache_dir=tables)
    chunks = sum(zarr.open_array(p, mode="r").nchunks for p in data["extras"]["zarr"])
    return {
        "chunk_reads": sum(counts.values()),
        "chunks_read": len(counts),
        "chunks_stored": chunks,
        "max_reads_per_chunk": max(counts.values()),
    }


def part_reads(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    folder = workdir / "reads"
    folder.mkdir(parents=True, exist_ok=True)
    data = make_read_data(
        folder, shape=args.shape, slices=args.slices, fraction=args.fraction, chunks=args.chunks
    )
    data["boxes"] = _boxes(data)
    print(
        f"reads: {args.shape}^3, {data['labelled_voxels']} labelled voxels in {data['boxes']} "
        f"boxes, 2 float32 extra channels, zarr chunks {args.chunks}^3",
        flush=True,
    )
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in READ_CONFIGS}
    for repeat in range(args.repeats):
        # in turn, starting one later each repeat, so that a busy spell is spread over all
        for k in range(len(READ_CONFIGS)):
            name, fmt, cache = READ_CONFIGS[(k + repeat) % len(READ_CONFIGS)]
            with _cache_bytes(cache):
                runs[name].append(_train_reads(data, fmt, workdir))
            print(f"  {name}: {runs[name][-1]['seconds']:.1f} s", flush=True)
    counted = {}
    for name, fmt, cache in READ_CONFIGS:
        if fmt == "zarr":
            with _cache_bytes(cache):
                counted[name] = _counted_reads(data, workdir)
    rows = []
    for name, _, _ in READ_CONFIGS:
        rows.append(
            {
                "config": name,
                "seconds": statistics.median(r["seconds"] for r in runs[name]),
                "table_seconds": statistics.median(r["table_seconds"] for r in runs[name]),
                "others_cores": statistics.median(r["others_cores"] or 0.0 for r in runs[name]),
                "runs": runs[name],
                **counted.get(name, {}),
            }
        )
    return {
        "shape": [args.shape] * 3,
        "chunks": [args.chunks] * 3,
        "slices": args.slices,
        "fraction": args.fraction,
        "labelled_voxels": data["labelled_voxels"],
        "boxes": data["boxes"],
        "rows": rows,
    }


# -- part ratio -----------------------------------------------------------------------------------


def part_ratio(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import numpy as np

    import tiledseg as ts

    data = {}
    for kind in ("strokes", "balls"):
        made = _bench.make_phantom_files(
            {
                "shape": [args.ratio_shape] * 3,
                "seed": args.seed,
                "scribbles": kind,
                "out": str(workdir / f"ratio-{kind}"),
                "arrays": ["image", "scribbles"],
            }
        )
        data[kind] = (np.load(made["paths"]["image"]), np.load(made["paths"]["scribbles"]))
    print(f"ratio: {args.ratio_shape}^3, train(cache_dir=None) then predict", flush=True)
    runs: dict[str, list[dict]] = {kind: [] for kind in data}
    for repeat in range(args.repeats):
        for kind in list(data) if repeat % 2 == 0 else list(data)[::-1]:
            image, scribbles = data[kind]
            model, train_s, others_train = _timed(
                lambda image=image, scribbles=scribbles: ts.train(image, scribbles, cache_dir=None)
            )
            out = workdir / f"out-{kind}-{repeat}.zarr"
            _, predict_s, others_predict = _timed(
                lambda image=image, model=model, out=out: ts.predict(image, model, out=out)
            )
            shutil.rmtree(out, ignore_errors=True)
            runs[kind].append(
                {
                    "train_seconds": train_s,
                    "fit_seconds": float(model.summary["fit_seconds"]),
                    "predict_seconds": predict_s,
                    "others_cores": statistics.mean([others_train or 0.0, others_predict or 0.0]),
                }
            )
            print(f"  {kind}: train {train_s:.1f} s, predict {predict_s:.1f} s", flush=True)
    rows = []
    for kind, scribbles in ((k, data[k][1]) for k in data):
        train_s = statistics.median(r["train_seconds"] for r in runs[kind])
        predict_s = statistics.median(r["predict_seconds"] for r in runs[kind])
        rows.append(
            {
                "scribbles": kind,
                "labelled_voxels": int(np.count_nonzero(scribbles)),
                "train_seconds": train_s,
                "fit_seconds": statistics.median(r["fit_seconds"] for r in runs[kind]),
                "predict_seconds": predict_s,
                "ratio": train_s / predict_s,
                "others_cores": statistics.median(r["others_cores"] for r in runs[kind]),
                "runs": runs[kind],
            }
        )
    return {"shape": [args.ratio_shape] * 3, "rows": rows}


# -- main -----------------------------------------------------------------------------------------


def _warm_up(workdir: Path) -> None:
    """A small train + predict, untimed: imports and compiled kernels out of the way."""
    import tiledseg as ts
    from tiledseg.testing import make_phantom

    phantom = make_phantom((32, 40, 40), scribbles="strokes")
    model = ts.train(phantom.image, phantom.scribbles, cache_dir=None)
    ts.predict(phantom.image, model, out=workdir / "warm-up.zarr")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", nargs="+", choices=["reads", "ratio"], default=["reads", "ratio"]
    )
    parser.add_argument("--shape", type=int, default=256, help="side of part reads' phantom")
    parser.add_argument("--chunks", type=int, default=64, help="zarr chunk side (default 64)")
    parser.add_argument("--slices", type=int, default=64, help="planes with strokes (default 64)")
    parser.add_argument(
        "--fraction", type=float, default=0.0003, help="fraction of voxels scribbled (0.0003)"
    )
    parser.add_argument("--ratio-shape", type=int, default=192, help="side of part ratio's phantom")
    parser.add_argument("--seed", type=int, default=0, help="part ratio's phantom seed")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (medians reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--note", default=None, help="a remark recorded in the JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="training-reads-"))
    workdir.mkdir(parents=True, exist_ok=True)
    machine = _bench.machine_info()
    _warm_up(workdir)
    results: dict[str, Any] = {}
    if "reads" in args.parts:
        results["reads"] = part_reads(args, workdir)
    if "ratio" in args.parts:
        results["ratio"] = part_ratio(args, workdir)
    if "reads" in results:
        r = results["reads"]
        print(
            f"\n### Training with 2 extra channels, {args.shape}^3, {r['boxes']} boxes, "
            f"zarr chunks {args.chunks}^3 (medians of {args.repeats})\n"
        )
        print(
            _bench.format_table(
                ["extras", "train s", "table s", "chunk reads", "max reads/chunk", "others' cores"],
                [
                    [
                        row["config"],
                        f"{row['seconds']:.1f}",
                        f"{row['table_seconds']:.1f}",
                        (
                            f"{row['chunk_reads']} of {row['chunks_stored']}"
                            if "chunk_reads" in row
                            else "-"
                        ),
                        row.get("max_reads_per_chunk", "-"),
                        f"{row['others_cores']:.2f}",
                    ]
                    for row in r["rows"]
                ],
            )
        )
    if "ratio" in results:
        print(f"\n### Training / predict, {args.ratio_shape}^3 (medians of {args.repeats})\n")
        print(
            _bench.format_table(
                [
                    "scribbles",
                    "labelled",
                    "train s",
                    "fit s",
                    "predict s",
                    "train / predict",
                    "others' cores",
                ],
                [
                    [
                        row["scribbles"],
                        row["labelled_voxels"],
                        f"{row['train_seconds']:.1f}",
                        f"{row['fit_seconds']:.1f}",
                        f"{row['predict_seconds']:.1f}",
                        f"{row['ratio']:.2f}",
                        f"{row['others_cores']:.2f}",
                    ]
                    for row in results["ratio"]["rows"]
                ],
            )
        )
    print(
        "\nothers' cores: cores other processes used on average during the runs (the machine "
        f"has {machine['cores']}; seconds are noisy when this is not ~0)."
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "training_reads",
            "command": " ".join([Path(sys.argv[0]).name, *argv]),
            "machine": machine,
            **({"note": args.note} if args.note else {}),
            **results,
        }
        args.json.write_text(json.dumps(document, indent=1))
        print(f"results written to {args.json}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
