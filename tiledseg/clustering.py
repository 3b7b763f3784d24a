"""A start without scribbles: the image's phases found by k-means, before any painting.

The path of one run, in four steps:

1. **Sample.** Seeded random windows over the whole image (at most 128 x 128 in
   2D, 32 x 64 x 64 in 3D, clipped to the image) get their exact features, each
   read with its halo as a processing block would be; seeded rows of each window
   form the sample. The windows do not depend on ``block``, so every tiling sees
   the same sample.
2. **Fit.** The sample is standardised (its mean and standard deviation per
   feature; a constant feature keeps scale 1) and MiniBatchKMeans finds ``classes``
   centres, single-threaded so that the centres do not depend on the cores.
3. **Order.** The centres are sorted by their smoothed intensity (the bank's first
   Gaussian smoothing, else its first feature): label 1 is the darkest phase.
4. **Label.** An in-memory :class:`~tiledseg.model.Model` whose classifier is
   :class:`NearestCentre` goes to :func:`tiledseg.predict.predict`, which labels
   every voxel blockwise into OME-Zarr (resume, failed blocks, clusters and
   provenance as for any prediction). The distance to each centre is accumulated
   feature by feature, elementwise, so a voxel's label never depends on how many
   voxels share its block: the tiled result equals the untiled one bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tiledseg._openmp import passive_waits
from tiledseg.blocks import Block, Region, haloed, resolve_block
from tiledseg.classifiers import Classifier
from tiledseg.cluster import one_cluster
from tiledseg.errors import TiledsegError
from tiledseg.features.backend import get_backend
from tiledseg.features.bank import FeatureBank, resolve_bank
from tiledseg.features.tiled import features_of_block, with_nan_fill
from tiledseg.model import Model
from tiledseg.options import Execution, ImageInput, PhaseSearch, Training, gather
from tiledseg.predict import PredictionResult, predict
from tiledseg.runs import is_tiledseg_output, prepare_output, unfinished_run, update_provenance
from tiledseg.volume import Volume, open_volume

__all__ = [
    "ClusteringResult",
    "NearestCentre",
    "check_classes",
    "cluster_phases",
    "clustering_model",
    "fit_centres",
    "sample_features",
    "sample_windows",
]

#: Largest sample window per dimensionality (clipped to the image).
WINDOW = {2: (128, 128), 3: (32, 64, 64)}
#: How many windows are drawn: enough for ``sample_voxels``, within these bounds.
MIN_WINDOWS, MAX_WINDOWS = 8, 64


@dataclass
class ClusteringResult(PredictionResult):
    """What :func:`cluster_phases` wrote (as a prediction) and the phases it found."""

    #: Per label ``1..k``: ``sample_share`` (of the sampled voxels) and ``level`` (the
    #: centre's smoothed intensity, in image units).
    phases: list[dict[str, Any]] = field(default_factory=list)


def check_classes(classes: int | str) -> int:
    """Return the number of phases as an int, at least 2 (``"3"`` is accepted, as typed)."""
    value: int | None = None
    if isinstance(classes, int | np.integer) and not isinstance(classes, bool):
        value = int(classes)
    elif isinstance(classes, str):
        with contextlib.suppress(ValueError):
            value = int(classes.strip())
    if value is None or value < 2:
        raise TiledsegError(
            f"--classes {classes!r}: give the number of phases to find, a whole number of "
            "2 or more (e.g. --classes 3)"
        )
    return value


def check_sample_voxels(sample_voxels: int) -> int:
    if isinstance(sample_voxels, bool) or not isinstance(sample_voxels, int | np.integer):
        raise TiledsegError(
            f"--sample-voxels {sample_voxels!r}: give a whole number of voxels, e.g. 100000"
        )
    if sample_voxels < 2:
        raise TiledsegError(
            f"--sample-voxels {sample_voxels}: k-means needs at least 2 sampled voxels; "
            "give e.g. 100000"
        )
    return int(sample_voxels)


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise TiledsegError(f"--seed {seed!r}: give a whole number from 0 to 4294967295")
    return int(seed)


def sample_windows(shape: Sequence[int], *, sample_voxels: int, seed: int) -> list[Region]:
    """Seeded random windows over the whole image, enough to hold ``sample_voxels`` voxels.

    At most :data:`WINDOW` in size and between :data:`MIN_WINDOWS` and
    :data:`MAX_WINDOWS` of them; windows drawn twice (a small image) count once.
    They depend on the image's shape, ``sample_voxels`` and ``seed`` only.
    """
    window = tuple(min(n, w) for n, w in zip(shape, WINDOW[len(shape)], strict=True))
    count = min(MAX_WINDOWS, max(MIN_WINDOWS, math.ceil(sample_voxels / math.prod(window))))
    rng = np.random.default_rng(seed)
    starts: dict[tuple[int, ...], None] = {}  # (slices are not hashable before 3.12)
    for _ in range(count):
        drawn = (int(rng.integers(0, n - w + 1)) for n, w in zip(shape, window, strict=True))
        starts.setdefault(tuple(drawn), None)
    return [tuple(slice(s, s + w) for s, w in zip(s0, window, strict=True)) for s0 in starts]


@dataclass(frozen=True)
class WindowSampler:
    """The sampling job: :meth:`rows` gives one window's sampled feature rows."""

    volume: Volume
    bank: FeatureBank
    take: int
    seed: int

    def rows(self, item: tuple[int, Region]) -> np.ndarray:
        """Features ``(n, n_features)`` of up to :attr:`take` seeded voxels of a window."""
        i, region = item
        halo = self.bank.halo(self.volume.spacing)
        block = Block((i,), region, haloed(region, halo, self.volume.shape))
        feats = features_of_block(self.volume, block, bank=self.bank, spacing=self.volume.spacing)
        table = feats.reshape(feats.shape[0], -1).T
        if self.take < len(table):
            rng = np.random.default_rng([self.seed, i])
            table = table[np.sort(rng.choice(len(table), self.take, replace=False))]
        return np.ascontiguousarray(table, dtype=np.float32)


def sample_features(
    volume: Volume,
    bank: FeatureBank,
    *,
    sample_voxels: int,
    seed: int,
    executor: Any,
) -> tuple[np.ndarray, int]:
    """Return the sampled feature table and the number of windows it came from.

    The table is ``(n, n_features)``.
    """
    windows = sample_windows(volume.shape, sample_voxels=sample_voxels, seed=seed)
    sampler = WindowSampler(volume, bank, math.ceil(sample_voxels / len(windows)), seed)
    parts = executor.map(sampler.rows, list(enumerate(windows)), desc="sampling features")
    table = np.concatenate(parts)
    if len(table) > sample_voxels:
        rng = np.random.default_rng([seed, len(windows)])
        table = table[np.sort(rng.choice(len(table), sample_voxels, replace=False))]
    return table, len(windows)


class NearestCentre(Classifier):
    """Labels each voxel with its nearest k-means centre, in standardised feature units.

    ``predict_proba`` gives one-hot rows (labels, not probabilities). The squared
    distance is summed feature by feature, elementwise (no matrix product, whose
    summation order may change with the number of rows), so a voxel's label is
    the same in any block.

    Parameters
    ----------
    centres : ndarray, shape (k, n_features)
        The centres, standardised, in label order.
    mean, scale : ndarray, shape (n_features,)
        The standardisation: ``(x - mean) / scale``.
    """

    name = "kmeans"
    has_probabilities = False

    def __init__(self, centres: np.ndarray, mean: np.ndarray, scale: np.ndarray):
        self.centres = np.ascontiguousarray(centres, dtype=np.float32)
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)

    def standardise(self, X: Any) -> Any:
        """``(X - mean) / scale`` in float32 (numpy or cupy, as ``X``)."""
        xp = get_backend(X).xp
        return (xp.asarray(X, dtype=xp.float32) - xp.asarray(self.mean)) / xp.asarray(self.scale)

    def nearest(self, X: Any) -> Any:
        """Return the index of the nearest centre of every row of ``X`` (ties: the lower index)."""
        xp = get_backend(X).xp
        centres = xp.asarray(self.centres)
        mean, scale = xp.asarray(self.mean), xp.asarray(self.scale)
        distance = xp.zeros((len(centres), X.shape[0]), dtype=xp.float32)
        for f in range(X.shape[1]):
            z = (xp.asarray(X[:, f], dtype=xp.float32) - mean[f]) / scale[f]
            for k in range(len(centres)):
                step = z - centres[k, f]
                distance[k] += step * step
        return distance.argmin(axis=0)

    def fit(self, X: np.ndarray, y: np.ndarray, **options: Any) -> dict[str, Any]:
        """Refuse: a clustering model is not trained on labels."""
        raise TiledsegError(
            "a clustering model is fitted by tiledseg.cluster_phases from the image, not "
            "trained on labels; use 'xgboost' or 'random-forest' to train on scribbles"
        )

    def predict_proba(self, X: Any, *, n_threads: int = 1, device: str = "cpu") -> Any:
        """Return 1 for the nearest centre's class and 0 for the others, in ``X``'s array module."""
        xp = get_backend(X).xp
        return xp.eye(len(self.centres), dtype=xp.float32)[self.nearest(X)]

    def to_bytes(self) -> bytes:
        """Refuse: a clustering model is not saved."""
        raise TiledsegError(
            "a clustering model is not saved: run 'tiledseg cluster' again (it is seeded, "
            "so the same options give the same phases), or paint scribbles and train"
        )


def _order_feature(bank: FeatureBank, *, ndim: int, n_channels: int) -> tuple[int, str]:
    """Position and name of the feature the phases are ordered by.

    It is the first Gaussian smoothing of the image's first channel, else the first feature.
    """
    names = bank.feature_names(ndim=ndim, n_channels=n_channels)
    for i, name in enumerate(names):
        if name.family == "gaussian_smoothing":
            return i, str(name)
    return 0, str(names[0])


def fit_centres(table: np.ndarray, *, classes: int, seed: int, order_by: int = 0) -> NearestCentre:
    """Standardise the sampled ``table`` and fit ``classes`` k-means centres.

    The centres are ordered by their value of feature ``order_by`` (ascending: label 1 the
    lowest).

    Raises
    ------
    TiledsegError
        When the sample holds fewer distinct feature rows than ``classes``.
    """
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    distinct = len(np.unique(table, axis=0))
    if distinct < classes:
        raise TiledsegError(
            f"--classes {classes}: the sampled voxels have only {distinct} distinct feature "
            f"value(s) (a nearly constant image?); give --classes {distinct} or fewer"
            if distinct >= 2
            else f"--classes {classes}: the sampled voxels all have the same features (a "
            "constant image?); there are no phases to find"
        )
    mean = table.mean(axis=0, dtype=np.float64)
    std = table.std(axis=0, dtype=np.float64)
    scale = np.where(std > 0, std, 1.0)
    # the classifier's own float32 standardisation, so centres and labelling agree
    model = NearestCentre(np.zeros((classes, table.shape[1])), mean, scale)
    z = model.standardise(table)
    kmeans = MiniBatchKMeans(
        n_clusters=classes,
        random_state=seed,
        n_init=3,
        batch_size=min(len(z), 4096),
    )
    # one thread: the centres must not depend on the cores (OpenMP chunks the sums)
    with threadpool_limits(limits=1):
        kmeans.fit(z)
    centres = np.asarray(kmeans.cluster_centers_, dtype=np.float32)
    order = np.argsort(centres[:, order_by], kind="stable")
    return NearestCentre(centres[order], model.mean, model.scale)


def _checksum(clf: NearestCentre, bank: FeatureBank, spacing: Sequence[float], ndim: int) -> str:
    digest = hashlib.sha256(b"tiledseg-kmeans\n")
    for array in (clf.centres, clf.mean, clf.scale):
        digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    digest.update(
        json.dumps(
            {"bank": bank.to_dict(), "spacing": [float(s) for s in spacing], "ndim": ndim},
            sort_keys=True,
        ).encode()
    )
    return digest.hexdigest()


def clustering_model(
    clf: NearestCentre,
    *,
    bank: FeatureBank,
    volume: Volume,
    summary: dict[str, Any] | None = None,
) -> Model:
    """Return an in-memory model (labels ``1..k``) that :func:`tiledseg.predict.predict` runs."""
    return Model(
        classifier=clf,
        classes=np.arange(1, len(clf.centres) + 1),
        bank=bank,
        ndim=volume.ndim,
        n_channels=volume.n_channels,
        spacing=tuple(volume.spacing),
        channel_axis=volume.channel_axis,
        summary=dict(summary or {}),
        checksum=_checksum(clf, bank, volume.spacing, volume.ndim),
    )


def _phases(clf: NearestCentre, table: np.ndarray, order_by: int) -> list[dict[str, Any]]:
    """Per label: its share of the sampled voxels and its centre's ordering feature."""
    counts = np.bincount(clf.nearest(table), minlength=len(clf.centres))
    level = clf.centres[:, order_by] * clf.scale[order_by] + clf.mean[order_by]
    return [
        {"label": k + 1, "sample_share": round(float(c) / len(table), 4), "level": float(v)}
        for k, (c, v) in enumerate(zip(counts, level, strict=True))
    ]


def cluster_phases(
    image: Any,
    *,
    out: str | os.PathLike,
    execution: Execution | None = None,
    image_input: ImageInput | None = None,
    training: Training | None = None,
    phases: PhaseSearch | None = None,
    overwrite: bool = False,
    command: str | None = None,
    **options: Any,
) -> ClusteringResult:
    """Find ``classes`` phases of ``image`` with k-means and label every voxel into ``out``.

    No scribbles are needed: the result shows the phases the features separate,
    a start before painting. Labels are ``1..classes``, ordered by smoothed
    intensity (1 is the darkest phase). The sample, and so the phases, do not
    depend on ``block``, ``workers`` or the cores; the labels of every tiling are
    the same, bit for bit.

    Parameters
    ----------
    image : path or array
        The image (see :func:`tiledseg.volume.open_volume`).
    out : path
        The output group ``OUT.zarr`` (``labels/0``, as :func:`tiledseg.predict` writes).
    execution : Execution, optional
        Where blocks run, as for :func:`tiledseg.predict`; one cluster serves the
        sampling and the labelling. The sample's features are computed on the CPU.
    image_input : ImageInput, optional
        ``spacing`` and ``channel_axis`` of the image.
    training : Training, optional
        Its ``features`` (the bank) and ``seed`` (of the windows, the sampled voxels
        and k-means); its other fields are for training a classifier, and refused here.
    phases : PhaseSearch, optional
        ``classes`` (2 or more; a string of digits is accepted) and ``sample_voxels``.
    overwrite : bool
        Replace an existing tiledseg output at ``out``. Without it, an unfinished run
        with the same options is continued (its phases are the same: all is seeded).
    command : str, optional
        The command line, recorded in the provenance (default: this call).
    **options
        Any field of those models by name (``classes=3``, ``block=64``, ...).

    Returns
    -------
    ClusteringResult
        A :class:`~tiledseg.predict.PredictionResult` with ``phases``: per label its
        share of the sample and its centre's smoothed intensity.

    Raises
    ------
    TiledsegError
        A bad ``classes``, ``sample_voxels`` or ``seed``, fewer distinct sampled feature rows
        than ``classes``, or any input :func:`tiledseg.predict` refuses.
    """
    passive_waits()
    given = gather(
        {
            "execution": execution,
            "image_input": image_input,
            "training": training,
            "phases": phases,
        },
        options,
        what="cluster_phases",
    )
    _only_bank_and_seed(given["training"])
    return _cluster(image, out=out, overwrite=overwrite, command=command, **given)


def _only_bank_and_seed(training: Training) -> None:
    """Refuse the training options k-means has no use for."""
    used = {"features", "seed"}
    unused = sorted(training.model_fields_set - used)
    if unused:
        raise TiledsegError(
            f"cluster_phases() takes the bank and the seed of the training options, not "
            f"{', '.join(unused)}"
        )


def _cluster(
    image: Any,
    *,
    out: str | os.PathLike,
    overwrite: bool,
    command: str | None,
    execution: Execution,
    image_input: ImageInput,
    training: Training,
    phases: PhaseSearch,
) -> ClusteringResult:
    ex, seed, classes = execution, training.seed, phases.classes
    volume = with_nan_fill(
        open_volume(image, channel_axis=image_input.channel_axis, spacing=image_input.spacing),
        image_input.nan_fill,
    )
    bank = resolve_bank(training.features, ndim=volume.ndim)
    bank.check_channels(volume.n_channels)
    resolve_block(ex.block, shape=volume.shape, halo=bank.halo(volume.spacing))
    if overwrite or unfinished_run(out) is None:  # (predict checks a run it may continue)
        inputs = [str(image)] if isinstance(image, str | os.PathLike) else []
        prepare_output(out, overwrite=overwrite, inputs=inputs)
    order_by, order_name = _order_feature(bank, ndim=volume.ndim, n_channels=volume.n_channels)
    # one cluster (one set of SLURM jobs) for the sampling and the labelling
    with one_cluster(ex.workers, scheduler=ex.scheduler, cluster=ex.cluster, quiet=ex.quiet) as (
        executor,
        shared,
    ):
        fit_started = time.perf_counter()
        table, n_windows = sample_features(
            volume, bank, sample_voxels=phases.sample_voxels, seed=seed, executor=executor
        )
        clf = fit_centres(table, classes=classes, seed=seed, order_by=order_by)
        found = _phases(clf, table, order_by)
        settings = {
            "method": "MiniBatchKMeans",
            "classes": classes,
            "seed": seed,
            "sample_voxels": len(table),
            "sample_windows": n_windows,
            "ordered_by": order_name,
            "phases": found,
            "sample_and_fit_seconds": round(time.perf_counter() - fit_started, 3),
        }
        model = clustering_model(clf, bank=bank, volume=volume, summary=settings)
        if command is None:
            command = f"tiledseg.cluster_phases(classes={classes}, seed={seed})"
        try:
            result = predict(
                volume,
                model,
                out=out,
                execution=ex.updated(workers=None, cluster=None, scheduler=shared),
                overwrite=overwrite,
                command=command,
            )
        finally:
            _record(out, model, settings)
    return ClusteringResult(**vars(result), phases=found)


def _record(out: str | os.PathLike, model: Model, settings: dict[str, Any]) -> None:
    """Add the clustering's settings to the provenance of the output this model wrote."""
    import zarr

    if not is_tiledseg_output(out):
        return
    stored = dict(zarr.open_group(str(out), mode="r").attrs["tiledseg"])
    if stored.get("model_checksum") == model.checksum:
        update_provenance(out, clustering=settings)
