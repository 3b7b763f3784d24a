"""Multiscale outputs (--pyramid, --ngff): each level against whole-volume downsampling.

Every level is compared with the downsampling of the whole level below it, written by a
plain loop over 2x2(x2) groups here; the levels of an uneven tiling equal those of one
block; a run whose blocks or level chunks fail continues to the same levels; and the
metadata is validated by ome-zarr-models and opened by ome-zarr-py's reader (napari's).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import tiledseg as ts
from tiledseg.cli import main
from tiledseg.errors import BlocksFailedError, OutputExistsError, TiledsegError
from tiledseg.predict import PredictionJob
from tiledseg.pyramid import PyramidJob, downsample_mean, downsample_mode, level_count
from tiledseg.runs import done_blocks
from tiledseg.testing import make_phantom

ARRAYS = ("labels", "probabilities", "uncertainty")


def reference_mode(values: np.ndarray) -> np.ndarray:
    """The most frequent value of each 2x2(x2) group (cut short at odd edges), ties smaller."""
    out = np.zeros(tuple(-(-n // 2) for n in values.shape), values.dtype)
    for index in np.ndindex(out.shape):
        group = values[tuple(slice(2 * i, 2 * i + 2) for i in index)].ravel()
        found, counts = np.unique(group, return_counts=True)  # (sorted: the first max is smaller)
        out[index] = found[np.argmax(counts)]
    return out


def reference_mean(values: np.ndarray, lead: int = 0) -> np.ndarray:
    """The mean of each group of the last axes, rounded half up; ``lead`` axes kept."""
    spatial = values.shape[lead:]
    out = np.zeros(values.shape[:lead] + tuple(-(-n // 2) for n in spatial), values.dtype)
    for index in np.ndindex(out.shape):
        head, tail = index[:lead], index[lead:]
        group = values[head + tuple(slice(2 * i, 2 * i + 2) for i in tail)]
        out[index] = int(np.floor(group.astype(float).mean() + 0.5))
    return out


def levels_of(path, name: str = "labels") -> list[np.ndarray]:
    group = zarr.open_group(str(path), mode="r")[name]
    return [group[str(k)][...] for k in range(len(list(group.array_keys())))]


def assert_levels_are_downsamplings(path) -> None:
    root = zarr.open_group(str(path), mode="r")
    for name in ARRAYS:
        if name not in root:
            continue
        levels = levels_of(path, name)
        assert len(levels) > 1, name
        for k in range(1, len(levels)):
            below = levels[k - 1]
            expected = (
                reference_mode(below)
                if name == "labels"
                else reference_mean(below, lead=int(name == "probabilities"))
            )
            assert_array_equal(levels[k], expected, err_msg=f"{name} level {k}")


# -- the kernels -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=2, max_size=3),
    n_values=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_mode_and_mean_equal_a_loop_over_groups(shape, n_values, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_values, shape).astype(np.uint16)
    assert_array_equal(downsample_mode(labels), reference_mode(labels))
    values = rng.integers(0, 256, shape).astype(np.uint8)
    assert_array_equal(downsample_mean(values), reference_mean(values))
    assert_array_equal(downsample_mean(values, ndim=len(shape) - 1), reference_mean(values, 1))


def test_a_tie_goes_to_the_smaller_value():
    assert_array_equal(downsample_mode(np.array([[7, 3], [3, 7]], np.uint8)), [[3]])
    assert_array_equal(downsample_mode(np.array([[9, 4, 5]], np.uint8)), [[4, 5]])


def test_level_counts():
    assert level_count((900, 700), "auto") == 1  # 350; 175 would be below about 256
    assert level_count((4096, 4096, 600), "auto") == 1
    assert level_count((8192, 8192), "auto") == 5  # 4096 ... 256
    assert level_count((300, 5000), "auto") == 0
    assert level_count((900, 700), "none") == 0
    assert level_count((900, 700), 3) == 3
    with pytest.raises(TiledsegError, match="at most 3"):
        level_count((8, 5), 4)


# -- levels of a prediction ------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(model_file):
    """The 2D model, loaded from its file (the session's model2d stays unsaved)."""
    return ts.load_model(model_file)


@pytest.fixture(scope="module")
def image2d() -> np.ndarray:
    return make_phantom((97, 83), n_classes=3, feature_size=8.0, seed=11).image


@pytest.fixture(scope="module")
def one_block(tmp_path_factory, image2d, model):
    out = tmp_path_factory.mktemp("one") / "one.zarr"
    ts.predict(
        image2d, model, out=out, block=image2d.shape, pyramid=3, probabilities=True,
        uncertainty=True, quiet=True,
    )  # fmt: skip
    return out


@pytest.mark.parametrize("block", [(12, 12), (10, 17), (31, 9)])
def test_levels_equal_the_downsampling_of_the_level_below_whatever_the_blocks(
    tmp_path, image2d, model, one_block, block
):
    out = tmp_path / "o.zarr"
    ts.predict(
        image2d, model, out=out, block=block, pyramid=3, probabilities=True,
        uncertainty=True, quiet=True,
    )  # fmt: skip
    assert_levels_are_downsamplings(out)
    for name in ARRAYS:
        for k, (tiled, whole) in enumerate(
            zip(levels_of(out, name), levels_of(one_block, name), strict=True)
        ):
            assert_array_equal(tiled, whole, err_msg=f"{name} level {k}")
    group = zarr.open_group(str(out), mode="r")["labels"]
    assert [group[str(k)].shape for k in range(4)] == [(97, 83), (49, 42), (25, 21), (13, 11)]
    assert all(
        group[str(k)].chunks
        == tuple(min(b, n) for b, n in zip(block, group[str(k)].shape, strict=True))
        for k in range(4)
    )  # noqa: E501


def test_3d_levels_with_a_mask_leave_chunks_outside_it_unwritten(tmp_path, phantom3d, model3d):
    mask = np.zeros(phantom3d.image.shape, np.uint8)
    mask[:7, :9, :5] = 1
    np.save(tmp_path / "mask.npy", mask)
    out = tmp_path / "o.zarr"
    result = ts.predict(
        phantom3d.image, model3d, out=out, block=(6, 7, 6), pyramid=2, mask=tmp_path / "mask.npy",
        probabilities=True, quiet=True,
    )  # fmt: skip
    assert result.masked > 0
    assert_levels_are_downsamplings(out)
    # level 1's chunks are (6, 7, 6) of a (10, 11, 9) level: only those over the mask's
    # blocks hold data; the others were never written (no chunk file)
    written = {p.relative_to(out / "labels" / "1") for p in (out / "labels" / "1").rglob("*")}
    chunks = {p for p in written if p.parts[0] == "c" and len(p.parts) == 4}
    assert chunks == {Path("c/0/0/0")}


def test_levels_follow_the_graph_cut(tmp_path, image2d, model):
    out = tmp_path / "o.zarr"
    ts.predict(image2d, model, out=out, block=(20, 24), pyramid=2, smooth="graphcut", quiet=True)
    assert_levels_are_downsamplings(out)
    whole = tmp_path / "whole.zarr"
    ts.predict(image2d, model, out=whole, block=image2d.shape, pyramid=2, smooth="graphcut")
    for tiled, one in zip(levels_of(out), levels_of(whole), strict=True):
        assert_array_equal(tiled, one)


def test_a_level_chunk_is_made_as_soon_as_the_blocks_below_it_are_written(
    tmp_path, image2d, model, monkeypatch
):
    order: list[str] = []
    predict, write = PredictionJob.predict, PyramidJob.write
    monkeypatch.setattr(
        PredictionJob, "predict", lambda job, b: order.append("block") or predict(job, b)
    )
    monkeypatch.setattr(PyramidJob, "write", lambda job, c: order.append("level") or write(job, c))
    ts.predict(image2d, model, out=tmp_path / "o.zarr", block=(12, 12), pyramid=1, quiet=True)
    blocks = [i for i, what in enumerate(order) if what == "block"]
    assert len(blocks) == 9 * 7
    # the first level-1 chunk needs 4 of the 63 blocks: it is made long before the last
    assert order.index("level") < blocks[len(blocks) // 2]


# -- resume and failures ---------------------------------------------------------------------


def test_failed_blocks_hold_their_levels_back_and_a_rerun_completes_them(
    tmp_path, image2d, model_file, one_block, monkeypatch
):
    out = tmp_path / "o.zarr"
    path = tmp_path / "image.npy"
    np.save(path, image2d)
    real = PredictionJob.predict

    def failing(job, block):
        if block.index == (3, 2):
            raise OSError("injected")
        return real(job, block)

    args = dict(out=out, block=(12, 12), pyramid=3, probabilities=True, uncertainty=True)
    with monkeypatch.context() as patch:
        patch.setattr(PredictionJob, "predict", failing)
        with pytest.raises(BlocksFailedError, match="1 of 63 blocks failed"):
            ts.predict(str(path), str(model_file), quiet=True, **args)
    # the block's parents at every level wait for it; the others are made
    assert (1, 1) not in done_blocks(out, level=1)
    assert (0, 0) in done_blocks(out, level=1)
    assert done_blocks(out, level=3) == {(1, 0)}
    counted = []
    write = PyramidJob.write
    monkeypatch.setattr(PyramidJob, "write", lambda job, c: counted.append(c) or write(job, c))
    result = ts.predict(str(path), str(model_file), quiet=True, **args)
    assert result.skipped == 62
    assert sorted((c.level, c.index) for c in counted) == [(1, (1, 1)), (2, (0, 0)), (3, (0, 0))]
    for name in ARRAYS:
        for rerun, whole in zip(levels_of(out, name), levels_of(one_block, name), strict=True):
            assert_array_equal(rerun, whole)


def test_a_failed_level_chunk_is_named_and_a_rerun_makes_only_it(
    tmp_path, image2d, model_file, monkeypatch
):
    path = tmp_path / "image.npy"
    np.save(path, image2d)
    out = tmp_path / "o.zarr"
    write = PyramidJob.write

    def failing(job, chunk):
        if (chunk.level, chunk.index) == (1, (0, 1)):
            raise OSError("disk full")
        return write(job, chunk)

    with monkeypatch.context() as patch:
        patch.setattr(PyramidJob, "write", failing)
        with pytest.raises(BlocksFailedError) as failed:
            ts.predict(str(path), str(model_file), out=out, block=(12, 12), pyramid=2, quiet=True)
    head, line = str(failed.value).splitlines()
    assert head.startswith("all 63 blocks are written but 1 chunk of the multiscale levels failed")
    assert line == "  level 1 chunk 0,1: OSError: disk full"
    # the labels are whole: evaluate takes them
    truth = np.load(path).round().astype(np.uint8) % 3 + 1
    np.save(tmp_path / "truth.npy", truth)
    ts.evaluate(str(out), str(tmp_path / "truth.npy"))
    calls = []
    monkeypatch.setattr(PyramidJob, "write", lambda job, c: calls.append(c) or write(job, c))
    result = ts.predict(str(path), str(model_file), out=out, block=(12, 12), pyramid=2, quiet=True)
    assert result.skipped == 63
    assert sorted((c.level, c.index) for c in calls) == [(1, (0, 1)), (2, (0, 0))]
    assert_levels_are_downsamplings(out)


def test_a_rerun_with_other_levels_is_refused(tmp_path, image2d, model_file, monkeypatch):
    path = tmp_path / "image.npy"
    np.save(path, image2d)
    out = tmp_path / "o.zarr"
    monkeypatch.setattr(PyramidJob, "write", lambda job, c: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(BlocksFailedError):
        ts.predict(str(path), str(model_file), out=out, block=(12, 12), pyramid=2, quiet=True)
    with pytest.raises(OutputExistsError, match=r"multiscale levels \(--pyramid\) \(it had 2"):
        ts.predict(str(path), str(model_file), out=out, block=(12, 12), pyramid=1, quiet=True)


def test_levels_of_a_region_and_an_output_begun_without_levels(tmp_path, image2d, model_file):
    path = tmp_path / "image.npy"
    np.save(path, image2d)
    out = tmp_path / "roi.zarr"
    ts.predict(str(path), str(model_file), out=out, block=(12, 12), pyramid=2, roi="20:70,:40")
    assert_levels_are_downsamplings(out)
    assert not levels_of(out)[1][40:].any()  # (beyond the region's chunks: never written)
    # a run begun with none (or before levels existed) continues without them by default,
    # though auto gives an image of this size a level
    big = tmp_path / "big.npy"
    np.save(big, make_phantom((400, 392), n_classes=3, feature_size=8.0, seed=5).image)
    old = tmp_path / "old.zarr"
    real = PredictionJob.predict

    def failing(job, block):
        if block.index == (0, 0):
            raise OSError("injected")
        return real(job, block)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PredictionJob, "predict", failing)
        with pytest.raises(BlocksFailedError):
            ts.predict(str(big), str(model_file), out=old, block=100, pyramid="none", quiet=True)
    assert level_count((400, 392), "auto") == 1
    result = ts.predict(str(big), str(model_file), out=old, block=100, quiet=True)
    assert result.skipped == 15
    assert len(levels_of(old)) == 1
    fresh = ts.predict(str(big), str(model_file), out=tmp_path / "new.zarr", block=100)
    assert len(levels_of(fresh.path)) == 2


@pytest.mark.slow
def test_levels_on_worker_processes(tmp_path, image2d, model):
    out = tmp_path / "o.zarr"
    ts.predict(image2d, model, out=out, block=(12, 12), pyramid=3, probabilities=True, workers=2)
    assert_levels_are_downsamplings(out)


def test_a_collection_writes_each_images_levels(tmp_path, model):
    images = []
    for i in range(3):
        images.append(tmp_path / f"tile{i}.npy")
        np.save(images[-1], make_phantom((40 + 9 * i, 37), seed=20 + i).image)
    (tmp_path / "out").mkdir()
    result = ts.predict_collection(
        [str(p) for p in images], model, out_dir=tmp_path / "out", block=(8, 10), pyramid=2,
        probabilities=True, quiet=True,
    )  # fmt: skip
    assert not result.failed
    for i in range(3):
        assert_levels_are_downsamplings(tmp_path / "out" / f"tile{i}.zarr")


# -- OME-Zarr metadata -----------------------------------------------------------------------


@pytest.mark.parametrize("ngff", ["0.5", "0.4"])
def test_the_metadata_validates_and_a_reader_opens_every_level(tmp_path, image2d, model, ngff):
    models = pytest.importorskip("ome_zarr_models")
    out = tmp_path / "o.zarr"
    ts.predict(
        image2d, model, out=out, block=(20, 20), pyramid=2, ngff=ngff, probabilities=True,
        uncertainty=True, quiet=True,
    )  # fmt: skip
    root = zarr.open_group(str(out), mode="r")
    assert root.metadata.zarr_format == (2 if ngff == "0.4" else 3)
    kinds = {}
    for name in ARRAYS:
        validated = models.open_ome_zarr(root[name])
        kinds[name] = type(validated).__name__
        assert type(validated).__module__.startswith(f"ome_zarr_models.v0{ngff[-1]}")
    assert kinds == {"labels": "ImageLabel", "probabilities": "Image", "uncertainty": "Image"}
    if ngff == "0.4":  # v2 chunks are named with "/" as 0.4 asks
        assert (out / "labels" / "1" / "0" / "0").is_file()
    reader = pytest.importorskip("ome_zarr.reader")
    from ome_zarr.io import parse_url

    node = next(iter(reader.Reader(parse_url(str(out / "labels")))()))
    assert [tuple(d.shape) for d in node.data] == [(97, 83), (49, 42), (25, 21)]
    assert_array_equal(np.asarray(node.data[2]), levels_of(out)[2])


def test_cli_and_config_options(tmp_path, image2d, model_file, capsys):
    np.save(tmp_path / "image.npy", image2d)
    model = str(model_file)
    base = ["predict", str(tmp_path / "image.npy"), "--model", model, "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a.zarr"), "--pyramid", "2", "--ngff", "0.4"]) == 0
    assert len(levels_of(tmp_path / "a.zarr")) == 3
    assert zarr.open_group(str(tmp_path / "a.zarr"), mode="r").metadata.zarr_format == 2
    assert main(["info", str(tmp_path / "a.zarr")]) == 0
    assert "levels: 2 below full resolution (49x42, 25x21); OME-Zarr 0.4" in capsys.readouterr().out
    for bad, says in (("many", "--pyramid must be auto, none or a number"), ("9", "at most 7")):
        assert main([*base, "--out", str(tmp_path / "b.zarr"), "--pyramid", bad]) == 2
        err = capsys.readouterr().err
        assert says in err
        assert len(err.strip().splitlines()) == 1, err
    assert main([*base, "--out", str(tmp_path / "n.zarr"), "--pyramid", "none"]) == 0
    assert len(levels_of(tmp_path / "n.zarr")) == 1
    np.save(tmp_path / "labels.npy", make_phantom((97, 83), n_classes=3, seed=11).scribbles)
    config = tmp_path / "run.yaml"
    config.write_text(
        "image: image.npy\nlabels: labels.npy\nmodel: c.tseg\nout: c.zarr\nfeatures: minimal\n"
        "pyramid: 1\nngff: 0.4\nblock: 30\n"
    )
    assert main(["segment", str(config), "--quiet"]) == 0
    assert len(levels_of(tmp_path / "c.zarr")) == 2


def test_grids_of_odd_levels_pool_their_children():
    # the tracker's view of a 3 x 3 grid of blocks with block (1, 1) failing: level 1's
    # chunk (0, 0) waits for it, the others do not
    from tiledseg.pyramid import LevelTracker

    job = PyramidJob("unused", ("labels",), (4, 4), ((12, 12), (6, 6), (3, 3)))
    written = np.ones((3, 3), bool)
    todo = written.copy()
    tracker = LevelTracker(job, written, todo, {})
    assert not tracker.ready
    assert tracker.total == 4 + 1
    for index in itertools.product(range(3), range(3)):
        if index != (1, 1):
            tracker.finished(0, index)
    assert sorted(c.index for c in tracker.ready) == [(0, 1), (1, 0), (1, 1)]
