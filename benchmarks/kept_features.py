"""``tiledseg segment`` with and without keeping training's features for the prediction.

A phantom (4 phases, noise, uint8) is written as .npy with its scribbles, ``strokes`` (on 8
slices) and ``balls`` (everywhere); each case runs ``tiledseg segment CONFIG.yaml
--overwrite --quiet`` in a fresh process with the default bank and classifier, once with
features kept (the default) and once with ``TILEDSEG_KEPT_FEATURES_BYTES=0`` (computed
again), alternating ``--repeats`` times with an empty table cache each run. Printed: the
median seconds of each, their ratio, how many blocks were kept (the scratch folder is
watched during the run), and whether the two outputs' labels are equal.

    python benchmarks/kept_features.py [--size 192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _bench


def _run(config: Path, scratch: Path, env: dict[str, str]) -> tuple[float, int]:
    """Seconds of one ``segment`` run, and the most stacks its scratch folder held."""
    most = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal most
        while not done.wait(0.05):
            if scratch.is_dir():
                most = max(most, sum(1 for p in scratch.glob("*.npy")))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    command = [sys.executable, "-m", "tiledseg", "segment", str(config), "--overwrite", "--quiet"]
    finished = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    if finished.returncode:
        raise SystemExit(f"segment failed:\n{finished.stderr}")
    return seconds, most


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192, help="cube side (default 192)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=_bench.RESULTS / "kept_features.json")
    args = parser.parse_args(argv)

    import numpy as np
    import yaml
    import zarr

    from tiledseg.testing import make_phantom

    result = {"machine": _bench.machine_info(), "size": args.size, "cases": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for kind in ("strokes", "balls"):
            ph = make_phantom((args.size,) * 3, scribbles=kind, seed=1)
            np.save(tmp / "image.npy", ph.image)
            np.save(tmp / f"{kind}.npy", ph.scribbles)
            times: dict[str, list[float]] = {"kept": [], "again": []}
            kept_blocks = 0
            for _ in range(args.repeats):
                for mode in times:
                    out = tmp / f"{kind}-{mode}.zarr"
                    config = tmp / f"{kind}-{mode}.yaml"
                    config.write_text(
                        yaml.safe_dump(
                            {
                                "image": str(tmp / "image.npy"),
                                "labels": str(tmp / f"{kind}.npy"),
                                "model": str(tmp / f"{kind}-{mode}.tsm"),
                                "out": str(out),
                            }
                        )
                    )
                    env = {**os.environ, "TILEDSEG_CACHE_DIR": str(tmp / f"cache-{mode}")}
                    env.pop("TILEDSEG_KEPT_FEATURES_BYTES", None)
                    if mode == "again":
                        env["TILEDSEG_KEPT_FEATURES_BYTES"] = "0"
                    shutil.rmtree(env["TILEDSEG_CACHE_DIR"], ignore_errors=True)
                    seconds, most = _run(config, tmp / f".{out.name}.tiledseg-features", env)
                    times[mode].append(seconds)
                    if mode == "kept":
                        kept_blocks = most
            same = np.array_equal(
                zarr.open_array(str(tmp / f"{kind}-kept.zarr" / "labels" / "0"))[...],
                zarr.open_array(str(tmp / f"{kind}-again.zarr" / "labels" / "0"))[...],
            )
            kept, again = statistics.median(times["kept"]), statistics.median(times["again"])
            result["cases"][kind] = {**times, "kept_blocks": kept_blocks, "labels_equal": same}
            rows.append(
                [kind, f"{again:.2f}", f"{kept:.2f}", f"{again / kept:.2f}", kept_blocks, same]
            )
            print(f"{kind}: computed again {again:.2f} s, kept {kept:.2f} s", flush=True)
    print(
        _bench.format_table(
            [
                f"{args.size}^3 scribbles",
                "segment s, features computed again",
                "segment s, kept",
                "speed-up",
                "blocks kept",
                "labels equal",
            ],
            rows,
        )
    )
    _bench.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
