"""Scores of a label map against dense ground truth, computed block by block.

Voxels where the truth is 0 are unlabelled and not scored. Voxels where the
prediction is 0 were not predicted (outside a ``--roi``'s blocks; class values are
positive) and are not scored either: they are counted as ``unpredicted_voxels``.
Classes are the label values found in the truth or the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tiledseg.blocks import plan_blocks
from tiledseg.cluster import open_executor
from tiledseg.errors import InputDataError
from tiledseg.volume import Volume, open_volume

__all__ = ["evaluate", "scores_from_confusion"]

_EVAL_BLOCK = {2: 2048, 3: 128}


def _pairs(args: tuple[Volume, Volume, tuple[slice, ...]]) -> tuple[np.ndarray, np.ndarray, int]:
    prediction, truth, region = args
    t = truth.read(region)[0].astype(np.int64).ravel()
    p = prediction.read(region)[0].astype(np.int64).ravel()
    labelled = t != 0
    keep = labelled & (p != 0)
    pairs, counts = np.unique(np.stack([t[keep], p[keep]]), axis=1, return_counts=True)
    return pairs, counts, int(np.count_nonzero(labelled & ~keep))


def scores_from_confusion(confusion: np.ndarray, classes: Sequence[int]) -> dict[str, Any]:
    """Accuracy, per-class IoU and mean IoU from a confusion matrix (rows: truth)."""
    total = confusion.sum()
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    truth_classes = confusion.sum(1) > 0
    iou = {int(c): float(tp[i] / union[i]) for i, c in enumerate(classes) if truth_classes[i]}
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "iou": iou,
        "mean_iou": float(np.mean(list(iou.values()))) if iou else float("nan"),
        "classes": [int(c) for c in classes],
        "confusion": confusion.astype(int).tolist(),
        "scored_voxels": int(total),
    }


def evaluate(prediction: Any, truth: Any, *, workers: int | None = None) -> dict[str, Any]:
    """Score a label map against dense ground truth.

    Parameters
    ----------
    prediction : path or array
        A label map, or a tiledseg output group (its ``labels``).
    truth : path or array
        Dense ground truth of the same shape; 0 = not scored.
    workers : int, optional
        Local worker processes (threads by default).

    Returns
    -------
    dict
        ``accuracy``, ``iou`` (per class value, for classes present in the truth),
        ``mean_iou``, ``classes``, ``confusion`` (rows: truth, columns: prediction),
        ``scored_voxels`` and ``unpredicted_voxels`` (labelled in the truth, 0 in the
        prediction).
    """
    pred = open_volume(prediction, role="prediction", allow_channels=False)
    true = open_volume(truth, role="truth", allow_channels=False)
    if pred.shape != true.shape:
        raise InputDataError(
            f"prediction {pred.name} has shape {pred.shape} but truth {true.name} has "
            f"{true.shape}; they must match"
        )
    edge = _EVAL_BLOCK[pred.ndim]
    blocks = plan_blocks(pred.shape, (edge,) * pred.ndim, (0,) * pred.ndim)
    with open_executor(workers, quiet=True) as executor:
        parts = executor.map(_pairs, [(pred, true, b.region) for b in blocks], desc="evaluate")
    pairs = np.concatenate([p for p, _, _ in parts], axis=1)
    counts = np.concatenate([c for _, c, _ in parts])
    if counts.sum() == 0:
        raise InputDataError(
            f"no voxel to score: truth {true.name} is all 0 where prediction {pred.name} has labels"
        )
    classes = np.unique(pairs)
    index = np.searchsorted(classes, pairs)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (index[0], index[1]), counts)
    scores = scores_from_confusion(confusion, classes)
    scores["unpredicted_voxels"] = sum(n for _, _, n in parts)
    return scores
