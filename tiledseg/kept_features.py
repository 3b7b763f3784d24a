"""Block features that ``segment``'s training computes kept on disk for its prediction.

When scribbles fill most of a block (scribbles everywhere), training computes nearly all
of that block's features, and prediction computes them again. ``tiledseg segment`` runs
both, so training keeps such a block's whole feature stack in a scratch folder beside
the output and prediction loads it instead. Measured on one 64x128x128 block with the
default bank (72 MiB of float32 features, benchmarks/RESULTS.md section 15): computing
took 0.248 s on one thread, writing 0.011-0.048 s and reading 0.013-0.034 s.

A block is kept only when filtering its scribble boxes already costs :data:`WHOLE_FRACTION`
of filtering the whole block (a fourth: writing and reading the stack back costs a tenth
to a third of computing it, so keeping wins from there; strokes on a few planes cost
0.03-0.12 of their blocks and are not kept, scribbles everywhere 0.2-1), and only while
the scratch folder stays within its byte budget (half the free disk space by default;
``TILEDSEG_KEPT_FEATURES_BYTES`` sets it, 0 turns keeping off). The folder is removed
when ``segment`` ends; a killed run leaves it, and the next ``segment`` into the same
output removes it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiledseg.blocks import Block
from tiledseg.errors import TiledsegError

__all__ = ["WHOLE_FRACTION", "KeptFeatures", "Scratch", "active", "using"]

#: Scribble boxes that cost at least this fraction of their whole block to filter make
#: training filter the whole block and keep it.
WHOLE_FRACTION = 0.25

_BUDGET_VARIABLE = "TILEDSEG_KEPT_FEATURES_BYTES"


class Scratch:
    """The scratch folder of one ``segment`` run, beside its output (driver side).

    Training plans it (:meth:`plan`: which blocks may be kept) once it knows its blocks
    and bank; prediction then finds :attr:`kept`. Leaving :func:`using` removes it.
    """

    def __init__(self, out: str | Path):
        out = Path(out)
        # hidden siblings of the output, on the storage the workers write to; each run
        # its own, so that no stack of a killed or concurrent run is ever read
        self.parent = out.parent
        self.prefix = f".{out.name}.tiledseg-features"
        self.folder = self.parent / f"{self.prefix}-{uuid.uuid4().hex[:12]}"
        self.kept: KeptFeatures | None = None

    def plan(
        self,
        *,
        volume: Any,
        block: Sequence[int],
        bank: dict[str, Any],
        n_features: int,
    ) -> KeptFeatures | None:
        """Choose the blocks the budget holds and create the folder.

        Parameters
        ----------
        volume : Volume
            The image training reads (its identity is recorded with the stacks).
        block : sequence of int
            Training's block shape (the grid whose blocks are kept).
        bank : dict
            The bank's :meth:`~tiledseg.features.bank.FeatureBank.to_dict`.
        n_features : int
            Features per voxel of the bank on ``volume``.

        Returns
        -------
        KeptFeatures or None
            ``None`` (and nothing kept) when the budget holds no block.
        """
        # the folders of killed runs into the same output go first
        for stale in self.parent.glob(f"{self.prefix}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        per_block = 4 * n_features * math.prod(block)
        allowed = _budget(self.parent) // max(1, per_block)
        if allowed <= 0:
            self.kept = None
            return None
        grid = tuple(-(-n // b) for n, b in zip(volume.shape, block, strict=True))
        self.folder.mkdir()
        self.kept = KeptFeatures(
            str(self.folder),
            grid,
            int(min(allowed, math.prod(grid))),
            json.dumps(bank, sort_keys=True),
            identity(volume),
        )
        return self.kept

    def remove(self) -> None:
        """Remove the folder and everything in it."""
        shutil.rmtree(self.folder, ignore_errors=True)


def identity(volume: Any) -> str:
    """Return what the kept stacks were computed from, as JSON: prediction checks it is its image.

    Besides the name (a path, or only ``<ndarray image>`` for an array), a digest of a
    central region of at most 32 voxels a side tells two images of one shape apart.
    """
    centre = tuple(slice(max(0, n // 2 - 16), min(n, n // 2 + 16)) for n in volume.shape)
    sample = np.ascontiguousarray(volume.read(centre))
    return json.dumps(
        {
            "name": volume.name,
            "shape": list(volume.shape),
            "dtype": str(volume.dtype),
            "spacing": list(volume.spacing),
            "channels": volume.n_channels,
            "centre": hashlib.sha256(sample.tobytes()).hexdigest(),
        }
    )


_ACTIVE: contextvars.ContextVar[Scratch | None] = contextvars.ContextVar(
    "tiledseg_kept_features", default=None
)


@contextlib.contextmanager
def using(out: str | Path) -> Iterator[Scratch]:
    """Keep features for the output ``out`` while inside (``segment``'s train and predict)."""
    scratch = Scratch(out)
    token = _ACTIVE.set(scratch)
    try:
        yield scratch
    finally:
        _ACTIVE.reset(token)
        scratch.remove()


def active() -> Scratch | None:
    """Return the :class:`Scratch` of the ``segment`` run in progress (driver side), if any."""
    return _ACTIVE.get()


@dataclass(frozen=True)
class KeptFeatures:
    """Where a run's kept feature stacks live and which blocks may be kept (sent to workers).

    Attributes
    ----------
    folder : str
        The scratch folder.
    grid : tuple of int
        Blocks per axis of training's grid.
    count : int
        The first ``count`` blocks of the grid in C order may be kept (the budget, as a
        rule fixed before any work: workers need not agree on it, and a task carries
        two numbers, not a list of blocks).
    bank : str
        The bank the stacks hold (its dict, as JSON): a model with another bank, or with
        autocontext stages, computes its features itself.
    image : str
        :func:`identity` of the image the stacks were computed from.
    """

    folder: str
    grid: tuple[int, ...]
    count: int
    bank: str
    image: str

    def serves(self, model: Any, volume: Any) -> bool:
        """Whether ``model`` classifies the kept stacks of ``volume`` as they are."""
        return (
            not model.stages
            and json.dumps(model.bank.to_dict(), sort_keys=True) == self.bank
            and identity(volume) == self.image
        )

    def wants(self, block: Block) -> bool:
        """Whether ``block`` (a whole block of the grid) may be kept."""
        return int(np.ravel_multi_index(block.index, self.grid)) < self.count

    def _path(self, block: Block) -> Path:
        where = "_".join(f"{s.start}-{s.stop}" for s in block.region)
        return Path(self.folder) / f"{where}.npy"

    def save(self, block: Block, features: np.ndarray) -> None:
        """Keep a block's features ``(n_features, *block.shape)``.

        A failed write is only a lost saving (prediction computes the block).
        """
        target = self._path(block)
        partial = target.with_name(f"{target.stem}.{uuid.uuid4().hex[:8]}.partial")
        try:
            with open(partial, "wb") as f:
                np.save(f, np.ascontiguousarray(features, dtype=np.float32))
            os.replace(partial, target)  # readers never see half a file
        except OSError:
            partial.unlink(missing_ok=True)

    def load(self, block: Block, n_features: int) -> np.ndarray | None:
        """Return the kept features of ``block``, or ``None`` when they were not kept."""
        try:
            features = np.load(self._path(block))
        except (OSError, ValueError):
            return None
        if features.shape != (n_features, *block.shape) or features.dtype != np.float32:
            return None
        return features


def _budget(folder: Path) -> int:
    """Bytes the scratch folder may hold.

    ``$TILEDSEG_KEPT_FEATURES_BYTES``, else half the free space where it lives.
    """
    value = os.environ.get(_BUDGET_VARIABLE)
    if value is not None:
        try:
            return max(0, int(value))
        except ValueError:
            raise TiledsegError(
                f"{_BUDGET_VARIABLE}={value!r} is not a number of bytes; give e.g. "
                "20000000000, or 0 to compute the features again instead of keeping them"
            ) from None
    return shutil.disk_usage(folder).free // 2
