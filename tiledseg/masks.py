"""Where a prediction segments: a mask image's nonzero voxels, or the image above a threshold.

A mask is one small frozen object with one method, :meth:`inside`, which reads what it
needs of one region and says which of its voxels are segmented:

- :class:`VolumeMask` (``--mask PATH``): the voxels where the mask image is nonzero;
- :class:`ThresholdMask` (``--mask-threshold T``): the voxels where the image's first
  channel, smoothed by a Gaussian of :data:`MASK_SIGMA` voxels, is above ``T``. The region
  is read with a halo of the kernel's radius (:data:`MASK_RADIUS`), clipped at the image's
  edges, so the smoothed values are the same, to the bit, whatever the blocks.

Before a prediction's blocks run, :func:`blocks_meeting` asks the mask, block by block on
the executor, which blocks hold a voxel inside it; the others are never submitted (their
image is not read and their features are not computed) and their labels stay the output's
fill, 0. A block that meets the mask sets its labels, probabilities and uncertainty to 0
outside it (:meth:`tiledseg.predict.PredictionJob.predict`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tiledseg.blocks import Block, BlockPlan, Region, haloed, within
from tiledseg.errors import InputDataError, TiledsegError
from tiledseg.volume import Volume, open_volume

__all__ = [
    "MASK_RADIUS",
    "MASK_SIGMA",
    "Mask",
    "ThresholdMask",
    "VolumeMask",
    "blocks_meeting",
    "mask_path",
    "open_mask",
]

#: Sigma, in voxels, of the Gaussian that smooths the image ``--mask-threshold`` compares.
MASK_SIGMA = 2.0
#: Where the Gaussian is cut, in sigmas (scipy's ``truncate``).
MASK_TRUNCATE = 4.0
#: The kernel's radius in voxels: the halo a region is read with.
MASK_RADIUS = int(MASK_TRUNCATE * MASK_SIGMA + 0.5)


class Mask(Protocol):
    """What a mask does: say which voxels of a region are segmented."""

    def inside(self, region: Region) -> np.ndarray:
        """Return a boolean array of ``region``'s shape: true where voxels are segmented."""
        ...  # pragma: no cover


@dataclass(frozen=True)
class VolumeMask:
    """The voxels where a mask image (of the image's spatial shape) is nonzero."""

    volume: Volume

    def inside(self, region: Region) -> np.ndarray:
        """Return where the mask is nonzero in ``region`` (its own voxels only are read)."""
        return self.volume.read(region)[0] != 0


@dataclass(frozen=True)
class ThresholdMask:
    """The voxels whose smoothed first-channel value is above ``threshold``.

    ``image`` is the image as the prediction reads it (NaN and infinite values read as its
    fill, or refused).
    """

    image: Volume
    threshold: float

    def inside(self, region: Region) -> np.ndarray:
        """Return where the smoothed image is above the threshold in ``region``.

        The region is read with a halo of :data:`MASK_RADIUS` voxels, clipped at the image's
        edges, where scipy's ``reflect`` applies as it would to the whole image.
        """
        from scipy.ndimage import gaussian_filter

        from tiledseg.features.tiled import read_finite

        own = self.image.image_only  # (without the extra channels, which are not used)
        read = haloed(region, (MASK_RADIUS,) * own.ndim, own.shape)
        data = read_finite(own, read)[0].astype(np.float64)
        smoothed = gaussian_filter(data, MASK_SIGMA, mode="reflect", truncate=MASK_TRUNCATE)
        return smoothed[within(region, read)] > self.threshold


def open_mask(
    mask: Any, threshold: float | None, image: Volume, *, smoothed: bool = False
) -> VolumeMask | ThresholdMask | None:
    """Return the mask ``--mask`` or ``--mask-threshold`` asks for (``None``: neither).

    Parameters
    ----------
    mask : path, array or None
        The mask image (nonzero: segmented), of ``image``'s spatial shape.
    threshold : float or None
        The smoothed image's value above which voxels are segmented.
    image : Volume
        The image the prediction reads.
    smoothed : bool
        Whether the labels are smoothed by the graph cut (which a mask does not support).

    Raises
    ------
    InputDataError
        The mask's shape is not the image's spatial shape.
    TiledsegError
        A mask with ``smoothed``.
    """
    if mask is None and threshold is None:
        return None
    if smoothed:
        option = "--mask" if mask is not None else "--mask-threshold"
        raise TiledsegError(
            f"{option} with --smooth graphcut is not supported yet; leave one of them out"
        )
    if mask is None:
        return ThresholdMask(image, float(threshold))
    volume = open_volume(mask, role="mask", allow_channels=False)
    if volume.shape != image.shape:
        raise InputDataError(
            f"mask {volume.name} has shape {volume.shape} but image {image.name} has spatial "
            f"shape {image.shape}; they must match"
        )
    return VolumeMask(volume)


def mask_path(mask: Any) -> str | None:
    """Return the path a mask was given as (``None``: an in-memory array)."""
    if isinstance(mask, Volume):
        return mask.path
    return os.fspath(mask) if isinstance(mask, str | os.PathLike) else None


def _meets(item: tuple[Any, Block]) -> tuple[tuple[int, ...], bool]:
    """Return the block's index and whether the mask holds one of its voxels.

    A block whose mask or image cannot be read counts as meeting it: it runs, and its own
    read reports the error (a NaN, a damaged chunk) as the block's failure.
    """
    mask, block = item
    try:
        return block.index, bool(mask.inside(block.region).any())
    except Exception:  # reported by the block's own run
        return block.index, True


def _lost(i: int, item: tuple[Any, Block], exc: BaseException) -> tuple[tuple[int, ...], bool]:
    return item[1].index, True  # (its task was lost: the block runs, and reports it)


def blocks_meeting(mask: Mask, blocks: BlockPlan, executor: Any) -> np.ndarray:
    """Return which blocks of ``blocks`` hold a voxel inside ``mask``.

    Each block's mask is read (and, for :class:`ThresholdMask`, its image smoothed) as a
    task of ``executor``: the whole mask or image is never in memory at once.

    Returns
    -------
    numpy.ndarray of bool
        Of the grid's shape (:attr:`BlockPlan.grid`): true for the blocks that meet it
        (false too for the blocks not in ``blocks``).
    """
    keep = np.zeros(blocks.grid, dtype=bool)
    results = executor.imap(
        _meets,
        ((mask, block) for block in blocks),
        desc="mask",
        on_error=_lost,
        total=len(blocks),
    )
    with contextlib.closing(results):
        for _, (index, meets) in results:
            keep[index] = meets
    return keep
