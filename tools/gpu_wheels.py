"""Fetch the wheels a GPU machine without a registry needs for ``make gpu-check``.

Resolves tiledseg's runtime needs (and pytest/hypothesis) for the GPU machine's
Python and platform, drops the packages that machine already has (``--present``;
the default is the list of the lent H100/H200 image, which holds cupy, numpy,
scipy, scikit-image, scikit-learn, pandas, pyarrow, h5py, tifffile, pytest and
hypothesis among others), and packs the rest into folders ``.whl-1``, ``.whl-2``,
... of at most ``--max-mib`` each (a larger wheel is cut into parts that
``make gpu-check`` joins), so that each folder can travel on its own.

    python tools/gpu_wheels.py [--python-version 3.12] [--dest .] [--max-mib 60]

Then carry each folder to the GPU machine (one per call where a call carries at
most 64 MiB; files there are kept while it stays up) and run ``make gpu-check``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: What the GPU machine needs beyond what it has (tiledseg's own needs, resolved).
NEEDS = [
    "dask[array,dataframe]",
    "distributed",
    "zarr",
    "xgboost",
    "skops",
    "imagecodecs",
    "pydantic",
    "tifffile",
    "h5py",
    "pyyaml",
    "click",
    "tqdm",
    "psutil",
    "pytest",
    "hypothesis",
]

#: Packages the lent GPU image has (/work/.library/device/KINDS.md, read 2026-11-17).
PRESENT = """
attrs click cloudpickle cupy-cuda13x fsspec h5py hypothesis iniconfig jinja2 joblib
llvmlite markupsafe msgpack numba numpy packaging pandas pillow pluggy psutil pyarrow
pygments pytest python-dateutil pyyaml scikit-image scikit-learn scipy six
sortedcontainers threadpoolctl tifffile toolz tqdm typing-extensions zipp networkx
imageio lazy-loader nvidia-ml-py nvidia-nccl-cu13 nvidia-cuda-runtime nvidia-cublas
""".split()

_PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
    "any",
]


def _name(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-version", default="3.12")
    parser.add_argument("--dest", default=".", help="where the .whl-N folders go")
    parser.add_argument("--max-mib", type=float, default=60.0)
    parser.add_argument("--present", nargs="*", default=PRESENT, help="names not to fetch")
    args = parser.parse_args(argv)
    limit = int(args.max_mib * 2**20)
    present = {re.sub(r"[-_.]+", "-", n).lower() for n in args.present}
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
        command += ["--python-version", args.python_version, "--implementation", "cp"]
        for platform in _PLATFORMS:
            command += ["--platform", platform]
        subprocess.run([*command, "-d", tmp, *NEEDS], check=True)
        wheels = sorted(
            (w for w in Path(tmp).glob("*.whl") if _name(w) not in present),
            key=lambda w: -w.stat().st_size,
        )
        dest = Path(args.dest)
        for old in dest.glob(".whl-*"):
            shutil.rmtree(old)
        folders: list[list[int]] = []  # [bytes used] per folder
        for wheel in wheels:
            pieces = _cut(wheel, limit)
            for piece in pieces:
                size = piece.stat().st_size
                slot = next((i for i, f in enumerate(folders) if f[0] + size <= limit), None)
                if slot is None or len(pieces) > 1:  # the parts of one wheel: a folder each
                    folders.append([0])
                    slot = len(folders) - 1
                folders[slot][0] += size
                target = dest / f".whl-{slot + 1}"
                target.mkdir(parents=True, exist_ok=True)
                shutil.move(str(piece), target / piece.name)
    for i, (used,) in enumerate(folders, 1):
        files = sorted(p.name for p in (dest / f".whl-{i}").iterdir())
        print(f".whl-{i}: {used / 2**20:.1f} MiB, {len(files)} files")
    print(f"skipped (present on the GPU machine): {', '.join(sorted(present))}")
    return 0


def _cut(wheel: Path, limit: int) -> list[Path]:
    """The wheel, or its parts ``NAME.whl.part-00``, ... when it exceeds ``limit``."""
    if wheel.stat().st_size <= limit:
        return [wheel]
    parts = []
    with wheel.open("rb") as source:
        while chunk := source.read(limit):
            part = wheel.with_name(f"{wheel.name}.part-{len(parts):02d}")
            part.write_bytes(chunk)
            parts.append(part)
    wheel.unlink()
    return parts


if __name__ == "__main__":
    sys.exit(main())
