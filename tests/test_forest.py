"""The packed forest: scikit-learn's probabilities exactly, stored without pickle."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.ensemble import RandomForestClassifier

import tiledseg as ts
from tiledseg.classifiers import ForestClassifier
from tiledseg.errors import ModelFileError
from tiledseg.forest import PackedForest


def _table(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    # ties on the thresholds: quantised columns put many rows exactly on a split value
    X[:, 4] = np.round(X[:, 4] * 4) / 4
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 0.8) + (X[:, 4] > 0.5)
    return X, y


@pytest.mark.parametrize("n_classes", [2, 4])
def test_packed_forest_gives_scikit_learns_probabilities_exactly(n_classes):
    X, y = _table(2000, 0)
    y = np.minimum(y, n_classes - 1)
    forest = RandomForestClassifier(n_estimators=25, random_state=1).fit(
        X, y, sample_weight=np.linspace(0.5, 2, len(y))
    )
    packed = PackedForest.from_sklearn(forest)
    test, _ = _table(5003, 1)  # not a multiple of the kernel's chunk
    expected = forest.predict_proba(test)
    assert_array_equal(packed.predict_proba(test), expected)
    assert_array_equal(packed.predict_proba(test, n_threads=3), expected)
    assert_array_equal(packed.predict_proba(test[:1]), expected[:1])
    assert packed.predict_proba(test[:0]).shape == (0, n_classes)
    again = PackedForest.from_bytes(packed.to_bytes())
    assert_array_equal(again.predict_proba(test), expected)
    assert_array_equal(again.importances, forest.feature_importances_)


def test_a_stump_forest_predicts_its_priors():
    X = np.zeros((10, 3), np.float32)
    y = np.array([0] * 7 + [1] * 3)
    forest = RandomForestClassifier(n_estimators=4, random_state=0).fit(X, y)
    packed = PackedForest.from_sklearn(forest)
    assert set(packed.depths) == {0}
    assert_array_equal(packed.predict_proba(X), forest.predict_proba(X))


def test_damaged_or_hostile_forest_payloads_are_refused():
    X, y = _table(300, 2)
    packed = PackedForest.from_sklearn(RandomForestClassifier(n_estimators=3).fit(X, y))
    with pytest.raises(ModelFileError, match="not valid"):
        PackedForest.from_bytes(b"not an archive")
    # a child index outside the nodes would make the kernel read anywhere
    arrays = {name: getattr(packed, name) for name in packed.__dataclass_fields__}
    arrays["children"] = arrays["children"].copy()
    arrays["children"][0] = 10**9
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(ModelFileError, match="inconsistent"):
        PackedForest.from_bytes(buffer.getvalue())
    # an object array (a pickle inside the archive) is never loaded
    arrays["children"] = np.array([object()] * 3, dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(ModelFileError, match="not valid"):
        PackedForest.from_bytes(buffer.getvalue())


def test_a_trained_forest_model_round_trips_and_loads_without_scikit_learn(
    tmp_path, phantom2d, small_bank
):
    model = ts.train(
        phantom2d.image, phantom2d.scribbles, features=small_bank, cache_dir=None, seed=3
    )
    assert isinstance(model.classifier, ForestClassifier)
    assert "held_out_accuracy" in model.summary
    path = model.save(tmp_path / "m.tsm")
    loaded = ts.load_model(path)
    assert loaded.classifier.trees == model.classifier.trees
    features = np.random.default_rng(0).normal(size=(500, len(model.feature_names)))
    assert_array_equal(
        loaded.predict_proba(features.astype(np.float32)),
        model.predict_proba(features.astype(np.float32)),
    )
    code = (
        "import sys, numpy as np, tiledseg as ts; m = ts.load_model(sys.argv[1]); "
        "m.predict_proba(np.zeros((3, len(m.feature_names)), np.float32)); "
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('sklearn', 'skops')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
