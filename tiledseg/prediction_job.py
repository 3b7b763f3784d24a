"""One block of a prediction: features, probabilities, labels and the outputs written.

:class:`PredictionJob` is what every block of a prediction shares (volume, model,
output, threads, device, kept features, mask); the executor calls one of its methods
per block (:meth:`tiledseg.cluster.Executor.blocks`). The orchestration around it, plan,
start and record, is :mod:`tiledseg.predict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tiledseg.arrays import out_of_memory_hint, to_host
from tiledseg.blocks import Block
from tiledseg.device import worker_device
from tiledseg.features.backend import get_backend
from tiledseg.features.tiled import read_block
from tiledseg.kept_features import KeptFeatures
from tiledseg.model import Model
from tiledseg.runs import BlockFailure, guarded, mark_block_done
from tiledseg.volume import Volume

__all__ = ["PredictionJob", "block_probabilities", "classify_block", "uncertainty"]


def block_probabilities(
    volume: Volume,
    block: Block,
    model: Model,
    *,
    n_threads: int = 1,
    device: str = "cpu",
    kept: KeptFeatures | None = None,
) -> Any:
    """Return the class probabilities ``(n, k)`` of one block's voxels.

    ``device="cuda"``: the features are computed on the GPU and handed to the
    classifier there; the probabilities are a cupy array when it predicts there.
    An autocontext model computes every stage on the block (read with every
    stage's halo: ``block`` is planned with :attr:`Model.halo`). ``kept``: the
    features ``segment``'s training kept (:mod:`tiledseg.kept_features`), loaded
    instead of computed where the block's are there.
    """
    if kept is not None:
        n_features = model.bank.n_features(ndim=model.ndim, n_channels=model.n_channels)
        features = kept.load(block, n_features)
        if features is not None:
            table = features.reshape(n_features, -1).T
            return model.predict_proba(table, n_threads=n_threads, device=device)
    data = read_block(volume, block, device)
    return model.block_probabilities(data, inner=block.inner, n_threads=n_threads, device=device)


def classify_block(
    volume: Volume, block: Block, model: Model, *, n_threads: int = 1, device: str = "cpu"
) -> tuple[Any, Any]:
    """Return the labels ``block.shape`` and probabilities ``(n, k)`` of one block.

    They are in the array module the probabilities came in (numpy, or cupy on the GPU).
    """
    proba = block_probabilities(volume, block, model, n_threads=n_threads, device=device)
    return _labels(proba, model, block.shape), proba


def _labels(proba: Any, model: Model, shape: tuple[int, ...]) -> Any:
    """Return the most probable class of each voxel, where ``proba`` is (numpy or cupy)."""
    values = get_backend(proba).xp.asarray(model.classes.astype(model.label_dtype))
    return values[proba.argmax(axis=1)].reshape(shape)


def uncertainty(proba: Any) -> Any:
    """Return each voxel's uncertainty ``1 - (p_best - p_second)`` from ``proba`` ``(n, k)``."""
    xp = get_backend(proba).xp
    top2 = xp.partition(proba, proba.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - xp.abs(top2[:, 1] - top2[:, 0])


def _to_uint8(values: Any) -> Any:
    xp = get_backend(values).xp
    return xp.rint(xp.clip(values, 0.0, 1.0) * 255.0).astype(xp.uint8)


def _extras(
    proba: Any, block: Block, want_proba: bool, want_unc: bool, inside: np.ndarray | None = None
) -> dict[str, Any]:
    """Return the requested per-voxel outputs besides the labels, computed where ``proba`` is.

    With ``inside`` (the block's voxels inside the mask), they are 0 outside it.
    """
    xp = get_backend(proba).xp
    out = {}
    if want_proba:
        out["probabilities"] = _to_uint8(proba.T).reshape((proba.shape[1], *block.shape))
    if want_unc:
        out["uncertainty"] = _to_uint8(uncertainty(proba)).reshape(block.shape)
    if inside is not None:
        keep = xp.asarray(inside, dtype=xp.uint8)  # (broadcast over the classes)
        out = {name: values * keep for name, values in out.items()}
    return out


def _write_extras(
    out: str,
    block: Block,
    proba: Any,
    want_proba: bool,
    want_unc: bool,
    inside: np.ndarray | None = None,
):
    import zarr

    for name, values in _extras(proba, block, want_proba, want_unc, inside).items():
        where = (slice(None), *block.region) if name == "probabilities" else block.region
        zarr.open_array(f"{out}/{name}/0", mode="r+")[where] = to_host(values)


@dataclass(frozen=True)
class PredictionJob:
    """What every block of a prediction shares; its methods each do one block.

    The executor sends the job to a worker once and calls a method per block
    (:meth:`tiledseg.cluster.Executor.blocks`), which reports a failing block as a
    :class:`~tiledseg.runs.BlockFailure` instead of stopping the run.
    """

    volume: Volume
    model: Model
    out: str
    probabilities: bool
    uncertainty: bool
    n_threads: int
    device: str
    kept: KeptFeatures | None = None
    #: where voxels are segmented (:mod:`tiledseg.masks`); elsewhere the outputs are 0
    mask: Any = None

    def predict(self, block: Block) -> int:
        """Write the block's outputs and mark it done; return its voxels."""
        import zarr

        inside = None if self.mask is None else self.mask.inside(block.region)
        if inside is not None and inside.all():
            inside = None  # (nothing to clear)
        proba = self._probabilities_written(block, inside)
        labels = to_host(_labels(proba, self.model, block.shape))
        if inside is not None:
            labels[~inside] = 0
        # labels last, then the marker: a block marked done has all its outputs written
        zarr.open_array(f"{self.out}/labels/0", mode="r+")[block.region] = labels
        mark_block_done(self.out, block.index)
        return int(labels.size)

    def costs(self, block: Block) -> np.ndarray:
        """Write the block's outputs besides the labels; return its graph-cut unary costs.

        The costs are ``(*block.shape, k)``.
        """
        from tiledseg.smoothing.energy import unary_costs

        # the graph cut runs on the CPU: the probabilities come back
        proba = to_host(self._probabilities_written(block, None))
        return unary_costs(proba).reshape(*block.shape, proba.shape[1])

    def write_labels(self, block: Block, indices: np.ndarray) -> int:
        """Write the labels the graph cut chose (class positions) and mark the block done."""
        import zarr

        values = self.model.classes.astype(self.model.label_dtype)
        zarr.open_array(f"{self.out}/labels/0", mode="r+")[block.region] = values[indices]
        mark_block_done(self.out, block.index)
        return int(indices.size)

    def _probabilities_written(self, block: Block, inside: np.ndarray | None) -> Any:
        """Return the block's probabilities, on the worker's device.

        The probability and uncertainty outputs are already written (0 where ``inside``,
        the voxels inside the mask, is false).
        """
        with out_of_memory_hint(block.shape):
            proba = block_probabilities(
                self.volume,
                block,
                self.model,
                n_threads=self.n_threads,
                device=worker_device(self.device),
                kept=self.kept,
            )
            _write_extras(self.out, block, proba, self.probabilities, self.uncertainty, inside)
        return proba


def _costs_task(job: PredictionJob, block: Block) -> np.ndarray | BlockFailure:
    return guarded(job.costs, block.name, block.index, block)


def _write_labels_task(
    job: PredictionJob, block: Block, indices: np.ndarray | BlockFailure
) -> int | BlockFailure:
    if isinstance(indices, BlockFailure):
        return indices
    return guarded(job.write_labels, block.name, block.index, block, indices)
