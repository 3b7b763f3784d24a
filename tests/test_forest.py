"""The packed forest: grown as scikit-learn grows it, scikit-learn's probabilities exactly,
stored without pickle."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

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


@pytest.mark.parametrize("depth", [1, 3, 5])
def test_a_grown_tree_is_scikit_learns_cart_tree(depth):
    # without bootstrap and with every feature at each node there is no draw: the tree is
    # the one best-Gini CART tree, scikit-learn's (shallow: in nodes of a few rows two
    # features can split equally well, and scikit-learn's feature order breaks the tie)
    X, y = _table(3000, 4)
    weights = np.linspace(0.5, 2, len(y))
    tree = DecisionTreeClassifier(max_depth=depth, random_state=0)
    tree.fit(X, y, sample_weight=weights)
    grown = PackedForest.grow(
        X, y, weights=weights, trees=1, depth=depth, max_features=X.shape[1], bootstrap=False
    )
    test, _ = _table(4000, 5)
    # the same splits; leaf fractions summed in another order differ in the last bit
    np.testing.assert_allclose(grown.predict_proba(test), tree.predict_proba(test), atol=1e-12)
    np.testing.assert_allclose(grown.importances, tree.feature_importances_, atol=1e-12)
    assert grown.depths[0] == tree.get_depth()


def test_a_grown_forest_depends_on_its_seed_not_on_its_threads():
    X, y = _table(1500, 6)
    one = PackedForest.grow(X, y, trees=8, depth=6, seed=3, n_threads=1)
    three = PackedForest.grow(X, y, trees=8, depth=6, seed=3, n_threads=3)
    other = PackedForest.grow(X, y, trees=8, depth=6, seed=4, n_threads=1)
    assert one.to_bytes() == three.to_bytes()
    assert one.to_bytes() != other.to_bytes()
    assert one.n_trees == 8
    assert one.depths.max() <= 6
    assert one.importances.sum() == pytest.approx(1.0)
    PackedForest.from_bytes(one.to_bytes())  # what it grows passes the loader's checks


def test_growing_on_non_finite_features_is_refused():
    X, y = _table(100, 8)
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        PackedForest.grow(X, y, trees=2, depth=3)


def test_a_forest_grown_without_depth_limit_fits_its_rows():
    X, y = _table(800, 7)
    grown = PackedForest.grow(X, y, trees=5, depth=None, bootstrap=False, max_features=6)
    assert_array_equal(grown.predict_proba(X).argmax(axis=1), y)


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
    # children in range but not trees (a node its own grandchild): refused, not walked forever
    arrays["children"] = packed.children.copy()
    root, child = packed.roots[0], packed.children[2 * packed.roots[0]]
    arrays["children"][2 * child : 2 * child + 2] = root
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(ModelFileError, match="inconsistent"):
        PackedForest.from_bytes(buffer.getvalue())
    # a node reached as both children of its parent while another is never reached, and a
    # walk longer than the nodes: refused too
    for damage in ("twins", "deep"):
        arrays = {k: getattr(packed, k).copy() for k in packed.__dataclass_fields__}
        if damage == "twins":
            root = packed.roots[0]
            arrays["children"][2 * root + 1] = arrays["children"][2 * root]
        else:
            arrays["depths"][0] = 10**9
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


def test_a_forest_model_trains_and_loads_without_scikit_learn(tmp_path, phantom2d, small_bank):
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
    np.save(tmp_path / "image.npy", phantom2d.image)
    np.save(tmp_path / "labels.npy", phantom2d.scribbles)
    # a user's whole run: train, save, load, predict
    code = (
        "import sys, numpy as np, tiledseg as ts; d = sys.argv[1]; "
        "ts.train(d + '/image.npy', d + '/labels.npy', features='minimal', cache_dir=None)"
        ".save(d + '/again.tsm'); m = ts.load_model(d + '/again.tsm'); "
        "ts.predict(d + '/image.npy', m, out=d + '/out.zarr', quiet=True); "
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('sklearn', 'skops')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
