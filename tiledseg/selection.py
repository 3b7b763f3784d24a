"""Feature selection: keep the K most useful features, checked on held-out scribbles.

The ranking is the fitted classifier's own importance (XGBoost's total gain, a
random forest's impurity decrease). The kept features decide a smaller bank: only
the (family, scale) pairs that hold a kept feature are computed at prediction, so
a selected model is faster to apply and its halo can shrink. Features do not
depend on which other families are computed, so the kept columns of the full
training table are exactly the smaller bank's features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiledseg.classifiers import Classifier, stratified_split
from tiledseg.errors import TiledsegError
from tiledseg.features.bank import RAW, FeatureBank

__all__ = ["Selection", "check_k", "select_features"]

#: Share of the scribbled voxels held out to compare the full and the selected model.
HELD_OUT = 0.25


@dataclass(frozen=True)
class Selection:
    """The kept features and what they did on held-out scribbles.

    Attributes
    ----------
    bank : FeatureBank
        The smaller bank: the (family, scale) pairs that hold a kept feature.
    columns : tuple of int
        Positions of the kept features among the smaller bank's features.
    kept : tuple of int
        Positions of the kept features among the full bank's (the table's columns).
    accuracy_before, accuracy_after : float
        Accuracy on the held-out scribbled voxels with every feature, and with the kept ones.
    """

    bank: FeatureBank
    columns: tuple[int, ...]
    kept: tuple[int, ...]
    accuracy_before: float
    accuracy_after: float

    def summary(self, n_features: int) -> dict[str, Any]:
        """For the model's training summary."""
        return {
            "selected_features": len(self.kept),
            "of_features": n_features,
            "held_out_accuracy_all_features": round(self.accuracy_before, 4),
            "held_out_accuracy_selected": round(self.accuracy_after, 4),
        }


def select_features(
    X: np.ndarray,
    y: np.ndarray,
    *,
    k: int,
    bank: FeatureBank,
    ndim: int,
    n_channels: int,
    make: Callable[[], Classifier],
    split: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
    n_threads: int = 1,
) -> Selection:
    """Rank the features by importance and keep the ``k`` best.

    Parameters
    ----------
    X : ndarray, shape (n, n_features)
        The training table, columns in the order of ``bank``'s features.
    y : ndarray of int
        Class indices ``0..c-1``.
    k : int
        Features to keep, ``1 <= k < n_features``.
    bank : FeatureBank
        The bank ``X`` was computed with.
    ndim, n_channels : int
        The image's spatial dimensionality and channels (the bank's feature layout).
    make : callable
        Returns a fresh, unfitted classifier like the one being trained.
    split : callable, optional
        ``split(rows, fraction=)`` -> (train, held) positions in ``rows``, whole strokes
        on each side (:func:`tiledseg.strokes.held_out_split`); it also chooses the
        fits' own early-stopping sets. ``None``: voxels drawn per class (``seed``).
    seed : int
        Seed of the held-out split when no ``split`` is given.
    n_threads : int
        Threads the fits may use.

    Returns
    -------
    Selection
    """
    n_features = X.shape[1]
    check_k(k, n_features)
    if split is None:
        train, held = stratified_split(y, HELD_OUT, seed)
        inner = None
    else:
        train, held = split(np.arange(len(y)), fraction=HELD_OUT)
        inner = split(train)[1]
    if not len(held) or len(np.unique(y[train])) != int(y.max()) + 1:
        raise TiledsegError(
            "--select-features needs more scribbles: every class must keep voxels for "
            f"training after {HELD_OUT:.0%} of them are held out to check the selection"
        )
    full = make()
    full.fit(X[train], y[train], n_threads=n_threads, held_out=inner)
    importance = full.importances()
    if importance is None:
        raise TiledsegError(
            f"--select-features needs feature importances, which {full.name} does not give; "
            "use xgboost or random-forest"
        )
    # highest importance first; ties keep the bank's order
    order = np.lexsort((np.arange(n_features), -np.asarray(importance, dtype=np.float64)))
    kept = tuple(sorted(int(i) for i in order[:k]))
    chosen = make()
    chosen.fit(X[train][:, kept], y[train], n_threads=n_threads, held_out=inner)
    before = _accuracy(full, X[held], y[held], n_threads)
    after = _accuracy(chosen, X[held][:, kept], y[held], n_threads)
    names = bank.feature_names(ndim=ndim, n_channels=n_channels)
    wanted: dict[str, set[float]] = {}
    for i in kept:
        if names[i].family != RAW:  # extra channels' raw values are always there
            wanted.setdefault(names[i].family, set()).add(names[i].sigma)
    smaller = bank.restricted({family: sorted(scales) for family, scales in wanted.items()})
    layout = smaller.feature_names(ndim=ndim, n_channels=n_channels)
    position = {name: i for i, name in enumerate(layout)}
    columns = tuple(position[names[i]] for i in kept)
    return Selection(smaller, columns, kept, before, after)


def check_k(k: int, n_features: int) -> None:
    """Refuse a K that keeps nothing or everything (before any feature is computed)."""
    if not 1 <= k < n_features:
        raise TiledsegError(
            f"--select-features {k}: give a number from 1 to {n_features - 1} (the bank has "
            f"{n_features} features)"
        )


def _accuracy(clf: Classifier, X: np.ndarray, y: np.ndarray, n_threads: int) -> float:
    proba = clf.predict_proba(np.ascontiguousarray(X), n_threads=n_threads)
    return float(np.mean(proba.argmax(axis=1) == y))
