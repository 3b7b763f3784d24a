"""Per-block feature kernels.

:func:`block_features` is a pure function of one haloed block: it returns the
feature stack of the block's own voxels, ``(n_features, *block_shape)`` float32.
Training and prediction both call it, so a voxel's features are the same bits in
both, whatever the tiling.

Each family is an object (:class:`~tiledseg.features.family.Family`) whose module in
:mod:`tiledseg.features.families` holds its kernel; the engine here asks the bank
for its families and writes what they yield where the layout puts it. What each
family computes (``G_s`` is a Gaussian of standard deviation ``s`` cut at
:data:`~tiledseg.features.family.TRUNCATE` sigma, boundary mode ``reflect`` at the
true edges of the volume; ``d_a`` a derivative along axis ``a``):

- ``gaussian_smoothing``: ``G_s * I``
- ``laplacian_of_gaussian``: ``sum_a d_a d_a G_s * I`` (as ``scipy.ndimage.gaussian_laplace``)
- ``gaussian_gradient_magnitude``: ``sqrt(sum_a (d_a G_s * I)^2)`` (as
  ``scipy.ndimage.gaussian_gradient_magnitude``)
- ``difference_of_gaussians``: ``G_s * I - G_{0.66 s} * I``
- ``structure_tensor_eigenvalues``: eigenvalues, largest first, of
  ``G_{0.5 s} * (d_a G_s * I)(d_b G_s * I)``
- ``hessian_of_gaussian_eigenvalues``: eigenvalues, largest first, of ``d_a d_b G_s * I``
- these six are :class:`~tiledseg.features.family.DerivativeFamily` objects: they
  name the derivatives they need and combine them; the derivatives are computed once
  per scale for all of them (:class:`ScaleTree`)
- the families after these six (Sobel, local statistics, rank filters, Gabor) and
  plug-ins (:mod:`tiledseg.features.plugins`) compute their own values, one family
  and scale at a time, on the block grown by their margin
- ``in_2d`` families: the same kernels on each yx plane of a volume
- an extra channel's raw value, before its filtered features if any

Derivatives are exact derivative-of-Gaussian kernels (not finite differences),
computed as a tree of separable 1-D passes that shares the passes common to
several derivatives. Each pass along an axis runs on the region the later steps
still need and crops that axis right after, so only the first pass sees the
whole halo. Axes are visited in scipy's order (0 first) and intermediates are
float32 as in ``scipy.ndimage.gaussian_filter``, so on an isotropic volume the
smoothing, Laplacian, gradient magnitude and difference of Gaussians equal
scipy's to the bit. On numpy blocks the 1-D passes and the eigenvalues run as
compiled kernels (:mod:`tiledseg.features._kernels`, about 2-3x faster) that do
scipy's and numpy's arithmetic in the same order: the same bits as
``scipy.ndimage.gaussian_filter1d`` and :func:`_closed_form`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tiledseg.features.backend import Backend, get_backend
from tiledseg.features.bank import FeatureBank, relative_spacing
from tiledseg.features.family import TRUNCATE, DerivativeFamily, Family, Region, grow, unit

__all__ = ["ScaleTree", "block_features", "symmetric_eigenvalues"]


def block_features(
    haloed: Any,
    *,
    bank: FeatureBank,
    inner: Region,
    spacing: Sequence[float] | None = None,
) -> Any:
    """Compute the features of one block from the block read with its halo.

    Parameters
    ----------
    haloed : array, shape (channels, *spatial)
        The block and its halo. Where the block touches the edge of the volume the
        halo is absent on that side, and the filters' own boundary mode applies,
        exactly as on the whole volume. The last ``bank.extra_channels`` channels
        are extra inputs (their raw values come first in their features).
    bank : FeatureBank
        The families and scales to compute.
    inner : tuple of slice
        Where the block lies inside ``haloed`` (spatial axes only).
    spacing : sequence of float, optional
        Voxel spacing per spatial axis (isotropic if omitted).

    Returns
    -------
    array, shape (n_features, *block_shape), float32
        Features in the order of ``bank.feature_names``.
    """
    be = get_backend(haloed)
    ndim = haloed.ndim - 1
    n_channels = haloed.shape[0]
    rel = relative_spacing(spacing if spacing is not None else (1.0,) * ndim)
    inner = tuple(slice(*s.indices(n)[:2]) for s, n in zip(inner, haloed.shape[1:], strict=True))
    block_shape = tuple(s.stop - s.start for s in inner)
    layout, per_channel = _layout(bank, ndim)
    out = be.xp.empty((bank.n_features(ndim=ndim, n_channels=n_channels), *block_shape), np.float32)
    planar = {f: s for f, s in bank.in_2d.items() if ndim == 3}
    volumetric = {
        f: tuple(x for x in s if x not in planar.get(f, ())) for f, s in bank.families.items()
    }
    volumetric = {f: s for f, s in volumetric.items() if s}
    base = 0
    for channel in range(n_channels):
        image = be.xp.asarray(haloed[channel], dtype=np.float32)
        if be.name == "numpy" and not image.flags.writeable:
            # a float32 .npy block is a read-only view of its memory map: copied once here,
            # not by each compiled pass that takes it (they are compiled for writeable
            # arrays)
            image = image.copy()
        if channel >= n_channels - bank.extra_channels:
            out[base] = image[inner]
            base += 1
        if not bank.filtered(channel, n_channels):
            continue
        for family, sigma, k, value in _family_values(image, volumetric, inner, rel, bank, be):
            out[base + layout[family, sigma] + k] = value
        if planar:
            # ilastik's "compute in 2D": the same kernels on each plane of the block
            for z in range(inner[0].start, inner[0].stop):
                values = _family_values(image[z], planar, inner[1:], rel[1:], bank, be)
                for family, sigma, k, value in values:
                    out[base + layout[family, sigma] + k, z - inner[0].start] = value
        base += per_channel
    return out


def _layout(bank: FeatureBank, ndim: int) -> tuple[dict[tuple[str, float], int], int]:
    """Return the offset, within one filtered channel, of each (family, scale), and the total."""
    offsets = {}
    position = 0
    for family, scales in bank.families.items():
        for sigma in scales:
            offsets[family, sigma] = position
            position += bank.components(family, ndim, sigma)
    return offsets, position


def _family_values(
    image: Any,
    families: dict[str, tuple[float, ...]],
    inner: Region,
    rel: Sequence[float],
    bank: FeatureBank,
    be: Backend,
) -> Iterator[tuple[str, float, int, Any]]:
    """Yield ``(family, scale, component, values on the block)`` of ``families``.

    The families drawn from Gaussian derivatives come first, one scale at a time, each
    scale's derivatives computed once for all of them; then every other family, one
    family and scale at a time.
    """
    by_scale: dict[float, list[DerivativeFamily]] = defaultdict(list)
    alone: list[tuple[Family, tuple[float, ...]]] = []
    for name, scales in families.items():
        family = bank.family(name)
        if isinstance(family, DerivativeFamily):
            for sigma in scales:
                by_scale[sigma].append(family)
        else:
            alone.append((family, scales))
    for sigma, members in sorted(by_scale.items()):
        for family, k, value in _tree_values(image, sigma, members, inner, rel, be):
            yield family.name, sigma, k, value
    for family, scales in alone:
        for scale in scales:
            for k, value in family.values(image, scale, inner=inner, rel=rel, be=be):
                yield family.name, scale, k, value


def _tree_values(
    image: Any,
    sigma: float,
    families: Sequence[DerivativeFamily],
    inner: Region,
    rel: Sequence[float],
    be: Backend,
) -> Iterator[tuple[DerivativeFamily, int, Any]]:
    """Yield ``(family, component, values)`` of ``families``, all from one tree at ``sigma``.

    The tree is freed when the last family is done, before the next scale's is made.
    """
    tree = ScaleTree(image, sigma, families, inner, rel, be)
    for family in families:
        for k, value in family.combine(tree):
            yield family, k, value


class ScaleTree:
    """The Gaussian derivatives of one image at one scale that some families share.

    Each :class:`~tiledseg.features.family.DerivativeFamily` at the scale names the
    derivative orders it needs and how far beyond the block it needs them; the union
    of the orders is computed once (:func:`_derivatives`), on the block grown by the
    largest of those margins, and the families combine them with the helpers here.

    Parameters
    ----------
    image : float32 array
        One channel of the haloed block (spatial axes only).
    sigma : float
        The scale, in finest-axis voxels.
    families : sequence of DerivativeFamily
        The families computed from the tree.
    inner : tuple of slice
        The block inside ``image``.
    rel : sequence of float
        Relative spacing of the axes (1 along the finest axis).
    be : Backend
        The array and ndimage namespaces of ``image``.
    """

    def __init__(
        self,
        image: Any,
        sigma: float,
        families: Sequence[DerivativeFamily],
        inner: Region,
        rel: Sequence[float],
        be: Backend,
    ) -> None:
        self.image, self.inner, self.rel, self.be = image, inner, rel, be
        self.ndim = ndim = image.ndim
        #: The standard deviation along each axis, in voxels of that axis.
        self.sigmas = tuple(sigma / step for step in rel)
        #: The upper triangle of a symmetric matrix, in row order.
        self.pairs = [(a, b) for a in range(ndim) for b in range(a, ndim)]
        orders = set().union(*(family.orders(ndim) for family in families))
        margins = [family.tree_margin(self.sigmas) for family in families]
        margin = tuple(max(along) for along in zip(*margins, strict=True))
        #: The region the derivatives are computed on, and the block inside it.
        self.target, self.in_target = grow(inner, margin, image.shape)
        self.derivatives = _derivatives(image, self.sigmas, sorted(orders), self.target, be)

    def unit(self, *axes: int) -> tuple[int, ...]:
        """Return the order differentiating once along each of ``axes`` (none: the blur)."""
        return unit(self.ndim, *axes)

    def on_target(self, order: tuple[int, ...]) -> Any:
        """Return the derivative of ``order`` on the whole target region."""
        return self.derivatives[order]

    def on_block(self, order: tuple[int, ...]) -> Any:
        """Return the derivative of ``order`` on the block."""
        return self.derivatives[order][self.in_target]

    def scaled(self, value: Any, *axes: int) -> Any:
        """Return a derivative along ``axes`` per finest-axis voxel (float32 division)."""
        factor = math.prod(self.rel[a] for a in axes)
        return value if factor == 1.0 else value / np.float32(factor)

    def smoothed(self, x: Any, sigmas: Sequence[float], target: Region) -> Any:
        """Return ``x`` blurred with per-axis ``sigmas``, computed on ``target`` only."""
        order = self.unit()
        return _derivatives(x, sigmas, [order], target, self.be)[order]

    def eigenvalues(self, elements: Sequence[Any]) -> list[Any]:
        """Return the eigenvalues, largest first, of the matrices of ``elements``."""
        return symmetric_eigenvalues(elements, self.ndim, xp=self.be.xp)


def _derivatives(x, sigmas, orders, target, be: Backend, axis: int = 0) -> dict:
    """Gaussian derivatives of ``x`` of the given orders, on ``target`` only.

    One 1-D pass per distinct prefix of the orders: the pass along ``axis`` is
    shared by every order with the same prefix, and its result is cropped to the
    target along ``axis`` before the next axis is filtered. The compiled passes
    compute every order along ``axis`` of one input in one sweep.
    """
    if axis == x.ndim:
        return dict.fromkeys(orders, x)
    groups: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for order in orders:
        groups[order[axis]].append(order)
    result = {}
    passes = _gaussian_passes(x, sigmas[axis], sorted(groups), axis, target[axis], be)
    for (_, members), y in zip(sorted(groups.items()), passes, strict=True):
        result.update(_derivatives(y, sigmas, members, target, be, axis + 1))
    return result


#: Which kernels compute numpy blocks: ``"numba"`` (:mod:`tiledseg.features._kernels`: the
#: 1-D passes and the closed-form eigenvalues, each the reference's arithmetic in a faster
#: loop, equal to it to the bit) or ``"scipy"`` (the reference: ``scipy.ndimage``'s
#: passes and :func:`_closed_form` on numpy arrays). Private: the switch
#: tests/test_feature_kernels.py and benchmarks/block_kernels.py compare with, not an option.
_KERNELS = "numba"


def _gaussian_passes(x, sigma: float, orders: list[int], axis: int, crop: slice, be: Backend):
    """Return ``gaussian_filter1d`` of ``x`` along ``axis`` for each of ``orders``, cropped.

    The passes are float32 with ``reflect`` boundaries, cropped to ``crop`` along ``axis``.

    On numpy blocks one compiled pass computes every order, on the cropped outputs only;
    scipy (or cupyx) computes each order on the whole axis, cropped after.
    """
    if be.name == "numpy" and _KERNELS == "numba":
        # numba is imported and the kernels compiled or loaded on the first block only
        from tiledseg.features import _kernels

        passes = _kernels.gaussian_passes(x, sigma, orders, axis, crop, truncate=TRUNCATE)
        if passes is not None:
            return passes
    # lazily, one order at a time: the whole-axis outputs are never all held at once
    return (
        be.ndi.gaussian_filter1d(
            x, sigma, axis=axis, order=o, output=np.float32, mode="reflect", truncate=TRUNCATE
        )[(slice(None),) * axis + (crop,)]
        for o in orders
    )


#: Voxels per slab of the closed-form eigenvalues: a dozen float64 temporaries of
#: this size stay in cache instead of costing ~12x the block in memory.
_EIGEN_SLAB = 1 << 16


def symmetric_eigenvalues(elements: Sequence[Any], ndim: int, *, xp: Any = np) -> list[Any]:
    """Eigenvalues, largest first, of a field of symmetric 2x2 or 3x3 matrices.

    Closed forms, elementwise, in float64 (the 3x3 case is the trigonometric
    solution of the characteristic cubic): several times faster than
    ``numpy.linalg.eigvalsh`` on stacked matrices, and the same for any tiling.
    The field is processed in slabs along its first axis, so the float64
    temporaries never exceed a slab.

    Parameters
    ----------
    elements : sequence of arrays
        Upper-triangle elements in row order: ``(a00, a01, a11)`` in 2D,
        ``(a00, a01, a02, a11, a12, a22)`` in 3D, all of one shape.
    ndim : {2, 3}
    xp : module
        Array namespace (numpy or a compatible one).

    Returns
    -------
    list of float32 arrays
    """
    if ndim not in (2, 3):
        raise ValueError(f"eigenvalues of {ndim}x{ndim} matrices are not supported")
    elements = [xp.asarray(v) for v in elements]
    shape = elements[0].shape
    out = [xp.empty(shape, dtype=np.float32) for _ in range(ndim)]
    if _compiled_eigenvalues(elements, xp):
        from tiledseg.features import _kernels

        _kernels.symmetric_eigenvalues_into(elements, out)
        return out
    if not shape or elements[0].size == 0:
        for target, value in zip(out, _closed_form(elements, ndim, xp), strict=True):
            target[...] = value
        return out
    step = max(1, _EIGEN_SLAB // max(1, elements[0][0].size))
    for start in range(0, shape[0], step):
        part = slice(start, start + step)
        values = _closed_form([v[part] for v in elements], ndim, xp)
        for target, value in zip(out, values, strict=True):
            target[part] = value
    return out


def _compiled_eigenvalues(elements: list[Any], xp: Any) -> bool:
    """Return whether the compiled kernel takes this field.

    It takes float32 numpy fields of 2 or 3 axes (what :func:`block_features` makes);
    anything else takes :func:`_closed_form`.
    """
    return (
        _KERNELS == "numba"
        and xp is np
        and all(type(v) is np.ndarray and v.dtype == np.float32 for v in elements)
        and elements[0].ndim in (2, 3)
        and len({v.shape for v in elements}) == 1
    )


def _closed_form(elements: Sequence[Any], ndim: int, xp: Any) -> list[Any]:
    e = [xp.asarray(v, dtype=np.float64) for v in elements]
    if ndim == 2:
        a, b, c = e
        mean = (a + c) * 0.5
        half_gap = (a - c) * 0.5
        # not hypot: libm's runs ~20x slower than a square root, which is correctly rounded
        # on every backend; squares of float32-range values cannot overflow float64
        radius = xp.sqrt(half_gap * half_gap + b * b)
        return [mean + radius, mean - radius]
    a, b, c, d, f, g = e  # a b c / b d f / c f g
    q = (a + d + g) / 3.0
    aq, dq, gq = a - q, d - q, g - q
    p = xp.sqrt((aq * aq + dq * dq + gq * gq + 2.0 * (b * b + c * c + f * f)) / 6.0)
    inv = 1.0 / xp.where(p > 0, p, 1.0)
    # det((A - qI) / p) / 2, clipped against rounding just outside [-1, 1]
    det = (aq * (dq * gq - f * f) - b * (b * gq - f * c) + c * (b * f - dq * c)) * (inv**3)
    phi = xp.arccos(xp.clip(det * 0.5, -1.0, 1.0)) / 3.0
    largest = q + 2.0 * p * xp.cos(phi)
    smallest = q + 2.0 * p * xp.cos(phi + 2.0 * math.pi / 3.0)
    middle = 3.0 * q - largest - smallest
    return [largest, middle, smallest]
