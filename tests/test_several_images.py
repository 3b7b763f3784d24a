"""One model trained on the scribbles of several images (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import tiledseg as ts
from tiledseg.cli import main
from tiledseg.cluster import open_executor
from tiledseg.errors import OutputExistsError, TiledsegError
from tiledseg.features.tiled import feature_array
from tiledseg.options import Execution, ImageInput, Training
from tiledseg.testing import make_phantom
from tiledseg.training import _plans, training_table, training_tables


def read_labels(path) -> np.ndarray:
    return zarr.open_array(f"{path}/labels/0", mode="r")[...]


def zarr_attrs(path) -> dict:
    return dict(zarr.open_group(str(path), mode="r").attrs["tiledseg"])


FEATURES = {"gaussian_smoothing": [1.0], "gaussian_gradient_magnitude": [1.0]}


@pytest.fixture(scope="module")
def two():
    return [make_phantom((30, 34, 28), n_classes=3, seed=s, scribble_fraction=0.01) for s in (1, 2)]


def test_the_table_is_the_single_tables_one_after_the_other(two):
    pairs = [(p.image, p.scribbles, {}) for p in two]
    plans = _plans(pairs, Execution(block=16), ImageInput(), Training(features=FEATURES))
    with open_executor(None, quiet=True) as executor:
        both = training_tables(plans, executor=executor, cache_dir=None, feature_device="cpu")
        singles = [
            training_table(
                p.volume, p.labels, bank=p.bank, block=p.block, executor=executor, cache_dir=None
            )
            for p in plans
        ]
    np.testing.assert_array_equal(both.X, np.concatenate([t.X for t in singles]))
    np.testing.assert_array_equal(both.y, np.concatenate([t.y for t in singles]))
    assert both.coords.shape[1] == 4  # the image's number first
    assert sorted(set(both.coords[:, 0])) == [0, 2]
    assert both.per_image == [
        {int(c): int(n) for c, n in zip(*np.unique(t.y, return_counts=True), strict=True)}
        for t in singles
    ]


def test_train_on_several_images_through_the_api_and_the_command(two, tmp_path):
    model = ts.train([(p.image, p.scribbles) for p in two], features=FEATURES, cache_dir=None)
    per_image = model.summary["images"]
    assert len(per_image) == 2
    for entry, p in zip(per_image, two, strict=True):
        values, counts = np.unique(p.scribbles[p.scribbles > 0], return_counts=True)
        assert entry["labelled_voxels"] == dict(zip(values.tolist(), counts.tolist(), strict=True))
    total = sum(sum(e["labelled_voxels"].values()) for e in per_image)
    assert sum(model.summary["labelled_voxels"].values()) == total
    # the command: IMAGE LABELS pairs
    for i, p in enumerate(two):
        np.save(tmp_path / f"i{i}.npy", p.image)
        np.save(tmp_path / f"l{i}.npy", p.scribbles)
    paths = [str(tmp_path / f"{k}{i}.npy") for i in range(2) for k in ("i", "l")]
    args = ["train", *paths, "--model", str(tmp_path / "m.tseg"), "--quiet", "--no-cache"]
    assert main([*args, "--features", "minimal"]) == 0
    assert len(ts.load_model(tmp_path / "m.tseg").summary["images"]) == 2


def test_several_images_must_be_of_one_kind(two, tmp_path, capsys):
    plane = (two[1].image[10], two[1].scribbles[10])
    with pytest.raises(TiledsegError, match="is 2D with 1 channel.* is 3D with 1"):
        ts.train([(two[0].image, two[0].scribbles), plane], cache_dir=None)
    np.save(tmp_path / "i.npy", two[0].image)
    assert main(["train", str(tmp_path / "i.npy"), "--model", str(tmp_path / "m.tseg")]) == 2
    err = capsys.readouterr().err
    assert "give IMAGE LABELS pairs" in err
    assert err.count("\n") == 1


def test_a_config_trains_on_more_images(two, tmp_path):
    import zarr

    for i, p in enumerate(two):
        np.save(tmp_path / f"i{i}.npy", p.image)
        np.save(tmp_path / f"l{i}.npy", p.scribbles)
    (tmp_path / "run.yaml").write_text(
        "image: i0.npy\nlabels: l0.npy\nmodel: m.tseg\nout: o.zarr\nfeatures: minimal\n"
        "training_images:\n  - {image: i1.npy, labels: l1.npy}\n"
    )
    assert main(["segment", str(tmp_path / "run.yaml"), "--quiet"]) == 0
    model = ts.load_model(tmp_path / "m.tseg")
    assert [e["image"] for e in model.summary["images"]][1].endswith("i1.npy")
    assert zarr.open_array(tmp_path / "o.zarr" / "labels" / "0").shape == two[0].image.shape


def test_a_bad_training_image_in_a_config_is_named(tmp_path):
    from tiledseg.config import load_config

    head = "image: a.npy\nlabels: b.npy\nmodel: m.tseg\nout: o.zarr\ntraining_images:\n"
    for entry, expected in (
        (
            "  - {image: c.npy, labels: d.npy, channel_axis: 0}",
            "item 1: unknown key 'channel_axis'",
        ),
        ("  - {image: c.npy}", "item 1: required key 'labels' is missing"),
    ):
        (tmp_path / "run.yaml").write_text(head + entry + "\n")
        with pytest.raises(TiledsegError, match=expected):
            load_config(tmp_path / "run.yaml")


# -- images of different anisotropy ----------------------------------------------------------


@pytest.fixture(scope="module")
def anisotropic(two):
    """A model on two images of spacings (1, 1, 1) and (2, 1, 1), given per image."""
    items = [
        {"image": two[0].image, "labels": two[0].scribbles},
        {"image": two[1].image, "labels": two[1].scribbles, "spacing": [2.0, 1.0, 1.0]},
    ]
    return ts.train(items, features=FEATURES, cache_dir=None, block=16)


def test_each_image_is_trained_at_its_own_spacing(two, anisotropic):
    items = [
        (two[0].image, two[0].scribbles, {}),
        (two[1].image, two[1].scribbles, {"spacing": "2,1,1"}),
    ]
    plans = _plans(items, Execution(block=16), ImageInput(), Training(features=FEATURES))
    assert [p.volume.spacing for p in plans] == [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)]
    with open_executor(None, quiet=True) as executor:
        both = training_tables(plans, executor=executor, cache_dir=None, feature_device="cpu")
        second = training_table(
            plans[1].volume, plans[1].labels, bank=plans[1].bank, block=plans[1].block,
            executor=executor, cache_dir=None,
        )  # fmt: skip
    np.testing.assert_array_equal(both.X[-len(second.X) :], second.X)
    assert anisotropic.spacings == [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)]
    assert [i["spacing"] for i in anisotropic.summary["images"]] == [[1, 1, 1], [2, 1, 1]]


def test_a_model_of_several_anisotropies_predicts_each_image_at_its_own(tmp_path, two, anisotropic):
    from tiledseg.demo import write_ome_zarr
    from tiledseg.errors import InputDataError

    image = two[1].image
    np.save(tmp_path / "img.npy", image)
    # the image's features at (2, 1, 1), classified by the model: the expected labels
    features = feature_array(image, features=anisotropic.bank, spacing=(2.0, 1.0, 1.0))
    table = np.asarray(features).reshape(features.shape[0], -1).T
    proba = anisotropic.predict_proba(table, n_threads=1)
    expected = anisotropic.classes[proba.argmax(axis=1)].reshape(image.shape)
    given = ts.predict(
        str(tmp_path / "img.npy"), anisotropic, out=tmp_path / "a.zarr", spacing="2,1,1"
    )
    np.testing.assert_array_equal(read_labels(given.path), expected)
    # from the metadata: the same
    write_ome_zarr(tmp_path / "img.zarr", image, spacing=(4.0, 2.0, 2.0), chunks=(16, 16, 16))
    meta = ts.predict(str(tmp_path / "img.zarr"), anisotropic, out=tmp_path / "m.zarr")
    np.testing.assert_array_equal(read_labels(meta.path), expected)
    # at the other spacing the features (and here labels) differ
    other = ts.predict(image, anisotropic, out=tmp_path / "o.zarr", spacing=(1.0, 1.0, 1.0))
    assert (read_labels(other.path) != expected).any()
    # without a spacing: refused, in one line
    with pytest.raises(InputDataError, match="trained on images of 2 anisotropies"):
        ts.predict(str(tmp_path / "img.npy"), anisotropic, out=tmp_path / "n.zarr")
    # an unfinished output at one spacing is not continued at another
    assert zarr_attrs(given.path)["identity"]["spacing"] == [2.0, 1.0, 1.0]
    from tiledseg.runs import update_provenance

    update_provenance(given.path, complete=False)
    with pytest.raises(OutputExistsError, match="different spacing of the image's features"):
        ts.predict(str(tmp_path / "img.npy"), anisotropic, out=given.path, spacing="1,1,1")
    # an anisotropy outside those it was trained at: a warning, the run goes on
    far = ts.predict(image, anisotropic, out=tmp_path / "f.zarr", spacing=(5.0, 1.0, 1.0))
    assert any("2:1:1; image" in w and "5:1:1 is outside them" for w in far.warnings)


def test_a_model_of_one_anisotropy_refuses_an_image_of_another(tmp_path, two, capsys):
    model = ts.train(two[0].image, two[0].scribbles, features=FEATURES, cache_dir=None)
    np.save(tmp_path / "img.npy", two[1].image)
    path = model.save(tmp_path / "m.tseg")
    args = ["predict", str(tmp_path / "img.npy"), "--model", str(path), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a.zarr"), "--spacing", "2,1,1"]) == 2
    err = capsys.readouterr().err
    assert "spacing [2.0, 1.0, 1.0] (--spacing) but the model was trained with spacing" in err
    # the same anisotropy in other units is the same features; the output keeps its scale
    assert main([*args, "--out", str(tmp_path / "b.zarr"), "--spacing", "3,3,3"]) == 0
    scale = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")["labels"].attrs["ome"]
    assert scale["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [
        3.0,
        3.0,
        3.0,
    ]
    same = ts.predict(two[1].image, model, out=tmp_path / "c.zarr")
    np.testing.assert_array_equal(read_labels(tmp_path / "b.zarr"), read_labels(same.path))
