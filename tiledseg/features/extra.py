"""Per-block kernels of the families beyond ilastik's six.

Each function is a pure function of one haloed image (one channel, spatial axes
only) and the block's place in it; it returns the values of the block's own voxels.
Each first crops the input to the block grown by its own reach (so a family at a
small scale does not filter the halo a larger scale needs), filters, and crops
the result to the block. Where the block touches the volume's edge, the crop is
the volume's edge, and the filter's ``reflect`` boundary sees the same voxels as
on the whole volume; so tiled values equal untiled ones bit for bit.

- ``sobel``: ``scipy.ndimage.sobel`` of ``G_s * I`` along each axis, and the magnitude.
- ``local_mean``, ``local_variance``, ``local_std``: box window of half-width
  :func:`~tiledseg.features.bank.box_radius`, sums in float64 by direct
  correlation (not scipy's running sum, whose rounding depends on where a line starts).
- ``median``, ``minimum``, ``maximum``: ball footprint (``sum (d_a rel_a)^2 <= r^2``).
- ``gabor``: magnitude of the complex Gabor response at
  :data:`~tiledseg.features.bank.GABOR_ORIENTATIONS` orientations, per yx plane.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tiledseg import blocks
from tiledseg.features.backend import Backend
from tiledseg.features.bank import (
    TRUNCATE,
    ball_extent,
    box_radius,
    gabor_half_sizes,
    gabor_orientations,
    gabor_sigma,
    kernel_radius,
)

__all__ = ["ball_footprint", "extra_features", "gabor_kernel", "grow"]

Region = tuple[slice, ...]

_LOCAL = ("local_mean", "local_variance", "local_std")
_RANK = ("median", "minimum", "maximum")


def extra_features(
    image: Any, family: str, scale: float, inner: Region, rel: Sequence[float], be: Backend
) -> Iterator[tuple[int, Any]]:
    """Yield ``(component, values on the block)`` of one family at one scale.

    Parameters
    ----------
    image : float32 array
        One channel of the haloed block.
    family : str
        One of :data:`tiledseg.features.bank.EXTRA_FAMILIES`.
    scale : float
        The bank's scale (a sigma, radius or wavelength in finest-axis voxels).
    inner : tuple of slice
        The block inside ``image``.
    rel : sequence of float
        Relative spacing (1 along the finest axis).
    be : Backend
    """
    if family == "sobel":
        yield from _sobel(image, scale, inner, rel, be)
    elif family in _LOCAL:
        yield 0, _local_statistic(image, family, scale, inner, rel, be)
    elif family in _RANK:
        yield 0, _rank(image, family, scale, inner, rel, be)
    elif family == "gabor":
        yield from _gabor(image, scale, inner, rel, be)
    else:  # pragma: no cover - the bank refuses unknown families
        raise ValueError(f"unknown feature family {family!r}")


def grow(inner: Region, margin: Sequence[int], shape: Sequence[int]) -> tuple[Region, Region]:
    """Return the block grown by ``margin`` (clipped to ``shape``) and the block inside it."""
    grown = blocks.haloed(inner, margin, shape)
    return grown, blocks.within(inner, grown)


# -- Sobel -------------------------------------------------------------------------------------


def _sobel(image, sigma, inner, rel, be: Backend):
    """Sobel derivatives of the Gaussian-smoothed image, then their magnitude.

    The smoothing is :func:`scipy.ndimage.gaussian_filter` (float32, truncate 3.5,
    reflect) computed on the block grown by one voxel, the 3-tap Sobel's reach; the
    Sobel passes are :func:`scipy.ndimage.sobel`'s own (float32 intermediates).
    """
    ndim = image.ndim
    sigmas = tuple(sigma / step for step in rel)
    grown, within = grow(inner, (1,) * ndim, image.shape)
    smooth_region, _ = grow(grown, tuple(kernel_radius(s) for s in sigmas), image.shape)
    smooth = image[smooth_region]
    keep = blocks.within(grown, smooth_region)
    for axis in range(ndim):
        smooth = be.ndi.gaussian_filter1d(
            smooth, sigmas[axis], axis=axis, output=np.float32, mode="reflect", truncate=TRUNCATE
        )
        crop = (slice(None),) * axis + (keep[axis],)
        smooth = smooth[crop]
    total = None
    for axis in range(ndim):
        d = be.ndi.sobel(smooth, axis=axis, output=np.float32, mode="reflect")[within]
        if rel[axis] != 1.0:
            d = d / np.float32(rel[axis])
        yield axis, d
        total = d * d if total is None else total + d * d
    yield ndim, be.xp.sqrt(total)


# -- local statistics in a box -------------------------------------------------------------------


def _box_sum(x, half: Sequence[int], within: Region, be: Backend):
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


def _local_statistic(image, family, radius, inner, rel, be: Backend):
    half = tuple(box_radius(radius / step) for step in rel)
    grown, within = grow(inner, half, image.shape)
    x = be.xp.asarray(image[grown], dtype=np.float64)
    count = float(math.prod(2 * h + 1 for h in half))
    mean = _box_sum(x, half, within, be) / count
    if family == "local_mean":
        return mean.astype(np.float32)
    # E[x^2] - E[x]^2 in float64 (exact products of float32 values), clipped at 0 against
    # rounding: the cancellation costs about 1e-16 * mean^2, far below float32's resolution
    # of the variance unless the variance is below ~1e-9 mean^2.
    variance = _box_sum(x * x, half, within, be) / count - mean * mean
    variance = be.xp.maximum(variance, 0.0)
    if family == "local_variance":
        return variance.astype(np.float32)
    return be.xp.sqrt(variance).astype(np.float32)


# -- rank filters in a ball --------------------------------------------------------------------


def ball_footprint(radius: float, rel: Sequence[float]) -> np.ndarray:
    """Return the boolean footprint ``sum_a (d_a rel_a)^2 <= radius^2`` (offsets ``d``).

    Its extent along axis ``a`` is :func:`~tiledseg.features.bank.ball_extent`; with
    isotropic spacing and an integer radius it is ``skimage.morphology.disk``/``ball``.
    """
    extents = [ball_extent(radius, step) for step in rel]
    grids = np.meshgrid(*(np.arange(-e, e + 1) for e in extents), indexing="ij", sparse=True)
    total = sum((g * step) ** 2 for g, step in zip(grids, rel, strict=True))
    return np.asarray(total <= float(radius) ** 2)


def _rank(image, family, radius, inner, rel, be: Backend):
    footprint = ball_footprint(radius, rel)
    grown, within = grow(inner, tuple((n - 1) // 2 for n in footprint.shape), image.shape)
    x = image[grown]
    fp = be.xp.asarray(footprint)
    if family == "median":
        out = be.ndi.median_filter(x, footprint=fp, mode="reflect")
    elif family == "minimum":
        out = be.ndi.minimum_filter(x, footprint=fp, mode="reflect")
    else:
        out = be.ndi.maximum_filter(x, footprint=fp, mode="reflect")
    return out[within]


# -- Gabor -------------------------------------------------------------------------------------


def gabor_kernel(wavelength: float, theta: float, rel_yx: Sequence[float] = (1.0, 1.0)):
    """Return the complex 2-D Gabor kernel ``(ky, kx)`` of the ``gabor`` family.

    ``skimage.filters.gabor_kernel(1 / wavelength, theta)`` (bandwidth 1, ``n_stds`` 3)
    with the offsets measured in finest-axis voxels: ``x = dx * rel_x``,
    ``y = dy * rel_y``. With ``rel_yx = (1, 1)`` it is scikit-image's kernel.
    """
    frequency = 1.0 / float(wavelength)
    sigma = gabor_sigma(wavelength)
    y0, x0 = gabor_half_sizes(wavelength, theta, rel_yx)
    y, x = np.meshgrid(
        np.arange(-y0, y0 + 1) * rel_yx[0],
        np.arange(-x0, x0 + 1) * rel_yx[1],
        indexing="ij",
        sparse=True,
    )
    ct, st = math.cos(theta), math.sin(theta)
    rotx = x * ct + y * st
    roty = -x * st + y * ct
    g = np.empty(np.broadcast_shapes(rotx.shape, roty.shape), dtype=np.complex128)
    np.exp(
        -0.5 * (rotx**2 / sigma**2 + roty**2 / sigma**2) + 1j * (2 * np.pi * frequency * rotx),
        out=g,
    )
    g *= 1 / (2 * np.pi * sigma * sigma)
    return g


def _gabor(image, wavelength, inner, rel, be: Backend):
    """``|I * g_theta|`` per yx plane, in float64, for each orientation."""
    ndim = image.ndim
    for k, theta in enumerate(gabor_orientations()):
        kernel = gabor_kernel(wavelength, theta, rel[-2:])
        margin = (0,) * (ndim - 2) + tuple((n - 1) // 2 for n in kernel.shape)
        grown, within = grow(inner, margin, image.shape)
        x = be.xp.asarray(image[grown], dtype=np.float64)
        kernel = kernel.reshape((1,) * (ndim - 2) + kernel.shape)
        real = be.ndi.convolve(x, be.xp.asarray(np.ascontiguousarray(kernel.real)), mode="reflect")
        imag = be.ndi.convolve(x, be.xp.asarray(np.ascontiguousarray(kernel.imag)), mode="reflect")
        yield k, be.xp.hypot(real[within], imag[within]).astype(np.float32)
