"""Prediction into an OME-Zarr group: layout, provenance, tiling, roi, overwrite rules, cluster."""

from __future__ import annotations

import hashlib
import tempfile

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import tiledseg as ts
from tiledseg.blocks import plan_blocks
from tiledseg.errors import InputDataError, OutputExistsError
from tiledseg.predict import classify_block
from tiledseg.testing import strategies as tst
from tiledseg.volume import open_volume


def read(path, name: str) -> np.ndarray:
    return zarr.open_array(f"{path}/{name}/0", mode="r")[...]


# -- layout and provenance -------------------------------------------------------------------


def test_output_layout(tmp_path, phantom2d, model2d):
    result = ts.predict(
        phantom2d.image,
        model2d,
        out=tmp_path / "out.zarr",
        probabilities=True,
        uncertainty=True,
        block=(20, 16),
    )
    assert result.shape == phantom2d.image.shape
    assert result.voxels == phantom2d.image.size
    assert result.blocks == 3 * 3
    assert result.voxels_per_second > 0
    root = zarr.open_group(result.path, mode="r")
    assert sorted(root.group_keys()) == ["labels", "probabilities", "uncertainty"]
    labels, proba, unc = (root[f"{n}/0"] for n in ("labels", "probabilities", "uncertainty"))
    k = len(model2d.classes)
    assert labels.shape == phantom2d.image.shape
    assert labels.dtype == np.uint8
    assert proba.shape == (k, *phantom2d.image.shape)
    assert proba.dtype == np.uint8
    assert unc.shape == phantom2d.image.shape
    assert unc.dtype == np.uint8
    # chunks are the processing blocks: no two blocks ever write the same chunk
    assert labels.chunks == (20, 16)
    assert proba.chunks == (k, 20, 16)
    assert unc.chunks == (20, 16)

    # the values agree with the model on the whole image
    lab, prob, u = labels[...], proba[...].astype(int), unc[...].astype(int)
    assert set(np.unique(lab)) <= set(model2d.classes.tolist())
    assert np.all(np.abs(prob.sum(0) - 255) <= k)
    volume = open_volume(phantom2d.image)
    (block,) = plan_blocks(volume.shape, volume.shape, model2d.halo)
    expected_labels, expected_proba = classify_block(volume, block, model2d)
    assert_array_equal(lab, expected_labels)
    # probabilities as 0-255, uncertainty as 255 * (1 - (p_best - p_second)), rounded
    expected_u8 = np.rint(expected_proba.T * np.float32(255)).reshape(prob.shape)
    assert_array_equal(prob, expected_u8)
    top2 = np.sort(expected_proba, axis=1)[:, -2:]
    expected_unc = np.rint((1 - (top2[:, 1] - top2[:, 0])) * np.float32(255)).reshape(u.shape)
    assert_array_equal(u, expected_unc)
    assert len(np.unique(u)) > 1, "the uncertainty varies"
    # the model classifies its phantom
    assert (lab == phantom2d.truth).mean() > 0.8


def test_ome_attributes(tmp_path, phantom3d, model3d):
    result = ts.predict(
        phantom3d.image, model3d, out=tmp_path / "out.zarr", probabilities=True, uncertainty=True
    )
    root = zarr.open_group(result.path, mode="r")
    for name, axes in (("labels", "zyx"), ("probabilities", "czyx"), ("uncertainty", "zyx")):
        ome = root[name].attrs["ome"]
        assert ome["version"] == "0.5"
        (ms,) = ome["multiscales"]
        assert [a["name"] for a in ms["axes"]] == list(axes)
        assert [a["type"] for a in ms["axes"]] == ["channel" if a == "c" else "space" for a in axes]
        (dataset,) = ms["datasets"]
        assert dataset["path"] == "0"
        (scale,) = dataset["coordinateTransformations"]
        assert scale["type"] == "scale"
        assert len(scale["scale"]) == len(axes)
    assert root["labels"].attrs["ome"]["image-label"]["version"] == "0.5"
    assert root.metadata.zarr_format == 3
    # an OME reader (ours) opens the probabilities with their class axis as channels
    proba = open_volume(f"{result.path}/probabilities")
    assert proba.channel_axis == 0
    assert proba.n_channels == len(model3d.classes)


def test_provenance(tmp_path, phantom2d, model_file):
    result = ts.predict(
        phantom2d.image,
        model_file,
        out=tmp_path / "out.zarr",
        command="tiledseg predict img.tif model out.zarr",
    )
    info = zarr.open_group(result.path, mode="r").attrs["tiledseg"]
    model = ts.load_model(model_file)
    assert info["model_checksum"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert info["bank"] == model.bank.to_dict()
    assert info["versions"]["numpy"] == np.__version__
    assert {"tiledseg", "xgboost", "zarr", "python"} <= set(info["versions"])
    assert info["command"] == "tiledseg predict img.tif model out.zarr"
    assert info["complete"] is True
    assert info["classes"] == [1, 2, 3]
    assert info["arrays"] == ["labels"]
    assert info["roi"] is None
    assert info["voxels"] == phantom2d.image.size


def test_spacing_comes_from_the_model(tmp_path, phantom2d, small_bank, fast_xgboost):
    model = ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=small_bank,
        classifier=fast_xgboost(),
        spacing=(2.0, 1.0),
        cache_dir=None,
    )
    result = ts.predict(phantom2d.image, model, out=tmp_path / "o.zarr", probabilities=True)
    info = zarr.open_group(result.path, mode="r").attrs["tiledseg"]
    assert info["feature_spacing"] == [2.0, 1.0]
    scale = zarr.open_group(result.path, mode="r")["labels"].attrs["ome"]["multiscales"][0][
        "datasets"
    ][0]["coordinateTransformations"][0]["scale"]
    assert scale == [2.0, 1.0]


# -- tiling ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "block"),
    [("2d", (13, 40)), ("2d", (7, 11)), ("3d", (6, 22, 7)), ("3d", (9, 8, 10))],
)
def test_uneven_blocks_give_the_labels_of_one_block(tmp_path, request, fixture, block):
    phantom = request.getfixturevalue(f"phantom{fixture}")
    model = request.getfixturevalue(f"model{fixture}")
    assert all(b >= h for b, h in zip(block, model.halo, strict=True))
    shape = phantom.image.shape
    one = ts.predict(
        phantom.image,
        model,
        out=tmp_path / "one.zarr",
        block=shape,
        probabilities=True,
        uncertainty=True,
    )
    tiled = ts.predict(
        phantom.image,
        model,
        out=tmp_path / "tiled.zarr",
        block=block,
        probabilities=True,
        uncertainty=True,
    )
    assert one.blocks == 1
    assert tiled.blocks >= 4
    for name in ("labels", "probabilities", "uncertainty"):
        assert_array_equal(read(tiled.path, name), read(one.path, name))


@settings(max_examples=8)
@given(data=st.data())
def test_drawn_blocks_give_the_labels_of_one_block(data, phantom2d, model2d, phantom3d, model3d):
    """Property: any accepted block shape, uneven or not, gives the one-block output."""
    ndim = data.draw(st.sampled_from((2, 3)), label="ndim")
    phantom, model = (phantom2d, model2d) if ndim == 2 else (phantom3d, model3d)
    shape = phantom.image.shape
    block = data.draw(tst.block_shapes(shape, model.halo), label="block")
    with tempfile.TemporaryDirectory() as tmp:
        one = ts.predict(
            phantom.image, model, out=f"{tmp}/one.zarr", block=shape, probabilities=True
        )
        tiled = ts.predict(
            phantom.image, model, out=f"{tmp}/tiled.zarr", block=block, probabilities=True
        )
        for name in ("labels", "probabilities"):
            assert_array_equal(read(tiled.path, name), read(one.path, name))


def test_random_forest_tiles_exactly(tmp_path, phantom2d, small_bank):
    model = ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=small_bank,
        classifier="random-forest",
        cache_dir=None,
    )
    one = ts.predict(
        phantom2d.image, model, out=tmp_path / "one.zarr", block=(48, 40), probabilities=True
    )
    tiled = ts.predict(
        phantom2d.image, model, out=tmp_path / "tiled.zarr", block=(9, 14), probabilities=True
    )
    for name in ("labels", "probabilities"):
        assert_array_equal(read(tiled.path, name), read(one.path, name))


def test_block_smaller_than_the_halo_is_refused_before_writing(tmp_path, phantom2d, model2d):
    with pytest.raises(ts.TiledsegError, match="halo"):
        ts.predict(phantom2d.image, model2d, out=tmp_path / "o.zarr", block=3)
    assert not (tmp_path / "o.zarr").exists()


# -- roi -------------------------------------------------------------------------------------


def test_roi_computes_only_the_blocks_meeting_it(tmp_path, phantom2d, model2d):
    block = (16, 16)
    full = ts.predict(
        phantom2d.image, model2d, out=tmp_path / "full.zarr", block=block, probabilities=True
    )
    part = ts.predict(
        phantom2d.image,
        model2d,
        out=tmp_path / "part.zarr",
        block=block,
        probabilities=True,
        roi="10:20,3:5",
    )
    assert part.blocks == 2  # rows 0:16 and 16:32 of column 0:16
    labels, whole = read(part.path, "labels"), read(full.path, "labels")
    written = np.zeros(labels.shape, dtype=bool)
    written[0:32, 0:16] = True
    assert_array_equal(labels[written], whole[written])
    assert (labels[~written] == 0).all()
    assert (labels[written] > 0).all()
    proba = read(part.path, "probabilities")
    assert_array_equal(proba[:, written], read(full.path, "probabilities")[:, written])
    assert (proba[:, ~written] == 0).all()
    info = zarr.open_group(part.path, mode="r").attrs["tiledseg"]
    assert info["roi"] == [[10, 20], [3, 5]]
    assert info["voxels"] == int(written.sum())


def test_roi_in_3d_with_slices(tmp_path, phantom3d, model3d):
    part = ts.predict(
        phantom3d.image,
        model3d,
        out=tmp_path / "p.zarr",
        block=(10, 11, 9),
        roi=(slice(0, 3), slice(12, 22), slice(None)),
    )
    labels = read(part.path, "labels")
    assert part.blocks == 1 * 1 * 2
    assert (labels[:10, 11:, :] > 0).all()
    assert (labels[10:] == 0).all()
    assert (labels[:, :11] == 0).all()


@pytest.mark.parametrize("roi", ["1:2", "0:5,9:9", "a:b,0:3"])
def test_bad_roi_is_refused(tmp_path, phantom2d, model2d, roi):
    with pytest.raises(ts.TiledsegError, match="region"):
        ts.predict(phantom2d.image, model2d, out=tmp_path / "o.zarr", roi=roi)


# -- overwrite rules -------------------------------------------------------------------------


def test_existing_output_needs_overwrite(tmp_path, phantom2d, model2d):
    out = tmp_path / "out.zarr"
    ts.predict(phantom2d.image, model2d, out=out)
    with pytest.raises(OutputExistsError, match="exists.*--overwrite"):
        ts.predict(phantom2d.image, model2d, out=out, probabilities=True)
    assert "probabilities" not in zarr.open_group(str(out), mode="r")
    ts.predict(phantom2d.image, model2d, out=out, probabilities=True, overwrite=True)
    assert "probabilities" in zarr.open_group(str(out), mode="r")


@pytest.mark.parametrize("kind", ["folder", "zarr-group", "file"])
def test_non_tiledseg_path_is_never_replaced(tmp_path, phantom2d, model2d, kind):
    out = tmp_path / "precious.zarr"
    if kind == "folder":
        out.mkdir()
        (out / "thesis.txt").write_text("years of work")
    elif kind == "zarr-group":
        zarr.open_group(str(out), mode="w").create_array("data", shape=(3,), dtype="u1")
    else:
        out.write_text("years of work")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="exists"):
            ts.predict(phantom2d.image, model2d, out=out, overwrite=overwrite)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    if kind == "folder":
        assert (out / "thesis.txt").read_text() == "years of work"


def test_output_missing_parent_or_same_as_input(tmp_path, phantom2d, model2d):
    with pytest.raises(OutputExistsError, match="does not exist"):
        ts.predict(phantom2d.image, model2d, out=tmp_path / "no" / "out.zarr")
    np.save(tmp_path / "img.npy", phantom2d.image)
    with pytest.raises(OutputExistsError, match="one of the inputs"):
        ts.predict(str(tmp_path / "img.npy"), model2d, out=tmp_path / "img.npy", overwrite=True)


# -- inputs that do not fit the model --------------------------------------------------------


def test_channel_count_must_match_the_model(tmp_path, phantom2d, model2d):
    two = np.stack([phantom2d.image, phantom2d.image], axis=-1)
    with pytest.raises(InputDataError, match=r"2 channel\(s\) but the model was trained on 1"):
        ts.predict(two, model2d, out=tmp_path / "o.zarr", channel_axis=2)
    # without a channel axis the (y, x, 2) image reads as 3D: refused as well
    with pytest.raises(InputDataError, match="3 spatial axes but the model was trained on 2D"):
        ts.predict(two, model2d, out=tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()


def test_model_channel_axis_is_the_default(tmp_path, rng, small_bank, fast_xgboost):
    """A model trained on (z, y, x, c) predicts a (z, y, x, c) image without being told the axis."""
    from tiledseg.testing import make_phantom

    ph = make_phantom((14, 16, 18), n_classes=2, scribble_fraction=0.05, seed=3)
    image = np.stack([ph.image, 255 - ph.image], axis=-1)
    model = ts.train(
        image,
        ph.scribbles,
        channel_axis=3,
        features=small_bank,
        classifier=fast_xgboost(),
        cache_dir=None,
    )
    assert model.n_channels == 2
    assert model.channel_axis == 3
    np.save(tmp_path / "img.npy", image)
    result = ts.predict(str(tmp_path / "img.npy"), model, out=tmp_path / "o.zarr")
    assert result.shape == (14, 16, 18)
    explicit = ts.predict(image, model, out=tmp_path / "e.zarr", channel_axis=-1)
    assert_array_equal(read(result.path, "labels"), read(explicit.path, "labels"))
    # a 2D + channel model on a (y, x, c) image, too
    ph2 = make_phantom((30, 32), n_classes=2, scribble_fraction=0.05, seed=4)
    rgb = np.stack([ph2.image, ph2.image // 2], axis=-1)
    model2 = ts.train(
        rgb,
        ph2.scribbles,
        channel_axis=2,
        features=small_bank,
        classifier=fast_xgboost(),
        cache_dir=None,
    )
    assert ts.predict(rgb, model2, out=tmp_path / "rgb.zarr").shape == (30, 32)


def test_dimensionality_must_match_the_model(tmp_path, phantom3d, model2d):
    with pytest.raises(InputDataError, match="3 spatial axes but the model was trained on 2D"):
        ts.predict(phantom3d.image, model2d, out=tmp_path / "o.zarr")


# -- a cluster of worker processes -----------------------------------------------------------


@pytest.mark.slow
def test_worker_processes_give_the_labels_of_threads(tmp_path, phantom3d, model3d):
    np.save(tmp_path / "img.npy", phantom3d.image)
    image = str(tmp_path / "img.npy")
    threads = ts.predict(
        image, model3d, out=tmp_path / "threads.zarr", block=(10, 11, 9), probabilities=True
    )
    procs = ts.predict(
        image,
        model3d,
        out=tmp_path / "procs.zarr",
        block=(10, 11, 9),
        probabilities=True,
        workers=2,
    )
    assert procs.blocks == threads.blocks == 8
    for name in ("labels", "probabilities"):
        assert_array_equal(read(procs.path, name), read(threads.path, name))
    assert zarr.open_group(procs.path, mode="r").attrs["tiledseg"]["complete"] is True


def test_concurrent_predictions_share_one_booster():
    """Blocks classified on several threads at once use one booster; none may fail.

    Setting the booster's thread count on every call used to unconfigure it under the feet
    of a block predicting on another thread ("Check failed: !this->need_configuration_").
    """
    from concurrent.futures import ThreadPoolExecutor

    from tiledseg.classifiers import XGBoostClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    for _ in range(3):
        clf = XGBoostClassifier(max_rounds=10)
        clf.fit(X, y, n_threads=2)
        expected = clf.predict_proba(X, n_threads=1)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _, c=clf: c.predict_proba(X, n_threads=1), range(300)))
        for proba in results:
            assert_array_equal(proba, expected)


def test_an_image_with_other_spacing_in_its_metadata_is_refused(tmp_path, phantom2d, model2d):
    from tiledseg.demo import write_ome_zarr
    from tiledseg.errors import InputDataError

    write_ome_zarr(tmp_path / "img.zarr", phantom2d.image, spacing=(3.0, 1.0), chunks=(32, 32))
    with pytest.raises(InputDataError, match="retrain with this image's spacing"):
        ts.predict(str(tmp_path / "img.zarr"), model2d, out=tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
    # the same spacing up to a common factor (other units) is the same features
    write_ome_zarr(tmp_path / "same.zarr", phantom2d.image, spacing=(0.5, 0.5), chunks=(32, 32))
    ts.predict(str(tmp_path / "same.zarr"), model2d, out=tmp_path / "ok.zarr")


@pytest.mark.slow
def test_predict_on_a_running_scheduler(tmp_path, phantom2d, model2d):
    """scheduler= joins an existing dask cluster; the labels equal the threaded run's."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster:
        ts.predict(
            phantom2d.image, model2d, out=tmp_path / "a.zarr", scheduler=cluster.scheduler_address
        )
    ts.predict(phantom2d.image, model2d, out=tmp_path / "b.zarr")
    assert_array_equal(
        zarr.open_array(str(tmp_path / "a.zarr/labels/0"))[...],
        zarr.open_array(str(tmp_path / "b.zarr/labels/0"))[...],
    )


def test_predict_and_check_finite_leave_the_callers_volume_as_it_was(tmp_path):
    from tiledseg.predict import check_finite
    from tiledseg.testing import make_phantom
    from tiledseg.volume import open_volume

    ph = make_phantom((24, 26), n_classes=2, scribbles="strokes", seed=3)
    model = ts.train(ph.image, ph.scribbles, features="minimal", spacing=(2.0, 1.0))
    volume = open_volume(ph.image.astype(np.float32))
    assert volume.spacing == (1.0, 1.0)
    checked = check_finite(volume)
    assert checked.checked_finite
    assert checked is not volume
    assert not volume.checked_finite
    ts.predict(volume, model, out=tmp_path / "out.zarr")
    assert volume.spacing == (1.0, 1.0)
    assert not volume.checked_finite
