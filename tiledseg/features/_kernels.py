"""The feature pass's hot kernels, compiled by numba, equal to the bit to what they replace.

:func:`gaussian_passes` is ``scipy.ndimage.gaussian_filter1d(x, sigma, axis, order,
output=float32, mode="reflect", truncate)`` cropped along ``axis``, for a float32 ``x``
and several orders at once. Per output voxel the kernels do the float64 operations of
scipy's ``NI_Correlate1D`` for an odd symmetric (antisymmetric) kernel, in its order:
``acc = x[i] * w[0]``, then for ``m = r, ..., 1``: ``acc += (x[i - m] + x[i + m]) * w[m]``
(``-`` when antisymmetric), then a cast to float32. They are compiled without fast-math,
so LLVM neither reassociates the sum nor fuses a multiply and an add. The speed comes
from the loop order alone: the taps are the outer loop and the voxels the inner one, so
each tap is a vectorised sweep over contiguous float64 rows instead of a dependency chain
per voxel over a gathered line; the input is read and converted once for all the orders;
and only the cropped outputs are computed.

:func:`symmetric_eigenvalues_into` is :func:`tiledseg.features.filters._closed_form`'s
arithmetic fused per voxel, with numpy's own ``power``, ``arccos`` and ``cos`` calls kept
on slabs (numpy may use vectorised versions of these whose last bit differs from the C
library's that compiled code calls); the 2x2 case needs only a square root, correctly
rounded everywhere, and runs in one kernel.

This module imports numba: :mod:`tiledseg.features.filters` imports it on first use
only, and :func:`_kernels` compiles (or loads from numba's cache) the kernels once, under
a lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from scipy.ndimage._filters import _gaussian_kernel1d

__all__ = ["gaussian_passes", "reflect_index", "symmetric_eigenvalues_into", "taps"]

#: Columns of a row-wise pass computed together: the float64 ring of input rows (2r + 1
#: rows of 2 KiB) stays in L1/L2 while every output row is computed from it.
_CHUNK = 256

#: Sweeps run over widths padded to a multiple of this (two AVX-512 vectors): LLVM's
#: vector loop then covers every voxel, and no scalar remainder loop runs per tap. The
#: padding lanes compute values that are never stored.
_LANES = 16


@numba.njit(nogil=True, cache=True, inline="always")
def _padded(n):  # pragma: no cover
    return (n + _LANES - 1) // _LANES * _LANES


# The sweeps take 1-D contiguous views indexed from 0 by a range: numba's negative-index
# wraparound then provably never applies and LLVM vectorises the loop (with offsets into
# one array it did not, and the passes ran slower than scipy's). Each expression keeps
# scipy's order of operations; two taps in one sweep, ``(acc + t_m) + t_(m-1)``, is the
# same sum and reads and writes the accumulators half as often.
@numba.njit(nogil=True, cache=True, inline="always")
def _convert(target, row):  # pragma: no cover
    for q in range(row.shape[0]):
        target[q] = np.float64(row[q])


@numba.njit(nogil=True, cache=True, inline="always")
def _start(acc, centre, w):  # pragma: no cover
    for q in range(acc.shape[0]):
        acc[q] = centre[q] * w


@numba.njit(nogil=True, cache=True, inline="always")
def _two_taps(acc, lo, hi, w, lo2, hi2, w2, antisymmetric):  # pragma: no cover
    if antisymmetric:
        for q in range(acc.shape[0]):
            acc[q] = acc[q] + (lo[q] - hi[q]) * w + (lo2[q] - hi2[q]) * w2
    else:
        for q in range(acc.shape[0]):
            acc[q] = acc[q] + (lo[q] + hi[q]) * w + (lo2[q] + hi2[q]) * w2


@numba.njit(nogil=True, cache=True, inline="always")
def _one_tap(acc, lo, hi, w, antisymmetric):  # pragma: no cover
    if antisymmetric:
        for q in range(acc.shape[0]):
            acc[q] += (lo[q] - hi[q]) * w
    else:
        for q in range(acc.shape[0]):
            acc[q] += (lo[q] + hi[q]) * w


@numba.njit(nogil=True, cache=True, inline="always")
def _store(target, acc):  # pragma: no cover
    for q in range(target.shape[0]):
        target[q] = np.float32(acc[q])


@numba.njit(nogil=True, cache=True, inline="always")
def _fill_ring(ring, plane, source, n_rows, q0, q1):  # pragma: no cover
    """Convert the first ``n_rows`` source rows of ``plane[:, q0:q1]`` into the ring."""
    for t in range(n_rows):
        _convert(ring[t % ring.shape[0]], plane[source[t], q0:q1])


@numba.njit(nogil=True, cache=True)
def along_middle(x, taps, antisymmetric, source, out):  # pragma: no cover
    """Filter ``x`` (P, N, Q) along its middle axis with K kernels into ``out`` (K, P, M, Q).

    ``taps[k]`` holds kernel ``k``'s half taps (``taps[k, m]`` weighs the inputs at
    distance ``m``; one radius r for all), ``antisymmetric[k]`` its kind. ``source[t]`` is
    the row of ``x`` (after reflection at its ends) at position ``t - r`` of the output
    rows. Each input row, converted once to float64 (as scipy's line buffer), enters a
    ring of the last 2r + 1 rows; every tap of every kernel is then a vector sweep over
    contiguous rows of the ring.
    """
    n_k, n_p, n_out, n_q = out.shape
    r = taps.shape[1] - 1
    n_ring = 2 * r + 1
    width = min(_CHUNK, _padded(n_q))
    ring = np.zeros((n_ring, width))
    acc = np.empty((n_k, width))
    for p in range(n_p):
        for q0 in range(0, n_q, _CHUNK):
            q1 = min(q0 + _CHUNK, n_q)
            wp = min(width, _padded(q1 - q0))
            _fill_ring(ring, x[p], source, 2 * r, q0, q1)
            for i in range(n_out):
                t = i + 2 * r
                _convert(ring[t % n_ring], x[p, source[t], q0:q1])
                centre = ring[(i + r) % n_ring, :wp]
                for k in range(n_k):
                    _start(acc[k, :wp], centre, taps[k, 0])
                for m in range(r, 1, -2):
                    lo = ring[(i + r - m) % n_ring, :wp]
                    hi = ring[(i + r + m) % n_ring, :wp]
                    lo2 = ring[(i + r - m + 1) % n_ring, :wp]
                    hi2 = ring[(i + r + m - 1) % n_ring, :wp]
                    for k in range(n_k):
                        w, w2 = taps[k, m], taps[k, m - 1]
                        _two_taps(acc[k, :wp], lo, hi, w, lo2, hi2, w2, antisymmetric[k])
                if r % 2:
                    lo = ring[(i + r - 1) % n_ring, :wp]
                    hi = ring[(i + r + 1) % n_ring, :wp]
                    for k in range(n_k):
                        _one_tap(acc[k, :wp], lo, hi, taps[k, 1], antisymmetric[k])
                for k in range(n_k):
                    _store(out[k, p, i, q0:q1], acc[k])


@numba.njit(nogil=True, cache=True)
def along_last(x, taps, antisymmetric, source, out):  # pragma: no cover
    """Filter each row of ``x`` (P, N) along its contiguous axis into ``out`` (K, P, M).

    As :func:`along_middle`; each row is first copied, reflected, into a float64 line of
    ``M + 2r`` values (scipy's line buffer), and the taps sweep that line, all outputs of
    the row at once.
    """
    n_k, n_p, n_out = out.shape
    n_line = x.shape[1]
    r = taps.shape[1] - 1
    n_pad = _padded(n_out)
    line = np.zeros(n_pad + 2 * r)
    acc = np.empty((n_k, n_pad))
    # the positions inside the row (``source[t] == t + first``) are copied with a vector
    # loop; only those reflected at an end go through ``source``
    first = source[r] - r if n_out > 0 else 0  # source[r] is the first output, inside
    inside_lo = min(max(0, -first), n_out + 2 * r)
    inside_hi = max(min(n_out + 2 * r, n_line - first), inside_lo)
    for p in range(n_p):
        row = x[p]
        for t in range(inside_lo):
            line[t] = np.float64(row[source[t]])
        _convert(line[inside_lo:inside_hi], row[inside_lo + first : inside_hi + first])
        for t in range(inside_hi, n_out + 2 * r):
            line[t] = np.float64(row[source[t]])
        for k in range(n_k):
            _start(acc[k], line[r : r + n_pad], taps[k, 0])
        for m in range(r, 1, -2):
            lo = line[r - m : r - m + n_pad]
            hi = line[r + m : r + m + n_pad]
            lo2 = line[r - m + 1 : r - m + 1 + n_pad]
            hi2 = line[r + m - 1 : r + m - 1 + n_pad]
            for k in range(n_k):
                _two_taps(acc[k], lo, hi, taps[k, m], lo2, hi2, taps[k, m - 1], antisymmetric[k])
        if r % 2:
            for k in range(n_k):
                _one_tap(acc[k], line[r - 1 :], line[r + 1 :], taps[k, 1], antisymmetric[k])
        for k in range(n_k):
            _store(out[k, p], acc[k])


#: One third of a turn, as ``2.0 * math.pi / 3.0`` evaluates in the numpy closed form.
_THIRD_TURN = 2.0 * math.pi / 3.0


@numba.njit(nogil=True, cache=True)
def _eigen3_prepare(a, b, c, d, f, g, q, p, inv, num):  # pragma: no cover
    """Mean, scale, ``1 / scale`` and the unscaled determinant of ``A - qI``, per voxel.

    Inputs and outputs are flat, contiguous and of one length (the loop vectorises).
    Each expression is the numpy closed form's, operation for operation.
    """
    for s in range(q.shape[0]):
        a_, b_, c_ = np.float64(a[s]), np.float64(b[s]), np.float64(c[s])
        d_, f_, g_ = np.float64(d[s]), np.float64(f[s]), np.float64(g[s])
        q_ = (a_ + d_ + g_) / 3.0
        aq, dq, gq = a_ - q_, d_ - q_, g_ - q_
        p_ = np.sqrt((aq * aq + dq * dq + gq * gq + 2.0 * (b_ * b_ + c_ * c_ + f_ * f_)) / 6.0)
        q[s] = q_
        p[s] = p_
        inv[s] = 1.0 / (p_ if p_ > 0 else 1.0)
        num[s] = aq * (dq * gq - f_ * f_) - b_ * (b_ * gq - f_ * c_) + c_ * (b_ * f_ - dq * c_)


@numba.njit(nogil=True, cache=True)
def _eigen3_half_det(num, inv3):  # pragma: no cover
    """``clip(num * inv3 * 0.5, -1, 1)`` into ``num`` (NaN passes, as in ``numpy.clip``)."""
    for s in range(num.shape[0]):
        h = num[s] * inv3[s] * 0.5
        num[s] = -1.0 if h < -1.0 else (1.0 if h > 1.0 else h)


@numba.njit(nogil=True, cache=True)
def _eigen3_angles(angle, other):  # pragma: no cover
    """``phi = angle / 3`` into ``angle``, ``phi + 2 pi / 3`` into ``other``."""
    for s in range(angle.shape[0]):
        phi = angle[s] / 3.0
        angle[s] = phi
        other[s] = phi + _THIRD_TURN


@numba.njit(nogil=True, cache=True)
def _eigen3_finish(q, p, cos_phi, cos_other, largest, middle, smallest):  # pragma: no cover
    """Write the three eigenvalues, largest first, cast to float32."""
    for s in range(q.shape[0]):
        high = q[s] + 2.0 * p[s] * cos_phi[s]
        low = q[s] + 2.0 * p[s] * cos_other[s]
        largest[s] = np.float32(high)
        middle[s] = np.float32(3.0 * q[s] - high - low)
        smallest[s] = np.float32(low)


@numba.njit(nogil=True, cache=True)
def _eigen2(a, b, c, larger, smaller):  # pragma: no cover
    """Write ``mean +- sqrt(half_gap**2 + b**2)`` in float64, cast to float32.

    A square root is correctly rounded everywhere, so this is the numpy form's value to
    the bit.
    """
    for s in range(larger.shape[0]):
        half_gap = (np.float64(a[s]) - np.float64(c[s])) * 0.5
        off = np.float64(b[s])
        radius = math.sqrt(half_gap * half_gap + off * off)
        mean = (np.float64(a[s]) + np.float64(c[s])) * 0.5
        larger[s] = np.float32(mean + radius)
        smaller[s] = np.float32(mean - radius)


_F4 = "f4[::1]"
_F8 = "f8[::1]"

#: Each kernel's one signature: every call passes exactly these types.
_SIGNATURES = {
    along_middle: "(f4[:, :, ::1], f8[:, ::1], b1[::1], i8[::1], f4[:, :, :, ::1])",
    along_last: "(f4[:, ::1], f8[:, ::1], b1[::1], i8[::1], f4[:, :, ::1])",
    _eigen3_prepare: f"({', '.join([_F4] * 6 + [_F8] * 4)})",
    _eigen3_half_det: f"({_F8}, {_F8})",
    _eigen3_angles: f"({_F8}, {_F8})",
    _eigen3_finish: f"({', '.join([_F8] * 4 + [_F4] * 3)})",
    _eigen2: f"({', '.join([_F4] * 5)})",
}

_COMPILE_LOCK = threading.Lock()
_COMPILED: SimpleNamespace | None = None


def _kernels() -> SimpleNamespace:
    """Every kernel, compiled or loaded from numba's cache once, by one thread.

    Blocks computed at once on threads must not compile together (they would write
    numba's cache together; ``tiledseg.forest._compiled`` compiles under a lock too). Compiling
    is then switched off, so a call with other types raises instead of compiling outside
    the lock (callers hand over float32, C-contiguous, writeable arrays).
    """
    global _COMPILED
    if _COMPILED is None:
        with _COMPILE_LOCK:
            if _COMPILED is None:
                for kernel, signature in _SIGNATURES.items():
                    kernel.compile(signature)
                    kernel.disable_compile()
                names = {k.py_func.__name__.lstrip("_"): k for k in _SIGNATURES}
                _COMPILED = SimpleNamespace(**names)
    return _COMPILED


#: Voxels per slab of the eigenvalues: the float64 buffers (four of 128 KiB) stay in L2.
_EIGEN_SLAB = 1 << 14


def symmetric_eigenvalues_into(elements: list[np.ndarray], out: list[np.ndarray]) -> None:
    """Write the eigenvalues of :func:`tiledseg.features.filters.symmetric_eigenvalues`.

    Parameters
    ----------
    elements : list of float32 arrays
        The upper-triangle elements (3 for 2x2, 6 for 3x3 matrices), 2-D or 3-D, one shape.
    out : list of float32 C-contiguous arrays
        The eigenvalues, largest first, written here (each of the elements' shape).

    Notes
    -----
    The arithmetic runs in the kernels, fused per voxel, in the numpy form's order; the
    power, ``arccos`` and ``cos`` stay numpy's own calls on float64 slabs,
    since numpy may use its own vectorised versions of them (SVML on AVX-512) whose last
    bit differs from the C library's that compiled code calls. So the values are the
    numpy form's to the bit, on any machine, and its ~30 full-size float64
    temporaries become a few buffers of one slab.
    """
    k = _kernels()
    if elements[0].ndim == 2:
        elements = [v[np.newaxis] for v in elements]
        out = [v[np.newaxis] for v in out]
    n_cols = elements[0].shape[2]
    rows = max(1, _EIGEN_SLAB // max(1, n_cols))
    size = rows * n_cols
    buffers = [np.empty(size) for _ in range(4)]
    for z in range(elements[0].shape[0]):
        for start in range(0, elements[0].shape[1], rows):
            part = (z, slice(start, start + rows))
            # a slab of a cropped field is copied contiguous (cheap next to the rest), so
            # the kernels' loops are flat and vectorise
            views = [np.require(v[part], requirements=("C", "W")).reshape(-1) for v in elements]
            targets = [v[part].reshape(-1) for v in out]  # views: ``out`` is C-contiguous
            n = views[0].size
            if n == 0:
                continue
            q, p, t, u = (b[:n] for b in buffers)
            if len(views) == 6:
                k.eigen3_prepare(*views, q, p, t, u)
                np.power(t, 3, out=t)  # what ``inv**3`` calls
                k.eigen3_half_det(u, t)
                np.arccos(u, out=u)
                k.eigen3_angles(u, t)
                np.cos(u, out=u)
                np.cos(t, out=t)
                k.eigen3_finish(q, p, u, t, *targets)
            else:
                k.eigen2(*views, *targets)


@lru_cache(maxsize=256)
def taps(sigma: float, order: int, truncate: float) -> tuple[np.ndarray, int]:
    """Half the taps of scipy's Gaussian kernel and its symmetry, as ``NI_Correlate1D`` sees them.

    Parameters
    ----------
    sigma : float
    order : int
        Order of the derivative of the Gaussian.
    truncate : float
        The kernel is cut at ``truncate`` sigma (radius ``int(truncate * sigma + 0.5)``).

    Returns
    -------
    taps : float64 array, shape (r + 1,)
        ``taps[m]`` weighs the pair of inputs at distance ``m`` (the weight scipy applies:
        the one on the low side of the reversed kernel ``gaussian_filter1d`` correlates with).
    symmetry : {1, -1, 0}
        1 symmetric, -1 antisymmetric, 0 neither (scipy's test: within ``DBL_EPSILON``).
    """
    radius = int(truncate * float(sigma) + 0.5)
    # scipy's own kernel (a private function; tests/test_feature_kernels.py checks that the
    # passes stay equal to the public gaussian_filter1d), reversed as gaussian_filter1d does
    weights = np.ascontiguousarray(_gaussian_kernel1d(sigma, order, radius)[::-1], np.float64)
    eps = np.finfo(np.float64).eps
    low, high = weights[radius - 1 :: -1] if radius else weights[:0], weights[radius + 1 :]
    if bool(np.all(np.abs(high - low) <= eps)):
        symmetry = 1
    elif bool(np.all(np.abs(high + low) <= eps)):
        symmetry = -1
    else:
        symmetry = 0
    # left writeable: a read-only array is another numba type than the compiled signature's
    return np.ascontiguousarray(weights[radius::-1]), symmetry


def reflect_index(start: int, stop: int, length: int) -> np.ndarray:
    """Return indices into ``range(length)`` of ``start .. stop - 1`` extended by reflection.

    scipy's ``reflect`` (``d c b a | a b c d | d c b a``), repeated as often as needed when
    the positions reach further than ``length`` beyond an end.
    """
    period = np.arange(start, stop, dtype=np.int64) % (2 * length)
    return np.where(period < length, period, 2 * length - 1 - period)


def gaussian_passes(
    x: np.ndarray, sigma: float, orders: Sequence[int], axis: int, crop: slice, *, truncate: float
) -> list[np.ndarray] | None:
    """``gaussian_filter1d(x, sigma, axis, order, float32, "reflect", truncate)[crop on axis]``.

    Every order of ``orders`` in one pass over ``x``.

    Parameters
    ----------
    x : float32 array
        Any layout (a non-contiguous or read-only one is copied first).
    sigma, truncate
        As ``scipy.ndimage.gaussian_filter1d``.
    orders : sequence of int
        Orders of the derivative of the Gaussian.
    axis : int
    crop : slice
        Where along ``axis`` the outputs are wanted (step 1); only there are they computed.

    Returns
    -------
    list of float32 arrays, C-contiguous, one per order, or None
        None where scipy would not take its symmetric or antisymmetric path for one of the
        kernels, or ``x`` is not float32: the caller then uses scipy.
    """
    kernels = [taps(float(sigma), int(order), float(truncate)) for order in orders]
    if x.dtype != np.float32 or any(symmetry == 0 for _, symmetry in kernels):
        return None
    # a read-only block (a float32 .npy is a read-only memory map) is copied: the kernels
    # are compiled for writeable arrays only
    x = np.require(x, requirements=("C", "W"))
    axis = axis % x.ndim
    length = x.shape[axis]
    start, stop, step = crop.indices(length)
    if step != 1:
        raise ValueError(f"crop must have step 1, got {crop}")
    stop = max(start, stop)
    before = math.prod(x.shape[:axis])
    after = math.prod(x.shape[axis + 1 :])
    out = np.empty((len(orders), before, stop - start, after), np.float32)
    if out.size:
        radius = kernels[0][0].shape[0] - 1
        weights = np.array([half for half, _ in kernels]).reshape(len(orders), radius + 1)
        antisymmetric = np.array([symmetry < 0 for _, symmetry in kernels])
        source = reflect_index(start - radius, stop + radius, length)
        compiled = _kernels()
        if after == 1:
            compiled.along_last(
                x.reshape(before, length), weights, antisymmetric, source, out[..., 0]
            )
        else:
            compiled.along_middle(
                x.reshape(before, length, after), weights, antisymmetric, source, out
            )
    shape = (*x.shape[:axis], stop - start, *x.shape[axis + 1 :])
    return list(out.reshape(len(orders), *shape))
