"""``local_mean``, ``local_variance``, ``local_std``: statistics of a box window.

The box has half-width :func:`box_radius` along each axis; its sums are in float64,
by direct correlation (not scipy's running sum, whose rounding depends on where a
line starts, so that tiled values equal untiled ones to the bit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tiledseg.features.family import BuiltinFamily, Region, Values, grow

if TYPE_CHECKING:
    from tiledseg.features.backend import Backend


def box_radius(radius: float) -> int:
    """Return the half-width in voxels of a box window of ``radius`` (rounded half up)."""
    return int(float(radius) + 0.5)


class LocalStatistic(BuiltinFamily):
    """The mean, variance or standard deviation of the values in a box around each voxel.

    Parameters
    ----------
    name : {"local_mean", "local_variance", "local_std"}
        The family, which names the statistic.
    """

    scale = "radius"

    def __init__(self, name: str) -> None:
        self.name = name

    def margin(self, scale: float, rel: Sequence[float]) -> tuple[int, ...]:
        """Return the box's half-width along each axis."""
        return tuple(box_radius(scale / step) for step in rel)

    def values(
        self, image: Any, scale: float, *, inner: Region, rel: Sequence[float], be: Backend
    ) -> Values:
        """Yield the statistic on the block."""
        half = self.margin(scale, rel)
        grown, within = grow(inner, half, image.shape)
        x = be.xp.asarray(image[grown], dtype=np.float64)
        count = float(math.prod(2 * h + 1 for h in half))
        mean = _box_sum(x, half, within, be) / count
        if self.name == "local_mean":
            yield 0, mean.astype(np.float32)
            return
        # E[x^2] - E[x]^2 in float64 (exact products of float32 values), clipped at 0 against
        # rounding: the cancellation costs about 1e-16 * mean^2, far below float32's
        # resolution of the variance unless the variance is below ~1e-9 mean^2.
        variance = _box_sum(x * x, half, within, be) / count - mean * mean
        variance = be.xp.maximum(variance, 0.0)
        if self.name == "local_variance":
            yield 0, variance.astype(np.float32)
        else:
            yield 0, be.xp.sqrt(variance).astype(np.float32)


def _box_sum(x: Any, half: Sequence[int], within: Region, be: Backend) -> Any:
    """Sum over a box of half-widths ``half``, by direct correlation along each axis.

    Each output is the sum of its own window (scipy's ``correlate1d``), so its value
    does not depend on where the array starts; each axis is cropped right after its pass.
    """
    for axis, h in enumerate(half):
        if h > 0:
            weights = be.xp.ones(2 * h + 1, dtype=np.float64)
            x = be.ndi.correlate1d(x, weights, axis=axis, output=np.float64, mode="reflect")
        x = x[(slice(None),) * axis + (within[axis],)]
    return x


MEAN = LocalStatistic("local_mean")
VARIANCE = LocalStatistic("local_variance")
STD = LocalStatistic("local_std")
