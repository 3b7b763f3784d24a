"""The families beyond ilastik's six: references on whole arrays, names, halos, tiling.

Sobel and the rank filters must equal scipy.ndimage to the bit, Gabor scikit-image's
``filters.gabor``; the local statistics are compared with ``uniform_filter`` and a
brute-force window variance. Tiling is exact for all of them (hypothesis, uneven blocks).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage as ndi
from test_filters import make_image, whole
from test_tiling import check_case

from tiledseg.blocks import Block
from tiledseg.features import FAMILIES, FeatureBank, block_features
from tiledseg.features.bank import (
    GABOR_ORIENTATIONS,
    ILASTIK_FAMILIES,
    TRUNCATE,
    ball_extent,
    box_radius,
    relative_spacing,
)
from tiledseg.features.extra import ball_footprint, gabor_kernel
from tiledseg.testing import strategies as tst
from tiledseg.testing.strategies import TilingCase

NEW = FAMILIES[len(ILASTIK_FAMILIES) :]


def test_new_families_come_after_the_ilastik_ones():
    assert FAMILIES[:6] == ILASTIK_FAMILIES
    assert NEW == (
        "sobel",
        "local_mean",
        "local_variance",
        "local_std",
        "median",
        "minimum",
        "maximum",
        "gabor",
    )


# -- Sobel -----------------------------------------------------------------------------------


def sobel_reference(f, sigma, spacing=None):
    rel = relative_spacing(spacing or (1.0,) * f.ndim)
    smooth = ndi.gaussian_filter(f, [sigma / r for r in rel], mode="reflect", truncate=TRUNCATE)
    ds = [ndi.sobel(smooth, axis=a, mode="reflect") for a in range(f.ndim)]
    ds = [d if r == 1.0 else d / np.float32(r) for d, r in zip(ds, rel, strict=True)]
    total = ds[0] * ds[0]
    for d in ds[1:]:
        total = total + d * d
    return np.stack([*ds, np.sqrt(total)])


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sigma", [0.7, 1.6, 3.5])
def test_sobel_is_scipy_sobel_of_gaussian(ndim, sigma):
    image = make_image(ndim)
    out = whole(image, FeatureBank({"sobel": [sigma]}))
    assert out.shape == (ndim + 1, *image.shape)
    assert_array_equal(out, sobel_reference(image.astype(np.float32), sigma), strict=True)


@pytest.mark.parametrize("ndim", [2, 3])
def test_sobel_at_a_tiny_scale_is_sobel_of_the_raw_image(ndim):
    image = make_image(ndim, seed=1)
    f = image.astype(np.float32)
    out = whole(image, FeatureBank({"sobel": [0.1]}))
    for a in range(ndim):
        assert_array_equal(out[a], ndi.sobel(f, axis=a, mode="reflect"), strict=True)


@pytest.mark.parametrize("spacing", [(2.0, 1.0), (1.0, 3.0, 1.5)])
def test_sobel_with_anisotropic_spacing(spacing):
    image = make_image(len(spacing), seed=2)
    out = whole(image, FeatureBank({"sobel": [1.6]}), spacing=spacing)
    ref = sobel_reference(image.astype(np.float32), 1.6, spacing)
    assert_array_equal(out, ref, strict=True)


# -- local statistics ------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("radius", [0.7, 1.6, 3.5])
def test_local_mean_is_uniform_filter(ndim, radius):
    image = make_image(ndim, seed=3)
    out = whole(image, FeatureBank({"local_mean": [radius]}))
    size = 2 * box_radius(radius) + 1
    ref = ndi.uniform_filter(image.astype(np.float64), size, mode="reflect")
    assert out.dtype == np.float32
    # atol: scipy's running sum leaves ~1e-14 where the window sums to exactly 0
    assert_allclose(out[0], ref, rtol=1e-6, atol=1e-9)


def window_variance(f64, size):
    return ndi.generic_filter(f64, np.var, size=size, mode="reflect")


@pytest.mark.parametrize("radius", [0.7, 1.6, 3.5])
def test_local_variance_and_std_are_the_window_variance(radius):
    image = make_image(2, seed=4)
    f = image.astype(np.float64)
    bank = FeatureBank({"local_variance": [radius], "local_std": [radius]})
    out = whole(image, bank)
    ref = window_variance(f, 2 * box_radius(radius) + 1)
    assert ref.max() > 1
    assert_allclose(out[0], ref, rtol=1e-5, atol=1e-6 * ref.max())
    assert_allclose(out[1], np.sqrt(ref), rtol=1e-5, atol=1e-6 * np.sqrt(ref.max()))


def test_local_variance_in_3d_and_anisotropic():
    image = make_image(3, seed=5)
    f = image.astype(np.float64)
    spacing = (2.0, 1.0, 1.0)
    out = whole(image, FeatureBank({"local_variance": [2.0]}), spacing=spacing)
    size = [2 * box_radius(2.0 / r) + 1 for r in relative_spacing(spacing)]
    assert size == [3, 5, 5]
    ref = ndi.uniform_filter(f * f, size, mode="reflect") - ndi.uniform_filter(f, size) ** 2
    assert_allclose(out[0], ref, rtol=1e-5, atol=1e-6 * ref.max())


def test_local_variance_survives_a_large_offset():
    """Small variations on a large mean: float64 sums keep the variance (no cancellation)."""
    rng = np.random.default_rng(6)
    image = (1e4 + rng.standard_normal((30, 31))).astype(np.float32)
    out = whole(image, FeatureBank({"local_variance": [1.6]}))
    ref = window_variance(image.astype(np.float64), 2 * box_radius(1.6) + 1)
    assert_allclose(out[0], ref, rtol=1e-5)
    constant = whole(np.full((9, 9), 1e4, np.float32), FeatureBank({"local_std": [1.0]}))
    assert_array_equal(constant, np.zeros_like(constant))


# -- rank filters ----------------------------------------------------------------------------


def test_ball_footprint_is_skimage_disk_and_ball():
    from skimage.morphology import ball, disk

    for r in (1, 2, 3):
        assert_array_equal(ball_footprint(r, (1.0, 1.0)), disk(r).astype(bool))
        assert_array_equal(ball_footprint(r, (1.0, 1.0, 1.0)), ball(r).astype(bool))
    fp = ball_footprint(3.5, (2.0, 1.0))
    assert fp.shape == (2 * ball_extent(3.5, 2.0) + 1, 7) == (3, 7)
    assert ball_footprint(0.7, (1.0, 1.0)).sum() == 1  # below one voxel: the voxel itself


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("radius", [1.0, 2.5])
@pytest.mark.parametrize(
    ("family", "reference"),
    [
        ("median", ndi.median_filter),
        ("minimum", ndi.minimum_filter),
        ("maximum", ndi.maximum_filter),
    ],
)
def test_rank_filters_are_scipys_with_a_ball(ndim, radius, family, reference):
    image = make_image(ndim, dtype=np.float32, seed=7)
    out = whole(image, FeatureBank({family: [radius]}))
    fp = ball_footprint(radius, (1.0,) * ndim)
    assert_array_equal(out[0], reference(image, footprint=fp, mode="reflect"), strict=True)


def test_rank_filter_with_anisotropic_spacing():
    image = make_image(3, dtype=np.float32, seed=8)
    spacing = (3.0, 1.0, 1.5)
    out = whole(image, FeatureBank({"median": [2.0]}), spacing=spacing)
    fp = ball_footprint(2.0, relative_spacing(spacing))
    assert fp.shape == (1, 5, 3)
    assert_array_equal(out[0], ndi.median_filter(image, footprint=fp, mode="reflect"))


# -- Gabor -----------------------------------------------------------------------------------


@pytest.mark.parametrize("wavelength", [3.0, 5.0, 8.0])
def test_gabor_kernel_is_skimages(wavelength):
    from skimage.filters import gabor_kernel as sk_kernel

    for k in range(GABOR_ORIENTATIONS):
        theta = k * math.pi / GABOR_ORIENTATIONS
        assert_array_equal(gabor_kernel(wavelength, theta), sk_kernel(1 / wavelength, theta))


@pytest.mark.parametrize("wavelength", [3.0, 6.0])
def test_gabor_is_the_magnitude_of_skimage_gabor(wavelength):
    from skimage.filters import gabor

    image = make_image(2, seed=9)
    out = whole(image, FeatureBank({"gabor": [wavelength]}))
    assert out.shape == (GABOR_ORIENTATIONS, *image.shape)
    f = image.astype(np.float32).astype(np.float64)
    for k in range(GABOR_ORIENTATIONS):
        real, imag = gabor(
            f, 1 / wavelength, theta=k * math.pi / GABOR_ORIENTATIONS, mode="reflect"
        )
        assert_array_equal(out[k], np.hypot(real, imag).astype(np.float32))


def test_gabor_in_3d_is_per_yx_plane():
    image = make_image(3, seed=10)
    out = whole(image, FeatureBank({"gabor": [4.0]}), spacing=(5.0, 1.0, 1.0))
    for z in range(image.shape[0]):
        assert_array_equal(out[:, z], whole(image[z], FeatureBank({"gabor": [4.0]})))


def test_gabor_with_anisotropic_yx_spacing_samples_the_kernel_physically():
    iso = gabor_kernel(4.0, 0.0)  # y offsets -7..7
    kernel = gabor_kernel(4.0, 0.0, (2.0, 1.0))  # y voxels twice as long: offsets -8, -6 .. 8
    assert iso.shape == (15, 15)
    assert kernel.shape == (9, 15)
    assert_array_equal(kernel[1:-1], iso[1::2])


# -- names, halos, tiling --------------------------------------------------------------------


def test_names_and_counts():
    bank = FeatureBank({f: [2.0] for f in NEW})
    names = [str(n) for n in bank.feature_names(ndim=3, n_channels=1)]
    assert names[:4] == [
        "sobel(sigma=2, channel=0, axis=0)",
        "sobel(sigma=2, channel=0, axis=1)",
        "sobel(sigma=2, channel=0, axis=2)",
        "sobel(sigma=2, channel=0, magnitude)",
    ]
    assert names[4:10] == [
        "local_mean(radius=2, channel=0)",
        "local_variance(radius=2, channel=0)",
        "local_std(radius=2, channel=0)",
        "median(radius=2, channel=0)",
        "minimum(radius=2, channel=0)",
        "maximum(radius=2, channel=0)",
    ]
    assert names[10:] == [f"gabor(wavelength=2, channel=0, theta={t})" for t in (0, 45, 90, 135)]
    assert bank.n_features(ndim=3, n_channels=2) == 2 * len(names) == 2 * 14
    assert bank.n_features(ndim=2, n_channels=1) == 13


def test_multiscale_gaussian_is_an_alias():
    assert FeatureBank({"multiscale_gaussian": [1.0, 2.0]}) == FeatureBank(
        {"gaussian_smoothing": [1.0, 2.0]}
    )


def test_halo_values():
    assert FeatureBank({"sobel": [1.6]}).halo((1.0, 1.0)) == (6 + 1, 6 + 1)
    assert FeatureBank({"local_std": [1.6]}).halo((2.0, 1.0)) == (1, 2)
    assert FeatureBank({"median": [3.5]}).halo((2.0, 1.0, 1.0)) == (1, 3, 3)
    # gabor: ceil(3 * 0.5622 * wavelength) in y and x, nothing across planes
    assert FeatureBank({"gabor": [4.0]}).halo((1.0, 1.0, 1.0)) == (0, 7, 7)
    assert FeatureBank({"gabor": [4.0]}).halo((1.0, 2.0, 1.0)) == (0, 4, 7)


@pytest.mark.parametrize("family", NEW)
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 2.0)])
def test_halo_is_enough_and_not_more(family, spacing):
    """A centre block read with the halo is exact; with one voxel less along an axis, not."""
    bank = FeatureBank({family: [3.0]})
    halo = bank.halo(spacing)
    noise = np.random.default_rng(0).integers(0, 256, (60, 60)).astype(np.float32)
    region = (slice(25, 35), slice(25, 35))

    def block_with(image, h):
        read = tuple(slice(r.start - e, r.stop + e) for r, e in zip(region, h, strict=True))
        block = Block((0, 0), region, read)
        return block_features(
            image[block.read][None], bank=bank, inner=block.inner, spacing=spacing
        )

    for axis in range(2):
        image = noise
        if family in ("minimum", "maximum"):
            # a ramp along the axis puts the window's extreme at the footprint's tips
            image = noise + 300 * np.indices(noise.shape, dtype=np.float32)[axis]
        full = whole(image, bank, spacing=spacing)
        assert_array_equal(block_with(image, halo), full[(slice(None), *region)])
        short = list(halo)
        short[axis] -= 1
        assert not np.array_equal(block_with(image, short), full[(slice(None), *region)])


NEW_BANK = FeatureBank({f: [0.7, 2.0] for f in NEW})


@given(case=tst.tiling_cases(ndim=2, bank=tst.banks(families=NEW, scales=(0.7, 1.6, 3.0))))
@example(case=TilingCase((31, 29), 1, "uint8", NEW_BANK, (1.0, 1.0), (9, 29), seed=1))
@example(case=TilingCase((29, 26), 2, "float64", NEW_BANK, (2.0, 1.0), (6, 11), seed=2))
def test_new_families_tile_exactly_2d(case):
    check_case(case)


@given(
    case=tst.tiling_cases(ndim=3, max_side=16, bank=tst.banks(families=NEW, scales=(0.7, 1.6, 3.0)))
)
@example(case=TilingCase((13, 15, 17), 1, "float32", NEW_BANK, (1.0, 1.0, 1.0), (8, 9, 10), seed=3))
@example(case=TilingCase((12, 14, 16), 2, "uint8", NEW_BANK, (3.0, 1.0, 1.5), (3, 9, 7), seed=4))
def test_new_families_tile_exactly_3d(case):
    check_case(case)


def test_all_families_together_equal_each_family_alone():
    image = make_image(3, seed=11)
    together = whole(image, FeatureBank({f: [1.0, 2.0] for f in FAMILIES}))
    alone = np.concatenate([whole(image, FeatureBank({f: [1.0, 2.0]})) for f in FAMILIES])
    assert_array_equal(together, alone)
