"""``gabor``: magnitude of the complex Gabor response per yx plane, at fixed orientations.

The kernel is ``skimage.filters.gabor_kernel(1 / wavelength, theta)`` (bandwidth
:data:`GABOR_BANDWIDTH`, ``n_stds`` :data:`GABOR_N_STDS`) at :data:`GABOR_ORIENTATIONS`
orientations, its offsets measured in finest-axis voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tiledseg.features.family import BuiltinFamily, Region, Values, grow

if TYPE_CHECKING:
    from tiledseg.features.backend import Backend

#: Gabor: orientations ``k * 180 / GABOR_ORIENTATIONS`` degrees, k = 0, 1, ...
GABOR_ORIENTATIONS = 4
#: Gabor: bandwidth in octaves (scikit-image's default); sigma = 0.56 wavelength.
GABOR_BANDWIDTH = 1.0
#: Gabor: the envelope is cut at this many standard deviations (scikit-image's default).
GABOR_N_STDS = 3.0


def gabor_sigma(wavelength: float) -> float:
    """Return the Gaussian envelope's standard deviation of a Gabor filter of ``wavelength``.

    As ``skimage.filters.gabor_kernel`` with ``frequency = 1 / wavelength`` and
    ``bandwidth = GABOR_BANDWIDTH`` (about 0.56 wavelength for one octave).
    """
    b = GABOR_BANDWIDTH
    prefactor = 1.0 / math.pi * math.sqrt(math.log(2) / 2.0) * (2.0**b + 1) / (2.0**b - 1)
    return prefactor / (1.0 / float(wavelength))


def gabor_orientations() -> tuple[float, ...]:
    """Return the Gabor orientations in radians: ``k * pi / GABOR_ORIENTATIONS``."""
    return tuple(k * math.pi / GABOR_ORIENTATIONS for k in range(GABOR_ORIENTATIONS))


def gabor_half_sizes(wavelength: float, theta: float, rel_yx: Sequence[float]) -> tuple[int, int]:
    """Return the (y, x) half-sizes in voxels of the Gabor kernel at one orientation.

    scikit-image's box, ``ceil(max(|n s cos t|, |n s sin t|, 1))``, measured in
    finest-axis voxels and divided by the relative spacing of the y and x axes.
    """
    reach = GABOR_N_STDS * gabor_sigma(wavelength)
    extent = max(abs(reach * math.cos(theta)), abs(reach * math.sin(theta)), 1.0)
    return (math.ceil(extent / rel_yx[0]), math.ceil(extent / rel_yx[1]))


def gabor_kernel(
    wavelength: float, theta: float, rel_yx: Sequence[float] = (1.0, 1.0)
) -> np.ndarray:
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


class Gabor(BuiltinFamily):
    """``|I * g_theta|`` per yx plane, in float64, for each orientation.

    A volume is filtered plane by plane (a ``(1, ky, kx)`` kernel), so it reaches
    nothing across planes.
    """

    name = "gabor"
    scale = "wavelength"

    def n_outputs(self, ndim: int) -> int:
        """Return :data:`GABOR_ORIENTATIONS`: one value per orientation."""
        return GABOR_ORIENTATIONS

    def margin(self, scale: float, rel: Sequence[float]) -> tuple[int, ...]:
        """Return 0 across planes and the largest kernel half-size along y and x."""
        sizes = [gabor_half_sizes(scale, theta, rel[-2:]) for theta in gabor_orientations()]
        return (0,) * (len(rel) - 2) + tuple(max(axis) for axis in zip(*sizes, strict=True))

    def describe_component(self, component: int) -> str:
        """Return the orientation in degrees, ``theta=<degrees>``."""
        return f"theta={component * 180 / GABOR_ORIENTATIONS:g}"

    def values(
        self, image: Any, scale: float, *, inner: Region, rel: Sequence[float], be: Backend
    ) -> Values:
        """Yield the magnitude of the response at each orientation on the block."""
        ndim = image.ndim
        for k, theta in enumerate(gabor_orientations()):
            kernel = gabor_kernel(scale, theta, rel[-2:])
            margin = (0,) * (ndim - 2) + tuple((n - 1) // 2 for n in kernel.shape)
            grown, within = grow(inner, margin, image.shape)
            x = be.xp.asarray(image[grown], dtype=np.float64)
            kernel = kernel.reshape((1,) * (ndim - 2) + kernel.shape)
            real, imag = (
                be.ndi.convolve(x, be.xp.asarray(np.ascontiguousarray(part)), mode="reflect")
                for part in (kernel.real, kernel.imag)
            )
            yield k, be.xp.hypot(real[within], imag[within]).astype(np.float32)


FAMILY = Gabor()
