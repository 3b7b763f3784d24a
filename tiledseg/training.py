"""Training from scribbles: labelled blocks -> training table (cached) -> fitted model.

Only blocks that hold labels are visited, and their features come from
:func:`tiledseg.features.filters.block_features` on the haloed box, the kernel
prediction uses too (through :func:`tiledseg.autocontext.cascade_features`); the
table's rows are then put in C order of their voxels, so a fit never depends on the
blocks. Autocontext stages (``stages > 1``) build their tables from the same boxes.
The table is cached on disk under a key made from the *content* of what it
depends on (labelled voxels, the image around them, bank, spacing), so a second
training with another classifier skips the feature computation, and a changed
image or scribble can never hit a stale entry.

With a dask cluster and a large table (or ``distributed_training=True``) the
table's rows stay on the workers and XGBoost trains there with ``xgboost.dask``
(:data:`DISTRIBUTED_TABLE_BYTES`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg import kept_features
from tiledseg._openmp import passive_waits
from tiledseg.arrays import out_of_memory_hint, to_device, to_host
from tiledseg.autocontext import (
    FOLDS,
    cascade_features,
    image_features,
    stage_halo,
)
from tiledseg.blocks import Block, haloed, plan_blocks, resolve_block
from tiledseg.chunk_cache import chunk_cache_bytes, run_cache
from tiledseg.classifiers import make_classifier
from tiledseg.cluster import Executor, available_cores, open_executor, planned_workers, wait_futures
from tiledseg.device import gpu_count, plan_devices, worker_device, xgboost_has_cuda
from tiledseg.errors import DamagedChunkError, InputDataError, TiledsegError
from tiledseg.features.bank import FeatureBank, resolve_bank
from tiledseg.features.tiled import features_of_block, read_block, read_finite, with_nan_fill
from tiledseg.kept_features import WHOLE_FRACTION, KeptFeatures
from tiledseg.labels import check_class_count, label_values
from tiledseg.model import Model, versions
from tiledseg.options import Execution, ImageInput, Training, gather
from tiledseg.selection import check_k
from tiledseg.selection import select_features as select_features_of
from tiledseg.strokes import HELD_OUT, describe_split, held_out_split, stroke_folds, stroke_ids
from tiledseg.volume import (
    Volume,
    chunk_cacheable,
    open_volume,
    shape_mismatch,
    with_chunk_cache,
    with_extra_channels,
)

__all__ = [
    "DISTRIBUTED_TABLE_BYTES",
    "TrainingTable",
    "default_cache_dir",
    "read_labels",
    "train",
    "training_table",
    "training_tables",
]

_TABLE_VERSION = 1
# the libraries whose versions can change feature values
_FEATURE_LIBRARIES = ("tiledseg", "numpy", "scipy")

#: A table larger than this (rows x features x 4 bytes) trains on the cluster when
#: there is one and ``distributed_training`` is left automatic. Training in one
#: process holds the table about 7.5 times at its peak (the table, its train and
#: held-out copies, and XGBoost's DMatrix of each and of the whole, which stores 8
#: bytes a value): 1.25 GiB on top of a 191 MiB table, measured. So
#: 1 GiB of table is about 8 GiB on the driver, past what a laptop or a login node
#: spares. Below it one process trains faster: the cluster pays for a tracker, three
#: quantile matrices and a histogram allreduce per tree level (2 cores, 2 single-
#: threaded workers: 42k x 18 rows fit in 3-5 s here against 8-15 s there; 374k x 18
#: in 11-20 s against 20 s). A fixed size, not a share of the driver's memory, so the
#: same run takes the same path on every machine.
DISTRIBUTED_TABLE_BYTES = 1 << 30
# rows of a cached table scattered to the workers per chunk
_SCATTER_CHUNK_BYTES = 64 << 20


def default_cache_dir() -> Path:
    """``$TILEDSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/tiledseg``, else ``~/.cache/tiledseg``."""
    if "TILEDSEG_CACHE_DIR" in os.environ:
        return Path(os.environ["TILEDSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tiledseg"


def read_labels(labels: Volume, region: tuple[slice, ...]) -> np.ndarray:
    """Read a region of a label map as int64, refusing negative or fractional values."""
    return label_values(labels.read(region)[0], role="labels", name=labels.name)


@dataclass
class TrainingTable:
    """Features and label values of every labelled voxel.

    ``X`` is a numpy array, or for a distributed table a dask array whose row
    chunks are held on the cluster's workers (one chunk per box of scribbles,
    or per slice of a cached table). ``y`` is always here: the scan of the
    scribbles returns it, and it is a ``1/n_features`` part of the table.
    """

    X: Any  # (n, n_features) float32: numpy, or dask with its chunks on the workers
    y: np.ndarray  # (n,) the user's label values
    coords: np.ndarray  # (n, ndim) where each row's voxel is in the volume
    from_cache: bool
    key: str | None  # the cache key; None when no cache is used
    #: whether the table is in the cache after this call (found there or written)
    cached: bool = False
    #: the boxes of scribbles the rows come from, in the order they were scanned
    scans: list[Any] = field(default_factory=list, repr=False)
    #: scan position of each row (the rows are in C order of their voxels, see
    #: :meth:`in_c_order`); ``None``: rows in scan order
    order: np.ndarray | None = field(default=None, repr=False)
    #: the image's values in the boxes of scribbles (:func:`_intensity`), for the model
    intensity: dict[str, Any] = field(default_factory=dict)
    #: several images (:func:`training_tables`): each image's labelled voxels per class
    per_image: list[dict[int, int]] = field(default_factory=list)

    def in_c_order(self) -> TrainingTable:
        """Put the rows in C order of their voxels.

        Then what a fit sees (a forest's bootstrap draws follow the row order) does not
        depend on the blocks that were scanned, nor on the cores that chose them. A
        distributed table stays as it is.
        """
        if self.distributed or self.order is not None:
            return self
        order = np.lexsort(self.coords.T[::-1])
        self.X, self.y, self.coords = self.X[order], self.y[order], self.coords[order]
        self.order = order
        return self

    @property
    def distributed(self) -> bool:
        """Whether the rows are on a cluster's workers (``X`` is a dask array)."""
        return not isinstance(self.X, np.ndarray)


@dataclass
class _Scan:
    block: Block
    flat: np.ndarray  # labelled positions inside the block, C order
    coords: np.ndarray  # the same positions in the volume
    values: np.ndarray
    digest: str | None  # of the box's image and labels; only when a cache is used
    keep: KeptFeatures | None = None  # the box is its whole block: keep its features there
    #: the image's own values in the box: min, max, 0.1 and 99.9 percentiles (_box_range)
    span: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


def _scribble_boxes(coords: np.ndarray, halo: Sequence[int]) -> list[np.ndarray]:
    """Group labelled voxels into boxes that are cheaper to filter apart than together.

    A group is cut at its widest gap along an axis while that gap exceeds twice the
    halo there: beyond that, one box around both parts filters voxels that neither
    part needs. Along the first axis any gap of two planes is enough: only the first
    of the separable passes sees that axis's halo (the later passes, most of the work,
    run on the box's own planes), so strokes painted on separate slices are filtered
    slice by slice. Returns index arrays into ``coords`` (order preserved).
    """
    done, todo = [], [np.arange(len(coords))]
    while todo:
        idx = todo.pop()
        best = None
        for axis, h in enumerate(halo):
            values = np.unique(coords[idx, axis])
            if len(values) < 2:
                continue
            gaps = np.diff(values)
            k = int(gaps.argmax())
            limit = 1 if axis == 0 else 2 * h
            if gaps[k] > limit and (best is None or gaps[k] > best[0]):
                best = (gaps[k], axis, values[k])
        if best is None:
            done.append(idx)
            continue
        _, axis, cut = best
        below = coords[idx, axis] <= cut
        todo += [idx[~below], idx[below]]
    return done


@contextlib.contextmanager
def _reading(block: Block, *sources: Volume) -> Iterator[None]:
    """Turn a read that fails (a corrupt or missing chunk) into one line naming the block.

    Training needs every scribbled block: unlike prediction it cannot go on without one.
    """
    try:
        yield
    except DamagedChunkError as exc:  # it names the chunk; the block is named here
        raise DamagedChunkError(f"reading block {block.name}: {exc}") from None
    except TiledsegError:
        raise
    except Exception as exc:  # the codec's or the store's error, whatever its type
        said = " ".join(str(exc).split())[:200]
        raise InputDataError(
            f"reading block {block.name} of {' / '.join(v.name for v in sources)} failed "
            f"({type(exc).__name__}: {said}); the store may be damaged: repair or rewrite it"
        ) from None


@dataclass(frozen=True)
class TableJob:
    """What every block of a training table shares.

    :meth:`scan` finds a block's scribbles, :meth:`rows` computes a box's rows of the table.
    """

    image: Volume
    labels: Volume
    bank: FeatureBank
    halo: tuple[int, ...]
    #: hash each box's image and labels, for the table cache's key
    digest: bool
    device: str
    keep: KeptFeatures | None = None

    def scan(self, block: Block) -> list[_Scan]:
        """Return the boxes of the block's labelled voxels (:func:`_scan`)."""
        with _reading(block, self.labels, self.image):
            return _scan(self.image, self.labels, block, self.halo, self.digest, self.keep)

    def rows(self, scan: _Scan) -> np.ndarray:
        """Return the features of a box's labelled voxels, one row each."""
        device = worker_device(self.device)
        image, box = self.image, scan.block
        with _reading(box, image), out_of_memory_hint(box.shape):
            feats = features_of_block(
                image, box, bank=self.bank, spacing=image.spacing, device=device
            )
        if scan.keep is not None:
            scan.keep.save(box, to_host(feats))
        # the labelled voxels' rows are picked where the features are; only they come back
        flat = to_device(scan.flat, device)
        return np.ascontiguousarray(to_host(feats.reshape(feats.shape[0], -1)[:, flat].T))


def _scan(
    image: Volume,
    labels: Volume,
    block: Block,
    halo: tuple[int, ...],
    digest_wanted: bool,
    keep: KeptFeatures | None = None,
) -> list[_Scan]:
    """Find a block's labelled voxels and the boxes around them that training filters.

    Features do not depend on the tiling, so a box (with its own halo) gives its
    labelled voxels the same features as the whole block would, at a fraction of
    the cost when scribbles are strokes on a few slices. With a cache, the box's
    image is read with its halo and hashed for the cache key; without one only the box
    of the image's own channels is read here, for its range of values (:func:`_box_range`).
    With ``keep`` (``segment``), a block whose boxes cover most of it is one box, the
    block itself, whose features are kept for prediction
    (:mod:`tiledseg.kept_features`).
    """
    lab = read_labels(labels, block.region)
    coords = np.argwhere(lab)
    if len(coords) == 0:
        return []
    boxes = _scribble_boxes(coords, halo)
    if keep is not None and keep.wants(block) and _fills(block, coords, boxes, halo, image):
        boxes = [np.arange(len(coords))]
    else:
        keep = None
    scans = []
    for idx in boxes:
        local = coords[idx]
        region = block.region if keep is not None else _box(block, local)
        lo = np.asarray([r.start - b.start for r, b in zip(region, block.region, strict=True)])
        read = haloed(region, halo, image.shape)
        flat = np.ravel_multi_index(tuple((local - lo).T), tuple(s.stop - s.start for s in region))
        values = lab[tuple(local.T)]
        digest, data = None, None
        if digest_wanted:
            data = read_finite(image, read)
            h = hashlib.sha256(str(image.dtype).encode())
            h.update(np.ascontiguousarray(data).tobytes())
            h.update(flat.astype(np.int64).tobytes())
            h.update(values.astype(np.int64).tobytes())
            digest = h.hexdigest()
        where = local + np.asarray([r.start for r in block.region])
        box = Block(block.index, region, read)
        span = _box_range(image, box, data)
        scans.append(_Scan(box, flat, where, values, digest, keep, span))
    return scans


# values of a box taken for its percentiles, at most (every k-th value of a larger box)
_RANGE_SAMPLE = 1 << 16
#: The percentiles of the image's values a model records as its intensity range.
INTENSITY_PERCENTILES = (0.1, 99.9)


def _box_range(image: Volume, box: Block, data: np.ndarray | None) -> tuple[float, ...]:
    """Return the min, max and :data:`INTENSITY_PERCENTILES` of the image's own channels in a box.

    ``data``: the box read with its halo (every channel), if it was read already; else
    the box of the image's own channels is read (NaN and infinite values refused).
    """
    own = image.image_only
    if data is None:
        data = read_finite(own, box.region)
    else:
        data = data[(slice(0, own.n_channels), *box.inner)]
    values = data.ravel()
    sample = values[:: max(1, values.size // _RANGE_SAMPLE)]
    low, high = np.percentile(sample, INTENSITY_PERCENTILES, method="nearest")
    return float(values.min()), float(values.max()), float(low), float(high)


def _intensity(scans: list[_Scan], image: Volume) -> dict[str, Any]:
    """Return the model's record of the values training read: dtype, low and high.

    An image with the same value in every box of scribbles is refused: there is
    nothing to learn from.
    """
    least = min(s.span[0] for s in scans)
    if least == max(s.span[1] for s in scans):
        raise InputDataError(
            f"image {image.image_only.name} has no variation (all values are {least:g}) where "
            "the scribbles are: nothing to learn from"
        )
    return {
        "dtype": str(image.image_only.dtype),
        "low": min(s.span[2] for s in scans),
        "high": max(s.span[3] for s in scans),
    }


def _box(block: Block, local: np.ndarray) -> tuple[slice, ...]:
    """Return the bounding box of positions ``local`` (inside ``block``) in the volume."""
    lo, hi = local.min(axis=0), local.max(axis=0) + 1
    return tuple(
        slice(r.start + int(a), r.start + int(b))
        for r, a, b in zip(block.region, lo, hi, strict=True)
    )


def _fills(
    block: Block,
    coords: np.ndarray,
    boxes: list[np.ndarray],
    halo: Sequence[int],
    image: Volume,
) -> bool:
    """Whether filtering the boxes costs :data:`WHOLE_FRACTION` of filtering the whole block.

    The cost is measured as each region grown by the halo along every axis but the first:
    only the first of the separable passes sees the first axis's halo (see
    :func:`_scribble_boxes`).
    """
    grow = (0, *halo[1:])

    def cost(region: tuple[slice, ...]) -> int:
        return math.prod(s.stop - s.start for s in haloed(region, grow, image.shape))

    spent = sum(cost(_box(block, coords[idx])) for idx in boxes)
    return spent >= WHOLE_FRACTION * cost(block.region)


def training_table(
    image: Volume,
    labels: Volume,
    *,
    bank: FeatureBank,
    block: tuple[int, ...],
    executor: Executor,
    cache_dir: Path | None,
    distributed: bool | None = False,
    device: str = "cpu",
    feature_device: str = "cpu",
    chunk_cache: int | None = None,
    keep_features: bool = False,
    one_class: bool = False,
) -> TrainingTable:
    """Build (or fetch from the cache) the features of every labelled voxel.

    Parameters
    ----------
    image, labels : Volume
        The image and its scribbles.
    bank : FeatureBank
        The features.
    block : tuple of int
        Processing block.
    executor : Executor
        Where the blocks' features are computed.
    cache_dir : Path or None
        The table cache; ``None``: no cache.
    distributed : bool or None
        Keep the rows on the executor's cluster (``X`` a dask array) instead of
        gathering them here. ``None``: when there is a cluster and the table
        exceeds :data:`DISTRIBUTED_TABLE_BYTES`. A distributed table found in the
        cache is read here and scattered to the workers (it was written from here,
        so it fits); a freshly built one is *not* written to the cache, which
        would gather it whole.
    device : {"cpu", "cuda", "auto"}
        Where each worker computes the features (:func:`tiledseg.device.worker_device`).
    feature_device : {"cpu", "cuda", "mixed"}
        Where they will be computed (:attr:`DevicePlan.kind`): GPU features differ from
        CPU ones in float32 rounding, so the cache keeps them apart.
    chunk_cache : int, optional
        Bound in bytes of the cache of decoded storage chunks the boxes are read
        through (:mod:`tiledseg.chunk_cache`; ``None``: ``$TILEDSEG_CHUNK_CACHE_BYTES``
        or :data:`~tiledseg.chunk_cache.DEFAULT_CHUNK_CACHE_BYTES`; ``0``: none). An
        ``image`` that already reads through a cache keeps it. The cache lasts as long
        as this call: it is given back before the fit.
    keep_features : bool
        Inside ``segment`` (:func:`tiledseg.kept_features.using`), filter the blocks full
        of scribbles whole and keep their features for the prediction.
    one_class : bool
        Accept scribbles of one class (one of several images, :func:`training_tables`,
        whose joined table is checked instead).

    Returns
    -------
    TrainingTable
    """
    if distributed and executor.client is None:
        raise TiledsegError(_NEEDS_CLUSTER)
    with _chunk_cached(image, executor, chunk_cache) as image:
        return _training_table(
            image,
            labels,
            bank=bank,
            block=block,
            executor=executor,
            cache_dir=cache_dir,
            distributed=distributed,
            device=device,
            feature_device=feature_device,
            keep_features=keep_features,
            one_class=one_class,
        )


@contextlib.contextmanager
def _chunk_cached(image: Volume, executor: Executor, max_bytes: int | None) -> Iterator[Volume]:
    """``image`` reading its chunked stores through a cache for as long as the run lasts.

    Every box is read twice (hashed for the table cache's key, then filtered) and
    neighbouring boxes share storage chunks: through the cache each chunk is decoded
    once (:mod:`tiledseg.chunk_cache`). The cached values are the stored ones, so the
    table is the same bits with or without it.
    """
    max_bytes = chunk_cache_bytes(max_bytes)
    if max_bytes == 0 or not chunk_cacheable(image):
        yield image  # no cache wanted, or nothing (left) to read through one
        return
    with run_cache(max_bytes, executor.client) as cache:
        yield with_chunk_cache(image, cache)


def _training_table(
    image: Volume,
    labels: Volume,
    *,
    bank: FeatureBank,
    block: tuple[int, ...],
    executor: Executor,
    cache_dir: Path | None,
    distributed: bool | None,
    device: str,
    feature_device: str,
    keep_features: bool,
    one_class: bool = False,
) -> TrainingTable:
    """:func:`training_table` with ``image`` read as it should be."""
    halo = bank.halo(image.spacing)
    keep = _keep_plan(image, block, bank) if keep_features else None
    job = TableJob(image, labels, bank, halo, cache_dir is not None, device, keep)
    found = executor.map_method(job.scan, plan_blocks(image.shape, block, halo), desc="labels")
    scans = [s for block_scans in found for s in block_scans]
    values, coords = _labelled(scans, labels, one_class=one_class)
    intensity = _intensity(scans, image)
    n_features = bank.n_features(ndim=image.ndim, n_channels=image.n_channels)
    if distributed is None:
        big = len(values) * n_features * 4 > DISTRIBUTED_TABLE_BYTES
        distributed = executor.client is not None and big
    key = None if cache_dir is None else _table_key(image, bank, scans, device=feature_device)
    path = None if key is None else cache_dir / f"table-{key}.npz"
    stored = _read_cached(path)
    if stored is not None:
        X, y = stored
        X = _scatter_rows(executor, X) if distributed else X
        table = TrainingTable(X, y, coords, True, key, cached=True, scans=scans)
        table.intensity = intensity
        return table.in_c_order()
    if distributed:
        X = _persist_rows(executor, job, scans, n_cols=n_features)
        table = TrainingTable(X, values, coords, False, key, cached=False, scans=scans)
        table.intensity = intensity
        return table
    # the boxes in the reverse of the scan's order: the chunks its last boxes read are the
    # ones still in a chunk cache too small for them all (the rows come back in scan order)
    rows = executor.map_method(job.rows, scans[::-1], desc="training features")[::-1]
    X = np.concatenate(rows)
    table = TrainingTable(X, values, coords, False, key, cached=path is not None, scans=scans)
    table.intensity = intensity
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial.npz")
        np.savez(tmp, X=table.X, y=table.y)
        os.replace(tmp, path)
    return table.in_c_order()


def _keep_plan(image: Volume, block: tuple[int, ...], bank: FeatureBank) -> KeptFeatures | None:
    """Inside ``segment``: where the features its prediction reuses are kept."""
    scratch = kept_features.active()
    if scratch is None:
        return None
    return scratch.plan(
        volume=image,
        block=block,
        bank=bank.to_dict(),
        n_features=bank.n_features(ndim=image.ndim, n_channels=image.n_channels),
    )


def _labelled(
    scans: list[_Scan], labels: Volume, *, one_class: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Return the label values and positions of the scanned voxels.

    Labels that cannot be scribbles (none, one class, or more classes than scribbles have)
    are refused.
    """
    if not scans:
        raise InputDataError(
            f"labels {labels.name} hold no labelled voxel (all 0); paint scribbles of at "
            "least two classes with values 1, 2, ..."
        )
    values = np.concatenate([s.values for s in scans])
    classes = np.unique(values)
    check_class_count(classes, role="labels", name=labels.name)
    if len(classes) < 2 and not one_class:
        raise InputDataError(
            f"labels {labels.name} hold only one class (value {int(classes[0])}); paint "
            "scribbles of at least two classes"
        )
    return values, np.concatenate([s.coords for s in scans])


def _read_cached(path: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Return a cached table's ``(X, y)``, or ``None`` (none there; a damaged one is removed)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return stored["X"], stored["y"]
    except (OSError, ValueError, KeyError):
        path.unlink(missing_ok=True)  # a damaged entry is rebuilt
        return None


def _persist_rows(executor: Executor, job: TableJob, scans: list[_Scan], *, n_cols: int) -> Any:
    """Compute the row blocks on the cluster and keep them there, as one dask array."""
    import dask
    import dask.array as da
    from distributed import futures_of

    delayed = [dask.delayed(job.rows, pure=False)(scan) for scan in scans]
    with executor.progress(len(delayed), "training features") as bar:
        persisted = executor.client.persist(delayed)
        wait_futures(futures_of(persisted), bar)
    return da.concatenate(
        [
            da.from_delayed(d, shape=(len(scan.flat), n_cols), dtype=np.float32)
            for d, scan in zip(persisted, scans, strict=True)
        ]
    )


def _scatter_rows(executor: Executor, X: np.ndarray) -> Any:
    """Scatter a table read here to the workers in slices of rows, as one dask array."""
    import dask.array as da

    n_parts = max(executor.n_workers, -(-X.nbytes // _SCATTER_CHUNK_BYTES))
    parts = np.array_split(X, min(n_parts, max(len(X), 1)))
    futures = executor.client.scatter(parts, hash=False)
    return da.concatenate(
        [
            da.from_delayed(f, shape=p.shape, dtype=p.dtype)
            for f, p in zip(futures, parts, strict=True)
        ]
    )


def _table_key(image: Volume, bank: FeatureBank, scans: list[_Scan], *, device: str) -> str:
    """SHA-256 of everything the table depends on, the data itself included (not paths)."""
    document = {
        # (CPU tables keep the keys they had before GPUs: no "device" entry)
        **({"device": device} if device != "cpu" else {}),
        "version": _TABLE_VERSION,
        "libraries": {k: v for k, v in versions().items() if k in _FEATURE_LIBRARIES},
        "bank": bank.to_dict(),
        **({"plugins": bank.fingerprints()} if bank.plugins else {}),
        "spacing": list(image.spacing),
        "channels": image.n_channels,
        "shape": list(image.shape),
        "blocks": [
            [s.block.region[a].start for a in range(image.ndim)] + [s.digest] for s in scans
        ],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def train(
    image: Any,
    labels: Any = None,
    *,
    execution: Execution | None = None,
    image_input: ImageInput | None = None,
    training: Training | None = None,
    **options: Any,
) -> Model:
    """Train a voxel classifier on the labelled voxels of ``labels``.

    Parameters
    ----------
    image : path or array, or a list of pairs
        The image (see :func:`tiledseg.volume.open_volume`). Several images: a list of
        ``(image, labels)`` pairs (or of mappings with ``image``, ``labels`` and
        optionally that image's ``extra_channels`` and ``spacing``), with ``labels`` left
        out: one model is trained on the scribbles of them all (:func:`training_tables`).
    labels : path or array
        Same spatial shape; 0 = unlabelled, any positive integer = a class. The
        model predicts these very values.
    execution : Execution, optional
        Where blocks run (:class:`~tiledseg.options.Execution`): ``device``,
        ``block``, ``workers``, ``scheduler``, ``cluster``, ``quiet``. With
        ``device`` other than ``cpu`` the features are computed on the workers' GPUs
        and the fit runs where the table is, on that process's GPU if it has one
        (XGBoost's CUDA ``hist``; ``random-forest`` is then XGBoost's random-forest
        mode). The summary's ``device`` says where it fit.
    image_input : ImageInput, optional
        How the image is read (:class:`~tiledseg.options.ImageInput`): ``spacing``
        (else from OME metadata, else isotropic), ``channel_axis``,
        ``extra_channels`` (co-registered images whose channels add their raw values
        as features; prediction needs the same, in the same order), ``nan_fill`` (the
        value NaN and infinite values read as; without it a box of scribbles that holds
        one is refused, naming its region).
    training : Training, optional
        What is trained (:class:`~tiledseg.options.Training`): ``features`` (a bank
        name, YAML path, mapping or FeatureBank), ``classifier`` (a name or a
        scikit-learn-style estimator), ``distributed_training`` (None: XGBoost on the
        cluster when the table exceeds :data:`DISTRIBUTED_TABLE_BYTES`; distributed
        models are not bit-for-bit reproducible), ``select_features``, ``stages``
        (autocontext, :mod:`tiledseg.autocontext`), ``context``, ``cache`` and
        ``cache_dir`` (the training-table cache), ``seed``.
    **options
        Any field of those models by name, set on top of the models given. For
        convenience ``cache_dir=None`` (or ``False``) turns the cache off and
        ``cache_dir=True`` is the default folder (:func:`default_cache_dir`).

    Returns
    -------
    Model
        Its summary holds ``distributed_training``, and with it XGBoost's
        ``training_workers``; ``intensity``, the dtype and range of the image's values in
        the boxes of scribbles, which prediction compares its image with; and ``nan_fill``
        when one was given.

    Raises
    ------
    InputDataError
        Among others: NaN or infinite values in a box of scribbles (without ``nan_fill``),
        or the same value everywhere in them (nothing to learn from).
    """
    passive_waits()
    given = gather(
        {"execution": execution, "image_input": image_input, "training": training},
        _cache_convenience(options),
        what="train",
    )
    if labels is None and isinstance(image, list | tuple):
        return _train_several(_pairs(image), **given)
    return _train(image, labels, **given)


def _cache_convenience(options: dict[str, Any]) -> dict[str, Any]:
    """``cache_dir=None/False`` (no cache) and ``cache_dir=True`` (the default folder)."""
    if "cache_dir" not in options:
        return options
    value = options["cache_dir"]
    rest = {k: v for k, v in options.items() if k != "cache_dir"}
    if isinstance(value, str | os.PathLike):
        return {**rest, "cache_dir": str(value)}
    return rest if value is True else {**rest, "cache": False}


@dataclass(frozen=True)
class _TrainingPlan:
    """What a training will read and fit, decided before any block is read."""

    volume: Volume
    labels: Volume
    bank: FeatureBank
    block: tuple[int, ...]
    fit_device: str
    clf: Any  # the classifier the final model holds
    distributed: bool | None
    execution: Execution
    training: Training
    spacing_given: bool
    #: the value NaN and infinite values read as (``None``: refused), recorded in the model
    nan_fill: float | None = None

    def classifier(self) -> Any:
        """Return a fresh classifier (an estimator object must not be refitted in place)."""
        spec = self.training.classifier
        spec = spec if isinstance(spec, str) else copy.deepcopy(spec)
        return make_classifier(spec, seed=self.training.seed, device=self.fit_device)


def _plan_training(
    image: Any, labels: Any, ex: Execution, image_input: ImageInput, tr: Training
) -> _TrainingPlan:
    volume, label_volume = _open_pair(
        image, labels, channel_axis=image_input.channel_axis, spacing=image_input.spacing
    )
    if image_input.extra_channels:
        volume = with_extra_channels(volume, image_input.extra_channels)
    volume = with_nan_fill(volume, image_input.nan_fill)
    bank = _bank_for(volume, tr.features, filter_extra_channels=tr.filter_extra_channels)
    # training computes features per scribble box (at most a block): the CPU's default block
    # keeps the table cache's keys stable, whatever GPU memory is free
    block = resolve_block(
        ex.block,
        shape=volume.shape,
        halo=bank.halo(volume.spacing),
        min_blocks=planned_workers(ex.workers, scheduler=ex.scheduler, cluster=ex.cluster),
    )
    # the fit runs here (or on the workers, distributed): on a GPU if this process has one
    gpu = ex.device != "cpu" and gpu_count() > 0 and xgboost_has_cuda()
    fit_device = "cuda" if gpu else "cpu"
    clf = make_classifier(tr.classifier, seed=tr.seed, device=fit_device)
    distributed = _check_training_options(
        clf,
        distributed_training=tr.distributed_training,
        select_features=tr.select_features,
        stages=tr.stages,
        n_features=bank.n_features(ndim=volume.ndim, n_channels=volume.n_channels),
    )
    return _TrainingPlan(
        volume,
        label_volume,
        bank,
        block,
        fit_device,
        clf,
        distributed,
        ex,
        tr,
        image_input.spacing is not None,
        image_input.nan_fill,
    )


def _train(
    image: Any, labels: Any, *, execution: Execution, image_input: ImageInput, training: Training
) -> Model:
    started = time.perf_counter()
    plan = _plan_training(image, labels, execution, image_input, training)
    ex = execution
    with open_executor(
        ex.workers, quiet=ex.quiet, scheduler=ex.scheduler, cluster=ex.cluster
    ) as executor:
        if plan.distributed and executor.client is None:
            raise TiledsegError(_NEEDS_CLUSTER)
        devices = plan_devices(ex.device, executor)
        table = training_table(
            plan.volume,
            plan.labels,
            bank=plan.bank,
            block=plan.block,
            executor=executor,
            cache_dir=_cache_folder(training),
            distributed=plan.distributed,
            device=ex.device,
            feature_device=devices.kind,
            # only a plain model on the CPU predicts from the stacks as they are
            keep_features=training.stages == 1
            and training.select_features is None
            and devices.kind == "cpu",
        )
        fit = _Fit(plan, table)
        if table.distributed:
            fit.on_cluster(executor, on_gpus=devices.fits_on_gpus)
        elif training.stages > 1:
            # the next stages' tables need the workers: stage 1 fits while they are up
            fit.with_stages(executor)
    if not table.distributed and training.stages == 1:
        # after the executor is closed: a LocalCluster's workers have given their memory back
        fit.here()
    return fit.model(devices, started)


def _pairs(images: Any) -> list[tuple[Any, Any, dict[str, Any]]]:
    """Return ``(image, labels, image options)`` of each training image, checked.

    An item is an ``(image, labels)`` pair, or a mapping with ``image``, ``labels`` and
    optionally ``extra_channels`` and ``spacing`` (that image's own).
    """
    pairs = []
    for i, item in enumerate(images):
        if isinstance(item, dict):
            own = {k: v for k, v in item.items() if k not in ("image", "labels")}
            if set(own) - {"extra_channels", "spacing"} or not {"image", "labels"} <= set(item):
                raise TiledsegError(
                    f"training image {i + 1}: give image and labels (and optionally "
                    f"extra_channels, spacing), not {sorted(item)}"
                )
            pairs.append((item["image"], item["labels"], own))
        elif isinstance(item, list | tuple) and len(item) == 2:
            pairs.append((item[0], item[1], {}))
        else:
            raise TiledsegError(
                f"training image {i + 1} is {type(item).__name__}; give (image, labels) pairs"
            )
    if not pairs:
        raise TiledsegError("no training image given; give (image, labels) pairs")
    return pairs


def _plans(
    pairs: list[tuple[Any, Any, dict[str, Any]]],
    ex: Execution,
    image_input: ImageInput,
    tr: Training,
) -> list[_TrainingPlan]:
    """Plan each image's table; refuse images one model cannot serve together."""
    if image_input.extra_channels and len(pairs) > 1:
        raise TiledsegError(
            "--extra-channels gives one image's extra channels; with several training "
            "images give each its own (a mapping with extra_channels, or training_images: "
            "in a config)"
        )
    plans = []
    for image, labels, own in pairs:
        given = image_input.updated(**own) if own else image_input
        plans.append(_plan_training(image, labels, ex, given, tr))
    first = plans[0]
    for plan in plans[1:]:
        v, w = first.volume, plan.volume
        if (w.ndim, w.n_channels, w.n_extra) != (v.ndim, v.n_channels, v.n_extra) or (
            plan.bank.to_dict() != first.bank.to_dict()
        ):
            raise InputDataError(
                f"image {w.name} is {w.ndim}D with {w.n_channels} channel(s) but image {v.name} "
                f"is {v.ndim}D with {v.n_channels}; one model needs images of one kind"
            )
    if tr.stages > 1:
        raise TiledsegError(
            "--stages > 1 trains on one image for now; train stage models on one image, or "
            "leave --stages out"
        )
    return plans


def training_tables(
    plans: list[Any], *, executor: Executor, cache_dir: Path | None, feature_device: str
) -> TrainingTable:
    """Return the table of several images: each image's table, one after the other.

    Each image's table is built (or found in the cache) on its own; the rows are
    concatenated in the order of the images, and each row's voxel position is prefixed
    with its image's number (times two, so that no stroke spans two images).
    """
    tables = [
        training_table(
            plan.volume,
            plan.labels,
            bank=plan.bank,
            block=plan.block,
            executor=executor,
            cache_dir=cache_dir,
            distributed=plan.distributed,
            device=plan.execution.device,
            feature_device=feature_device,
            one_class=True,  # an image may add scribbles of one class: the whole is checked
        )
        for plan in plans
    ]
    joined = np.unique(np.concatenate([t.y for t in tables]))
    if len(joined) < 2:
        raise InputDataError(
            f"the labels of all {len(plans)} images hold only one class (value "
            f"{int(joined[0])}); paint scribbles of at least two classes"
        )
    distributed = any(t.distributed for t in tables)
    if distributed:
        import dask.array as da

        X = da.concatenate([t.X if t.distributed else da.from_array(t.X) for t in tables])
    else:
        X = np.concatenate([t.X for t in tables])
    coords = np.concatenate(
        [np.column_stack([np.full(len(t.y), 2 * i), t.coords]) for i, t in enumerate(tables)]
    )
    keys = [t.key for t in tables]
    key = None if None in keys else hashlib.sha256("".join(keys).encode()).hexdigest()
    table = TrainingTable(
        X,
        np.concatenate([t.y for t in tables]),
        coords,
        all(t.from_cache for t in tables),
        key,
        cached=all(t.cached for t in tables),
    )
    table.intensity = _joined_intensity([t.intensity for t in tables])
    table.per_image = [
        {int(c): int(n) for c, n in zip(*np.unique(t.y, return_counts=True), strict=True)}
        for t in tables
    ]
    return table


def _joined_intensity(ranges: list[dict[str, Any]]) -> dict[str, Any]:
    """One intensity record for several images: the widest range (the first's dtype)."""
    ranges = [r for r in ranges if r]
    if not ranges:
        return {}
    return {
        **ranges[0],
        "low": min(r["low"] for r in ranges),
        "high": max(r["high"] for r in ranges),
    }


def _train_several(
    pairs: list[tuple[Any, Any, dict[str, Any]]],
    *,
    execution: Execution,
    image_input: ImageInput,
    training: Training,
) -> Model:
    started = time.perf_counter()
    plans = _plans(pairs, execution, image_input, training)
    ex = execution
    with open_executor(
        ex.workers, quiet=ex.quiet, scheduler=ex.scheduler, cluster=ex.cluster
    ) as executor:
        devices = plan_devices(ex.device, executor)
        table = training_tables(
            plans,
            executor=executor,
            cache_dir=_cache_folder(training),
            feature_device=devices.kind,
        )
        fit = _Fit(plans[0], table)
        if table.distributed:
            fit.on_cluster(executor, on_gpus=devices.fits_on_gpus)
    if not table.distributed:
        fit.here()
    model = fit.model(devices, started)
    model.summary["images"] = [
        {
            "image": p.volume.name,
            "labels": p.labels.name,
            "labelled_voxels": counts,
            "spacing": list(p.volume.spacing),
        }
        for p, counts in zip(plans, table.per_image, strict=True)
    ]
    return model


class _Fit:
    """The fit of a training table: on the cluster, here, or stage by stage."""

    def __init__(self, plan: _TrainingPlan, table: TrainingTable):
        self.plan, self.table = plan, table
        self.classes, self.y = np.unique(table.y, return_inverse=True)
        self.strokes = stroke_ids(table.coords, self.y)
        self.held = self.split(np.arange(len(self.y)))[1]
        self.n_features = int(table.X.shape[1])
        self.clf = plan.clf
        self.bank = plan.bank
        self.earlier: list[Any] = []
        self.columns: Any = None
        self.summary: dict[str, Any] = {}
        self.seconds = 0.0

    def split(self, rows: np.ndarray, fraction: float = HELD_OUT) -> tuple[np.ndarray, ...]:
        """Train and held-out positions in ``rows``: whole strokes on each side."""
        table = self.table
        return held_out_split(
            self.y[rows],
            self.strokes[rows],
            table.coords[rows],
            fraction=fraction,
            seed=self.plan.training.seed,
        )

    def on_cluster(self, executor: Executor, *, on_gpus: bool) -> None:
        """Fit with ``xgboost.dask`` where the table's rows are."""
        started = time.perf_counter()
        self.summary = self.clf.fit_distributed(
            executor.client,
            self.table.X,
            self.y,
            device="cuda" if on_gpus else "cpu",
            held_out=self.held,
        )
        self.seconds = time.perf_counter() - started
        self.table.X = None  # its futures are released while the client is open

    def with_stages(self, executor: Executor) -> None:
        """Fit stage 1, then the later stages on tables the workers build."""
        started = time.perf_counter()
        plan, tr = self.plan, self.plan.training
        first = self.clf.fit(
            self.table.X,
            self.y,
            n_threads=available_cores(),
            device=plan.fit_device,
            held_out=self.held,
        )
        self.earlier, self.clf, stages = _later_stages(
            executor,
            plan.volume,
            self.table,
            self.y,
            first=(self.clf, first),
            make=plan.classifier,
            split=self.split,
            strokes=self.strokes,
            bank=plan.bank,
            stages=tr.stages,
            context=tr.context,
            device=plan.execution.device,
            fit_device=plan.fit_device,
            seed=tr.seed,
            held=self.held,
        )
        self.summary = {**stages[-1], "stages": stages}
        self.summary["autocontext"] = {"stages": tr.stages, "context": tr.context, "folds": FOLDS}
        self.seconds = time.perf_counter() - started

    def here(self) -> None:
        """Fit in this process (after choosing the features, with ``select_features``)."""
        started = time.perf_counter()
        plan, X, k = self.plan, self.table.X, self.plan.training.select_features
        if k is not None:
            chosen = select_features_of(
                X,
                self.y,
                k=int(k),
                bank=plan.bank,
                ndim=plan.volume.ndim,
                n_channels=plan.volume.n_channels,
                make=plan.classifier,
                split=self.split,
                n_threads=available_cores(),
            )
            X = np.ascontiguousarray(X[:, list(chosen.kept)])
            self.bank, self.columns = chosen.bank, chosen.columns
        self.summary = self.clf.fit(
            X, self.y, n_threads=available_cores(), device=plan.fit_device, held_out=self.held
        )
        if k is not None:
            self.summary.update(chosen.summary(self.n_features))
        self.seconds = time.perf_counter() - started

    def model(self, devices: Any, started: float) -> Model:
        """Return the model, its summary recording what the training read, did and found."""
        plan, table, volume = self.plan, self.table, self.plan.volume
        counts = {int(c): int(n) for c, n in zip(self.classes, np.bincount(self.y), strict=True)}
        per_class = describe_split(self.y, self.strokes)
        extras = [v.path or v.name for v in volume.extra_volumes]
        summary = {
            "labelled_voxels": counts,
            "strokes": {int(self.classes[c]): n for c, n in per_class.items()},
            "n_features": self.n_features,
            "table_from_cache": table.from_cache,
            "table_cached": table.cached,
            "table_key": table.key,
            "distributed_training": table.distributed,
            "feature_device": devices.to_dict(),
            "fit_seconds": round(self.seconds, 3),
            "seconds": round(time.perf_counter() - started, 3),
            "image": volume.name,
            **({"extra_channels": extras} if volume.n_extra else {}),
            "labels": plan.labels.name,
            "shape": list(volume.shape),
            "intensity": table.intensity,
            **({"nan_fill": plan.nan_fill} if plan.nan_fill is not None else {}),
            **_anisotropy_hint(volume, given=plan.spacing_given),
            **self.summary,
        }
        return Model(
            classifier=self.clf,
            classes=self.classes,
            bank=self.bank,
            ndim=volume.ndim,
            n_channels=volume.n_channels,
            spacing=volume.spacing,
            channel_axis=volume.image_channel_axis,
            summary=summary,
            columns=self.columns,
            stages=tuple(self.earlier),
        )


def _bank_for(volume: Volume, features: Any, *, filter_extra_channels: bool) -> FeatureBank:
    """Return the bank for ``volume``.

    It is the named bank of its dimensionality, with its extra channels.
    """
    bank = resolve_bank(features, ndim=volume.ndim)
    if volume.n_extra or bank.extra_channels:
        if bank.extra_channels and bank.extra_channels != volume.n_extra:
            raise TiledsegError(
                f"the feature bank expects {bank.extra_channels} extra channel(s) but "
                f"{volume.n_extra} were given; give them with --extra-channels "
                "(extra_channels= in Python)"
            )
        filtered = filter_extra_channels or bank.filter_extra
        return bank.with_extra_channels(volume.n_extra, filtered=filtered)
    if filter_extra_channels:
        raise TiledsegError(
            "--filter-extra-channels needs extra channels: give them with --extra-channels"
        )
    return bank


def _cache_folder(training: Training) -> Path | None:
    """Return the table cache's folder (:func:`default_cache_dir` unless given).

    ``None``: no cache.
    """
    if not training.cache:
        return None
    return default_cache_dir() if training.cache_dir is None else Path(training.cache_dir)


def _check_training_options(
    clf: Any,
    *,
    distributed_training: bool | None,
    select_features: int | None,
    stages: int,
    n_features: int,
) -> bool | None:
    """Refuse options that do not go together; return where the table is built.

    ``None``: on the cluster when it is large, see :func:`training_table`.
    """
    if distributed_training and not clf.trains_distributed:
        raise TiledsegError(
            f"distributed training needs the xgboost classifier; {clf.name} trains in one "
            "process: use classifier xgboost or leave distributed training off"
        )
    if select_features is not None:
        check_k(int(select_features), n_features)
        if distributed_training:
            raise TiledsegError(
                "--select-features trains on this machine: leave --distributed-training out"
            )
        if stages > 1:
            raise TiledsegError(
                "--select-features and --stages > 1 do not go together yet: the later stages' "
                "features depend on the earlier stages' classes; leave one of them out"
            )
    if stages > 1 and distributed_training:
        raise TiledsegError(
            "--stages > 1 trains on this machine (the later stages' tables are built from the "
            "earlier stages' models): leave --distributed-training out"
        )
    if select_features is not None or stages > 1:
        return False  # several fits on the table: it comes here
    if distributed_training is None:
        # automatic: only XGBoost can train on the cluster, the others gather the table
        return None if clf.trains_distributed else False
    return bool(distributed_training)


def _later_stages(
    executor: Executor,
    volume: Volume,
    table: TrainingTable,
    y: np.ndarray,
    *,
    first: tuple[Any, dict[str, Any]],
    make: Any,
    split: Any,
    strokes: np.ndarray,
    bank: FeatureBank,
    stages: int,
    context: str,
    device: str,
    fit_device: str,
    seed: int,
    held: np.ndarray,
) -> tuple[list[Any], Any, list[dict[str, Any]]]:
    """Fit stages 2..N on the scribbles (:mod:`tiledseg.autocontext`).

    Stage ``k+1``'s table holds, at each scribbled voxel, the image's features and the
    bank applied to stage ``k``'s probabilities around it. Out of fold, those come from
    stage models fitted without the voxel's fold of strokes; in sample, from the
    final models. Returns the earlier stages, the last stage and a summary per stage.
    """
    fitted = [first[0]]
    summaries = [{"stage": 1, "n_features": int(table.X.shape[1]), **first[1]}]
    folds = _context_folds(y, strokes, table.coords, context=context, seed=seed)
    chains: list[list[Any]] = [[] for _ in range(FOLDS)]
    X = table.X
    for k in range(1, stages):
        for f in range(FOLDS):
            if np.any(folds == f):
                chains[f].append(
                    _fold_model(X, y, np.flatnonzero(folds != f), make, split, fit_device)
                )
        sure = _confidence([*chains, fitted], k - 1, X, y, folds)
        summaries[-1]["context_confidence"] = round(float(sure.mean()), 4)
        X = _stage_table(
            executor,
            volume,
            table,
            bank=bank,
            chains=[*chains, fitted],
            folds=folds,
            stage=k + 1,
            device=device,
        )
        model = make()
        fit = model.fit(X, y, n_threads=available_cores(), device=fit_device, held_out=held)
        fitted.append(model)
        summaries.append({"stage": k + 1, "n_features": int(X.shape[1]), **fit})
    return fitted[:-1], fitted[-1], summaries


def _context_folds(
    y: np.ndarray, strokes: np.ndarray, coords: np.ndarray, *, context: str, seed: int
) -> np.ndarray:
    """Each row's fold of strokes; :data:`FOLDS` (every fold's) for in-sample context."""
    if context != "out-of-fold":
        return np.full(len(y), FOLDS)
    folds = stroke_folds(y, strokes, coords, n_folds=FOLDS, seed=seed)
    # a class of one voxel cannot be out of its own fold: it is in every fold model
    for c in np.flatnonzero(np.bincount(y) < 2):
        folds[y == c] = FOLDS
    return folds


def _fold_model(
    X: np.ndarray, y: np.ndarray, rows: np.ndarray, make: Any, split: Any, fit_device: str
) -> Any:
    """Return a stage's model fitted on ``rows`` (the strokes outside one fold)."""
    model = make()
    model.fit(
        X[rows],
        y[rows],
        n_threads=available_cores(),
        device=fit_device,
        # (its held-out accuracy is not reported: only early stopping needs them)
        held_out=split(rows)[1] if model.stops_early else None,
    )
    return model


def _confidence(
    chains: list[list[Any]], stage: int, X: np.ndarray, y: np.ndarray, folds: np.ndarray
) -> np.ndarray:
    """How sure stage ``stage`` is of the true class at the scribbles, as the next sees it."""
    sure = np.empty(len(y))
    for f, chain in enumerate(chains):
        rows = np.flatnonzero(folds == f)
        if len(rows):
            proba = to_host(chain[stage].predict_proba(X[rows], n_threads=available_cores()))
            sure[rows] = proba[np.arange(len(rows)), y[rows]]
    return sure


def _stage_table(
    executor: Executor,
    volume: Volume,
    table: TrainingTable,
    *,
    bank: FeatureBank,
    chains: list[list[Any]],
    folds: np.ndarray,
    stage: int,
    device: str,
) -> np.ndarray:
    """Return the table of stage ``stage``, rows in the table's (C) order.

    Each row has its features with the earlier stages of its fold's chain
    (``chains[folds[row]]``).
    """
    halo = stage_halo(bank, volume.spacing, stage)
    scan_folds = np.empty_like(folds)
    scan_folds[table.order] = folds  # the scans' rows are in scan order
    # a cache per table, not per run: it is given back before the next stage fits
    with _chunk_cached(volume, executor, None) as volume:
        tasks, start = [], 0
        for scan in table.scans:
            used = scan_folds[start : start + len(scan.flat)]
            start += len(scan.flat)
            read = haloed(scan.block.region, halo, volume.shape)
            tasks.append(
                _StageRows(
                    volume,
                    Block(scan.block.index, scan.block.region, read),
                    scan.flat,
                    used,
                    {int(f): chains[f] for f in np.unique(used)},
                    bank,
                    device,
                )
            )
        parts = executor.map(_run_stage_rows, tasks, desc=f"stage {stage} features")
    return np.concatenate(parts)[table.order]


@dataclass(frozen=True)
class _StageRows:
    """One box's rows of a later stage's table.

    The box read with the stage's halos, its labelled voxels (``flat``), their folds and
    each fold's chain of earlier stages.
    """

    image: Volume
    block: Block
    flat: np.ndarray
    folds: np.ndarray
    chains: dict[int, list[Any]]
    bank: FeatureBank
    device: str

    def run(self) -> np.ndarray:
        device = worker_device(self.device)
        image, block, bank = self.image, self.block, self.bank
        out = None
        with _reading(block, image), out_of_memory_hint(block.shape):
            data = read_block(image, block, device)
            # the image's features are the same for every fold: computed once
            n = len(next(iter(self.chains.values())))
            own = image_features(data, inner=block.inner, bank=bank, spacing=image.spacing, n=n)
            for f, chain in self.chains.items():
                feats = cascade_features(
                    data,
                    inner=block.inner,
                    bank=bank,
                    spacing=image.spacing,
                    classifiers=chain,
                    device=device,
                    own=own,
                )
                mine = self.folds == f
                picked = feats.reshape(feats.shape[0], -1)[:, to_device(self.flat[mine], device)]
                if out is None:
                    out = np.empty((len(self.flat), feats.shape[0]), dtype=np.float32)
                out[mine] = to_host(picked).T
        return out


def _run_stage_rows(task: _StageRows) -> np.ndarray:
    return task.run()


#: Neighbouring planes this many times as different as neighbouring pixels in a plane
#: suggest a coarser axis (a hint after training, when no spacing was given).
ANISOTROPY_HINT = 1.5
# voxels read for the anisotropy estimate (a central region)
_ANISOTROPY_VOXELS = 1 << 22


def _anisotropy_hint(volume: Volume, *, given: bool) -> dict[str, Any]:
    """``{"anisotropy": {...}}`` when a 3D image's spacing is unknown and one axis looks coarser.

    An axis looks coarser than the others when its neighbours differ more, as in a stack of
    sparse planes.

    The ratio of the mean absolute difference between neighbours along an axis to the
    finest axis' estimates the spacing ratio of smooth structures (noise pulls it to 1).
    """
    if given or volume.spacing_from_metadata or volume.ndim != 3:
        return {}
    edge = max(8, int(round(_ANISOTROPY_VOXELS ** (1 / 3))))
    region = tuple(
        slice(max(0, n // 2 - edge // 2), min(n, n // 2 - edge // 2 + edge)) for n in volume.shape
    )
    # (the image's own first channel: the extra channels are not read for it)
    data = volume.image_only.read(region)[0].astype(np.float32)
    steps = []
    for axis in range(3):
        if data.shape[axis] < 2:
            return {}
        steps.append(float(np.mean(np.abs(np.diff(data, axis=axis)))))
    finest = min(steps)
    if finest <= 0:
        return {}
    ratios = [s / finest for s in steps]
    coarse = "".join(a for a, r in zip("zyx", ratios, strict=True) if r >= ANISOTROPY_HINT)
    if not coarse:
        return {}
    return {"anisotropy": {"ratios": [round(r, 2) for r in ratios], "coarse": coarse}}


_NEEDS_CLUSTER = (
    "distributed training needs a dask cluster: give --workers N, --scheduler ADDRESS or "
    "--cluster FILE (workers=, scheduler= in Python), or leave distributed training off"
)


def _open_pair(image, labels, *, channel_axis, spacing) -> tuple[Volume, Volume]:
    volume = open_volume(image, channel_axis=channel_axis, spacing=spacing)
    label_volume = open_volume(labels, role="labels", allow_channels=False)
    if label_volume.shape != volume.shape:
        raise shape_mismatch(volume, label_volume, "labels")
    return volume, label_volume
