"""Scores against dense ground truth: known confusion matrices, truth 0 not scored."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import tiledseg as ts
from tiledseg.errors import InputDataError
from tiledseg.evaluate import scores_from_confusion


def test_known_confusion_matrix():
    truth = np.array([[1, 1, 1, 2], [2, 2, 3, 3]], dtype=np.uint8)
    pred = np.array([[1, 1, 2, 2], [2, 1, 3, 2]], dtype=np.uint8)
    s = ts.evaluate(pred, truth)
    assert s["classes"] == [1, 2, 3]
    # rows: truth 1, 2, 3; columns: prediction 1, 2, 3
    assert s["confusion"] == [[2, 1, 0], [1, 2, 0], [0, 1, 1]]
    assert s["scored_voxels"] == 8
    assert s["accuracy"] == pytest.approx(5 / 8)
    # IoU = tp / (row + column - tp)
    assert s["iou"] == pytest.approx({1: 2 / 4, 2: 2 / 5, 3: 1 / 2})
    assert s["mean_iou"] == pytest.approx((2 / 4 + 2 / 5 + 1 / 2) / 3)


def test_truth_zero_is_not_scored():
    truth = np.array([[0, 0, 1, 2], [0, 2, 2, 1]], dtype=np.uint8)
    pred = np.array([[9, 1, 1, 2], [5, 2, 1, 1]], dtype=np.uint8)
    s = ts.evaluate(pred, truth)
    assert s["scored_voxels"] == 5
    assert s["classes"] == [1, 2]  # 9 and 5 only fall on unscored voxels
    assert s["confusion"] == [[2, 0], [1, 2]]
    assert s["accuracy"] == pytest.approx(4 / 5)
    assert s["iou"] == pytest.approx({1: 2 / 3, 2: 2 / 3})


def test_predicted_class_absent_from_truth_counts_against_it():
    truth = np.array([[1, 1, 2, 2]], dtype=np.uint8)
    pred = np.array([[1, 3, 2, 2]], dtype=np.uint8)
    s = ts.evaluate(pred, truth)
    assert s["classes"] == [1, 2, 3]
    assert s["confusion"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert set(s["iou"]) == {1, 2}, "IoU only for classes present in the truth"
    assert s["iou"][1] == pytest.approx(1 / 2)
    assert s["mean_iou"] == pytest.approx((1 / 2 + 1) / 2)


def test_perfect_and_user_values_3d():
    rng = np.random.default_rng(0)
    truth = rng.choice(np.array([85, 170, 255], dtype=np.uint8), size=(5, 6, 7))
    s = ts.evaluate(truth.copy(), truth)
    assert s["accuracy"] == 1.0
    assert s["mean_iou"] == 1.0
    assert s["classes"] == [85, 170, 255]
    assert np.trace(np.array(s["confusion"])) == truth.size


def test_blockwise_counts_equal_a_direct_count():
    """Larger than one evaluation block (2048 x 2048 in 2D is one; use 3D: 128^3 blocks)."""
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, size=(130, 20, 129), dtype=np.uint8)
    pred = rng.integers(1, 4, size=truth.shape, dtype=np.uint8)
    s = ts.evaluate(pred, truth)
    keep = truth > 0
    expected = np.zeros((3, 3), dtype=int)
    np.add.at(expected, (truth[keep] - 1, pred[keep] - 1), 1)
    assert s["confusion"] == expected.tolist()


def test_scores_from_confusion_directly():
    s = scores_from_confusion(np.array([[3, 1], [0, 4]]), [1, 2])
    assert s["accuracy"] == pytest.approx(7 / 8)
    assert s["iou"] == pytest.approx({1: 3 / 4, 2: 4 / 5})


def test_evaluate_reads_files_and_tiledseg_outputs(tmp_path, phantom2d, model2d):
    result = ts.predict(phantom2d.image, model2d, out=tmp_path / "out.zarr")
    tifffile.imwrite(tmp_path / "truth.tif", phantom2d.truth)
    from_files = ts.evaluate(result.path, str(tmp_path / "truth.tif"))
    import zarr

    labels = zarr.open_array(f"{result.path}/labels/0")[...]
    assert from_files == ts.evaluate(labels, phantom2d.truth)
    assert from_files["mean_iou"] > 0.6


def test_evaluate_errors():
    with pytest.raises(InputDataError, match="must match"):
        ts.evaluate(np.ones((4, 4), dtype=np.uint8), np.ones((4, 5), dtype=np.uint8))
    with pytest.raises(InputDataError, match="no voxel to score"):
        ts.evaluate(np.ones((4, 4), dtype=np.uint8), np.zeros((4, 4), dtype=np.uint8))


def test_unpredicted_voxels_are_not_scored():
    """After --roi, voxels outside the predicted blocks are 0: not a class, not scored."""
    truth = np.array([[1, 1, 2, 2], [1, 0, 2, 2]], dtype=np.uint8)
    pred = np.array([[1, 2, 0, 0], [1, 1, 0, 2]], dtype=np.uint8)
    s = ts.evaluate(pred, truth)
    assert s["unpredicted_voxels"] == 3
    assert s["scored_voxels"] == 4
    assert s["classes"] == [1, 2]
    assert s["accuracy"] == pytest.approx(3 / 4)
