"""The compiled feature kernels (tiledseg.features._kernels) against what they replace.

The 1-D passes must equal ``scipy.ndimage.gaussian_filter1d`` (and so ``correlate1d``) to the
bit, and the eigenvalues numpy's closed form (``filters._closed_form``) to the bit: then
``block_features`` is unchanged, and tiled == untiled stays exact.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy import ndimage as ndi

import tiledseg as ts
from tiledseg.features import FeatureBank, _kernels, filters
from tiledseg.features.bank import TRUNCATE, resolve_bank

SIGMAS = (0.3, 0.7, 1.6, 3.5, 6.0)  # radius 1 .. 21: more than the short axes below
ORDER_SETS = ((0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2), (2, 0))


def _scipy(x, sigma, order, axis, crop=slice(None)):
    y = ndi.gaussian_filter1d(
        x, sigma, axis=axis, order=order, output=np.float32, mode="reflect", truncate=TRUNCATE
    )
    return y[(slice(None),) * axis + (crop,)]


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 50 + 100).astype(np.float32)


@pytest.mark.parametrize("shape", [(23, 40), (9, 3, 35), (5, 17, 2)])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_passes_equal_gaussian_filter1d(shape, sigma):
    x = _image(shape)
    for axis in range(x.ndim):
        for orders in ORDER_SETS:
            got = _kernels.gaussian_passes(x, sigma, orders, axis, slice(None), truncate=TRUNCATE)
            assert len(got) == len(orders)
            for order, value in zip(orders, got, strict=True):
                assert value.dtype == np.float32
                assert value.flags.c_contiguous
                assert_array_equal(value, _scipy(x, sigma, order, axis), strict=True)


@pytest.mark.parametrize("sigma", [0.7, 3.5])
def test_passes_equal_correlate1d_with_scipys_weights(sigma):
    # the kernel gaussian_filter1d builds, reversed, through the public correlate1d
    x = _image((31, 26), seed=1)
    radius = int(TRUNCATE * sigma + 0.5)
    for order in (0, 1, 2):
        impulse = np.zeros(2 * radius + 1)
        impulse[radius] = 1.0
        weights = ndi.gaussian_filter1d(impulse, sigma, order=order, truncate=TRUNCATE)[::-1]
        expected = ndi.correlate1d(x, weights, axis=1, output=np.float32, mode="reflect")
        (got,) = _kernels.gaussian_passes(x, sigma, [order], 1, slice(None), truncate=TRUNCATE)
        assert_array_equal(got, expected)


@pytest.mark.parametrize("ndim", [2, 3])
def test_passes_on_a_crop_equal_the_cropped_whole(ndim):
    x = _image((30, 22, 27)[:ndim], seed=2)
    for axis in range(ndim):
        n = x.shape[axis]
        for crop in (slice(0, n), slice(5, n - 4), slice(0, 3), slice(n - 1, n), slice(7, 8)):
            got = _kernels.gaussian_passes(x, 1.6, (0, 1, 2), axis, crop, truncate=TRUNCATE)
            for order, value in zip((0, 1, 2), got, strict=True):
                assert_array_equal(value, _scipy(x, 1.6, order, axis, crop), strict=True)


def test_passes_take_non_contiguous_inputs():
    base = _image((20, 30, 26), seed=3)
    for x in (base[:, ::2], base.transpose(2, 0, 1), base[3:17, 4:25, 1:20], base[..., ::-1]):
        assert not x.flags.c_contiguous
        for axis in range(3):
            got = _kernels.gaussian_passes(x, 1.6, (0, 1), axis, slice(None), truncate=TRUNCATE)
            for order, value in zip((0, 1), got, strict=True):
                assert_array_equal(value, _scipy(x, 1.6, order, axis), strict=True)


def test_passes_keep_special_values():
    x = _image((15, 40), seed=4)
    x[3, 5], x[7, 20], x[9, 33] = np.nan, np.inf, -np.inf
    x[11] = 0.0
    for axis in (0, 1):
        got = _kernels.gaussian_passes(x, 1.6, (0, 1, 2), axis, slice(None), truncate=TRUNCATE)
        for order, value in zip((0, 1, 2), got, strict=True):
            assert_array_equal(value, _scipy(x, 1.6, order, axis))


def test_passes_leave_other_dtypes_to_scipy():
    x = np.zeros((4, 4))  # float64: scipy reads it without a float32 rounding
    assert _kernels.gaussian_passes(x, 1.0, [0], 0, slice(None), truncate=3.5) is None


def test_taps_symmetry_follows_the_order():
    for sigma in SIGMAS:
        for order, symmetry in ((0, 1), (1, -1), (2, 1)):
            half, found = _kernels.taps(sigma, order, TRUNCATE)
            assert found == symmetry
            assert half.shape == (int(TRUNCATE * sigma + 0.5) + 1,)


@pytest.mark.parametrize("length", [1, 2, 5])
def test_reflect_index_is_numpys_symmetric_padding_repeated(length):
    values = np.arange(length)
    pad = 3 * length + 2  # reflections on reflections
    expected = np.pad(values, pad, mode="symmetric")
    assert_array_equal(_kernels.reflect_index(-pad, length + pad, length), expected)


# -- eigenvalues -------------------------------------------------------------------------------


def _field(shape, n, seed):
    rng = np.random.default_rng(seed)
    elements = [(rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4)) for _ in range(n)]
    elements = [e.astype(np.float32) for e in elements]
    flat = [e.reshape(-1) for e in elements]
    if flat[0].size < 5:
        return elements
    # degenerate matrices: zero, multiples of the identity, repeated eigenvalues, NaN
    for e in flat:
        e[:3] = 0.0
    diagonal = (0, 3, 5) if n == 6 else (0, 2)
    for k in diagonal:
        flat[k][1] = 2.5
        flat[k][2] = -1e-3
    flat[0][3] = np.nan
    flat[-1][4] = np.inf
    return elements


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("shape", [(300, 211), (7, 130, 150), (1, 1), (2, 1, 5)])
def test_eigenvalues_equal_the_numpy_closed_form(monkeypatch, ndim, shape):
    elements = _field(shape, 3 if ndim == 2 else 6, seed=len(shape) + ndim)
    got = filters.symmetric_eigenvalues(elements, ndim)
    monkeypatch.setattr(filters, "_KERNELS", "scipy")
    with np.errstate(all="ignore"):  # numpy warns of the NaN and inf, the kernels do not
        expected = filters.symmetric_eigenvalues(elements, ndim)
    for value, reference in zip(got, expected, strict=True):
        assert_array_equal(value, reference, strict=True)


@pytest.mark.parametrize("ndim", [2, 3])
def test_eigenvalues_of_cropped_views(monkeypatch, ndim):
    big = _field((40, 50, 60), 3 if ndim == 2 else 6, seed=7)
    views = [e[3:30, 5:45, 2:50] for e in big]
    got = filters.symmetric_eigenvalues(views, ndim)
    monkeypatch.setattr(filters, "_KERNELS", "scipy")
    with np.errstate(all="ignore"):
        expected = filters.symmetric_eigenvalues(views, ndim)
    for value, reference in zip(got, expected, strict=True):
        assert_array_equal(value, reference, strict=True)


# -- block_features: unchanged -----------------------------------------------------------------


def _both(monkeypatch, haloed, bank, inner, spacing=None):
    got = filters.block_features(haloed, bank=bank, inner=inner, spacing=spacing)
    with monkeypatch.context() as patch:
        patch.setattr(filters, "_KERNELS", "scipy")
        expected = filters.block_features(haloed, bank=bank, inner=inner, spacing=spacing)
    return got, expected


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("spacing", [None, "anisotropic"])
def test_block_features_equal_the_scipy_path(monkeypatch, ndim, spacing):
    bank = resolve_bank("default")
    shape = (70, 83) if ndim == 2 else (30, 41, 37)
    image = np.clip(ndi.gaussian_filter(_image(shape, seed=5), 1.0), 0, 255)[np.newaxis]
    image = image.astype(np.float32)
    spacing = None if spacing is None else (2.0, 1.0, 0.7)[-ndim:]
    # a block in the middle (halo on every side) and the whole volume (edges reflect)
    for inner in ((slice(9, -9),) * ndim, (slice(None),) * ndim):
        got, expected = _both(monkeypatch, image, bank, inner, spacing)
        assert_array_equal(got, expected, strict=True)


def test_planar_families_equal_the_scipy_path(monkeypatch):
    bank = FeatureBank(
        {"hessian_of_gaussian_eigenvalues": [1.0], "structure_tensor_eigenvalues": [1.6]},
        in_2d=["hessian_of_gaussian_eigenvalues", "structure_tensor_eigenvalues"],
    )
    image = _image((6, 40, 33), seed=6)[np.newaxis]
    got, expected = _both(monkeypatch, image, bank, (slice(1, 5), slice(3, 30), slice(None)))
    assert_array_equal(got, expected, strict=True)


# -- compiled once -----------------------------------------------------------------------------


def test_threads_compile_the_kernels_once(monkeypatch):
    calls = []

    def counting(kernel):
        def compile(signature):
            calls.append(kernel)
            time.sleep(0.01)  # a slow compile: every thread arrives while it runs

        return compile

    for kernel in _kernels._SIGNATURES:
        monkeypatch.setattr(kernel, "compile", counting(kernel))
        monkeypatch.setattr(kernel, "disable_compile", lambda: None)
    monkeypatch.setattr(_kernels, "_COMPILED", None)
    barrier = threading.Barrier(6)
    results = []

    def first_block():
        barrier.wait()
        results.append(_kernels._kernels())

    threads = [threading.Thread(target=first_block) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(id, calls)) == sorted(map(id, _kernels._SIGNATURES))
    assert len({id(r) for r in results}) == 1


_FRESH_PROCESS = """
import threading, numpy as np
from tiledseg.features import block_features
from tiledseg.features.bank import resolve_bank
bank = resolve_bank("minimal")
image = np.random.default_rng(0).standard_normal((1, 20, 24, 22)).astype(np.float32)
out, errors = [], []
def run():
    try:
        out.append(block_features(image, bank=bank, inner=(slice(4, 16),) * 3))
    except Exception as error:
        errors.append(error)
threads = [threading.Thread(target=run) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
assert not errors, errors
assert all(np.array_equal(o, out[0]) for o in out)
"""


@pytest.mark.slow
def test_blocks_on_threads_compile_in_a_fresh_cache(tmp_path):
    # four blocks at once in a process whose numba cache is empty: one compiles, none fails
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", _FRESH_PROCESS], check=True, env=env, timeout=600)


def test_read_only_float32_images_are_filtered_and_predicted(tmp_path, phantom2d, small_bank):
    # a float32 .npy is opened as a read-only memory map: its blocks reach the kernels
    # read-only, and the kernels must take them as scipy did
    image = phantom2d.image.astype(np.float32)
    frozen = image.copy()
    frozen.flags.writeable = False
    bank = resolve_bank("default")
    inner = (slice(0, image.shape[0]), slice(0, image.shape[1]))
    assert_array_equal(
        filters.block_features(frozen[None], bank=bank, inner=inner),
        filters.block_features(image[None], bank=bank, inner=inner),
    )
    np.save(tmp_path / "image.npy", image)
    model = ts.train(
        tmp_path / "image.npy", phantom2d.scribbles, features=small_bank, cache_dir=None
    )
    ts.predict(tmp_path / "image.npy", model, out=tmp_path / "out.zarr", quiet=True)
    eigen = [np.ones((8, 8), np.float32) for _ in range(3)]
    for v in eigen:
        v.flags.writeable = False
    assert len(filters.symmetric_eigenvalues(eigen, 2)) == 2
