"""Strokes: connected scribbles, held-out splits and folds that never cut one in two."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from conftest import SMALL_BANK, small_xgboost

import tiledseg as ts
from tiledseg.classifiers import XGBoostClassifier
from tiledseg.strokes import held_out_split, stroke_folds, stroke_ids
from tiledseg.testing import make_phantom


def random_strokes(shape, *, n_strokes, n_classes, seed) -> np.ndarray:
    """Random walks of random classes: strokes that touch, cross and run along edges."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int64)
    for _ in range(n_strokes):
        at = np.array([rng.integers(0, n) for n in shape])
        value = int(rng.integers(1, n_classes + 1))
        for _ in range(int(rng.integers(1, 25))):
            labels[tuple(at)] = value
            at = np.clip(at + rng.integers(-1, 2, size=len(shape)), 0, np.array(shape) - 1)
    return labels


def components(labels: np.ndarray) -> np.ndarray:
    """scipy's full-connectivity components per label value, as a map of ids."""
    out = np.zeros(labels.shape, dtype=np.int64)
    base = 0
    for value in np.unique(labels[labels > 0]):
        found, n = ndi.label(labels == value, structure=np.ones((3,) * labels.ndim))
        out[found > 0] = found[found > 0] + base
        base += n
    return out


@pytest.mark.parametrize(("shape", "seed"), [((40, 50), 0), ((40, 50), 1), ((12, 15, 14), 2)])
def test_strokes_are_the_connected_components_of_each_value(shape, seed):
    labels = random_strokes(shape, n_strokes=30, n_classes=3, seed=seed)
    coords = np.argwhere(labels)
    order = np.random.default_rng(seed).permutation(len(coords))  # any row order
    coords = coords[order]
    ids = stroke_ids(coords, labels[tuple(coords.T)])
    expected = components(labels)[tuple(coords.T)]
    # the same partition...
    pairs = set(zip(ids.tolist(), expected.tolist(), strict=True))
    assert len(pairs) == len(set(ids.tolist())) == len(set(expected.tolist()))
    # ... numbered by each stroke's first voxel in C order
    first = {}
    for i in np.lexsort(coords.T[::-1]):
        first.setdefault(int(ids[i]), len(first))
    assert all(k == v for k, v in first.items())


def test_strokes_of_two_values_that_touch_stay_apart():
    labels = np.zeros((5, 8), dtype=np.int64)
    labels[2, :4], labels[2, 4:] = 1, 2
    coords = np.argwhere(labels)
    ids = stroke_ids(coords, labels[tuple(coords.T)])
    assert len(np.unique(ids)) == 2


def check_split(y, strokes, train, held):
    assert len(np.intersect1d(train, held)) == 0
    assert len(train) + len(held) == len(y)
    # no stroke on both sides, unless it is a class's only stroke (cut, see below)
    for c in np.unique(y):
        mine = strokes[y == c]
        if len(np.unique(mine)) > 1:
            shared = set(strokes[train][y[train] == c]) & set(strokes[held][y[held] == c])
            assert not shared, (c, shared)
            assert np.any(y[held] == c)
            assert np.any(y[train] == c)


@pytest.mark.parametrize("seed", range(5))
def test_the_held_out_split_never_cuts_a_stroke(seed):
    labels = random_strokes((60, 60), n_strokes=40, n_classes=3, seed=seed)
    coords = np.argwhere(labels)
    y = labels[tuple(coords.T)] - 1
    strokes = stroke_ids(coords, y)
    train, held = held_out_split(y, strokes, coords, fraction=0.2, seed=seed)
    check_split(y, strokes, train, held)
    assert 0.05 < len(held) / len(y) < 0.45


def test_a_class_with_one_stroke_holds_out_its_far_end():
    labels = np.zeros((30, 40), dtype=np.int64)
    labels[5, 2:32] = 1  # one stroke, 30 voxels long along x
    labels[20, 2:12], labels[25, 2:12] = 2, 2
    coords = np.argwhere(labels)
    y = labels[tuple(coords.T)] - 1
    strokes = stroke_ids(coords, y)
    train, held = held_out_split(y, strokes, coords, fraction=0.2, seed=0)
    one = held[y[held] == 0]
    assert len(one) == 6
    assert sorted(coords[one, 1].tolist()) == list(range(26, 32))  # the end along x
    assert np.sum(y[train] == 0) == 24


def test_folds_keep_strokes_whole_and_every_class_outside_each_fold():
    labels = random_strokes((60, 60), n_strokes=40, n_classes=3, seed=7)
    labels[0, :3] = 3  # may add a class's only (short) stroke
    coords = np.argwhere(labels)
    y = labels[tuple(coords.T)] - 1
    strokes = stroke_ids(coords, y)
    folds = stroke_folds(y, strokes, coords, n_folds=4, seed=0)
    assert set(np.unique(folds)) <= {0, 1, 2, 3}
    for c in np.unique(y):
        mine = y == c
        if len(np.unique(strokes[mine])) >= 4:
            for s in np.unique(strokes[mine]):
                assert len(np.unique(folds[strokes == s])) == 1
    for f in range(4):
        assert set(np.unique(y[folds != f])) == set(np.unique(y))


def test_xgboost_holds_out_the_rows_it_is_given(rng):
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    held = np.arange(0, 200, 5)
    summary = small_xgboost().fit(X, y, n_threads=1, held_out=held)
    assert summary["held_out_voxels"] == len(held)


def test_training_holds_out_whole_strokes():
    ph = make_phantom((64, 72), n_classes=3, feature_size=7.0, scribbles="strokes", seed=3)
    seen = {}

    class Recording(XGBoostClassifier):
        def fit(self, X, y, *, n_threads, device="cpu", held_out=None):
            seen["held"], seen["y"] = held_out, y
            return super().fit(X, y, n_threads=n_threads, device=device, held_out=held_out)

    model = ts.train(
        ph.image,
        ph.scribbles,
        features=SMALL_BANK,
        classifier=Recording(max_rounds=15, patience=3, max_depth=3),
        cache_dir=None,
    )
    coords = np.argwhere(ph.scribbles)
    values = ph.scribbles[tuple(coords.T)]
    strokes = stroke_ids(coords, values)
    assert model.summary["strokes"] == {
        int(v): len(np.unique(strokes[values == v])) for v in np.unique(values)
    }
    assert model.summary["held_out_voxels"] == len(seen["held"])
    # the table's rows are the scribbles in C order: the rows held out are those of the
    # split of the scribbles' own strokes
    y = np.unique(values, return_inverse=True)[1]
    np.testing.assert_array_equal(seen["y"], y)
    _, held = held_out_split(y, strokes, coords, seed=0)
    np.testing.assert_array_equal(np.sort(seen["held"]), held)
    assert 0 < len(held) < len(y)
