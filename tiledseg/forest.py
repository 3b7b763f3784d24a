"""A random forest held as flat arrays: grown, stored and applied without scikit-learn.

:meth:`PackedForest.grow` grows scikit-learn's random forest (``RandomForestClassifier``:
bootstrap samples, CART trees split at the best Gini decrease among a random subset of the
features) in a compiled kernel (numba), each tree on its own thread and from its own seed.
:class:`PackedForest` keeps every tree's nodes one after another in five arrays and writes
them as a ``.npz`` archive read with ``allow_pickle=False``. Training or loading a model so
never imports scikit-learn (1.3-1.7 s, more than a whole small image takes) nor skops
(another 1.5 s, which discovers every estimator), and nothing in the file can run code.

Prediction walks the trees in a second kernel. On a forest packed from scikit-learn
(:meth:`PackedForest.from_sklearn`) it gives exactly scikit-learn's ``predict_proba``: the
same comparisons (``float32`` feature ``<=`` ``float64`` threshold), and per voxel the same
float64 sums of the leaves' class fractions in tree order, divided by the number of trees.
docs/design-notes.md says why kernels of our own (and what they were measured against).
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from tiledseg.errors import ModelFileError

__all__ = ["PackedForest"]

#: Voxels walked through one tree before the next: their rows and the tree stay in cache.
_CHUNK = 256
_ARRAYS = ("feature", "threshold", "children", "values", "roots", "depths", "importances")


@dataclass(frozen=True)
class PackedForest:
    """Every tree of a forest in flat arrays (node ``i`` of all trees together).

    Attributes
    ----------
    feature : int32 (n_nodes,)
        Feature compared at a split node; 0 at a leaf (whose threshold never sends on).
    threshold : float64 (n_nodes,)
        Go to the second child where ``feature > threshold``; ``+inf`` at a leaf.
    children : int64 (2 * n_nodes,)
        ``children[2 i]`` and ``children[2 i + 1]``: node ``i``'s two children; a leaf's
        are itself, so a walk of a tree's full depth ends on the leaf whatever its depth.
    values : float64 (n_nodes, n_classes)
        Class fractions of the training voxels in each node (what a leaf predicts).
    roots : int64 (n_trees,)
        First node of each tree.
    depths : int32 (n_trees,)
        Depth of each tree: the steps a walk takes.
    importances : float64 (n_features,)
        scikit-learn's impurity-based feature importances, kept for ``--select-features``
        and the report.
    """

    feature: np.ndarray
    threshold: np.ndarray
    children: np.ndarray
    values: np.ndarray
    roots: np.ndarray
    depths: np.ndarray
    importances: np.ndarray

    @property
    def n_trees(self) -> int:
        """The number of trees."""
        return len(self.roots)

    @property
    def n_classes(self) -> int:
        """The number of classes."""
        return self.values.shape[1]

    @property
    def n_features(self) -> int:
        """The number of features."""
        return len(self.importances)

    @classmethod
    def from_sklearn(cls, forest: Any) -> PackedForest:
        """Pack a fitted ``RandomForestClassifier`` (one output)."""
        n_classes = len(forest.classes_)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("f", "t", "c", "v")}
        roots, depths, offset = [], [], 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            left, right = tree.children_left, tree.children_right
            leaf = left < 0
            own = np.arange(tree.node_count)
            parts["f"].append(np.where(leaf, 0, tree.feature).astype(np.int32))
            parts["t"].append(np.where(leaf, np.inf, tree.threshold).astype(np.float64))
            pairs = np.stack([np.where(leaf, own, left), np.where(leaf, own, right)], axis=1)
            parts["c"].append((pairs + offset).astype(np.int64).ravel())
            # scikit-learn >= 1.4 keeps class fractions in ``value``: what its trees predict
            parts["v"].append(np.asarray(tree.value[:, 0, :n_classes], dtype=np.float64))
            roots.append(offset)
            depths.append(tree.max_depth)
            offset += tree.node_count
        return cls(
            feature=np.concatenate(parts["f"]),
            threshold=np.concatenate(parts["t"]),
            children=np.concatenate(parts["c"]),
            values=np.ascontiguousarray(np.concatenate(parts["v"])),
            roots=np.asarray(roots, dtype=np.int64),
            depths=np.asarray(depths, dtype=np.int32),
            importances=np.asarray(forest.feature_importances_, dtype=np.float64),
        )

    @classmethod
    def grow(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        *,
        weights: np.ndarray | None = None,
        trees: int,
        depth: int | None,
        max_features: int | None = None,
        bootstrap: bool = True,
        seed: int = 0,
        n_threads: int = 1,
    ) -> PackedForest:
        """Grow a random forest: scikit-learn's ``RandomForestClassifier`` algorithm.

        Each tree is a CART tree on a bootstrap sample (with ``weights`` times the draws
        as each voxel's weight), split at the best Gini decrease among ``max_features``
        features drawn at each node (default the square root of their number), down to
        ``depth`` (``None``: until pure). The trees grow on ``n_threads`` threads; tree
        ``t`` draws from its own seed, so the forest is the same whatever the threads.

        Parameters
        ----------
        X : (n, n_features) array
            Features (compared as float32, as scikit-learn does); finite.
        y : (n,) int array
            Class indices ``0 .. n_classes - 1``.
        weights : (n,) array, optional
            Each row's weight (default 1): the bootstrap draws rows in proportion to it.
        trees : int
            Trees in the forest (at least 1).
        depth : int or None
            Depth limit of each tree; ``None`` grows until every leaf is pure.
        max_features : int, optional
            Features drawn at each node (default ``int(sqrt(n_features))``).
        bootstrap : bool
            Grow each tree on a bootstrap sample (else on every row, with its weight).
        seed : int
            Seed of the forest: tree ``t`` draws from the ``t``-th seed it spawns.
        n_threads : int
            Trees grown at once.

        Returns
        -------
        PackedForest
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64)
        n, p = X.shape
        if n == 0 or len(y) != n or y.min() < 0 or trees < 1:
            raise ValueError(
                f"grow needs rows, class indices and trees, got X {X.shape}, y {y.shape}, "
                f"{trees} trees"
            )
        if not np.isfinite(X).all():
            # a split between a value and NaN (or -inf and inf) has no midpoint
            raise ValueError("grow needs finite features; X holds NaN or infinite values")
        w = np.ones(n) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
        n_classes = int(y.max()) + 1
        features = max(1, int(np.sqrt(p))) if max_features is None else min(p, max_features)
        seeds = np.random.SeedSequence(seed).generate_state(trees, dtype=np.uint32)
        kernel = _compiled("grow")

        def one(t: int) -> tuple:
            limit = -1 if depth is None else depth
            return kernel(X, y, w, n_classes, limit, features, bootstrap, int(seeds[t]))

        with ThreadPoolExecutor(max_workers=max(1, min(n_threads, trees))) as pool:
            grown = list(pool.map(one, range(trees)))
        return cls._from_nodes(grown, n_features=p)

    @classmethod
    def _from_nodes(cls, grown: list[tuple], *, n_features: int) -> PackedForest:
        """Pack the trees :func:`~tiledseg._forest_kernel.grow` returned."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("f", "t", "c", "v")}
        roots, depths, offset = [], [], 0
        importances = []
        for feature, threshold, left, right, value, gains, deepest in grown:
            leaf = left < 0
            own = np.arange(len(feature))
            parts["f"].append(np.where(leaf, 0, feature).astype(np.int32))
            parts["t"].append(np.where(leaf, np.inf, threshold))
            pairs = np.stack([np.where(leaf, own, left), np.where(leaf, own, right)], axis=1)
            parts["c"].append((pairs + offset).astype(np.int64).ravel())
            parts["v"].append(value)
            roots.append(offset)
            depths.append(deepest)
            offset += len(feature)
            if len(feature) > 1:  # a stump adds nothing (scikit-learn leaves it out)
                importances.append(gains / gains.sum() if gains.sum() > 0 else gains)
        mean = np.mean(importances, axis=0) if importances else np.zeros(n_features)
        total = mean.sum()
        return cls(
            feature=np.concatenate(parts["f"]),
            threshold=np.concatenate(parts["t"]).astype(np.float64),
            children=np.concatenate(parts["c"]),
            values=np.ascontiguousarray(np.concatenate(parts["v"])),
            roots=np.asarray(roots, dtype=np.int64),
            depths=np.asarray(depths, dtype=np.int32),
            importances=mean / total if total > 0 else mean,
        )

    def predict_proba(self, X: np.ndarray, *, n_threads: int = 1) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` float64 of the rows of ``X``.

        With ``n_threads > 1`` the rows are split among threads (the kernel releases the
        GIL); each row's sum is the same whatever the split.
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"the forest expects (n, {self.n_features}) features, got {X.shape}")
        out = np.empty((X.shape[0], self.n_classes), dtype=np.float64)
        kernel = _compiled("walk")
        args = self._walked
        n_parts = max(1, min(n_threads, X.shape[0] // _CHUNK))
        if n_parts == 1:
            kernel(X, *args, out, _CHUNK)
            return out
        bounds = np.linspace(0, X.shape[0], n_parts + 1).astype(np.int64)
        with ThreadPoolExecutor(max_workers=n_parts) as pool:
            runs = [
                pool.submit(kernel, X[a:b], *args, out[a:b], _CHUNK)
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            ]
            for run in runs:
                run.result()  # (an error in a thread is raised here, not lost)
        return out

    @functools.cached_property
    def _walked(self) -> tuple[np.ndarray, ...]:
        """The arrays the walk reads, smaller than the stored ones and in the same order.

        Nodes are renumbered level by level so that a node's two children are neighbours
        (one int32 ``left`` per node instead of two int64 children), and each float64
        threshold ``t`` becomes the largest float32 ``t32 <= t``: for a float32 feature
        ``x``, ``x <= t`` exactly when ``x <= t32``, so every comparison, and so every
        probability, is unchanged, while a node takes 12 bytes instead of 28.
        """
        n = len(self.feature)
        first, second = self.children[0::2], self.children[1::2]
        leaf = first == np.arange(n)
        new_id = np.empty(n, dtype=np.int64)
        new_id[self.roots] = np.arange(self.n_trees)
        order, frontier, taken = [self.roots], self.roots, self.n_trees
        while len(frontier):
            split = frontier[~leaf[frontier]]
            kids = np.stack([first[split], second[split]], axis=1).ravel()
            if taken + len(kids) > n:  # a node reached twice: not trees (a damaged file)
                raise ModelFileError("the forest payload of the model is inconsistent; retrain it")
            new_id[kids] = taken + np.arange(len(kids))
            taken += len(kids)
            order.append(kids)
            frontier = kids
        old = np.concatenate(order)
        if taken != n or len(np.unique(old)) != n or int(self.depths.max()) > n:
            # a node never reached, one reached as both children, or a walk longer than the
            # nodes: not trees (a damaged or hostile file), which the kernel must not walk
            raise ModelFileError("the forest payload of the model is inconsistent; retrain it")
        left = np.where(leaf[old], np.arange(n), new_id[first[old]]).astype(np.int32)
        threshold = self.threshold[old].astype(np.float32)
        above = threshold.astype(np.float64) > self.threshold[old]
        threshold[above] = np.nextafter(threshold[above], np.float32(-np.inf))
        return (
            self.feature[old].astype(np.int32),
            threshold,
            left,
            np.ascontiguousarray(self.values[old]),
            np.arange(self.n_trees, dtype=np.int32),
            self.depths,
        )

    def to_bytes(self) -> bytes:
        """Return an uncompressed ``.npz`` archive of the arrays."""
        buffer = io.BytesIO()
        np.savez(buffer, **{name: getattr(self, name) for name in _ARRAYS})
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PackedForest:
        """Read :meth:`to_bytes`' archive (never unpickling), checking its arrays agree."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in _ARRAYS}
        except (ValueError, OSError, KeyError) as exc:
            raise ModelFileError(f"the forest payload of the model is not valid: {exc}") from None
        forest = cls(**arrays)
        forest._check()
        forest._walked  # noqa: B018 (checks that the nodes form trees, once, on load)
        return forest

    def _check(self) -> None:
        """Refuse arrays the kernel could walk out of (it does not check indices)."""
        n = len(self.feature)
        ok = (
            self.feature.dtype == np.int32
            and self.threshold.dtype == np.float64
            and self.children.dtype == np.int64
            and self.roots.dtype == np.int64
            and self.depths.dtype == np.int32
            and self.values.dtype == np.float64
            and self.values.ndim == 2
            and len(self.threshold) == n
            and len(self.values) == n
            and self.children.shape == (2 * n,)
            and len(self.roots) == len(self.depths) > 0
            and bool(np.all((self.children >= 0) & (self.children < n)))
            and bool(np.all((self.roots >= 0) & (self.roots < n)))
            and bool(np.all((self.feature >= 0) & (self.feature < len(self.importances))))
            and bool(np.all(self.depths >= 0))
        )
        if not ok:
            raise ModelFileError("the forest payload of the model is inconsistent; retrain it")


#: Each kernel's one signature: compiled for it alone, once.
_SIGNATURES = {
    "walk": "(f4[:, ::1], i4[::1], f4[::1], i4[::1], f8[:, ::1], i4[::1], i4[::1], f8[:, ::1], i8)",
    "grow": "(f4[:, ::1], i8[::1], f8[::1], i8, i8, i8, b1, i8)",
}
_COMPILE_LOCK = threading.Lock()


@cache
def _compiled(name: str) -> Callable[..., Any]:
    """Return a kernel of :mod:`tiledseg._forest_kernel`, compiled or loaded on first use.

    On first use numba is imported and the kernel compiled or loaded, by one thread: blocks
    at once must not write numba's cache together.
    """
    with _COMPILE_LOCK:
        from tiledseg import _forest_kernel

        kernel = getattr(_forest_kernel, name)
        kernel.compile(_SIGNATURES[name])
        return kernel
