"""Write a 3D phantom (image as OME-Zarr, scribbles and truth as zarr) for the examples.

Usage: python examples/make_sample.py examples/sample [--size 96]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zarr

from tiledseg.demo import write_ome_zarr
from tiledseg.testing import make_phantom


def main() -> None:
    """Write image.zarr, scribbles.zarr and truth.zarr into the given folder."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom((args.size,) * 3, seed=0)
    write_ome_zarr(
        args.folder / "image.zarr", phantom.image, spacing=(1.0, 1.0, 1.0), chunks=(64, 64, 64)
    )
    zarr.save_array(str(args.folder / "scribbles.zarr"), phantom.scribbles, zarr_format=3)
    zarr.save_array(str(args.folder / "truth.zarr"), phantom.truth, zarr_format=3)
    print(f"wrote {args.folder}/image.zarr, scribbles.zarr, truth.zarr")


if __name__ == "__main__":
    main()
