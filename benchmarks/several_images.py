"""One model trained on several images against models trained on one: mIoU per val image.

Data: ../shared/data/nasa-super1 (14 SEM images of one superalloy; 10 train, 4 val, with
scribbles and dense truth). The several-image model trains on the scribbles of all 10
train images; each one-image model on one of them. Every model labels the 4 val images,
scored against their truth (tiledseg's defaults; same seed); each model predicts the 4 val
images in one run (`predict_collection`).

    .venv/bin/python benchmarks/several_images.py [--data ../shared/data/nasa-super1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import tiledseg


def _stems(folder: Path) -> list[str]:
    return sorted(p.name.removesuffix("_image.tif") for p in folder.glob("*_image.tif"))


def _scores(model: tiledseg.Model, val: Path, work: Path) -> dict[str, float]:
    """Each val image's mIoU with ``model``: the val images predicted in one run."""
    folder = work / f"run-{time.monotonic_ns()}"
    folder.mkdir()
    stems = _stems(val)
    result = tiledseg.predict_collection(
        [str(val / f"{stem}_image.tif") for stem in stems], model, out_dir=folder, quiet=True
    )
    assert not result.failed, result.failed
    return {
        stem: tiledseg.evaluate(folder / f"{stem}_image.zarr", str(val / f"{stem}_truth.tif"))[
            "mean_iou"
        ]
        for stem in stems
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--data", type=Path, default=here.parent.parent / "shared/data/nasa-super1")
    args = parser.parse_args()
    train, val = args.data / "train", args.data / "val"
    pairs = [
        (str(train / f"{s}_image.tif"), str(train / f"{s}_scribbles.tif")) for s in _stems(train)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        several = tiledseg.train(pairs, cache_dir=None)
        several_s = time.perf_counter() - started
        together = _scores(several, val, work)
        singles = {}
        for image, labels in pairs:
            started = time.perf_counter()
            model = tiledseg.train(image, labels, cache_dir=None)
            singles[Path(image).name] = (_scores(model, val, work), time.perf_counter() - started)
    print(f"several-image model ({len(pairs)} train images, trained in {several_s:.1f} s)")
    print("| val image | several images | one image: mean | one image: min..max |")
    print("|---|---|---|---|")
    for stem, miou in together.items():
        one = [scores[stem] for scores, _ in singles.values()]
        print(
            f"| {stem} | {miou:.3f} | {statistics.mean(one):.3f} | {min(one):.3f}..{max(one):.3f} |"
        )
    mean_one = statistics.mean(s for scores, _ in singles.values() for s in scores.values())
    print(f"| mean | {statistics.mean(together.values()):.3f} | {mean_one:.3f} | |")


if __name__ == "__main__":
    main()
