"""--select-features: the K most important features, a smaller bank, held-out accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import tiledseg as ts
from tiledseg.errors import TiledsegError
from tiledseg.features.bank import FeatureBank
from tiledseg.features.tiled import feature_array

BANK = FeatureBank(
    {
        "gaussian_smoothing": [0.7, 1.6, 3.5],
        "gaussian_gradient_magnitude": [1.0, 3.5],
        "hessian_of_gaussian_eigenvalues": [1.0, 3.5],
    }
)


@pytest.fixture(scope="module")
def selected(phantom3d):
    return ts.train(
        phantom3d.image, phantom3d.scribbles, features=BANK, select_features=3, cache_dir=None
    )


def test_the_model_keeps_k_features_from_a_smaller_bank(selected, phantom3d):
    full = BANK.n_features(ndim=3, n_channels=1)
    assert len(selected.feature_names) == 3
    assert selected.summary["selected_features"] == 3
    assert selected.summary["of_features"] == full
    assert 0.0 <= selected.summary["held_out_accuracy_selected"] <= 1.0
    # only the (family, scale) pairs that hold a kept feature are computed
    assert selected.bank.n_features(ndim=3, n_channels=1) < full
    all_names = [str(n) for n in BANK.feature_names(ndim=3, n_channels=1)]
    assert set(selected.feature_names) <= set(all_names)
    assert selected.halo <= BANK.halo(
        phantom3d.spacing if hasattr(phantom3d, "spacing") else (1,) * 3
    )


def test_a_selected_model_predicts_what_its_classifier_says_on_the_kept_columns(
    selected, phantom3d, tmp_path
):
    result = ts.predict(phantom3d.image, selected, out=tmp_path / "s.zarr", block=13)
    labels = zarr.open_array(f"{result.path}/labels/0")[...]
    # the same features from the full bank, columns picked by name, classified directly
    full = feature_array(phantom3d.image, features=BANK).compute()
    names = [str(n) for n in BANK.feature_names(ndim=3, n_channels=1)]
    table = full.reshape(full.shape[0], -1)[[names.index(n) for n in selected.feature_names]].T
    proba = selected.classifier.predict_proba(np.ascontiguousarray(table))
    expected = selected.classes[proba.argmax(axis=1)].reshape(phantom3d.image.shape)
    np.testing.assert_array_equal(labels, expected)


def test_a_selected_model_survives_saving(selected, tmp_path, phantom3d):
    again = ts.load_model(selected.save(tmp_path / "m.tseg"))
    assert again.columns == selected.columns
    assert again.feature_names == selected.feature_names
    table = np.random.default_rng(0).normal(
        size=(5, selected.bank.n_features(ndim=3, n_channels=1))
    )
    np.testing.assert_array_equal(
        again.predict_proba(table.astype(np.float32)),
        selected.predict_proba(table.astype(np.float32)),
    )


@pytest.mark.parametrize("k", [0, 11, 100])
def test_k_out_of_range_is_refused(phantom3d, k):
    with pytest.raises(
        TiledsegError, match=f"--select-features {k}: give a number from 1 to 10 \\(the bank has 11"
    ):
        ts.train(
            phantom3d.image, phantom3d.scribbles, features=BANK, select_features=k, cache_dir=None
        )


def test_the_cli_reports_accuracy_before_and_after(tmp_path, phantom3d):
    from click.testing import CliRunner

    from tiledseg.cli import cli

    np.save(tmp_path / "image.npy", phantom3d.image)
    np.save(tmp_path / "labels.npy", phantom3d.scribbles)
    result = CliRunner().invoke(
        cli,
        [
            "train",
            str(tmp_path / "image.npy"),
            str(tmp_path / "labels.npy"),
            "--model",
            str(tmp_path / "m.tseg"),
            "--select-features",
            "4",
            "--no-cache",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "feature selection: kept 4 of " in result.output
    assert "held-out accuracy" in result.output
    info = CliRunner().invoke(cli, ["info", str(tmp_path / "m.tseg")])
    assert "4 features" in info.output


def test_an_estimator_object_is_copied_for_each_fit(phantom3d):
    from sklearn.ensemble import ExtraTreesClassifier

    estimator = ExtraTreesClassifier(n_estimators=10, random_state=0)
    model = ts.train(
        phantom3d.image,
        phantom3d.scribbles,
        features=BANK,
        classifier=estimator,
        select_features=2,
        cache_dir=None,
    )
    assert len(model.feature_names) == 2
    assert model.summary["held_out_accuracy_all_features"] > 0.5


def test_a_selected_model_file_says_format_2_and_a_plain_one_format_1(
    selected, model3d, phantom3d, tmp_path
):
    import json

    from conftest import small_xgboost

    from tiledseg.model import MAGIC

    def version(model, name):
        data = model.save(tmp_path / name).read_bytes()
        size = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "big")
        return json.loads(data[len(MAGIC) + 8 : len(MAGIC) + 8 + size])["format_version"]

    boosted = ts.train(
        phantom3d.image,
        phantom3d.scribbles,
        features=BANK,
        classifier=small_xgboost(),
        select_features=3,
        cache_dir=None,
    )
    assert version(boosted, "s.tseg") == 2
    assert version(model3d, "p.tseg") == 1
    # the forest's arrays need format 6, selected or not
    assert version(selected, "f.tseg") == 6
