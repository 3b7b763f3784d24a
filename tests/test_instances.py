"""Objects (tiledseg instances): equal to a whole-volume labelling, whatever the blocks.

The reference is connected-components-3d on the whole volume, its objects renumbered by
their first voxel in C order; the table is checked against scikit-image's regionprops.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import tiledseg as ts
from tiledseg.cli import main
from tiledseg.errors import BlocksFailedError, InputDataError, TiledsegError
from tiledseg.instance_kernels import CONNECTIVITY
from tiledseg.instances import ObjectsJob
from tiledseg.runs import create_output, mark_complete
from tiledseg.testing import make_phantom
from tiledseg.testing.objects import canonical, touching_balls, whole_volume_split


def prediction(
    path, labels: np.ndarray, classes=(1, 2), proba: np.ndarray | None = None, spacing=None
):
    """A complete prediction output holding ``labels`` (and ``proba``), as predict writes it."""
    create_output(
        path, shape=labels.shape, block=(16,) * labels.ndim,
        spacing=spacing or (1.0,) * labels.ndim,
        label_dtype=np.uint8, classes=list(classes), probabilities=proba is not None,
        uncertainty=False, provenance={}, overwrite=False,
    )  # fmt: skip
    zarr.open_array(f"{path}/labels/0", mode="r+")[...] = labels
    if proba is not None:
        zarr.open_array(f"{path}/probabilities/0", mode="r+")[...] = proba
    mark_complete(path)
    return str(path)


def objects_of(path) -> np.ndarray:
    return zarr.open_array(f"{path}/labels/0", mode="r")[...]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.one_of(
        st.tuples(st.integers(3, 30), st.integers(3, 30)),
        st.tuples(st.integers(2, 14), st.integers(2, 14), st.integers(2, 14)),
    ),
    fill=st.floats(0.2, 0.7),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_objects_equal_a_whole_volume_labelling(tmp_path_factory, shape, fill, data, seed):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(shape) < fill, 2, 1).astype(np.uint8)
    labels[rng.random(shape) < 0.1] = 3  # a third class, separate objects where chosen
    block = tuple(data.draw(st.integers(1, n)) for n in shape)
    connectivity = data.draw(st.sampled_from({2: (4, 8), 3: (6, 18, 26)}[len(shape)]))
    classes = data.draw(st.sampled_from([(2,), (2, 3)]))
    min_size = data.draw(st.sampled_from([0, 0, 2, 5]))
    folder = tmp_path_factory.mktemp("h")
    pred = prediction(folder / "p.zarr", labels, classes=(1, 2, 3))
    result = ts.instances(
        pred, out=folder / "o.zarr", classes=classes, connectivity=connectivity,
        block=list(block), quiet=True, table="none", min_size=min_size,
    )  # fmt: skip
    values = np.where(np.isin(labels, classes), labels, 0).astype(np.uint16)
    expected = canonical(values, connectivity, min_size)
    assert_array_equal(objects_of(result.path), expected)
    assert result.objects == int(expected.max())


def spiral_and_shells(shape=(40, 44, 36)) -> np.ndarray:
    """A tube winding up through the volume and two nested shells: each one object."""
    z, y, x = np.indices(shape)
    labels = np.ones(shape, np.uint8)
    angle = z / 8.0  # (consecutive planes' discs overlap: one tube)
    radius = min(shape[1:]) * 0.38
    cy, cx = shape[1] / 2 + radius * np.sin(angle), shape[2] / 2 + radius * np.cos(angle)
    labels[(y - cy) ** 2 + (x - cx) ** 2 < 6] = 2
    centre = np.asarray(shape) / 2
    r = np.sqrt(sum((c - m) ** 2 for c, m in zip((z, y, x), centre, strict=True)))
    shell = radius * 0.6
    labels[(r > shell * 0.3) & (r < shell * 0.3 + 1.5)] = 2
    labels[(r > shell - 1.5) & (r < shell)] = 2
    return labels


@pytest.mark.parametrize("block", [(5, 6, 7), (8, 8, 8), (13, 3, 11)])
def test_objects_winding_through_many_blocks_stay_whole(tmp_path, block):
    labels = spiral_and_shells()
    pred = prediction(tmp_path / "p.zarr", labels)
    result = ts.instances(pred, out=tmp_path / "o.zarr", classes=2, block=list(block), quiet=True)
    expected = canonical(np.where(labels == 2, 2, 0).astype(np.uint16), 26)
    assert_array_equal(objects_of(result.path), expected)
    assert result.objects == int(expected.max()) >= 3
    table = pd.read_parquet(result.table)
    assert len(table) == result.objects


def test_the_table_equals_regionprops(tmp_path):
    from skimage.measure import regionprops

    ph = make_phantom((30, 34, 28), n_classes=3, feature_size=5.0, seed=4, scribble_fraction=0.02)
    np.save(tmp_path / "image.npy", ph.image)
    model = ts.train(ph.image, ph.scribbles, features="minimal", cache_dir=None)
    pred = ts.predict(
        str(tmp_path / "image.npy"), model, out=tmp_path / "p.zarr", probabilities=True,
        block=(15, 17, 14),
    )  # fmt: skip
    result = ts.instances(
        pred.path, out=tmp_path / "o.zarr", classes="2,3", block=[7, 9, 11], quiet=True,
        min_size=3,
    )  # fmt: skip
    objects = objects_of(result.path).astype(np.int64)
    labels = objects_of(pred.path)
    proba = zarr.open_array(f"{pred.path}/probabilities/0", mode="r")[...]
    own = np.zeros(labels.shape)
    for channel, value in enumerate(model.classes):
        own[labels == value] = proba[channel][labels == value] / 255.0
    table = pd.read_parquet(result.table)
    props = regionprops(objects, intensity_image=ph.image.astype(np.float64))
    assert list(table["id"]) == [p.label for p in props]
    assert list(table["voxels"]) == [int(p.area) for p in props]
    assert_allclose(table[["centroid_z", "centroid_y", "centroid_x"]], [p.centroid for p in props])
    bbox = [f"bbox_{e}_{a}" for e in ("min", "max") for a in "zyx"]
    assert_array_equal(table[bbox], [p.bbox for p in props])
    assert_allclose(table["mean_intensity"], [p.intensity_mean for p in props])
    means = [own[objects == p.label].mean() for p in props]
    assert_allclose(table["mean_probability"], means)
    classes = [int(labels[tuple(p.coords[0])]) for p in props]
    assert list(table["class"]) == classes
    edge = [
        any(p.bbox[a] == 0 or p.bbox[a + 3] == labels.shape[a] for a in range(3)) for p in props
    ]
    assert list(table["touches_edge"]) == edge
    # --min-size: the small objects dropped before numbering
    expected = canonical(np.where(np.isin(labels, (2, 3)), labels, 0).astype(np.uint16), 26, 3)
    assert_array_equal(objects, expected)
    assert result.dropped > 0


def test_objects_from_the_probabilities(tmp_path):
    rng = np.random.default_rng(3)
    shape = (24, 30, 20)
    proba = rng.integers(0, 256, (2, *shape)).astype(np.uint8)
    labels = np.where(proba[1] > proba[0], 2, 1).astype(np.uint8)
    pred = prediction(tmp_path / "p.zarr", labels, proba=proba)
    result = ts.instances(
        pred, out=tmp_path / "o.zarr", classes=2, threshold=0.8, block=[7, 9, 6],
        connectivity=6, quiet=True,
    )  # fmt: skip
    values = np.where(proba[1] >= np.ceil(0.8 * 255), 2, 0).astype(np.uint16)
    assert_array_equal(objects_of(result.path), canonical(values, 6))
    # two classes: a voxel above the threshold for both goes to the more probable
    both = ts.instances(
        pred, out=tmp_path / "b.zarr", classes="1,2", threshold=0.3, block=[7, 9, 6],
        connectivity=6, quiet=True,
    )  # fmt: skip
    level = np.ceil(0.3 * 255)
    values = np.where(proba[1] > proba[0], 2, 1).astype(np.uint16)
    values[proba.max(axis=0) < level] = 0
    values[(proba[0] == proba[1]) & (proba[0] >= level)] = 1  # (a tie: the first class given)
    assert_array_equal(objects_of(both.path), canonical(values, 6))


def test_a_stopped_run_continues_and_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    labels = spiral_and_shells((24, 26, 22))
    pred = prediction(tmp_path / "p.zarr", labels)
    expected = canonical(np.where(labels == 2, 2, 0).astype(np.uint16), 26)
    for method in ("components", "pairs", "relabel"):
        out = tmp_path / f"{method}.zarr"
        calls, _ = stop_and_continue(
            monkeypatch, method, lambda block: block.index == (1, 1, 1),
            lambda out=out: ts.instances(pred, out=out, classes=2, block=[8, 9, 8], quiet=True),
            r"(?s)1 of 27 blocks failed.*disk full",
        )  # fmt: skip
        assert [b.index for b in calls] == [(1, 1, 1)], method
        assert_array_equal(objects_of(out), expected)
        assert not (out / ".tiledseg-objects").exists()


def stop_and_continue(monkeypatch, method: str, stops, run, failed: str) -> tuple[list, object]:
    """Run with ``ObjectsJob.<method>`` failing where ``stops``, then again; return its calls.

    The first run must fail with ``failed``; the calls are those of the second run, and the
    result is its.
    """
    real = getattr(ObjectsJob, method)
    calls = []

    def failing(job, where):
        if stops(where):
            raise OSError("disk full")
        return real(job, where)

    def counted(job, where):
        calls.append(where)
        return real(job, where)

    with monkeypatch.context() as patch:
        patch.setattr(ObjectsJob, method, failing)
        with pytest.raises(BlocksFailedError, match=failed):
            run()
    with monkeypatch.context() as patch:
        patch.setattr(ObjectsJob, method, counted)
        return calls, run()


def test_a_rerun_with_other_settings_is_refused(tmp_path, monkeypatch):
    from tiledseg.errors import OutputExistsError

    pred = prediction(tmp_path / "p.zarr", spiral_and_shells((16, 18, 14)))
    out = tmp_path / "o.zarr"
    real = ObjectsJob.relabel

    def failing(job, block):
        if block.index == (0, 0, 0):
            raise OSError("disk full")
        return real(job, block)

    with monkeypatch.context() as patch:
        patch.setattr(ObjectsJob, "relabel", failing)
        with pytest.raises(BlocksFailedError):
            ts.instances(pred, out=out, classes=2, block=8, connectivity=6, quiet=True)
    for other, says in (
        ({"connectivity": 26}, "different --connectivity (it had 6, this run has 26)"),
        ({"min_size": 4, "connectivity": 6}, "different --min-size"),
        ({"table": "csv", "connectivity": 6}, "different table format (--table)"),
    ):
        with pytest.raises(OutputExistsError, match=re.escape(says)):
            ts.instances(pred, out=out, classes=2, block=8, quiet=True, **other)
    done = ts.instances(pred, out=out, classes=2, block=8, connectivity=6, quiet=True)
    assert done.skipped == 12  # (every block's components were found before the stop)
    # the same again, once complete: refused as predict refuses, kept by complete_ok
    with pytest.raises(OutputExistsError, match="exists and is complete"):
        ts.instances(pred, out=out, classes=2, block=8, connectivity=6, quiet=True)
    again = ts.instances(pred, out=out, classes=2, block=8, connectivity=6, complete_ok=True)
    assert again.objects == done.objects


def test_thousands_of_blocks_keep_few_files_open(tmp_path):
    import resource

    labels = np.where(np.random.default_rng(2).random((60, 50)) < 0.6, 2, 1).astype(np.uint8)
    pred = prediction(tmp_path / "p.zarr", labels)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))  # (fewer than the 300 blocks)
    try:
        result = ts.instances(pred, out=tmp_path / "o.zarr", classes=2, block=[2, 5], quiet=True)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result.blocks == 300
    assert_array_equal(objects_of(result.path), canonical(np.where(labels == 2, 2, 0), 8))


def test_the_output_is_ome_zarr_labels(tmp_path):
    models = pytest.importorskip("ome_zarr_models")
    pred = prediction(tmp_path / "p.zarr", spiral_and_shells((12, 14, 10)))
    result = ts.instances(pred, out=tmp_path / "o.zarr", classes=2, quiet=True)
    group = zarr.open_group(result.path, mode="r")
    assert type(models.open_ome_zarr(group["labels"])).__name__ == "ImageLabel"
    assert group["labels/0"].dtype == np.uint32
    assert group.attrs["tiledseg"]["kind"] == "instances"
    # the objects of an OME-Zarr 0.4 prediction are 0.4 too (zarr v2)
    labels = spiral_and_shells((12, 14, 10))
    old = tmp_path / "p4.zarr"
    create_output(
        old, shape=labels.shape, block=(8, 8, 8), spacing=(1.0,) * 3, label_dtype=np.uint8,
        classes=[1, 2], probabilities=False, uncertainty=False, provenance={"ngff": "0.4"},
        overwrite=False, ngff="0.4",
    )  # fmt: skip
    zarr.open_array(f"{old}/labels/0", mode="r+")[...] = labels
    mark_complete(old)
    four = ts.instances(str(old), out=tmp_path / "o4.zarr", classes=2, quiet=True)
    group = zarr.open_group(four.path, mode="r")
    assert group.metadata.zarr_format == 2
    assert type(models.open_ome_zarr(group["labels"])).__module__.startswith("ome_zarr_models.v04")
    assert_array_equal(objects_of(four.path), objects_of(result.path))


def test_the_command_and_bad_input(tmp_path, capsys):
    labels = spiral_and_shells((12, 14, 10))
    pred = prediction(tmp_path / "p.zarr", labels)
    out = str(tmp_path / "o.zarr")
    args = ["instances", pred, "--out", out, "--quiet"]
    assert main([*args, "--class", "2", "--table", "csv", "--connectivity", "6"]) == 0
    printed = capsys.readouterr().out
    assert "objects in" in printed
    assert (tmp_path / "o.csv").is_file()
    expected = canonical(np.where(labels == 2, 2, 0).astype(np.uint16), 6)
    assert_array_equal(objects_of(out), expected)
    for extra, says in (
        (["--class", "5"], "has no class 5 (its classes: 1, 2)"),
        (["--class", "2", "--threshold", "0.5"], "--threshold needs the probabilities"),
        (["--class", "2", "--connectivity", "8"], "is not one of a 3D image's: give 6 or 18 or 26"),
        (["--class", "two"], "must be class values separated by commas"),
        (["--class", "2", "--min-size", "-1"], "must be a whole number of voxels"),
        (["--class", "2"], "exists"),
    ):
        assert main([*args, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert says in err, (extra, err)
        assert len(err.strip().splitlines()) == 1, err
    with pytest.raises(InputDataError, match="is not a tiledseg output"):
        ts.instances(str(tmp_path), out=tmp_path / "x.zarr", classes=2)
    with pytest.raises(InputDataError, match="holds objects .tiledseg instances., not classes"):
        ts.evaluate(out, np.where(labels == 2, 2, 1))
    with pytest.raises(TiledsegError, match="has no option"):
        ts.instances(pred, out=tmp_path / "x.zarr", classes=2, smooth="graphcut")


@pytest.mark.slow
def test_worker_processes_give_the_same_objects(tmp_path):
    labels = spiral_and_shells((24, 26, 22))
    pred = prediction(tmp_path / "p.zarr", labels)
    result = ts.instances(pred, out=tmp_path / "o.zarr", classes=2, block=[8, 9, 8], workers=2)
    expected = canonical(np.where(labels == 2, 2, 0).astype(np.uint16), 26)
    assert_array_equal(objects_of(result.path), expected)


def test_a_config_makes_the_objects_of_its_prediction(tmp_path, capsys):
    ph = make_phantom((24, 26, 22), n_classes=3, feature_size=5.0, seed=8, scribble_fraction=0.02)
    np.save(tmp_path / "image.npy", ph.image)
    np.save(tmp_path / "labels.npy", ph.scribbles)
    config = tmp_path / "run.yaml"
    config.write_text(
        "image: image.npy\nlabels: labels.npy\nmodel: m.tseg\nout: out.zarr\nfeatures: minimal\n"
        "block: 12\ninstances:\n  classes: 2,3\n  out: objects.zarr\n  min_size: 2\n"
    )
    assert main(["segment", str(config), "--quiet"]) == 0
    assert "objects.zarr; table" in capsys.readouterr().out
    # the same config again: all is complete and kept (no error, nothing redone)
    assert main(["segment", str(config), "--quiet"]) == 0
    assert "training and its prediction skipped" in capsys.readouterr().out
    direct = ts.instances(
        tmp_path / "out.zarr", out=tmp_path / "direct.zarr", classes=(2, 3), min_size=2,
        image=tmp_path / "image.npy", quiet=True,
    )  # fmt: skip
    assert_array_equal(objects_of(tmp_path / "objects.zarr"), objects_of(direct.path))
    made = pd.read_parquet(tmp_path / "objects.parquet")
    pd.testing.assert_frame_equal(made, pd.read_parquet(direct.table))
    assert "mean_intensity" in made
    # a bad key of the section: one line, before any training
    for section, says in (
        ("instances:\n  classes: 2\n", "instances: required key 'out' is missing"),
        (
            "instances:\n  classes: 2\n  out: o.zarr\n  min_sise: 3\n",
            "unknown key 'min_sise' (did you mean 'min_size'?",
        ),
        ("instances:\n  classes: 2\n  out: o.zarr\n  min_size: -3\n", "must be a whole number"),
        ("instances:\n  classes: 2\n  out: n.zarr\n", "also the config's out or model"),
        ("instances:\n  classes: 2\n  out: o.zarr\n  connectivity: 8\n", "not one of a 3D"),
        ("pyramid: 12\n", "--pyramid 12 asks for more levels"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "image: image.npy\nlabels: labels.npy\nmodel: n.tseg\nout: n.zarr\n" + section
        )
        assert main(["segment", str(bad), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert says in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "n.tseg").exists()


def test_report_and_info_show_the_objects(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from tiledseg.report import make_report

    labels = spiral_and_shells()
    pred = prediction(tmp_path / "p.zarr", labels)
    result = ts.instances(pred, out=tmp_path / "o.zarr", classes=2, block=[8, 9, 8], quiet=True)
    report = make_report(result.path, out=tmp_path / "report.html")
    assert [p.name for p in report.panels] == ["slices", "sizes"]
    assert "each object is drawn in its own colour" in report.notes
    picture = np.asarray(Image.open(report.folder / report.panels[0].file).convert("RGB"))
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 3  # objects in several colours
    assert main(["info", result.path]) == 0
    out = capsys.readouterr().out
    assert f"objects: {result.objects}" in out
    assert "voxels: smallest" in out


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "pattern"), [("components", "m-*"), ("relabel", "done")])
def test_a_killed_run_continues_to_the_same_objects(tmp_path, stage, pattern):
    import os

    from tiledseg.testing.processes import kill_when

    labels = spiral_and_shells((40, 44, 36))
    pred = prediction(tmp_path / "p.zarr", labels)
    out = tmp_path / "o.zarr"
    args = ["instances", pred, "--class", "2", "--out", str(out), "--block", "5", "--quiet"]

    def progress() -> int:
        if pattern == "done":
            folder = out / ".tiledseg-done"
            return len(os.listdir(folder)) if folder.is_dir() else 0
        return len(list((out / ".tiledseg-objects").glob(pattern)))

    kill_when(args, lambda: progress() >= 40)  # (in pass 1, or in pass 3: the stage)
    assert main(args) == 0
    expected = canonical(np.where(labels == 2, 2, 0).astype(np.uint16), 26)
    assert_array_equal(objects_of(out), expected)
    table = pd.read_parquet(tmp_path / "o.parquet")
    assert len(table) == int(expected.max())


def test_objects_get_the_levels_of_their_prediction(tmp_path):
    from tiledseg.pyramid import downsample_mode

    labels = spiral_and_shells((40, 44, 36))
    pred = tmp_path / "p.zarr"
    create_output(
        pred, shape=labels.shape, block=(16,) * 3, spacing=(1.0,) * 3, label_dtype=np.uint8,
        classes=[1, 2], probabilities=False, uncertainty=False, provenance={}, overwrite=False,
        levels=2,
    )  # fmt: skip
    zarr.open_array(f"{pred}/labels/0", mode="r+")[...] = labels
    mark_complete(pred)
    tiled = ts.instances(str(pred), out=tmp_path / "t.zarr", classes=2, block=[7, 9, 5])
    whole = ts.instances(str(pred), out=tmp_path / "w.zarr", classes=2, block=list(labels.shape))
    for k in range(3):
        a = zarr.open_array(f"{tiled.path}/labels/{k}", mode="r")[...]
        assert_array_equal(a, zarr.open_array(f"{whole.path}/labels/{k}", mode="r")[...])
        if k:
            below = zarr.open_array(f"{tiled.path}/labels/{k - 1}", mode="r")[...]
            assert_array_equal(a, downsample_mode(below))
    assert a.shape == (10, 11, 9)
    assert not (tmp_path / "t.zarr" / ".tiledseg-done").exists()


@pytest.mark.parametrize(
    ("shape", "spacing", "block", "classes", "apart"),
    [
        ((36, 70, 64), (2.0, 1.0, 1.0), (11, 23, 17), (2,), True),
        ((120, 110), (1.0, 1.0), (37, 29), (2,), True),
        ((40, 48, 44), (1.0, 0.7, 0.7), (13, 20, 17), (2, 3), False),  # (crowded, 2 classes)
    ],
)
def test_touching_objects_split_as_the_whole_volume_would(
    tmp_path, shape, spacing, block, classes, apart
):
    labels, centres = touching_balls(shape, spacing, pairs=8, seed=len(shape), apart=apart)
    if len(classes) > 1:  # (the far half's balls are of class 3: the border between is one)
        labels[..., shape[-1] // 2 :][labels[..., shape[-1] // 2 :] == 2] = 3
    pred = prediction(tmp_path / "p.zarr", labels, classes=(1, 2, 3), spacing=spacing)
    values = np.where(np.isin(labels, classes), labels, 0).astype(np.uint16)
    connectivity = CONNECTIVITY[len(shape)][-1]
    expected = whole_volume_split(values, spacing, 6.0, connectivity)
    options = {"classes": list(classes), "split": "distance", "split_radius": 6.0, "quiet": True}
    whole = ts.instances(pred, out=tmp_path / "whole.zarr", block=list(shape), **options)
    assert_array_equal(objects_of(whole.path), expected)  # (one block: the definition)
    assert whole.objects > canonical(values, connectivity).max()  # (touching balls split)
    result = ts.instances(pred, out=tmp_path / "o.zarr", block=list(block), **options)
    found = objects_of(result.path)
    inside = values > 0
    assert (found[inside] == expected[inside]).mean() >= 0.999
    assert result.objects == whole.objects
    # no object is cut at a block border: each whole-volume object is mostly one object
    # here, and no two of them are the same one
    ids = np.unique(expected[inside])
    most = [np.bincount(found[expected == i]).argmax() for i in ids]
    assert len(set(most)) == len(ids)
    assert all((found[expected == i] == m).mean() >= 0.98 for i, m in zip(ids, most, strict=True))
    if apart and len(classes) == 1:  # each ball is an object of its own, its centre in it
        at = [tuple(np.round(c / np.asarray(spacing)).astype(int)) for c in centres]
        assert len({found[a] for a in at}) == len(at) == result.objects
    assert len(pd.read_parquet(result.table)) == result.objects


def test_a_split_stopped_in_any_pass_continues_to_the_same_objects(tmp_path, monkeypatch):
    labels, _ = touching_balls((30, 40, 40), (1.0, 1.0, 1.0), pairs=6, seed=5)
    pred = prediction(tmp_path / "p.zarr", labels)
    options = {"classes": 2, "split": "distance", "split_radius": 5, "block": [10, 14, 13]}
    reference = ts.instances(pred, out=tmp_path / "ref.zarr", quiet=True, **options)
    for method in ("_seeds", "_pieces"):
        out = tmp_path / f"{method}.zarr"
        calls, result = stop_and_continue(
            monkeypatch, method, lambda region: [r.start for r in region] == [10, 14, 13],
            lambda out=out: ts.instances(pred, out=out, quiet=True, **options),
            r"(?s)1 of 36 blocks failed.*disk full",
        )  # fmt: skip
        assert len(calls) == 1, method
        assert_array_equal(objects_of(out), objects_of(reference.path))
        assert result.objects == reference.objects
        assert not (out / ".tiledseg-objects").exists()


def test_split_options_and_bad_input(tmp_path, capsys):
    labels, _ = touching_balls((20, 30, 30), (1.0, 1.0, 1.0), pairs=3, seed=2)
    pred = prediction(tmp_path / "p.zarr", labels)
    out = str(tmp_path / "o.zarr")
    base = ["instances", pred, "--class", "2", "--out", out, "--quiet"]
    assert main([*base, "--split-radius", "4"]) == 2
    assert "add --split distance" in capsys.readouterr().err
    assert main([*base, "--split", "distance", "--split-radius", "-1"]) == 2
    assert "--split-radius '-1' must be a distance above 0" in capsys.readouterr().err
    assert main([*base, "--split", "watershed"]) == 2
    assert "watershed" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()
    assert main([*base, "--split", "distance", "--split-radius", "4"]) == 0
    assert main(["info", out]) == 0
    assert "split: distance (radius 4" in capsys.readouterr().out
