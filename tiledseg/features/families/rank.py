"""``median``, ``minimum``, ``maximum``: rank filters over a ball.

The footprint is ``sum_a (d_a rel_a)^2 <= r^2`` (:func:`ball_footprint`); being order
statistics, the values are exact under any tiling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tiledseg.features.family import BuiltinFamily, Region, Values, grow

if TYPE_CHECKING:
    from tiledseg.features.backend import Backend


def ball_extent(radius: float, step: float) -> int:
    """Return the largest ``d >= 0`` with ``(d * step)**2 <= radius**2``.

    It is how far a ball of ``radius`` (in voxels of the finest axis) reaches along an
    axis whose voxels are ``step`` finest voxels long; the rank filters' footprint is
    built with the same inequality, so this is their exact halo.
    """
    r2 = float(radius) ** 2
    d = int(math.floor(float(radius) / step))
    while ((d + 1) * step) ** 2 <= r2:
        d += 1
    while d > 0 and (d * step) ** 2 > r2:
        d -= 1
    return d


def ball_footprint(radius: float, rel: Sequence[float]) -> np.ndarray:
    """Return the boolean footprint ``sum_a (d_a rel_a)^2 <= radius^2`` (offsets ``d``).

    Its extent along axis ``a`` is :func:`ball_extent`; with isotropic spacing and an
    integer radius it is ``skimage.morphology.disk``/``ball``.
    """
    extents = [ball_extent(radius, step) for step in rel]
    grids = np.meshgrid(*(np.arange(-e, e + 1) for e in extents), indexing="ij", sparse=True)
    total = sum((g * step) ** 2 for g, step in zip(grids, rel, strict=True))
    return np.asarray(total <= float(radius) ** 2)


class RankFilter(BuiltinFamily):
    """A rank statistic of the values in a ball around each voxel.

    Parameters
    ----------
    name : {"median", "minimum", "maximum"}
        The family, which names the statistic.
    """

    scale = "radius"

    def __init__(self, name: str) -> None:
        self.name = name
        self._filter = f"{name}_filter"  # scipy.ndimage's (and cupyx's) function

    def margin(self, scale: float, rel: Sequence[float]) -> tuple[int, ...]:
        """Return the ball's extent along each axis."""
        return tuple(ball_extent(scale, step) for step in rel)

    def values(
        self, image: Any, scale: float, *, inner: Region, rel: Sequence[float], be: Backend
    ) -> Values:
        """Yield the statistic on the block (float32, reflect)."""
        footprint = ball_footprint(scale, rel)
        grown, within = grow(inner, tuple((n - 1) // 2 for n in footprint.shape), image.shape)
        rank = getattr(be.ndi, self._filter)
        out = rank(image[grown], footprint=be.xp.asarray(footprint), mode="reflect")
        yield 0, out[within]


MEDIAN = RankFilter("median")
MINIMUM = RankFilter("minimum")
MAXIMUM = RankFilter("maximum")
