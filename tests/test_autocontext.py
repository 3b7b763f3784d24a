"""Autocontext (``--stages``): exact under tiling, one model file, out-of-fold context."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from conftest import SMALL_BANK, small_xgboost

import tiledseg as ts
from tiledseg.blocks import Block
from tiledseg.cli import main
from tiledseg.errors import BlocksFailedError, TiledsegError
from tiledseg.model import load_model
from tiledseg.predict import PredictionJob
from tiledseg.testing import make_phantom


@pytest.fixture(scope="module")
def phantoms():
    return {
        2: make_phantom((70, 83), n_classes=3, feature_size=7.0, scribbles="strokes", seed=4),
        3: make_phantom((26, 30, 29), n_classes=3, feature_size=5.0, scribbles="strokes", seed=5),
    }


@pytest.fixture(scope="module")
def staged(phantoms):
    """Two-stage models, 2D and 3D, on the small bank."""
    return {
        ndim: ts.train(
            ph.image,
            ph.scribbles,
            features=SMALL_BANK,
            classifier=small_xgboost(),
            stages=2,
            cache_dir=None,
        )
        for ndim, ph in phantoms.items()
    }


def outputs(path) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(path), mode="r")
    return {name: root[f"{name}/0"][...] for name in root.attrs["tiledseg"]["arrays"]}


@pytest.mark.parametrize(
    ("ndim", "block"),
    [(2, (23, 37)), (2, (70, 19)), (3, (13, 17, 15)), (3, (26, 12, 29))],
)
def test_tiled_equals_untiled_bit_for_bit(tmp_path, phantoms, staged, ndim, block):
    image, model = phantoms[ndim].image, staged[ndim]
    assert model.n_stages == 2
    whole = ts.predict(
        image, model, out=tmp_path / "whole.zarr", block=image.shape, probabilities=True
    )
    assert whole.blocks == 1
    tiled = ts.predict(image, model, out=tmp_path / "tiled.zarr", block=block, probabilities=True)
    assert tiled.blocks >= 3
    a, b = outputs(tmp_path / "whole.zarr"), outputs(tmp_path / "tiled.zarr")
    for name in ("labels", "probabilities"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize(("ndim", "block"), [(2, (19, 29)), (3, (19, 18, 20))])
def test_three_stages_are_exact_too(tmp_path, phantoms, ndim, block):
    ph = phantoms[ndim]
    model = ts.train(
        ph.image,
        ph.scribbles,
        features=SMALL_BANK,
        classifier=small_xgboost(),
        stages=3,
        cache_dir=None,
    )
    assert model.halo == tuple(3 * h for h in model.bank.halo(model.spacing))
    ts.predict(ph.image, model, out=tmp_path / "a.zarr", block=ph.image.shape, probabilities=True)
    ts.predict(ph.image, model, out=tmp_path / "b.zarr", block=block, probabilities=True)
    a, b = outputs(tmp_path / "a.zarr"), outputs(tmp_path / "b.zarr")
    np.testing.assert_array_equal(a["probabilities"], b["probabilities"])


def test_processes_give_the_threads_result(tmp_path, phantoms, staged):
    image, model = phantoms[3].image, staged[3]
    path = tmp_path / "image.npy"
    np.save(path, image)
    ts.predict(str(path), model, out=tmp_path / "threads.zarr", block=(13, 16, 16))
    ts.predict(str(path), model, out=tmp_path / "procs.zarr", block=(13, 16, 16), workers=2)
    np.testing.assert_array_equal(
        outputs(tmp_path / "threads.zarr")["labels"], outputs(tmp_path / "procs.zarr")["labels"]
    )


def test_every_stage_is_in_the_model_file_info_and_provenance(tmp_path, phantoms, staged):
    model = staged[2]
    path = model.save(tmp_path / "m.tseg")
    loaded = load_model(path)
    assert loaded.n_stages == 2
    assert loaded._format_version == 5
    image = phantoms[2].image
    ts.predict(image, model, out=tmp_path / "a.zarr", probabilities=True)
    ts.predict(image, loaded, out=tmp_path / "b.zarr", probabilities=True)
    np.testing.assert_array_equal(
        outputs(tmp_path / "a.zarr")["probabilities"], outputs(tmp_path / "b.zarr")["probabilities"]
    )
    described = loaded.describe()
    assert described["stages"] == 2
    stages = loaded.summary["stages"]
    assert [s["stage"] for s in stages] == [1, 2]
    assert stages[1]["n_features"] == len(loaded.feature_names) > stages[0]["n_features"]
    assert any(name.startswith("stage 1 P(class 1)") for name in loaded.feature_names)
    provenance = zarr.open_group(str(tmp_path / "b.zarr"), mode="r").attrs["tiledseg"]
    assert provenance["stages"] == 2
    assert main(["info", str(path)]) == 0


def test_info_lists_the_stages(tmp_path, staged, capsys):
    path = staged[3].save(tmp_path / "m3.tseg")
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "stage 1 of 2: n_features=" in text
    assert "stage 2 of 2: n_features=" in text


def test_a_plain_model_keeps_its_format_and_halo(phantoms):
    ph = phantoms[2]
    model = ts.train(
        ph.image, ph.scribbles, features=SMALL_BANK, classifier=small_xgboost(), cache_dir=None
    )
    assert model.n_stages == 1
    assert model.halo == model.bank.halo(model.spacing)
    assert model._format_version == 1
    assert "stages" not in model.summary


def test_out_of_fold_context_is_less_sure_than_in_sample(phantoms):
    """In-sample, stage 1 has seen the very voxels it predicts for stage 2's table: it is
    surer of them than out of fold, where no stage-1 model saw the voxel's stroke."""
    ph = phantoms[2]
    sure = {}
    for context in ("out-of-fold", "in-sample"):
        model = ts.train(
            ph.image,
            ph.scribbles,
            features=SMALL_BANK,
            classifier=small_xgboost(),
            stages=2,
            context=context,
            cache_dir=None,
        )
        assert model.summary["autocontext"]["context"] == context
        sure[context] = model.summary["stages"][0]["context_confidence"]
    assert 0 < sure["out-of-fold"] < sure["in-sample"] <= 1


@pytest.mark.parametrize("ndim", [2, 3])
def test_the_stage_table_holds_the_features_prediction_computes(phantoms, ndim):
    """In sample, stage 2's training rows are the very features a prediction of the whole
    image computes at the scribbled voxels (the rows are in C order of their voxels)."""
    from tiledseg.autocontext import cascade_features
    from tiledseg.classifiers import XGBoostClassifier

    fitted = []

    class Recording(XGBoostClassifier):
        def fit(self, X, y, **options):
            fitted.append(X)
            return super().fit(X, y, **options)

    ph = phantoms[ndim]
    model = ts.train(
        ph.image,
        ph.scribbles,
        features=SMALL_BANK,
        classifier=Recording(max_rounds=15, patience=3, max_depth=3),
        stages=2,
        context="in-sample",
        cache_dir=None,
        block=(13,) * ndim,  # many boxes, the table built from many blocks
    )
    table = fitted[-1]
    assert table.shape[1] == len(model.feature_names)
    whole = cascade_features(
        ph.image[None].astype(np.float32),
        inner=tuple(slice(0, n) for n in ph.image.shape),
        bank=model.bank,
        spacing=model.spacing,
        classifiers=model.stages,
    )
    at = tuple(np.argwhere(ph.scribbles).T)
    np.testing.assert_array_equal(table, whole[(slice(None), *at)].T)


def test_a_class_of_one_voxel_is_in_every_fold_model(phantoms):
    ph = phantoms[2]
    scribbles = ph.scribbles.copy()
    scribbles[0, 0] = 9  # a class of one voxel
    model = ts.train(
        ph.image,
        scribbles,
        features=SMALL_BANK,
        classifier=small_xgboost(),
        stages=2,
        cache_dir=None,
    )
    assert model.classes.tolist() == [1, 2, 3, 9]
    proba = model.block_probabilities(
        ph.image[None].astype(np.float32), inner=(slice(0, 70), slice(0, 83))
    )
    assert proba.shape == (70 * 83, 4)


def test_a_failed_block_is_redone_and_the_run_equals_an_uninterrupted_one(
    tmp_path, phantoms, staged, monkeypatch
):
    image, model = phantoms[3].image, staged[3]
    path = tmp_path / "image.npy"
    np.save(path, image)
    model_path = model.save(tmp_path / "m.tseg")
    ts.predict(str(path), str(model_path), out=tmp_path / "whole.zarr", block=(13, 16, 16))
    real = PredictionJob.predict

    def failing(job, block):
        assert isinstance(block, Block)
        if block.index[0] == 1:
            raise OSError("injected")
        return real(job, block)

    out = tmp_path / "partial.zarr"
    with monkeypatch.context() as patch:
        patch.setattr(PredictionJob, "predict", failing)
        with pytest.raises(BlocksFailedError):
            ts.predict(str(path), str(model_path), out=out, block=(13, 16, 16))
    result = ts.predict(str(path), str(model_path), out=out, block=(13, 16, 16))
    assert 0 < result.skipped < result.blocks
    np.testing.assert_array_equal(
        outputs(out)["labels"], outputs(tmp_path / "whole.zarr")["labels"]
    )


def test_smoothing_takes_the_last_stage_probabilities(tmp_path, phantoms, staged):
    image, model = phantoms[2].image, staged[2]
    result = ts.predict(image, model, out=tmp_path / "s.zarr", smooth="graphcut", block=(35, 42))
    assert result.voxels == image.size
    labels = outputs(tmp_path / "s.zarr")["labels"]
    assert set(np.unique(labels)) <= {1, 2, 3}


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "6"])
def test_a_bad_stages_is_one_line(tmp_path, phantoms, value, capsys):
    ph = phantoms[2]
    np.save(tmp_path / "i.npy", ph.image)
    np.save(tmp_path / "s.npy", ph.scribbles)
    model = tmp_path / "m.tseg"
    code = main(
        [
            "train",
            str(tmp_path / "i.npy"),
            str(tmp_path / "s.npy"),
            "--model",
            str(model),
            "--stages",
            value,
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "--stages" in err
    assert not model.exists()


def test_options_that_do_not_go_with_stages(phantoms):
    ph = phantoms[2]
    with pytest.raises(TiledsegError, match="--select-features and --stages"):
        ts.train(ph.image, ph.scribbles, features=SMALL_BANK, stages=2, select_features=3)
    with pytest.raises(TiledsegError, match="--stages > 1 trains on this machine"):
        ts.train(
            ph.image,
            ph.scribbles,
            classifier="xgboost",
            stages=2,
            distributed_training=True,
            workers=1,
        )


def test_segment_config_takes_stages(tmp_path, phantoms):
    ph = phantoms[2]
    np.save(tmp_path / "i.npy", ph.image)
    np.save(tmp_path / "s.npy", ph.scribbles)
    (tmp_path / "bank.yaml").write_text(
        "\n".join(f"{k}: {list(v)}" for k, v in SMALL_BANK.to_dict().items())
    )
    (tmp_path / "run.yaml").write_text(
        "image: i.npy\nlabels: s.npy\nmodel: m.tseg\nout: o.zarr\nfeatures: bank.yaml\nstages: 2\n"
    )
    assert main(["segment", str(tmp_path / "run.yaml"), "--quiet"]) == 0
    assert load_model(tmp_path / "m.tseg").n_stages == 2
    (tmp_path / "bad.yaml").write_text(
        "image: i.npy\nlabels: s.npy\nmodel: m2.tseg\nout: o2.zarr\nstages: 0\n"
    )
    assert main(["segment", str(tmp_path / "bad.yaml"), "--quiet"]) == 2
    assert not (tmp_path / "m2.tseg").exists()
