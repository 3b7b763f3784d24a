"""Per-block feature kernels.

:func:`block_features` is a pure function of one haloed block: it returns the
feature stack of the block's own voxels, ``(n_features, *block_shape)`` float32.
Training and prediction both call it, so a voxel's features are the same bits in
both, whatever the tiling.

What each family computes (``G_s`` is a Gaussian of standard deviation ``s`` cut
at :data:`~tiledseg.features.bank.TRUNCATE` sigma, boundary mode ``reflect`` at
the true edges of the volume; ``d_a`` a derivative along axis ``a``):

- ``gaussian_smoothing``: ``G_s * I``
- ``laplacian_of_gaussian``: ``sum_a d_a d_a G_s * I`` (as ``scipy.ndimage.gaussian_laplace``)
- ``gaussian_gradient_magnitude``: ``sqrt(sum_a (d_a G_s * I)^2)`` (as
  ``scipy.ndimage.gaussian_gradient_magnitude``)
- ``difference_of_gaussians``: ``G_s * I - G_{0.66 s} * I``
- ``structure_tensor_eigenvalues``: eigenvalues, largest first, of
  ``G_{0.5 s} * (d_a G_s * I)(d_b G_s * I)``
- ``hessian_of_gaussian_eigenvalues``: eigenvalues, largest first, of ``d_a d_b G_s * I``
- the families after these six (Sobel, local statistics, rank filters, Gabor) are
  computed by :mod:`tiledseg.features.extra`, one family and scale at a time;
  plug-ins (:mod:`tiledseg.features.plugins`) on the block grown by their halo
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

from tiledseg.arrays import to_host
from tiledseg.features.backend import Backend, get_backend
from tiledseg.features.bank import (
    DOG_RATIO,
    ILASTIK_FAMILIES,
    ST_OUTER_RATIO,
    TRUNCATE,
    FeatureBank,
    kernel_radius,
    relative_spacing,
)
from tiledseg.features.extra import extra_features, grow

__all__ = ["block_features", "symmetric_eigenvalues"]

Region = tuple[slice, ...]


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
    planar = {f: s for f, s in bank.families.items() if f in bank.in_2d and ndim == 3}
    volumetric = {f: s for f, s in bank.families.items() if f not in planar}
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
            position += bank.components(family, ndim)
    return offsets, position


def _family_values(
    image: Any,
    families: dict[str, tuple[float, ...]],
    inner: Region,
    rel: Sequence[float],
    bank: FeatureBank,
    be: Backend,
) -> Iterator[tuple[str, float, int, Any]]:
    """Yield ``(family, scale, component, values on the block)`` of ``families``."""
    by_scale: dict[float, list[str]] = defaultdict(list)
    for family, scales in families.items():
        if family in ILASTIK_FAMILIES:
            for sigma in scales:
                by_scale[sigma].append(family)
    for sigma, members in sorted(by_scale.items()):
        for family, k, value in _scale_features(image, sigma, members, inner, rel, be):
            yield family, sigma, k, value
    for family, scales in families.items():
        if family in ILASTIK_FAMILIES:
            continue
        plugin = bank.plugins.get(family)
        for sigma in scales:
            if plugin is None:
                values = extra_features(image, family, sigma, inner, rel, be)
            else:
                values = _plugin_values(image, plugin, sigma, inner, rel)
            for k, value in values:
                yield family, sigma, k, value


def _plugin_values(image, plugin, scale, inner, rel) -> Iterator[tuple[int, Any]]:
    """A plug-in's outputs on the block, computed on the block grown by its declared halo.

    A plug-in is numpy code (docs/plugins.md): a GPU block is copied to the host for
    it, and its outputs are copied back.
    """
    grown, within = grow(inner, (plugin.reach(scale),) * image.ndim, image.shape)
    xp = get_backend(image).xp
    # the block is shared by every later family and scale: the plug-in gets a read-only view
    view = to_host(image[grown]).view()
    view.flags.writeable = False
    values = plugin.compute(view, scale, rel)
    for k in range(values.shape[0]):
        yield k, xp.asarray(values[k][within])


def _unit(ndim: int, *axes: int) -> tuple[int, ...]:
    order = [0] * ndim
    for a in axes:
        order[a] += 1
    return tuple(order)


def _scale_features(image, sigma, families, inner, rel, be: Backend) -> Iterator[tuple]:
    """Yield ``(family, component, values)`` of every family at one scale.

    The Gaussian derivative passes are shared by all families at the scale.
    """
    ndim = image.ndim
    sigmas = tuple(sigma / step for step in rel)
    pairs = [(a, b) for a in range(ndim) for b in range(a, ndim)]
    orders: set[tuple[int, ...]] = set()
    if {"gaussian_smoothing", "difference_of_gaussians"} & set(families):
        orders.add(_unit(ndim))
    if {"gaussian_gradient_magnitude", "structure_tensor_eigenvalues"} & set(families):
        orders.update(_unit(ndim, a) for a in range(ndim))
    if {"laplacian_of_gaussian", "hessian_of_gaussian_eigenvalues"} & set(families):
        orders.update(_unit(ndim, a, a) for a in range(ndim))
    if "hessian_of_gaussian_eigenvalues" in families:
        orders.update(_unit(ndim, a, b) for a, b in pairs)

    # The structure tensor smooths gradient products, so its gradients are needed
    # an outer radius beyond the block; everything else only on the block.
    outer = tuple(ST_OUTER_RATIO * s for s in sigmas)
    if "structure_tensor_eigenvalues" in families:
        margin = tuple(kernel_radius(s) for s in outer)
    else:
        margin = (0,) * ndim
    target, in_target = grow(inner, margin, image.shape)
    deriv = _derivatives(image, sigmas, sorted(orders), target, be)

    def on_block(order: tuple[int, ...]):
        return deriv[order][in_target]

    def scaled(value, *axes: int):
        factor = math.prod(rel[a] for a in axes)
        return value if factor == 1.0 else value / np.float32(factor)

    for family in families:
        if family == "gaussian_smoothing":
            yield (family, 0, on_block(_unit(ndim)))
        elif family == "difference_of_gaussians":
            small = _derivatives(
                image, tuple(DOG_RATIO * s for s in sigmas), [_unit(ndim)], inner, be
            )[_unit(ndim)]
            yield (family, 0, on_block(_unit(ndim)) - small)
        elif family == "laplacian_of_gaussian":
            total = scaled(on_block(_unit(ndim, 0, 0)), 0, 0).copy()
            for a in range(1, ndim):
                total += scaled(on_block(_unit(ndim, a, a)), a, a)
            yield (family, 0, total)
        elif family == "gaussian_gradient_magnitude":
            total = None
            for a in range(ndim):
                d = scaled(on_block(_unit(ndim, a)), a)
                if total is None:
                    total = d * d
                else:
                    total += d * d
            yield (family, 0, be.xp.sqrt(total))
        elif family == "hessian_of_gaussian_eigenvalues":
            elements = [scaled(on_block(_unit(ndim, a, b)), a, b) for a, b in pairs]
            for k, value in enumerate(symmetric_eigenvalues(elements, ndim, xp=be.xp)):
                yield (family, k, value)
        elif family == "structure_tensor_eigenvalues":
            grads = [scaled(deriv[_unit(ndim, a)], a) for a in range(ndim)]
            elements = []
            for a, b in pairs:
                product = grads[a] * grads[b]
                elements.append(
                    _derivatives(product, outer, [_unit(ndim)], in_target, be)[_unit(ndim)]
                )
            for k, value in enumerate(symmetric_eigenvalues(elements, ndim, xp=be.xp)):
                yield (family, k, value)


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
    """``gaussian_filter1d`` of ``x`` along ``axis`` (float32, reflect) for each of ``orders``,
    cropped to ``crop`` along ``axis``.

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
    """Whether the compiled kernel takes this field: float32 numpy fields of 2 or 3 axes
    (what :func:`block_features` makes; anything else takes :func:`_closed_form`)."""
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
