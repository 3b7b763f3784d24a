"""``sobel``: ``scipy.ndimage.sobel`` of ``G_s * I`` along each axis, and the magnitude."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tiledseg import blocks
from tiledseg.features.family import (
    TRUNCATE,
    BuiltinFamily,
    Region,
    Values,
    grow,
    kernel_radius,
)

if TYPE_CHECKING:
    from tiledseg.features.backend import Backend


class Sobel(BuiltinFamily):
    """Sobel derivatives of the Gaussian-smoothed image, then their magnitude.

    The smoothing is :func:`scipy.ndimage.gaussian_filter` (float32, truncate 3.5,
    reflect) computed on the block grown by one voxel, the 3-tap Sobel's reach; the
    Sobel passes are :func:`scipy.ndimage.sobel`'s own (float32 intermediates). Along
    a coarse axis a derivative is divided by the axis's relative spacing.
    """

    name = "sobel"

    def n_outputs(self, ndim: int) -> int:
        """Return ``ndim + 1``: one derivative per axis, then the magnitude."""
        return ndim + 1

    def margin(self, scale: float, rel: Sequence[float]) -> tuple[int, ...]:
        """Return the Gaussian's radius plus the 3-tap Sobel's 1 along each axis."""
        return tuple(kernel_radius(scale / step) + 1 for step in rel)

    def component(self, k: int, n: int) -> int | None:
        """Return the axis ``k``, or -1 for the magnitude (the last output)."""
        return -1 if k == n - 1 else k

    def describe_component(self, component: int) -> str:
        """Return ``axis=<component>``, or ``magnitude``."""
        return f"axis={component}" if component >= 0 else "magnitude"

    def values(
        self, image: Any, scale: float, *, inner: Region, rel: Sequence[float], be: Backend
    ) -> Values:
        """Yield the derivative along each axis, then the magnitude, on the block."""
        ndim = image.ndim
        sigmas = tuple(scale / step for step in rel)
        grown, within = grow(inner, (1,) * ndim, image.shape)
        smooth_region, _ = grow(grown, tuple(kernel_radius(s) for s in sigmas), image.shape)
        smooth = image[smooth_region]
        keep = blocks.within(grown, smooth_region)
        for axis in range(ndim):
            smooth = be.ndi.gaussian_filter1d(
                smooth,
                sigmas[axis],
                axis=axis,
                output=np.float32,
                mode="reflect",
                truncate=TRUNCATE,
            )
            smooth = smooth[(slice(None),) * axis + (keep[axis],)]
        total = None
        for axis in range(ndim):
            d = be.ndi.sobel(smooth, axis=axis, output=np.float32, mode="reflect")[within]
            if rel[axis] != 1.0:
                d = d / np.float32(rel[axis])
            yield axis, d
            total = d * d if total is None else total + d * d
        yield ndim, be.xp.sqrt(total)


FAMILY = Sobel()
