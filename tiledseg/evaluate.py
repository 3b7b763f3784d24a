"""Scores of a label map against dense ground truth, computed block by block.

Voxels where the truth is 0 are unlabelled and not scored. Voxels where the
prediction is 0 were not predicted (outside a ``--roi``'s blocks; class values are
positive) and are not scored either: they are counted as ``unpredicted_voxels``.
Classes are the label values found in the truth or the prediction.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiledseg.blocks import plan_blocks
from tiledseg.cluster import open_executor
from tiledseg.errors import InputDataError
from tiledseg.labels import check_class_count, label_values
from tiledseg.volume import Volume, open_volume

__all__ = ["evaluate", "scores_from_confusion"]

_EVAL_BLOCK = {2: 2048, 3: 128}


@dataclass(frozen=True)
class _Scoring:
    """A prediction and its truth; :meth:`pairs` counts one region's voxel pairs."""

    prediction: Volume
    truth: Volume

    def pairs(self, region: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
        """Return one region's (truth, prediction) value pairs and what else scoring needs.

        Also returned: the pairs' counts, the voxels labelled in the truth but not
        predicted, and the truth's values there.
        """
        t = label_values(self.truth.read(region)[0], role="truth", name=self.truth.name)
        p = label_values(
            self.prediction.read(region)[0], role="prediction", name=self.prediction.name
        )
        t, p = t.ravel(), p.ravel()
        labelled = t != 0
        keep = labelled & (p != 0)
        pairs, counts = np.unique(np.stack([t[keep], p[keep]]), axis=1, return_counts=True)
        return pairs, counts, int(np.count_nonzero(labelled & ~keep)), np.unique(t)


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
    _check_finished(prediction)
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
        parts = executor.map_method(
            _Scoring(pred, true).pairs, [b.region for b in blocks], desc="evaluate"
        )
    truth_classes = np.unique(np.concatenate([v for *_, v in parts]))
    check_class_count(truth_classes[truth_classes != 0], role="truth", name=true.name)
    pairs = np.concatenate([p for p, *_ in parts], axis=1)
    # (an image given as the prediction: hundreds of "classes")
    check_class_count(np.unique(pairs[1]), role="prediction", name=pred.name)
    counts = np.concatenate([c for _, c, *_ in parts])
    if counts.sum() == 0:
        raise InputDataError(
            f"no voxel to score: truth {true.name} is all 0 where prediction {pred.name} has labels"
        )
    if not np.any(pairs[0] == pairs[1]):
        raise InputDataError(
            f"truth {true.name} and prediction {pred.name} share no class value (truth: "
            f"{_listed(truth_classes[truth_classes != 0])}; prediction: {_listed(pairs[1])}); "
            "give the truth whose values the scribbles used"
        )
    classes = np.unique(pairs)
    index = np.searchsorted(classes, pairs)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (index[0], index[1]), counts)
    scores = scores_from_confusion(confusion, classes)
    scores["unpredicted_voxels"] = sum(n for _, _, n, _ in parts)
    return scores


def _listed(values: np.ndarray, most: int = 8) -> str:
    values = np.unique(values)
    shown = ", ".join(str(int(v)) for v in values[:most])
    return shown + (f", ... ({len(values)} values)" if len(values) > most else "")


def _check_finished(prediction: Any) -> None:
    """Refuse a tiledseg output whose run has not finished (saying how far it got), or objects."""
    from tiledseg.runs import done_blocks, is_tiledseg_output, unfinished_run

    if not isinstance(prediction, str | os.PathLike) or not is_tiledseg_output(prediction):
        return
    import zarr

    if zarr.open_group(str(prediction), mode="r").attrs["tiledseg"].get("kind") == "instances":
        raise InputDataError(
            f"{prediction} holds objects (tiledseg instances), not classes; evaluate the "
            "prediction they were made of"
        )
    stored = unfinished_run(prediction)
    if stored is None:
        return
    total = _block_count(stored.get("identity") or {})
    done = len(done_blocks(prediction))
    if total and done == total:
        return  # (only the multiscale levels are unfinished: the labels are whole)
    of = f" of {total}" if total else ""
    raise InputDataError(
        f"output {prediction} is unfinished: {done}{of} blocks are done; rerun the command that "
        "made it to finish it, then evaluate"
    )


def _block_count(identity: dict[str, Any]) -> int | None:
    shape, block = identity.get("image_shape"), identity.get("block")
    if not shape or not block or identity.get("roi"):
        return None
    return math.prod(-(-n // b) for n, b in zip(shape, block, strict=True))
