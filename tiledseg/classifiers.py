"""Classifiers: the random forest (default), XGBoost, any scikit-learn estimator.

Each is wrapped in a small class with the same four operations: ``fit`` on the
training table (with per-voxel weights that balance the classes),
``predict_proba`` on a block's features, and ``to_bytes`` / ``from_bytes``
without pickle (the forest's arrays, XGBoost's own UBJSON format, or skops for
another scikit-learn estimator).
"""

from __future__ import annotations

import contextlib
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

from tiledseg.arrays import to_host
from tiledseg.device import xgboost_has_cuda
from tiledseg.errors import ModelFileError, TiledsegError
from tiledseg.features.backend import get_backend

__all__ = [
    "CLASSIFIERS",
    "Classifier",
    "ForestClassifier",
    "SklearnClassifier",
    "XGBoostClassifier",
    "balanced_weights",
    "stratified_split",
    "make_classifier",
]

CLASSIFIERS: tuple[str, ...] = ("random-forest", "xgboost")
#: The classifier of ``train`` when none is named. The forest: on the real images with
#: scribbles we have (benchmarks/RESULTS.md section 4) its mean IoU was 0.03-0.04 above
#: boosting's (0.3 on ilastik's 60-voxel project) and level on a 3D phantom, where
#: XGBoost applies about 2.9x faster (``--classifier xgboost``).
DEFAULT_CLASSIFIER = "random-forest"
#: The forest's trees and their depth limit: scikit-image's forest. Against 100 trees grown
#: until pure (ilastik's; ``ForestClassifier(trees=100, depth=None)``) they were 0.0013 mean
#: IoU below over 17 images and 3 seeds and apply 2.4x faster (benchmarks/RESULTS.md,
#: section 10).
FOREST_TREES = 50
FOREST_DEPTH = 10
#: The held-out probe forest has this fraction (1 / PROBE_SHARE) of the trees.
PROBE_SHARE = 4

# Types a skops payload may hold beyond those skops itself trusts: exact names, never
# prefixes (a prefix such as "builtins." would admit builtins.eval, which skops would
# call with arguments from the file). The tree type is what the forests need.
_TRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree"})


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-sample weights ``n / (k * count(class))``: every class weighs the same in total."""
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return (len(y) / (len(counts) * counts))[inverse].astype(np.float32)


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the indices of a train/held-out split.

    The split keeps at least one sample per class in each part.
    """
    rng = np.random.default_rng(seed)
    train, held = [], []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_held = int(round(fraction * len(idx)))
        n_held = min(max(n_held, 1), len(idx) - 1) if len(idx) > 1 else 0
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


class Classifier(ABC):
    """Interface shared by the wrappers."""

    name: str

    #: Whether :meth:`predict_proba` gives graded probabilities, not one-hot labels.
    has_probabilities: bool = True

    #: Whether :meth:`fit_distributed` can train on the workers of a dask cluster.
    trains_distributed: bool = False

    #: Whether :meth:`fit` chooses its size (XGBoost's rounds) on the held-out rows; the
    #: others use them only to report an accuracy.
    stops_early: bool = False

    @abstractmethod
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        n_threads: int,
        device: str = "cpu",
        held_out: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Fit on features ``X`` (n, f) float32 and class indices ``y`` (0..k-1).

        The fit runs on ``device`` (``cpu`` or ``cuda``) where the classifier can.
        ``held_out``: the rows a classifier that validates (XGBoost's early stopping) holds
        out, whole strokes (:func:`tiledseg.strokes.held_out_split`); ``None``: voxels drawn
        per class.
        """

    def fit_distributed(
        self,
        client: Any,
        X: Any,
        y: np.ndarray,
        *,
        device: str = "cpu",
        held_out: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Fit on the workers of a dask cluster, where the rows of ``X`` are."""
        raise TiledsegError(
            f"classifier {self.name} cannot train on a dask cluster; only xgboost can"
        )

    @abstractmethod
    def predict_proba(self, X: Any, *, n_threads: int = 1, device: str = "cpu") -> Any:
        """Return class probabilities (n, k) float32.

        With ``device="cuda"`` ``X`` may be a cupy array; the probabilities are then
        a cupy array too where the classifier predicts on the GPU, else numpy.
        """

    @abstractmethod
    def to_bytes(self) -> bytes:
        """Serialise without pickle."""

    def importances(self) -> np.ndarray | None:
        """Per-feature importance, if the classifier has one."""
        return None


class XGBoostClassifier(Classifier):
    """Gradient-boosted trees with early stopping on held-out scribbles.

    About a fifth of each class's labelled voxels is held out, whole strokes at a
    time when training gives them (``held_out``; held-out voxels from the strokes
    the model trains on would score about 1.0 whatever it learnt); boosting stops when the
    held-out classification error has not improved for ``patience`` rounds (the
    log-loss keeps falling long after the labels stop changing, and every round
    costs prediction time), but never before ``min_rounds``, nor after
    ``max_rounds``. The model is then refitted on all scribbles with the best
    number of rounds, so no needless rounds slow prediction and no scribble is
    wasted.

    With three or more classes each round grows one multi-output tree (vector
    leaves, ``multi_strategy="multi_output_tree"``) instead of one tree per class:
    prediction, which walks every tree for every voxel, ran 2.6x faster at equal
    mIoU on our phantoms once the cap was raised from 30 to 50 rounds
    (benchmarks/RESULTS.md).

    With ``forest=True`` it is a random forest in XGBoost's random-forest mode
    (one round of ``trees`` parallel trees, each on 63% of the rows, each split on
    the square root of the features, no shrinkage): the ``random-forest`` of
    ``--device cuda``, trained and predicted on the GPU, and read on any machine.

    On ``cuda`` each class gets its own trees (``one_output_per_tree``): XGBoost's
    roadmap (dmlc/xgboost#9043) lists GPU histograms and prediction of vector-leaf
    trees as not done, so a vector-leaf model (trained on the CPU) is predicted on
    the CPU even when the features are on the GPU. So is any model where XGBoost was
    built without CUDA (:func:`tiledseg.device.xgboost_has_cuda`).
    """

    def __init__(
        self,
        *,
        max_rounds: int = 50,
        min_rounds: int = 10,
        patience: int = 10,
        max_depth: int = 6,
        learning_rate: float = 0.3,
        colsample_bynode: float = 0.5,
        multi_strategy: str = "multi_output_tree",
        held_out: float = 0.2,
        seed: int = 0,
        booster: Any = None,
        n_classes: int | None = None,
        forest: bool = False,
        trees: int = FOREST_TREES,
        forest_depth: int = FOREST_DEPTH,
    ):
        self.params: dict[str, Any] = dict(
            max_rounds=max_rounds,
            min_rounds=min_rounds,
            patience=patience,
            max_depth=max_depth,
            learning_rate=learning_rate,
            colsample_bynode=colsample_bynode,
            multi_strategy=multi_strategy,
            held_out=held_out,
            seed=seed,
        )
        if forest:  # (only then: the params of a boosted model stay readable by older tiledseg)
            self.params.update(
                forest=True, trees=trees, forest_depth=forest_depth, max_rounds=1, min_rounds=1
            )
        self.booster = booster
        self.n_classes = n_classes
        self._nthread: int | None = None  # the booster's nthread, when known
        self._device = "cpu"  # the booster's device

    @property
    def forest(self) -> bool:
        """Whether this is XGBoost's random-forest mode."""
        return bool(self.params.get("forest", False))

    @property
    def stops_early(self) -> bool:  # type: ignore[override]
        """Boosting stops on the held-out rows; the forest mode (one round) does not."""
        return not self.forest

    @property
    def trains_distributed(self) -> bool:  # type: ignore[override]
        """Boosting trains on a dask cluster; the forest (one round) in one process."""
        return not self.forest

    @property
    def name(self) -> str:  # type: ignore[override]
        """``xgboost``, or ``random-forest`` in random-forest mode."""
        return "random-forest" if self.forest else "xgboost"

    @property
    def vector_leaf(self) -> bool:
        """Whether the trees have one leaf vector for all classes (CPU prediction only)."""
        return (self.n_classes or 2) > 2 and self.params.get(
            "multi_strategy", "one_output_per_tree"
        ) == "multi_output_tree"

    def _booster_params(
        self, n_classes: int, n_threads: int, *, n_features: int = 1, device: str = "cpu"
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "tree_method": "hist",
            "device": device,
            "max_depth": self.params["max_depth"],
            "eta": self.params["learning_rate"],
            # each split sees half the features, as in a random forest: it steadied the
            # model on tiny scribble sets (superalloy, phantoms; docs/design-notes.md)
            "colsample_bynode": self.params.get("colsample_bynode", 1.0),
            "seed": self.params["seed"],
            "nthread": n_threads,
        }
        if self.forest:
            params.update(
                max_depth=self.params["forest_depth"],
                eta=1.0,
                num_parallel_tree=self.params["trees"],
                subsample=0.632,  # the share of distinct rows in a bootstrap sample
                colsample_bynode=min(1.0, math.sqrt(n_features) / n_features),
            )
        if n_classes == 2:
            params.update(objective="binary:logistic", eval_metric="error")
        else:
            params.update(
                objective="multi:softprob",
                num_class=n_classes,
                eval_metric="merror",
                multi_strategy=self.params.get("multi_strategy", "one_output_per_tree"),
            )
        return params

    def _strategy_for(self, n_classes: int, device: str) -> dict[str, Any]:
        """Train one tree per class on the GPU and in a forest (see the class notes).

        The model file then says so, and prediction follows.
        """
        if n_classes > 2 and (device == "cuda" or self.forest):
            if self.params.get("multi_strategy") != "one_output_per_tree":
                self.params["multi_strategy"] = "one_output_per_tree"
                return {"multi_strategy": "one_output_per_tree"}
        return {}

    def _rounds_after(self, probe: Any, rounds: int) -> int:
        """Return the rounds for the final fit: where the probe's held-out error was best.

        They are at least ``min_rounds`` (and at most ``rounds``).
        """
        return min(rounds, max(int(probe.best_iteration) + 1, self.params["min_rounds"]))

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        n_threads: int,
        device: str = "cpu",
        held_out: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Fit the booster on ``X``, ``y`` (after a held-out probe); return the fit summary."""
        import xgboost as xgb

        self.n_classes = int(y.max()) + 1
        summary: dict[str, Any] = {"device": device, **self._strategy_for(self.n_classes, device)}
        params = self._booster_params(
            self.n_classes, n_threads, n_features=int(X.shape[1]), device=device
        )
        weights = balanced_weights(y)
        train, held = self._split(y, held_out)
        rounds = self.params["max_rounds"]
        if self.forest:
            summary["trees"] = self.params["trees"]
        else:
            summary["max_rounds"] = rounds
        # (a forest is one round: its probe has no rounds to choose, only its held-out score)
        if len(held) and len(np.unique(y[train])) == self.n_classes:
            dtrain = xgb.DMatrix(X[train], label=y[train], weight=weights[train], nthread=n_threads)
            dheld = xgb.DMatrix(X[held], label=y[held], weight=weights[held], nthread=n_threads)
            probe = xgb.train(
                params,
                dtrain,
                num_boost_round=rounds,
                evals=[(dheld, "held_out")],
                early_stopping_rounds=self.params["patience"],
                verbose_eval=False,
            )
            # the error is coarse on few held-out voxels and can plateau after 2-3
            # rounds; a floor of min_rounds keeps the model from stopping that soon
            rounds = self._rounds_after(probe, rounds)
            # (the probe may have stopped before min_rounds: score the trees it has)
            scored = min(rounds, probe.num_boosted_rounds())
            proba = _as_proba(probe.predict(dheld, iteration_range=(0, scored)), self.n_classes)
            summary["held_out_accuracy"] = float(np.mean(proba.argmax(1) == y[held]))
            summary["held_out_voxels"] = int(len(held))
        if not self.forest:
            summary["rounds"] = rounds
        dall = xgb.DMatrix(X, label=y, weight=weights, nthread=n_threads)
        self.booster = xgb.train(params, dall, num_boost_round=rounds, verbose_eval=False)
        self._nthread, self._device = n_threads, device
        return summary

    def _split(self, y: np.ndarray, held_out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Training and held-out rows: ``held_out`` given, else voxels drawn per class."""
        if held_out is None:
            return stratified_split(y, self.params["held_out"], self.params["seed"])
        held = np.unique(np.asarray(held_out, dtype=np.int64))
        return np.setdiff1d(np.arange(len(y)), held), held

    def fit_distributed(
        self,
        client: Any,
        X: Any,
        y: np.ndarray,
        *,
        device: str = "cpu",
        held_out: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Fit with ``xgboost.dask`` on the workers that hold the rows, as :meth:`fit` does.

        The recipe is :meth:`fit`'s: the same booster parameters, balanced weights,
        the same held-out split (the strokes given in ``held_out``, or drawn here
        from ``y``: the very same rows are held out), a probe with early stopping
        that chooses the number of rounds (floor ``min_rounds``), and a final fit on
        all rows. One difference
        in form, not in effect: the held-out rows stay in the probe's training
        matrix with weight 0 (they add nothing to the gradients, hessians or the
        intercept), and the held-out matrix is the same rows weighted the other
        way, so no subset of the table is copied on the workers. Only the
        quantile cut points still see the held-out values. The result is an
        ordinary :class:`xgboost.Booster`.

        Threads: ``xgboost.dask`` (3.2, ``dask/__init__.py`` ``do_train`` and
        ``dask/utils.py`` ``get_n_threads``) gives every worker's booster, DMatrix
        and global config an explicit ``nthread`` equal to that worker's dask thread
        count (``worker.state.nthreads``) unless the parameters carry another one;
        an explicit ``nthread`` is not capped by ``OMP_NUM_THREADS=1``, which dask's
        nanny sets in every worker process (measured: a 2-thread worker trained at
        1.9 cores of CPU time per second, 1.0 with ``nthread=1``). So no ``nthread``
        is passed: one from the driver would override every worker's own.

        Parameters
        ----------
        client : distributed.Client
            The cluster's client.
        X : dask.array.Array
            Features (n, f) float32, chunked along rows only, its chunks held on the
            workers (persisted or scattered). They never come to this process.
        y : numpy.ndarray
            Class indices (0..k-1) of the n rows. The labels are already here (the
            scan of the scribbles returns them) and are a ``1/f`` part of the table;
            they, the weights and the split are scattered in ``X``'s chunks.
        device : {"cpu", "cuda"}
            ``cuda``: every worker trains on its own GPU (the one its
            ``CUDA_VISIBLE_DEVICES`` shows first).

        Returns
        -------
        dict
            :meth:`fit`'s summary, with ``distributed: True`` and
            ``training_workers``, the number of workers that held rows and trained.
        """
        import xgboost.dask as dxgb

        if self.forest:
            raise TiledsegError(
                "the random forest trains in one process: leave distributed training off"
            )
        self.n_classes = int(y.max()) + 1
        summary: dict[str, Any] = {"device": device, **self._strategy_for(self.n_classes, device)}
        params = self._booster_params(self.n_classes, 1, device=device)
        del params["nthread"]  # each worker uses its own thread count (see above)
        chunks = X.chunks[0]
        weights = balanced_weights(y)
        train, held = self._split(y, held_out)
        rounds = self.params["max_rounds"]
        summary["max_rounds"] = rounds
        label = _scattered(client, y.astype(np.float32), chunks)
        with _current_client(client):
            if len(held) and len(np.unique(y[train])) == self.n_classes:
                rounds, correct = self._probe_distributed(
                    client, X, label, weights, held, params=params, rounds=rounds
                )
                summary["held_out_accuracy"] = float(correct) / len(held)
                summary["held_out_voxels"] = int(len(held))
            summary["rounds"] = rounds
            dall = dxgb.DaskQuantileDMatrix(
                client, X, label, weight=_scattered(client, weights, chunks)
            )
            self.booster = dxgb.train(
                client, params, dall, num_boost_round=rounds, verbose_eval=False
            )["booster"]
        self._nthread = None  # the training worker's count: predict_proba sets its own
        summary["distributed"] = True
        summary["training_workers"] = len(dall.worker_map)
        return summary

    def _probe_distributed(
        self,
        client: Any,
        X: Any,
        label: Any,
        weights: np.ndarray,
        held: np.ndarray,
        *,
        params: dict[str, Any],
        rounds: int,
    ) -> tuple[int, int]:
        """Fit a probe; return the rounds for the final fit and the held-out rows predicted right.

        The held-out rows stay in the training matrix with weight 0 and the held-out
        matrix is the same rows weighted the other way (see :meth:`fit_distributed`).
        """
        import xgboost.dask as dxgb

        chunks = X.chunks[0]
        in_held = np.zeros(len(weights), dtype=bool)
        in_held[held] = True
        zero = np.float32(0)
        dtrain = dxgb.DaskQuantileDMatrix(
            client,
            X,
            label,
            weight=_scattered(client, np.where(in_held, zero, weights), chunks),
        )
        dheld = dxgb.DaskQuantileDMatrix(
            client,
            X,
            label,
            weight=_scattered(client, np.where(in_held, weights, zero), chunks),
            ref=dtrain,
        )
        probe = dxgb.train(
            client,
            params,
            dtrain,
            num_boost_round=rounds,
            evals=[(dheld, "held_out")],
            early_stopping_rounds=self.params["patience"],
            verbose_eval=False,
        )["booster"]
        del dtrain, dheld
        rounds = self._rounds_after(probe, rounds)
        scored = min(rounds, probe.num_boosted_rounds())
        # predicted on all rows (on the workers) and counted on the held-out ones:
        # only the count comes back
        raw = dxgb.inplace_predict(client, probe, X, iteration_range=(0, scored))
        predicted = raw > 0.5 if raw.ndim == 1 else raw.argmax(axis=1)
        hits = (predicted == label) & _scattered(client, in_held, chunks)
        return rounds, client.compute(hits.sum()).result()

    def predict_proba(self, X: Any, *, n_threads: int = 1, device: str = "cpu") -> Any:
        """Return the booster's probabilities of ``X`` (on the CPU where it cannot use the GPU)."""
        if device == "cuda" and (self.vector_leaf or not xgboost_has_cuda()):
            device = "cpu"  # (see the class notes; an XGBoost built without CUDA)
        if device == "cpu":
            X = to_host(X)
        # set_param unconfigures the booster, which blocks predicting on other threads
        # then fail on ("Check failed: !this->need_configuration_"): set it only when
        # it changes, and once, under a lock. On the GPU the booster must be on the
        # device too, or XGBoost copies the features back to predict on the CPU.
        with _PARAM_LOCK:
            if self._nthread != n_threads or self._device != device:
                self.booster.set_param({"nthread": n_threads, "device": device})
                self._nthread, self._device = n_threads, device
        raw = self.booster.inplace_predict(X, validate_features=False)
        return _as_proba(raw, self.n_classes)

    def to_bytes(self) -> bytes:
        """Return the booster as XGBoost's UBJSON model bytes."""
        return bytes(self.booster.save_raw(raw_format="ubj"))

    @classmethod
    def from_bytes(cls, data: bytes, *, n_classes: int, params: dict) -> XGBoostClassifier:
        """Rebuild the classifier from :meth:`to_bytes`' booster and its ``params``."""
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(data))
        except xgb.core.XGBoostError as exc:
            raise ModelFileError(
                f"the XGBoost payload of the model cannot be read: {exc}"
            ) from None
        return cls(booster=booster, n_classes=n_classes, **params)

    def importances(self) -> np.ndarray | None:
        """Return the booster's gain per feature, normalised to sum to 1."""
        scores = self.booster.get_score(importance_type="gain")
        n = self.booster.num_features()
        out = np.zeros(n, dtype=np.float64)
        for key, value in scores.items():
            out[int(key.lstrip("f"))] = value
        total = out.sum()
        return out / total if total > 0 else out


_PARAM_LOCK = threading.Lock()
_CLIENT_LOCK = threading.Lock()


@contextlib.contextmanager
def _current_client(client: Any) -> Iterator[None]:
    """Make ``client`` dask's current client while ``xgboost.dask`` runs.

    ``xgboost.dask`` calls ``distributed.get_client()`` even when it is given a
    client (to check the given one's type), which fails when there is no default
    or current client, and tiledseg's clients are not the default (see
    :mod:`tiledseg.cluster`). ``Client.as_current`` also sets dask's global
    ``scheduler`` config until it exits; one fit at a time holds it, so two fits
    in two threads cannot restore that config out of order. (tiledseg's own
    computations name their scheduler, so they do not read it.)
    """
    with _CLIENT_LOCK, client.as_current():
        yield


def _scattered(client: Any, values: np.ndarray, chunks: tuple[int, ...]) -> Any:
    """Return a 1-d dask array of ``values`` in the given row chunks, scattered to the workers.

    Scattered, not put into the graph: a graph holding them would be sent (and warned
    about, past 10 MB) with every computation built on it.
    """
    import dask.array as da

    bounds = np.cumsum((0, *chunks))
    parts = [values[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    futures = client.scatter(parts, hash=False)
    return da.concatenate(
        [
            da.from_delayed(f, shape=p.shape, dtype=p.dtype)
            for f, p in zip(futures, parts, strict=True)
        ]
    )


def _as_proba(raw: Any, n_classes: int) -> Any:
    """``(n, k)`` float32 probabilities, in ``raw``'s array module (numpy or cupy)."""
    xp = get_backend(raw).xp
    raw = xp.asarray(raw, dtype=xp.float32)
    if n_classes == 2 and raw.ndim == 1:
        return xp.stack([1.0 - raw, raw], axis=1)
    return raw.reshape(-1, n_classes)


class SklearnClassifier(Classifier):
    """Any scikit-learn-style estimator with ``fit`` and ``predict_proba`` (or only ``predict``).

    An estimator with only ``predict`` labels, but gives no probabilities to write or smooth.

    Fitted with the same per-voxel weights as XGBoost where the estimator takes them;
    prediction runs single-threaded per block (the blocks are the parallelism, and a fixed
    summation order keeps the probabilities the same for any tiling). Models written
    before tiledseg kept forests as arrays (:class:`ForestClassifier`) load their
    ``random-forest`` here.
    """

    def __init__(self, estimator: Any):
        if not (
            hasattr(estimator, "fit")
            and (hasattr(estimator, "predict_proba") or hasattr(estimator, "predict"))
        ):
            raise TiledsegError(
                f"classifier {type(estimator).__name__} has no fit and predict(_proba); pass "
                "a scikit-learn-style classifier, 'xgboost' or 'random-forest'"
            )
        self.estimator = estimator

    @property
    def has_probabilities(self) -> bool:
        """Whether the estimator gives probabilities (an SVC without them only labels)."""
        return hasattr(self.estimator, "predict_proba")

    @property
    def name(self) -> str:
        """``random-forest`` for the built-in forest, else the estimator's class name."""
        est = type(self.estimator)
        if est.__name__ == "RandomForestClassifier" and est.__module__.startswith("sklearn."):
            return "random-forest"
        return est.__name__

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        n_threads: int,
        device: str = "cpu",
        held_out: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Fit the estimator on ``X``, ``y`` on the CPU; return the fit summary."""
        return _fit_with_probe(self.estimator, X, y, held_out=held_out, n_threads=n_threads)

    def predict_proba(self, X: Any, *, n_threads: int = 1, device: str = "cpu") -> np.ndarray:
        """Return the estimator's class probabilities of ``X`` (one-hot labels without them)."""
        X = to_host(X)  # scikit-learn predicts on the CPU: GPU features come back first
        if self.has_probabilities:
            return np.asarray(self.estimator.predict_proba(X), dtype=np.float32)
        # labels only: one-hot "probabilities" carry the labels and nothing more
        n_classes = len(self.estimator.classes_)
        return np.eye(n_classes, dtype=np.float32)[np.asarray(self.estimator.predict(X))]

    def to_bytes(self) -> bytes:
        """Save the estimator with skops, refusing the types that loading would refuse."""
        import skops.io as sio

        try:
            data = sio.dumps(self.estimator)
        except Exception as exc:  # skops raises TypeError and others for unknown types
            raise TiledsegError(
                f"classifier {type(self.estimator).__name__} cannot be saved without pickle "
                f"(skops: {exc}); use 'xgboost' or a scikit-learn estimator"
            ) from None
        # refuse now what loading would refuse: never write a model that cannot be read
        refused = _refused_types(data)
        if refused:
            raise TiledsegError(
                f"classifier {type(self.estimator).__name__} holds types tiledseg does not "
                f"load ({', '.join(refused)}); use 'xgboost', 'random-forest' or another "
                "scikit-learn estimator"
            )
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> SklearnClassifier:
        """Load the estimator from skops bytes if every untrusted type is on the allowlist."""
        import skops.io as sio

        try:
            untrusted = sio.get_untrusted_types(data=data)
        except Exception as exc:  # not a skops payload
            raise ModelFileError(
                f"the scikit-learn payload of the model is not valid: {exc}"
            ) from None
        refused = [t for t in untrusted if t not in _TRUSTED_TYPES]
        if refused:
            raise ModelFileError(
                f"the model's payload holds types tiledseg does not load: {', '.join(refused)}"
            )
        return cls(sio.loads(data, trusted=untrusted))

    def importances(self) -> np.ndarray | None:
        """Return the estimator's ``feature_importances_``, if it has them."""
        values = getattr(self.estimator, "feature_importances_", None)
        return None if values is None else np.asarray(values, dtype=np.float64)


class ForestClassifier(Classifier):
    """``random-forest``: scikit-learn's random-forest algorithm, as a packed forest.

    The forest is grown and applied as a :class:`~tiledseg.forest.PackedForest` (no
    scikit-learn, nor pickle, at all).

    The trees are balanced by the same per-voxel weights as XGBoost. The accuracy on
    held-out strokes comes from a probe forest of a quarter of the trees grown without
    them: a fifth of the cost of a second full forest, for an estimate within a few
    held-out voxels of it.
    """

    name = "random-forest"

    def __init__(
        self,
        *,
        seed: int = 0,
        trees: int = FOREST_TREES,
        depth: int | None = FOREST_DEPTH,
        packed: Any = None,
    ):
        self.seed = seed
        self.trees = trees
        self.depth = depth
        self.packed = packed

    def _grow(self, X: np.ndarray, y: np.ndarray, *, trees: int, n_threads: int) -> Any:
        from tiledseg.forest import PackedForest

        return PackedForest.grow(
            X,
            y,
            weights=balanced_weights(y),
            trees=trees,
            depth=self.depth,
            seed=self.seed,
            n_threads=n_threads,
        )

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        n_threads: int,
        device: str = "cpu",
        held_out: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Grow the forest on ``X``, ``y`` (after a probe forest); return the fit summary."""
        X, y = to_host(X), to_host(y)
        summary: dict[str, Any] = {"estimator": "PackedForest"}
        split = _held_split(y, held_out)
        if split is not None:
            train, held = split
            probe = self._grow(
                X[train], y[train], trees=max(1, self.trees // PROBE_SHARE), n_threads=n_threads
            )
            predicted = probe.predict_proba(X[held], n_threads=n_threads).argmax(axis=1)
            summary["held_out_accuracy"] = float(np.mean(predicted == y[held]))
            summary["held_out_voxels"] = int(len(held))
        self.packed = self._grow(X, y, trees=self.trees, n_threads=n_threads)
        return summary

    def predict_proba(self, X: Any, *, n_threads: int = 1, device: str = "cpu") -> np.ndarray:
        """Return the forest's class probabilities of ``X``, computed on the CPU."""
        proba = self._fitted.predict_proba(to_host(X), n_threads=n_threads)
        return proba.astype(np.float32)

    @property
    def _fitted(self) -> Any:
        if self.packed is None:
            raise TiledsegError("the forest is not trained yet")
        return self.packed

    def to_bytes(self) -> bytes:
        """Return the forest's arrays as an uncompressed ``.npz`` archive."""
        return self._fitted.to_bytes()

    @classmethod
    def from_bytes(
        cls, data: bytes, *, seed: int = 0, depth: int | None = None
    ) -> ForestClassifier:
        """Rebuild the classifier from :meth:`to_bytes`' archive."""
        from tiledseg.forest import PackedForest

        packed = PackedForest.from_bytes(data)
        return cls(seed=seed, trees=packed.n_trees, depth=depth, packed=packed)

    def importances(self) -> np.ndarray | None:
        """Return the forest's feature importances (``None`` before it is trained)."""
        return None if self.packed is None else self.packed.importances.copy()


def _held_split(y: np.ndarray, held_out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Return ``(train rows, held-out rows)``, or ``None`` where no probe can be grown.

    No probe can be grown where nothing is held out or the rows left to train on lack a
    class.
    """
    held = np.unique(np.asarray(held_out if held_out is not None else [], dtype=np.int64))
    train = np.setdiff1d(np.arange(len(y)), held)
    if len(held) and len(np.unique(y[train])) == len(np.unique(y)):
        return train, held
    return None


def _fit_with_probe(
    est: Any,
    X: np.ndarray,
    y: np.ndarray,
    *,
    held_out: np.ndarray | None,
    n_threads: int,
) -> dict[str, Any]:
    """Fit a scikit-learn estimator on every row, on the CPU whatever the device.

    With held-out strokes a copy of it fits without them first, for the accuracy on them.
    """
    from sklearn.base import clone

    summary: dict[str, Any] = {"estimator": type(est).__name__}
    split = _held_split(y, held_out)
    if split is not None:
        train, held = split
        probe = _fit_estimator(clone(est), X[train], y[train], n_threads)
        summary["held_out_accuracy"] = float(np.mean(probe.predict(X[held]) == y[held]))
        summary["held_out_voxels"] = int(len(held))
    _fit_estimator(est, X, y, n_threads)
    return summary


def _fit_estimator(est: Any, X: np.ndarray, y: np.ndarray, n_threads: int) -> Any:
    """Fit a scikit-learn estimator weighted by :func:`balanced_weights` where it can."""
    from sklearn.utils.validation import has_fit_parameter

    if "n_jobs" in est.get_params():
        est.set_params(n_jobs=n_threads)
    if has_fit_parameter(est, "sample_weight"):
        est.fit(X, y, sample_weight=balanced_weights(y))
    else:  # e.g. a Pipeline: fitted unweighted
        est.fit(X, y)
    if "n_jobs" in est.get_params():
        est.set_params(n_jobs=1)
    return est


def _refused_types(data: bytes) -> list[str]:
    import skops.io as sio

    return [t for t in sio.get_untrusted_types(data=data) if t not in _TRUSTED_TYPES]


def make_classifier(
    spec: str | Any = "xgboost", *, seed: int = 0, device: str = "cpu"
) -> Classifier:
    """Return a classifier wrapper from a name or a scikit-learn-style estimator.

    ``random-forest`` is scikit-learn's forest algorithm (grown by
    :meth:`~tiledseg.forest.PackedForest.grow`) on the CPU and XGBoost's
    random-forest mode on ``device="cuda"`` (scikit-learn has no GPU; a cuML forest
    would need cuML, and pickle, to be read back).
    """
    if isinstance(spec, Classifier):
        return spec
    if isinstance(spec, str):
        if spec == "xgboost":
            return XGBoostClassifier(seed=seed)
        if spec in ("random-forest", "random_forest", "rf"):
            if device == "cuda":
                return XGBoostClassifier(seed=seed, forest=True)
            return ForestClassifier(seed=seed)
        raise TiledsegError(
            f"classifier {spec!r} is unknown; choose one of {', '.join(CLASSIFIERS)} "
            "or pass a scikit-learn-style estimator"
        )
    return SklearnClassifier(spec)
