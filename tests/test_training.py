"""Training from scribbles: the user's label values, input errors, the table cache, classifiers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import zarr
from sklearn.ensemble import ExtraTreesClassifier

import tiledseg as ts
from tiledseg.classifiers import (
    ForestClassifier,
    SklearnClassifier,
    XGBoostClassifier,
    balanced_weights,
)
from tiledseg.errors import InputDataError, TiledsegError
from tiledseg.training import default_cache_dir


def remap(scribbles: np.ndarray, values: dict[int, int], dtype) -> np.ndarray:
    out = np.zeros(scribbles.shape, dtype=dtype)
    for old, new in values.items():
        out[scribbles == old] = new
    return out


# -- label values ----------------------------------------------------------------------------


def test_label_values_are_kept(tmp_path, phantom2d, small_bank, fast_xgboost):
    scribbles = remap(phantom2d.scribbles, {1: 85, 2: 170, 3: 255}, np.uint8)
    model = ts.train(
        phantom2d.image, scribbles, features=small_bank, classifier=fast_xgboost(), cache_dir=None
    )
    assert model.classes.tolist() == [85, 170, 255]
    assert model.label_dtype == np.uint8
    assert model.summary["labelled_voxels"] == {
        v: int((scribbles == v).sum()) for v in (85, 170, 255)
    }
    ts.predict(phantom2d.image, model, out=tmp_path / "out.zarr")
    labels = zarr.open_array(str(tmp_path / "out.zarr/labels/0"))[...]
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) == {85, 170, 255}
    # the classifier learnt the scribbles it was given
    painted = scribbles > 0
    assert (labels[painted] == scribbles[painted]).mean() > 0.95


def test_large_label_values_give_uint16(tmp_path, phantom2d, small_bank, fast_xgboost):
    scribbles = remap(phantom2d.scribbles, {1: 7, 2: 1000, 3: 300}, np.uint16)
    model = ts.train(
        phantom2d.image, scribbles, features=small_bank, classifier=fast_xgboost(), cache_dir=None
    )
    assert model.classes.tolist() == [7, 300, 1000]
    ts.predict(phantom2d.image, model, out=tmp_path / "out.zarr")
    labels = zarr.open_array(str(tmp_path / "out.zarr/labels/0"))[...]
    assert labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {7, 300, 1000}
    assert 1000 in labels


def test_float_and_bool_labels_with_integer_values_are_accepted(phantom2d, small_bank):
    as_float = phantom2d.scribbles.astype(np.float32)
    model = ts.train(
        phantom2d.image,
        as_float,
        features=small_bank,
        classifier=XGBoostClassifier(max_rounds=3, min_rounds=1),
        cache_dir=None,
    )
    assert model.classes.tolist() == [1, 2, 3]
    # labels of a bool map: everything False is unlabelled, so only one class (True)
    with pytest.raises(InputDataError, match="only one class"):
        ts.train(phantom2d.image, phantom2d.scribbles == 1, features=small_bank, cache_dir=None)


# -- input errors ----------------------------------------------------------------------------


@pytest.fixture
def pair(phantom2d):
    return phantom2d.image.copy(), phantom2d.scribbles.astype(np.int16)


def test_fractional_labels(pair, small_bank):
    image, labels = pair
    labels = labels.astype(np.float64)
    labels[labels == 2] = 1.5
    with pytest.raises(InputDataError, match=r"fractional value 1\.5.*integers"):
        ts.train(image, labels, features=small_bank, cache_dir=None)


def test_negative_labels(pair, small_bank):
    image, labels = pair
    labels[labels == 2] = -2
    with pytest.raises(InputDataError, match="negative value -2"):
        ts.train(image, labels, features=small_bank, cache_dir=None)


def test_nan_labels(pair, small_bank):
    image, labels = pair
    labels = labels.astype(np.float32)
    labels[0, 0] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        ts.train(image, labels, features=small_bank, cache_dir=None)


def test_no_labelled_voxel(pair, small_bank):
    image, labels = pair
    with pytest.raises(InputDataError, match="no labelled voxel"):
        ts.train(image, np.zeros_like(labels), features=small_bank, cache_dir=None)


def test_single_class(pair, small_bank):
    image, labels = pair
    labels[labels > 0] = 2
    with pytest.raises(InputDataError, match=r"only one class \(value 2\)"):
        ts.train(image, labels, features=small_bank, cache_dir=None)


def test_shape_mismatch(pair, small_bank):
    image, labels = pair
    with pytest.raises(InputDataError, match=r"\(47, 40\).*\(48, 40\).*voxel for voxel"):
        ts.train(image, labels[:-1], features=small_bank, cache_dir=None)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_image(pair, small_bank, bad):
    image, labels = pair
    image = image.astype(np.float32)
    image[10, 10] = bad
    with pytest.raises(InputDataError, match="NaN or infinite"):
        ts.train(image, labels, features=small_bank, cache_dir=None)


def test_labels_with_channels_are_refused(pair, small_bank):
    image, labels = pair
    with pytest.raises(InputDataError, match=r"have shape \(48, 40, 2\)"):
        ts.train(image, np.stack([labels, labels], axis=-1), features=small_bank, cache_dir=None)


def test_unknown_classifier(pair, small_bank):
    image, labels = pair
    with pytest.raises(TiledsegError, match="'svm' is unknown"):
        ts.train(image, labels, features=small_bank, classifier="svm", cache_dir=None)
    with pytest.raises(TiledsegError, match="no fit and predict"):
        ts.train(image, labels, features=small_bank, classifier=object(), cache_dir=None)


def test_errors_share_one_family():
    for cls in (InputDataError, ts.TiledsegError):
        assert issubclass(cls, ValueError)


# -- the training-table cache ------------------------------------------------------------------


def test_table_cache_is_reused_when_only_the_classifier_changes(
    tmp_path, phantom2d, small_bank, fast_xgboost
):
    first = ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=small_bank,
        classifier=fast_xgboost(),
        cache_dir=tmp_path,
    )
    assert first.summary["table_from_cache"] is False
    assert len(list(tmp_path.glob("table-*.npz"))) == 1
    second = ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=small_bank,
        classifier=ExtraTreesClassifier(n_estimators=5, random_state=0),
        cache_dir=tmp_path,
    )
    assert second.summary["table_from_cache"] is True
    assert second.summary["table_key"] == first.summary["table_key"]
    # and it is the same table: an uncached run gives the same model
    again = ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=small_bank,
        classifier=ExtraTreesClassifier(n_estimators=5, random_state=0),
        cache_dir=None,
    )
    feats = ts.feature_array(phantom2d.image, features=small_bank).compute()
    table = feats.reshape(feats.shape[0], -1).T
    np.testing.assert_array_equal(second.predict_proba(table), again.predict_proba(table))


def test_table_cache_is_not_reused_when_inputs_change(tmp_path, phantom2d, small_bank):
    def run(image, scribbles, bank=small_bank, spacing=None):
        return ts.train(
            image,
            scribbles,
            features=bank,
            spacing=spacing,
            classifier=XGBoostClassifier(max_rounds=2, min_rounds=1),
            cache_dir=tmp_path,
        ).summary["table_from_cache"]

    assert run(phantom2d.image, phantom2d.scribbles) is False
    assert run(phantom2d.image, phantom2d.scribbles) is True
    fewer = phantom2d.scribbles.copy()
    fewer[np.flatnonzero(fewer)[0] // fewer.shape[1], np.flatnonzero(fewer)[0] % fewer.shape[1]] = 0
    assert run(phantom2d.image, fewer) is False
    relabelled = phantom2d.scribbles.copy()
    relabelled[relabelled == 3] = 4
    assert run(phantom2d.image, relabelled) is False
    brighter = phantom2d.image.copy()
    brighter[np.nonzero(phantom2d.scribbles)[0][0], np.nonzero(phantom2d.scribbles)[1][0]] += 1
    assert run(brighter, phantom2d.scribbles) is False
    # another bank with the same halo (so the same image regions are read)
    same_halo = {"gaussian_smoothing": [1.6]}
    assert ts.resolve_bank(same_halo).halo((1, 1)) == small_bank.halo((1, 1))
    assert run(phantom2d.image, phantom2d.scribbles, bank=same_halo) is False
    assert run(phantom2d.image, phantom2d.scribbles, spacing=(2.0, 1.0)) is False


def test_damaged_cache_entry_is_rebuilt(tmp_path, phantom2d, small_bank):
    kw = dict(
        features=small_bank,
        classifier=XGBoostClassifier(max_rounds=2, min_rounds=1),
        cache_dir=tmp_path,
    )
    ts.train(phantom2d.image, phantom2d.scribbles, **kw)
    (entry,) = tmp_path.glob("table-*.npz")
    entry.write_bytes(b"garbage")
    assert ts.train(phantom2d.image, phantom2d.scribbles, **kw).summary["table_from_cache"] is False
    assert ts.train(phantom2d.image, phantom2d.scribbles, **kw).summary["table_from_cache"] is True


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TILEDSEG_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("TILEDSEG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tiledseg"


# -- classifiers -----------------------------------------------------------------------------


def _accuracy(model, phantom, bank):
    feats = ts.feature_array(phantom.image, features=bank).compute()
    proba = model.predict_proba(feats.reshape(feats.shape[0], -1).T)
    labels = model.classes[proba.argmax(1)].reshape(phantom.truth.shape)
    return (labels == phantom.truth).mean()


@pytest.mark.parametrize(
    "classifier",
    ["random-forest", ExtraTreesClassifier(n_estimators=30, random_state=0)],
    ids=["random-forest", "extra-trees"],
)
def test_scikit_learn_classifiers(phantom2d, small_bank, classifier):
    model = ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=small_bank,
        classifier=classifier,
        cache_dir=None,
    )
    wrapper = ForestClassifier if classifier == "random-forest" else SklearnClassifier
    assert isinstance(model.classifier, wrapper)
    assert _accuracy(model, phantom2d, small_bank) > 0.8
    importance = model.classifier.importances()
    assert importance is not None
    assert len(importance) == len(model.feature_names)


def test_xgboost_model_learns_the_phantom(model2d, phantom2d, small_bank):
    assert isinstance(model2d.classifier, XGBoostClassifier)
    assert _accuracy(model2d, phantom2d, small_bank) > 0.8
    assert model2d.summary["n_features"] == small_bank.n_features(ndim=2, n_channels=1)


@pytest.mark.parametrize(
    ("max_rounds", "patience", "min_rounds"), [(40, 2, 1), (12, 1, 10), (5, 10, 10)]
)
def test_xgboost_early_stopping_stays_within_max_rounds(
    phantom2d, small_bank, max_rounds, patience, min_rounds
):
    clf = XGBoostClassifier(max_rounds=max_rounds, patience=patience, min_rounds=min_rounds)
    model = ts.train(
        phantom2d.image, phantom2d.scribbles, features=small_bank, classifier=clf, cache_dir=None
    )
    summary = model.summary
    assert summary["max_rounds"] == max_rounds
    assert 1 <= summary["rounds"] <= max_rounds
    assert summary["rounds"] >= min(min_rounds, max_rounds)
    assert model.classifier.booster.num_boosted_rounds() == summary["rounds"]
    assert 0 < summary["held_out_voxels"] < sum(summary["labelled_voxels"].values())
    assert 0.0 <= summary["held_out_accuracy"] <= 1.0


def test_xgboost_stops_early_on_an_easy_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    clf = XGBoostClassifier(max_rounds=200, patience=3, min_rounds=1)
    summary = clf.fit(X, y, n_threads=1)
    assert summary["rounds"] < 200


def test_two_classes_give_two_probability_columns():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((100, 3)).astype(np.float32)
    y = (X[:, 1] > 0).astype(np.int64)
    clf = XGBoostClassifier(max_rounds=5, min_rounds=1)
    clf.fit(X, y, n_threads=1)
    proba = clf.predict_proba(X)
    assert proba.shape == (100, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)


def test_balanced_weights():
    y = np.array([0, 0, 0, 1])
    w = balanced_weights(y)
    np.testing.assert_allclose(w, [4 / 6, 4 / 6, 4 / 6, 2.0])
    assert w[y == 0].sum() == pytest.approx(w[y == 1].sum())


def test_3d_model_learns_the_phantom(model3d, phantom3d, small_bank):
    """The session's 3D model (threads) classifies its phantom well."""
    assert model3d.ndim == 3
    assert _accuracy(model3d, phantom3d, small_bank) > 0.75


@pytest.mark.parametrize("block", [(9, 40, 40), (30, 17, 23)])
def test_training_table_is_the_features_of_the_labelled_voxels(tmp_path, block):
    """Blocks shrink to the bounding box of their scribbles: the features must not change."""
    from tiledseg.blocks import resolve_block
    from tiledseg.cluster import open_executor
    from tiledseg.training import training_table

    rng = np.random.default_rng(7)
    image = rng.normal(size=(30, 40, 40)).astype(np.float32)
    scribbles = np.zeros(image.shape, dtype=np.uint8)
    scribbles[12, 5:30, 8] = 1  # a stroke on one slice
    scribbles[20:23, 33, 30:37] = 2
    bank = ts.resolve_bank({"gaussian_smoothing": [1.0], "structure_tensor_eigenvalues": [1.5]})
    volume, labels = ts.open_volume(image), ts.open_volume(scribbles)
    shape = resolve_block(block, shape=volume.shape, halo=bank.halo(volume.spacing))
    with open_executor(quiet=True) as executor:
        table = training_table(
            volume, labels, bank=bank, block=shape, executor=executor, cache_dir=None
        )
    whole = ts.feature_array(image, features=bank, block=max(image.shape)).compute()
    expected = {}
    for index in zip(*np.nonzero(scribbles), strict=True):
        expected[whole[(slice(None), *index)].tobytes()] = scribbles[index]
    assert len(table.y) == np.count_nonzero(scribbles)
    for row, value in zip(table.X, table.y, strict=True):
        assert expected[row.tobytes()] == value


def test_the_image_given_as_labels_is_refused(phantom2d, small_bank):
    with pytest.raises(InputDataError, match="is it the image"):
        ts.train(phantom2d.image, phantom2d.image, features=small_bank, cache_dir=None)


# -- independent of the blocks ----------------------------------------------------------------


@pytest.mark.parametrize("stages", [1, 2])
def test_the_model_does_not_depend_on_the_training_block(phantom3d, small_bank, stages):
    """The forest's bootstrap follows the rows: they are put in C order, whatever blocks
    (and so whatever cores) scanned them."""
    models = [
        ts.train(
            phantom3d.image,
            phantom3d.scribbles,
            features=small_bank,
            stages=stages,
            block=block,
            cache_dir=None,
        )
        for block in (None, (13, 17, 15))
    ]
    assert models[0].classifier.name == "random-forest"
    data = phantom3d.image[None].astype(np.float32)
    inner = tuple(slice(0, n) for n in phantom3d.image.shape)
    a, b = (m.block_probabilities(data, inner=inner) for m in models)
    np.testing.assert_array_equal(a, b)


# -- anisotropy hint ---------------------------------------------------------------------------


def test_a_stack_of_sparse_planes_without_spacing_gets_a_hint(tmp_path, small_bank, capsys):
    from tiledseg.cli import main
    from tiledseg.testing import make_phantom

    ph = make_phantom((96, 48, 48), n_classes=2, feature_size=8.0, noise=0.1, seed=3)
    truth = ph.truth[::4]
    every = np.arange(truth.size).reshape(truth.shape) % 97 == 0  # a scattered few voxels
    sparse = {"image": ph.image[::4], "scribbles": np.where(every, truth, 0).astype(np.uint8)}
    for name, array in sparse.items():
        np.save(tmp_path / f"{name}.npy", array)
    bank = tmp_path / "bank.yaml"
    bank.write_text("\n".join(f"{k}: {list(v)}" for k, v in small_bank.to_dict().items()))
    args = ["train", str(tmp_path / "image.npy"), str(tmp_path / "scribbles.npy")]
    args += ["--features", str(bank), "--no-cache", "--quiet"]
    assert main([*args, "--model", str(tmp_path / "a.tseg")]) == 0
    out = capsys.readouterr().out
    hint = [line for line in out.splitlines() if line.startswith("hint:")]
    assert len(hint) == 1, out
    assert "along z" in hint[0]
    assert "--spacing" in hint[0]
    model = ts.load_model(tmp_path / "a.tseg")
    ratios = model.summary["anisotropy"]["ratios"]
    assert ratios[0] > 1.5 * max(ratios[1:])
    # with the spacing given, or on the isotropic original, no hint
    assert main([*args, "--model", str(tmp_path / "b.tseg"), "--spacing", "4,1,1"]) == 0
    assert "hint:" not in capsys.readouterr().out
    np.save(tmp_path / "iso.npy", ph.image)
    iso_scribbles = np.arange(ph.truth.size).reshape(ph.truth.shape) % 389 == 0
    np.save(tmp_path / "iso_scribbles.npy", np.where(iso_scribbles, ph.truth, 0).astype(np.uint8))
    iso = ["train", str(tmp_path / "iso.npy"), str(tmp_path / "iso_scribbles.npy")]
    assert main([*iso, *args[3:], "--model", str(tmp_path / "c.tseg")]) == 0
    assert "hint:" not in capsys.readouterr().out


def test_openmp_waits_passively_once_tiledseg_starts_work_not_on_import():
    code = (
        "import os\n"
        "import numpy as np\n"
        "import tiledseg as ts\n"
        "assert 'OMP_WAIT_POLICY' not in os.environ, 'set on import'\n"
        "image = np.random.default_rng(0).integers(0, 255, (32, 32)).astype(np.uint8)\n"
        "labels = np.zeros((32, 32), np.uint8); labels[2, 2:9] = 1; labels[20, 2:9] = 2\n"
        "ts.train(image, labels, features='minimal', cache_dir=None)\n"
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "PASSIVE"
    # a user's own choice wins
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code.replace("assert 'OMP_WAIT_POLICY' not in", "assert 'x' not in"),
        ],
        env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "ACTIVE"
