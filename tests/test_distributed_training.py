"""Training on a dask cluster with xgboost.dask: the table's rows stay on the workers, and
the model is as good as one trained in this process."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import tiledseg as ts
import tiledseg.training as training
from tiledseg.classifiers import XGBoostClassifier
from tiledseg.cluster import Executor, open_executor
from tiledseg.errors import TiledsegError
from tiledseg.testing import make_phantom

#: Blocks small enough that the scribbles fall into several row chunks, spread over workers.
BLOCK = (12, 16, 16)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((24, 32, 32), n_classes=3, feature_size=6.0, scribble_fraction=0.03, seed=4)


@pytest.fixture(scope="module")
def scheduler():
    """A running 2-worker cluster, joined with scheduler= by the tests that need no own one."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster.scheduler_address


def accuracy(model, phantom, bank) -> float:
    feats = ts.feature_array(phantom.image, features=bank).compute(scheduler="threads")
    proba = model.predict_proba(feats.reshape(feats.shape[0], -1).T)
    labels = model.classes[proba.argmax(1)].reshape(phantom.truth.shape)
    return float((labels == phantom.truth).mean())


@pytest.fixture
def gathered(monkeypatch):
    """The names of the task functions whose results the executor brought to this process."""
    names: list[str] = []
    compute, map_ = Executor.compute, Executor.map

    def spy_compute(self, tasks, **kwargs):
        names.extend(str(task.key).split("-", 1)[0] for task in tasks)
        return compute(self, tasks, **kwargs)

    def spy_map(self, func, items, **kwargs):
        results = map_(self, func, items, **kwargs)
        # a job's method (Executor.map_method) is named by the method's name
        method = func.__name__ == "_method_call"
        names.extend(item[1].__name__ if method else func.__name__ for item in items)
        return results

    monkeypatch.setattr(Executor, "compute", spy_compute)
    monkeypatch.setattr(Executor, "map", spy_map)
    return names


@pytest.mark.slow
def test_distributed_training_is_as_good_as_local(
    tmp_path, phantom, small_bank, fast_xgboost, gathered
):
    local = ts.train(
        phantom.image,
        phantom.scribbles,
        features=small_bank,
        classifier=fast_xgboost(),
        block=BLOCK,
        cache_dir=None,
    )
    # the spy sees the local path gather the rows: it can catch the distributed one doing so
    assert "rows" in gathered
    assert local.summary["distributed_training"] is False
    gathered.clear()

    model = ts.train(
        phantom.image,
        phantom.scribbles,
        features=small_bank,
        classifier=fast_xgboost(),
        block=BLOCK,
        workers=2,
        distributed_training=True,
        cache_dir=tmp_path,
    )
    summary = model.summary
    # the scribbles' positions and labels came back, the rows did not
    assert "scan" in gathered
    assert "rows" not in gathered
    assert summary["distributed_training"] is True
    assert summary["distributed"] is True
    assert summary["training_workers"] in (1, 2)
    assert summary["labelled_voxels"] == local.summary["labelled_voxels"]
    assert summary["n_features"] == local.summary["n_features"]
    assert summary["held_out_voxels"] == local.summary["held_out_voxels"]  # the same split
    assert 10 <= summary["rounds"] <= 15
    assert model.classifier.booster.num_boosted_rounds() == summary["rounds"]
    # a freshly built distributed table is not gathered to be written to the cache
    assert summary["table_cached"] is False
    assert summary["table_key"] is not None
    assert not list(tmp_path.glob("table-*.npz"))

    expected = accuracy(local, phantom, small_bank)
    assert expected > 0.75
    assert accuracy(model, phantom, small_bank) == pytest.approx(expected, abs=0.02)

    # an ordinary booster: the saved model loads and predicts as the trained one
    loaded = ts.load_model(model.save(tmp_path / "model.tiledseg"))
    assert isinstance(loaded.classifier, XGBoostClassifier)
    feats = ts.feature_array(phantom.image, features=small_bank).compute(scheduler="threads")
    table = feats.reshape(feats.shape[0], -1).T
    np.testing.assert_array_equal(loaded.predict_proba(table), model.predict_proba(table))


@pytest.mark.slow
def test_the_table_stays_on_the_workers(phantom, small_bank, scheduler):
    from distributed import futures_of

    volume, labels = ts.open_volume(phantom.image), ts.open_volume(phantom.scribbles)
    with open_executor(scheduler=scheduler, quiet=True) as executor:
        table = training.training_table(
            volume,
            labels,
            bank=small_bank,
            block=BLOCK,
            executor=executor,
            cache_dir=None,
            distributed=True,
        )
        assert table.distributed
        n = int(np.count_nonzero(phantom.scribbles))
        assert table.X.shape == (n, small_bank.n_features(ndim=3, n_channels=1))
        assert len(table.X.chunks[0]) > 2  # one chunk per box of scribbles
        futures = futures_of(table.X)
        assert futures
        held = executor.client.who_has(futures)
        assert all(held[f.key] for f in futures)  # every chunk is on a worker


@pytest.mark.slow
def test_a_cached_table_is_scattered(tmp_path, phantom, small_bank, fast_xgboost, scheduler):
    kw = dict(features=small_bank, classifier=fast_xgboost(), block=BLOCK, cache_dir=tmp_path)
    first = ts.train(phantom.image, phantom.scribbles, **kw)
    assert first.summary["table_cached"] is True
    model = ts.train(
        phantom.image, phantom.scribbles, scheduler=scheduler, distributed_training=True, **kw
    )
    assert model.summary["table_from_cache"] is True
    assert model.summary["table_key"] == first.summary["table_key"]
    assert model.summary["distributed_training"] is True
    assert accuracy(model, phantom, small_bank) == pytest.approx(
        accuracy(first, phantom, small_bank), abs=0.02
    )


@pytest.mark.slow
def test_large_tables_train_on_the_cluster(monkeypatch, phantom, small_bank, scheduler):
    """Left automatic, a table over the threshold trains distributed when there is a
    cluster and the classifier is XGBoost (here with two classes: binary:logistic)."""
    monkeypatch.setattr(training, "DISTRIBUTED_TABLE_BYTES", 0)
    two = np.minimum(phantom.scribbles, 2)
    kw = dict(features=small_bank, block=BLOCK, cache_dir=None)
    clf = XGBoostClassifier(max_rounds=12, min_rounds=3, max_depth=3)
    on_cluster = ts.train(phantom.image, two, classifier=clf, scheduler=scheduler, **kw)
    assert on_cluster.summary["distributed_training"] is True
    assert on_cluster.classes.tolist() == [1, 2]
    assert 0.5 < on_cluster.summary["held_out_accuracy"] <= 1.0
    # no cluster, or a classifier that cannot train distributed: the table comes here
    here = ts.train(phantom.image, two, classifier=XGBoostClassifier(max_rounds=3), **kw)
    assert here.summary["distributed_training"] is False
    forest = ts.train(
        phantom.image,
        two,
        classifier="random-forest",
        scheduler=scheduler,
        **kw,
    )
    assert forest.summary["distributed_training"] is False
    # under the threshold (and when told not to) it trains here
    monkeypatch.setattr(training, "DISTRIBUTED_TABLE_BYTES", 1 << 30)
    small = ts.train(phantom.image, two, classifier=clf, scheduler=scheduler, **kw)
    assert small.summary["distributed_training"] is False


def test_distributed_training_needs_a_cluster(phantom, small_bank):
    with pytest.raises(
        TiledsegError,
        match=r"needs a dask cluster: give --workers N, --scheduler ADDRESS or --cluster FILE",
    ):
        ts.train(
            phantom.image,
            phantom.scribbles,
            features=small_bank,
            classifier="xgboost",
            distributed_training=True,
            cache_dir=None,
        )
    volume, labels = ts.open_volume(phantom.image), ts.open_volume(phantom.scribbles)
    with (
        open_executor(quiet=True) as executor,
        pytest.raises(TiledsegError, match="needs a dask cluster"),
    ):
        training.training_table(
            volume,
            labels,
            bank=small_bank,
            block=BLOCK,
            executor=executor,
            cache_dir=None,
            distributed=True,
        )


@pytest.mark.parametrize("classifier", ["random-forest", "extra-trees"])
def test_distributed_training_needs_xgboost(phantom, small_bank, classifier):
    from sklearn.ensemble import ExtraTreesClassifier

    if classifier == "extra-trees":
        classifier = ExtraTreesClassifier(n_estimators=5)
    # refused before a cluster is started or a feature computed
    with pytest.raises(TiledsegError, match="distributed training needs the xgboost classifier"):
        ts.train(
            phantom.image,
            phantom.scribbles,
            features=small_bank,
            classifier=classifier,
            workers=2,
            distributed_training=True,
            cache_dir=None,
        )
