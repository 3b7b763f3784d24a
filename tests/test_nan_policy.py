"""NaN and infinite values: refused where a block is read, naming it, or read as ``--nan-fill``.

One policy for train, predict and segment: no run reads the whole image first to look
for them. Training refuses one in a box of scribbles it reads; prediction fails the
blocks that read one (the others are written) and ends with one line naming the first;
``--nan-fill VALUE`` reads them as VALUE, is recorded in the model and used again by
predict. Each test runs the command (:func:`tiledseg.cli.main`) on files in ``tmp_path``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from zarr.storage import LocalStore, WrapperStore

import tiledseg as ts
from tiledseg.blocks import BlockPlan
from tiledseg.cli import main
from tiledseg.errors import OutputExistsError
from tiledseg.features.tiled import NonFiniteValuesError
from tiledseg.model import load_model
from tiledseg.runs import done_blocks
from tiledseg.testing import make_phantom

SHAPE = (32, 48, 48)
BLOCK = 16  # 2 x 3 x 3 = 18 blocks
N = 18
#: a voxel outside every box of scribbles that training reads (make_phantom, seed 5)
FAR = (1, 2, 1)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, n_classes=3, feature_size=6.0, seed=5)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, phantom):
    model = ts.train(
        phantom.image.astype(np.float32), phantom.scribbles, features="minimal", cache=False
    )
    return model.save(tmp_path_factory.mktemp("model") / "model.tseg")


@pytest.fixture
def work(tmp_path, monkeypatch, phantom, model_file):
    """The current folder, holding image.npy (float32), nan.npy (a NaN at FAR),
    scribbles.npy and model.tseg."""
    image = phantom.image.astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    bad = image.copy()
    bad[FAR] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "scribbles.npy", phantom.scribbles)
    (tmp_path / "model.tseg").write_bytes(Path(model_file).read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *args: object) -> tuple[int, str, list[str]]:
    """Run the command; return its status, stdout and stderr's lines."""
    capsys.readouterr()
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err.splitlines()


def predict_args(image: str, out: str, *extra: object) -> list[object]:
    return ["predict", image, "--model", "model.tseg", "--out", out, "--block", BLOCK, "--quiet"]


def labels_of(out: str | Path) -> np.ndarray:
    return zarr.open_array(f"{out}/labels/0", mode="r")[...]


def blocks_reading(voxel: tuple[int, ...], halo: tuple[int, ...]) -> list:
    """The blocks of the test's grid whose read region holds ``voxel``."""
    plan = BlockPlan(SHAPE, (BLOCK,) * 3, halo)
    return [
        b for b in plan if all(s.start <= v < s.stop for s, v in zip(b.read, voxel, strict=True))
    ]


# -- prediction --------------------------------------------------------------------------------


def test_predict_fails_only_the_blocks_that_read_a_nan_and_names_the_first(work, capsys):
    halo = load_model("model.tseg").halo
    failing = blocks_reading(FAR, halo)
    assert 0 < len(failing) < N

    status, out, err = run(capsys, *predict_args("nan.npy", "out.zarr"))
    assert status == 2
    assert out == ""
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith(
        f"tiledseg: error: image nan.npy holds NaN or infinite values: {len(failing)} of {N} "
        "blocks read some and were not computed"
    )
    first = failing[0]
    where = ", ".join(f"{s.start}:{s.stop}" for s in first.read)
    assert f"the first block {first.name}, read as region {where}" in line
    assert "--nan-fill VALUE" in line
    assert "nan_to_num" in line
    # nothing else is lost: every other block is written
    assert len(done_blocks("out.zarr")) == N - len(failing)

    # the same command with a fill computes only those blocks, as a fresh run on the
    # image with the fill in place of the NaN would
    status, out, err = run(capsys, *predict_args("nan.npy", "out.zarr"), "--nan-fill", 0)
    assert status == 0, err
    assert f"resumed: {N - len(failing)} of {N} blocks were already done" in out
    assert err == []
    filled = np.nan_to_num(np.load("nan.npy"), nan=0.0)
    np.save("filled.npy", filled)
    assert run(capsys, *predict_args("filled.npy", "fresh.zarr"))[0] == 0
    assert_array_equal(labels_of("out.zarr"), labels_of("fresh.zarr"))


class CountingStore(WrapperStore):
    """A store counting the gets of chunk keys (each one chunk read and decoded)."""

    def __init__(self, store, counts: Counter):
        super().__init__(store)
        self.counts = counts

    def _with_store(self, store):
        return type(self)(store, self.counts)

    async def get(self, key, prototype, byte_range=None):
        if key.startswith("c/"):
            self.counts[key] += 1
        return await super().get(key, prototype, byte_range)


def _chunks_of(region: tuple[slice, ...], chunks: int) -> int:
    return math.prod(-(-s.stop // chunks) - s.start // chunks for s in region)


def test_predict_reads_no_chunk_besides_the_blocks(tmp_path, phantom, model_file):
    """No pass over the whole image before the blocks: each chunk get is one block's read.

    A model without the intensity record reads nothing else; with it, one central
    sample of the image is read once, for the comparison with that record.
    """
    path = tmp_path / "image.zarr"
    zarr.create_array(str(path), shape=SHAPE, chunks=(BLOCK,) * 3, dtype="f4")[...] = (
        phantom.image.astype(np.float32)
    )
    model = load_model(model_file)
    assert model.intensity is not None
    old = load_model(model_file)
    del old.summary["intensity"]  # as a model saved before the record was kept
    expected = sum(_chunks_of(b.read, BLOCK) for b in BlockPlan(SHAPE, (BLOCK,) * 3, model.halo))
    for which, extra in ((old, 0), (model, N)):  # (the whole image is the central sample)
        counts: Counter = Counter()
        array = zarr.open_array(CountingStore(LocalStore(path, read_only=True), counts), mode="r")
        ts.predict(array, which, out=tmp_path / f"out-{extra}.zarr", block=BLOCK)
        assert sum(counts.values()) == expected + extra


def test_check_finite_is_still_an_api_function(phantom):
    from tiledseg.predict import check_finite

    image = phantom.image.astype(np.float32)
    image[FAR] = np.inf
    with pytest.raises(NonFiniteValuesError, match="NaN or infinite"):
        check_finite(image)


def test_the_graph_cut_refuses_a_nan_in_its_pass_over_the_image(work, capsys):
    args = [*predict_args("nan.npy", "out.zarr"), "--smooth", "graphcut"]
    status, _, err = run(capsys, *args)
    assert status == 2
    assert len(err) == 1, err
    assert err[0].startswith("tiledseg: error: image nan.npy holds NaN or infinite values (in ")
    region = re.search(r"in region ([^)]*)\)", err[0]).group(1)
    bounds = [tuple(map(int, part.split(":"))) for part in region.split(", ")]
    assert all(a <= v < b for (a, b), v in zip(bounds, FAR, strict=True))
    status, _, err = run(capsys, *args[:-2], "--smooth", "graphcut", "--nan-fill", 0, "--overwrite")
    assert status == 0, err


def test_with_other_failures_the_report_ends_with_the_nan_line(work, capsys):
    """A damaged chunk and a NaN: the report of every failed block (exit 1), then the NaN."""
    image = work / "nan.zarr"
    zarr.create_array(str(image), shape=SHAPE, chunks=(BLOCK,) * 3, dtype="f4")[...] = np.load(
        "nan.npy"
    )
    (image / "c" / "1" / "2" / "2").write_bytes(b"\x00garbage" * 7)
    status, _, err = run(capsys, *predict_args(str(image), "out.zarr"))
    assert status == 1
    assert "blocks failed" in err[0]
    assert any("DamagedChunkError" in line or "Zstd" in line for line in err[1:-1])
    assert err[-1].startswith(f"image {image} holds NaN or infinite values: ")
    assert "--nan-fill VALUE" in err[-1]


def test_continuing_with_another_fill_is_refused(work, capsys):
    """A run that read NaN as 0 (stopped by a damaged chunk) continues only with 0."""
    image = work / "nan.zarr"
    data = np.load("nan.npy")
    zarr.create_array(str(image), shape=SHAPE, chunks=(BLOCK,) * 3, dtype="f4")[...] = data
    chunk = image / "c" / "0" / "0" / "0"
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x00garbage" * 7)
    status, _, err = run(capsys, *predict_args(str(image), "out.zarr"), "--nan-fill", 0)
    assert status == 1  # the damaged chunk's blocks failed; the output is unfinished
    assert "blocks failed" in err[0]
    chunk.write_bytes(good)
    for other, said in ((["--nan-fill", 1], "reads them as 1"), ([], "refuses them")):
        status, _, err = run(capsys, *predict_args(str(image), "out.zarr"), *other)
        assert status == 2
        assert len(err) == 1
        assert "holds an unfinished run that read NaN and infinite values as 0" in err[0]
        assert said in err[0]
        assert "--nan-fill 0" in err[0]
    with pytest.raises(OutputExistsError, match="as 0"):
        ts.predict(str(image), "model.tseg", out="out.zarr", block=BLOCK, nan_fill=2.5)
    status, out, err = run(capsys, *predict_args(str(image), "out.zarr"), "--nan-fill", 0)
    assert status == 0, err
    assert "resumed:" in out


# -- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_train_refuses_a_non_finite_value_in_a_box_naming_its_region(work, capsys, phantom, value):
    voxel = tuple(int(v) for v in np.argwhere(phantom.scribbles)[0])
    image = np.load("image.npy")
    image[voxel] = value
    np.save("bad.npy", image)
    args = ["train", "bad.npy", "scribbles.npy", "--model", "new.tseg", "--quiet", "--no-cache"]
    status, out, err = run(capsys, *args, "--features", "minimal")
    assert status == 2
    assert out == ""
    assert len(err) == 1, err
    assert err[0].startswith("tiledseg: error: image bad.npy holds NaN or infinite values (in ")
    assert "--nan-fill VALUE" in err[0]
    region = re.search(r"in region ([^)]*)\)", err[0]).group(1)
    bounds = [tuple(map(int, part.split(":"))) for part in region.split(", ")]
    assert all(a <= v < b for (a, b), v in zip(bounds, voxel, strict=True))
    assert not Path("new.tseg").exists()


def test_train_reads_only_the_boxes_so_a_nan_elsewhere_is_left_to_predict(work, capsys):
    args = ["train", "nan.npy", "scribbles.npy", "--model", "new.tseg", "--quiet", "--no-cache"]
    status, _, err = run(capsys, *args, "--features", "minimal")
    assert status == 0, err
    assert load_model("new.tseg").nan_fill is None


def test_the_fill_is_recorded_in_the_model_and_used_by_predict(work, capsys, phantom):
    voxel = tuple(int(v) for v in np.argwhere(phantom.scribbles)[0])
    image = np.load("nan.npy")
    image[voxel] = np.inf  # in a box of scribbles too
    np.save("bad.npy", image)
    args = ["train", "bad.npy", "scribbles.npy", "--model", "filled.tseg", "--quiet"]
    status, _, err = run(capsys, *args, "--no-cache", "--features", "minimal", "--nan-fill", 7)
    assert status == 0, err
    model = load_model("filled.tseg")
    assert model.nan_fill == 7.0
    assert model.summary["nan_fill"] == 7.0

    # predict takes the model's fill, and says nothing of it
    predict = ["predict", "bad.npy", "--model", "filled.tseg", "--block", BLOCK, "--quiet"]
    status, _, err = run(capsys, *predict, "--out", "a.zarr")
    assert status == 0, err
    assert err == []
    np.save("sevens.npy", np.where(np.isfinite(image), image, np.float32(7)))
    status, _, err = run(capsys, *predict[:1], "sevens.npy", *predict[2:], "--out", "b.zarr")
    assert status == 0, err
    assert_array_equal(labels_of("a.zarr"), labels_of("b.zarr"))
    # the same value given: nothing said; another: one warning line, and it is used
    assert run(capsys, *predict, "--out", "c.zarr", "--nan-fill", 7)[2] == []
    status, _, err = run(capsys, *predict, "--out", "d.zarr", "--nan-fill", 0)
    assert status == 0
    assert err == [
        "warning: the model was trained with NaN and infinite values read as 7; this "
        "prediction reads them as 0"
    ]
    identity = zarr.open_group("d.zarr", mode="r").attrs["tiledseg"]["identity"]
    assert identity["nan_fill"] == 0.0
    # (the model's fill is the run's: recorded in its identity too)
    assert zarr.open_group("a.zarr", mode="r").attrs["tiledseg"]["identity"]["nan_fill"] == 7.0


def test_segment_refuses_or_fills_as_its_config_says(work, capsys):
    config = "image: nan.npy\nlabels: scribbles.npy\nmodel: m.tseg\nout: out.zarr\n"
    config += f"features: minimal\nblock: {BLOCK}\ncache: false\n"
    Path("run.yaml").write_text(config)
    status, _, err = run(capsys, "segment", "run.yaml", "--quiet")
    assert status == 2
    assert len(err) == 1, err
    assert "nan.npy holds NaN or infinite values: " in err[0]
    assert "nan_fill: in a config" in err[0]
    Path("run.yaml").write_text(config + "nan_fill: 0\n")
    status, out, err = run(capsys, "segment", "run.yaml", "--quiet")
    assert status == 0, err
    assert "resumed:" in out  # the blocks without a NaN were kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nan-fill", "nan"], "--nan-fill nan: give a finite number"),
        (["--nan-fill", "inf"], "--nan-fill inf: give a finite number"),
        (["--nan-fill", "1e6", "--f16"], "nan_fill 1e+06 does not fit image half.npy's dtype"),
    ],
)
def test_a_fill_that_cannot_be_used_is_refused(work, capsys, args, message):
    np.save("half.npy", np.load("image.npy").astype(np.float16))
    image = "half.npy" if "--f16" in args else "image.npy"
    args = [a for a in args if a != "--f16"]
    status, _, err = run(capsys, *predict_args(image, "out.zarr"), *args)
    assert status == 2
    assert len(err) == 1, err
    assert message in err[0]
    assert not Path("out.zarr").exists()
