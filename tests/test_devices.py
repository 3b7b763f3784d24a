"""The CPU and GPU paths of training and prediction, and what --device means where.

Shared tests take the ``xp`` fixture: they run on numpy everywhere and on cupy
where there is a GPU (marked ``gpu``, skipped without cupy or a device). The
rest run without a GPU: the random-forest mode the GPU trains, the device plan,
and the errors a user without a GPU meets.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

import tiledseg as ts
from tiledseg.classifiers import FOREST_TREES, XGBoostClassifier, make_classifier
from tiledseg.cluster import open_executor
from tiledseg.device import DevicePlan, gpu_block, gpu_count, plan_devices
from tiledseg.errors import MissingExtraError, TiledsegError
from tiledseg.model import load_model
from tiledseg.prediction_job import _extras

#: Share of voxels whose label may differ between the GPU and the CPU path (float32
#: filters in another summation order move probabilities near 0.5 across it).
LABEL_FLIP_SHARE = 1e-3

#: An uneven tiling of the 3D phantom (20, 22, 18) and one block for all of it.
UNEVEN, WHOLE = (8, 9, 7), (20, 22, 18)


def outputs(path) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(path), mode="r")
    return {name: root[f"{name}/0"][...] for name in root.group_keys()}


@pytest.fixture(scope="module")
def model3d_trees(phantom3d, small_bank):
    """A small 3-class model with one tree per class: what the GPU trains and predicts
    (the CPU default, one vector-leaf tree for all classes, is predicted on the CPU)."""
    clf = XGBoostClassifier(
        max_rounds=15, patience=3, max_depth=3, multi_strategy="one_output_per_tree"
    )
    model = ts.train(
        phantom3d.image, phantom3d.scribbles, features=small_bank, classifier=clf, cache_dir=None
    )
    assert not model.classifier.vector_leaf
    return model


def read_provenance(path) -> dict:
    return dict(zarr.open_group(str(path), mode="r").attrs["tiledseg"])


def _has_cupy() -> bool:
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


# -- shared: numpy everywhere, cupy on a GPU --------------------------------------------------


def test_tiled_prediction_equals_untiled_on_each_device(tmp_path, phantom3d, model3d_trees, device):
    kw = dict(probabilities=True, uncertainty=True, device=device)
    model = model3d_trees
    tiled = ts.predict(phantom3d.image, model, out=tmp_path / "t.zarr", block=UNEVEN, **kw)
    whole = ts.predict(phantom3d.image, model, out=tmp_path / "w.zarr", block=WHOLE, **kw)
    assert tiled.blocks == 3 * 3 * 3
    assert whole.blocks == 1
    a, b = outputs(tiled.path), outputs(whole.path)
    assert sorted(a) == ["labels", "probabilities", "uncertainty"]
    for name in a:
        assert_array_equal(a[name], b[name], err_msg=name)
    provenance = read_provenance(tiled.path)["device"]
    assert provenance["requested"] == device
    assert provenance.get("gpu_workers", 0) == (device == "cuda")


def test_gpu_labels_match_the_cpu_ones(tmp_path, phantom3d, model3d_trees, device):
    """The same model on both paths: the labels agree but for a measured few voxels."""
    model = model3d_trees
    ours = ts.predict(phantom3d.image, model, out=tmp_path / "d.zarr", block=UNEVEN, device=device)
    cpu = ts.predict(phantom3d.image, model, out=tmp_path / "c.zarr", block=UNEVEN)
    a, b = outputs(ours.path)["labels"], outputs(cpu.path)["labels"]
    flipped = int(np.count_nonzero(a != b))
    assert flipped <= max(1, LABEL_FLIP_SHARE * a.size), f"{flipped} of {a.size} labels differ"
    if device == "cpu":
        assert flipped == 0


def test_outputs_besides_labels_are_computed_where_the_probabilities_are(xp, rng):
    proba = rng.dirichlet(np.ones(3), size=6 * 5).astype(np.float32)
    from tiledseg.blocks import Block

    block = Block((0, 0), (slice(0, 6), slice(0, 5)), (slice(0, 6), slice(0, 5)))
    on_cpu = _extras(proba, block, True, True)
    here = _extras(xp.asarray(proba), block, True, True)
    for name in ("probabilities", "uncertainty"):
        assert isinstance(here[name], xp.ndarray)
        assert_array_equal(xp.asnumpy(here[name]) if xp is not np else here[name], on_cpu[name])


# -- random-forest mode (the random-forest of --device cuda), tested on the CPU -----------------


def test_the_gpu_random_forest_is_xgboost_in_forest_mode():
    assert make_classifier("random-forest").name == "random-forest"
    assert type(make_classifier("random-forest")).__name__ == "ForestClassifier"
    forest = make_classifier("random-forest", device="cuda")
    assert isinstance(forest, XGBoostClassifier)
    assert forest.forest
    assert forest.name == "random-forest"
    assert not forest.trains_distributed
    params = forest._booster_params(3, 2, n_features=49, device="cuda")
    assert params["device"] == "cuda"
    assert params["num_parallel_tree"] == FOREST_TREES
    assert params["eta"] == 1.0
    assert params["subsample"] == 0.632
    assert params["colsample_bynode"] == pytest.approx(7 / 49)


def test_the_xgboost_forest_trains_saves_and_predicts_on_any_machine(tmp_path, phantom2d):
    forest = XGBoostClassifier(forest=True, trees=30, seed=1)
    model = ts.train(
        phantom2d.image, phantom2d.scribbles, features="minimal", classifier=forest, cache_dir=None
    )
    s = model.summary
    assert s["trees"] == 30
    assert s["device"] == "cpu"
    assert "rounds" not in s
    assert s["held_out_accuracy"] > 0.8
    # three classes: one tree per class, which the GPU predicts
    assert s["multi_strategy"] == "one_output_per_tree"
    assert not forest.vector_leaf
    path = model.save(tmp_path / "forest.tiledseg")
    loaded = load_model(path)
    assert loaded.classifier.name == "random-forest"
    assert loaded.classifier.forest
    assert loaded._format_version == 4  # older tiledseg refuses it: "update tiledseg"
    a = ts.predict(phantom2d.image, loaded, out=tmp_path / "a.zarr", block=(17, 13))
    b = ts.predict(phantom2d.image, loaded, out=tmp_path / "b.zarr", block=phantom2d.image.shape)
    assert_array_equal(outputs(a.path)["labels"], outputs(b.path)["labels"])
    accuracy = np.mean(outputs(a.path)["labels"] == phantom2d.truth)
    assert accuracy > 0.85


def test_the_forest_does_not_train_on_a_cluster(phantom2d):
    with pytest.raises(TiledsegError, match="distributed training needs the xgboost classifier"):
        ts.train(
            phantom2d.image,
            phantom2d.scribbles,
            classifier=XGBoostClassifier(forest=True, trees=5),
            distributed_training=True,
            workers=1,
            cache_dir=None,
        )


def test_vector_leaf_models_predict_on_the_cpu_even_with_gpu_features(model3d):
    clf = model3d.classifier
    assert clf.vector_leaf  # the CPU default for 3 classes: one tree for all classes
    X = np.random.default_rng(0).random((50, len(model3d.feature_names)), dtype=np.float32)
    # (on a machine without a GPU too: the request for cuda does not reach XGBoost)
    assert_array_equal(clf.predict_proba(X, device="cuda"), clf.predict_proba(X))


# -- what the workers have: the device plan ---------------------------------------------------


def test_the_plan_asks_every_worker(tmp_path):
    with open_executor(workers=2, quiet=True) as executor:
        plan = plan_devices("auto", executor)
        assert len(plan.workers) == 2
        assert all(w["threads"] == 1 for w in plan.workers)
        assert plan.uses_gpu == (gpu_count() > 0)
        if not _has_cupy():
            with pytest.raises(MissingExtraError, match=r"pip install 'tiledseg\[gpu\]'"):
                plan_devices("cuda", executor)
    with open_executor(quiet=True) as threads:
        (only,) = plan_devices("auto", threads).workers
        assert only["threads"] == threads.n_workers
    assert plan_devices("cpu", None).to_dict() == {"requested": "cpu"}


def _gpu(gpu_id, free_gib, threads, name="H100"):
    return {
        "device": "cuda",
        "gpu": name,
        "gpu_id": gpu_id,
        "free_bytes": free_gib * 2**30,
        "threads": threads,
        "xgboost_cuda": True,
    }


def test_the_gpu_block_fits_the_smallest_gpu_and_its_blocks_in_flight():
    gib, halo, big = 2**30, (12, 12, 12), (4000, 4000, 4000)
    kw = dict(halo=halo, n_features=40, n_classes=3)
    plan = DevicePlan("auto", (_gpu("a/0", 80, 4, "A"), _gpu("b/0", 40, 1, "B")))
    assert plan.gpu_block(shape=big, **kw) == gpu_block(40 * gib, in_flight=4, **kw)
    assert plan.gpu_block(shape=big, **kw)[0] < gpu_block(40 * gib, **kw)[0]
    assert plan.fits_on_gpus
    # two worker processes on one GPU: their threads share it, and NCCL refuses them
    shared = DevicePlan("cuda", (_gpu("a/0", 40, 2), _gpu("a/0", 40, 2)))
    assert shared.gpu_block(shape=big, **kw) == gpu_block(40 * gib, in_flight=4, **kw)
    assert not shared.fits_on_gpus
    # never larger than the volume, and split until each GPU thread has a block
    assert plan.gpu_block(shape=(30, 2000, 50), **kw)[::2] == (30, 50)
    eight = DevicePlan("cuda", tuple(_gpu(f"h/{i}", 80, 1) for i in range(8)))
    block = eight.gpu_block(shape=(512, 512, 512), **kw)
    assert math.prod(-(-512 // b) for b in block) >= 8
    # some workers on the CPU: GPU-sized blocks would not fit them, the CPU default stays
    mixed = DevicePlan("auto", (_gpu("a/0", 80, 4), {"device": "cpu", "threads": 16}))
    assert mixed.gpu_block(shape=big, **kw) is None
    assert not mixed.fits_on_gpus
    assert mixed.to_dict() == {
        "requested": "auto",
        "workers": 2,
        "gpu_workers": 1,
        "gpus": ["H100"],
    }


# -- without a GPU: --device auto runs on the CPU, --device cuda says what is missing -----------


@pytest.mark.skipif(gpu_count() > 0, reason="this machine has a GPU: auto uses it")
def test_auto_without_a_gpu_is_the_cpu_path(tmp_path, phantom3d, model3d):
    auto = ts.predict(
        phantom3d.image, model3d, out=tmp_path / "a.zarr", block=UNEVEN, device="auto"
    )
    cpu = ts.predict(phantom3d.image, model3d, out=tmp_path / "c.zarr", block=UNEVEN)
    assert_array_equal(outputs(auto.path)["labels"], outputs(cpu.path)["labels"])
    assert read_provenance(auto.path)["device"]["gpu_workers"] == 0
    model = ts.train(
        phantom3d.image,
        phantom3d.scribbles,
        features="minimal",
        classifier="random-forest",
        device="auto",
        cache_dir=None,
    )
    # no GPU here: the CPU forest (grown by scikit-learn), as with --device cpu
    assert type(model.classifier).__name__ == "ForestClassifier"
    assert model.summary["feature_device"]["gpu_workers"] == 0


@pytest.mark.skipif(_has_cupy(), reason="cupy is installed: its absence cannot be tested")
def test_cuda_without_cupy_is_one_line_and_writes_nothing(tmp_path, phantom2d, model_file):
    image = tmp_path / "image.npy"
    np.save(image, phantom2d.image)
    out = tmp_path / "out.zarr"
    run = subprocess.run(
        [sys.executable, "-m", "tiledseg", "predict", str(image), "--model", str(model_file)]
        + ["--out", str(out), "--device", "cuda", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "Traceback" not in run.stderr
    assert "--device cuda needs cupy: pip install 'tiledseg[gpu]'" in lines[0]
    assert not out.exists()


def test_a_config_names_its_device(tmp_path):
    from tiledseg.config import load_config

    base = "image: i.npy\nlabels: l.npy\nmodel: m.tiledseg\nout: o.zarr\n"
    (tmp_path / "ok.yaml").write_text(base + "device: auto\n")
    assert load_config(tmp_path / "ok.yaml").device == "auto"
    (tmp_path / "bad.yaml").write_text(base + "device: gpu\n")
    with pytest.raises(TiledsegError, match="device"):
        load_config(tmp_path / "bad.yaml")


# -- on a GPU only -----------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("classifier", ["xgboost", "random-forest"])
def test_training_on_the_gpu_gives_a_model_any_machine_reads(tmp_path, cupy, phantom3d, classifier):
    model = ts.train(
        phantom3d.image,
        phantom3d.scribbles,
        features="default",
        classifier=classifier,
        device="cuda",
        cache_dir=None,
    )
    s = model.summary
    assert s["device"] == "cuda"
    assert s["feature_device"]["gpu_workers"] == 1
    assert model.classifier.name == classifier
    assert not model.classifier.vector_leaf  # one tree per class on the GPU
    loaded = load_model(model.save(tmp_path / "gpu.tiledseg"))
    gpu = ts.predict(phantom3d.image, loaded, out=tmp_path / "g.zarr", block=UNEVEN, device="cuda")
    cpu = ts.predict(phantom3d.image, loaded, out=tmp_path / "c.zarr", block=UNEVEN)
    a, b = outputs(gpu.path)["labels"], outputs(cpu.path)["labels"]
    assert np.count_nonzero(a != b) <= max(1, LABEL_FLIP_SHARE * a.size)
    assert np.mean(a == phantom3d.truth) > 0.8


@pytest.mark.gpu
def test_one_worker_per_gpu_with_local_cuda(tmp_path, cupy, phantom3d, model3d):
    pytest.importorskip("dask_cuda")
    from tiledseg.cluster_config import load_cluster_config

    image = tmp_path / "image.npy"
    np.save(image, phantom3d.image)
    config = load_cluster_config("local-cuda")
    on_cluster = ts.predict(
        str(image), model3d, out=tmp_path / "k.zarr", block=UNEVEN, device="cuda", cluster=config
    )
    threads = ts.predict(str(image), model3d, out=tmp_path / "t.zarr", block=UNEVEN, device="cuda")
    assert_array_equal(outputs(on_cluster.path)["labels"], outputs(threads.path)["labels"])
    device = read_provenance(on_cluster.path)["device"]
    assert device["gpu_workers"] == device["workers"] == gpu_count()
