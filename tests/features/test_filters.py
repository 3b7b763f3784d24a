"""Feature kernels against reference implementations on whole arrays.

The plain families must equal scipy.ndimage to the bit (same kernels, same float32
intermediates, same axis order); the eigenvalue families are compared with
numpy.linalg.eigvalsh and scikit-image on matrices built from scipy derivatives.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import example, given
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage as ndi

from tiledseg.features import FeatureBank, block_features, symmetric_eigenvalues
from tiledseg.features.bank import DOG_RATIO, ST_OUTER_RATIO, TRUNCATE, relative_spacing
from tiledseg.testing import strategies as tst

SHAPES = {2: (37, 29), 3: (17, 19, 13)}
SIGMAS = (0.7, 1.6, 3.5)


def whole(image: np.ndarray, bank: FeatureBank, spacing=None) -> np.ndarray:
    """The kernel on the whole array as one block (channel axis added)."""
    return block_features(
        image[np.newaxis], bank=bank, inner=(slice(None),) * image.ndim, spacing=spacing
    )


def make_image(ndim: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A smooth-ish random image, so derivatives are not all noise."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(SHAPES[ndim]).astype(np.float32)
    image = ndi.gaussian_filter(noise, 1.5) * 400 + rng.standard_normal(SHAPES[ndim]) * 10 + 128
    if np.dtype(dtype).kind == "u":
        return np.clip(image, 0, 255).astype(dtype)
    return image.astype(dtype)


def G(f, sigma, order=0):
    """scipy's Gaussian (or Gaussian derivative) with the engine's truncation and boundary."""
    return ndi.gaussian_filter(f, sigma, order=order, mode="reflect", truncate=TRUNCATE)


def unit(ndim, *axes):
    order = [0] * ndim
    for a in axes:
        order[a] += 1
    return order


def pairs(ndim):
    return [(a, b) for a in range(ndim) for b in range(a, ndim)]


def eigvalsh_desc(elements, ndim):
    """Eigenvalues (largest first, leading axis) of the field given by upper-triangle elements."""
    shape = elements[0].shape
    m = np.empty((*shape, ndim, ndim), dtype=np.float64)
    for (a, b), e in zip(pairs(ndim), elements, strict=True):
        m[..., a, b] = m[..., b, a] = e
    return np.moveaxis(np.linalg.eigvalsh(m)[..., ::-1], -1, 0)


def hessian_elements(f, sigma, spacing=None):
    ndim = f.ndim
    rel = relative_spacing(spacing or (1.0,) * ndim)
    sig = [sigma / r for r in rel]
    return [G(f, sig, unit(ndim, a, b)) / np.float32(rel[a] * rel[b]) for a, b in pairs(ndim)]


def structure_elements(f, sigma, spacing=None):
    ndim = f.ndim
    rel = relative_spacing(spacing or (1.0,) * ndim)
    sig = [sigma / r for r in rel]
    grads = [G(f, sig, unit(ndim, a)) / np.float32(rel[a]) for a in range(ndim)]
    outer = [ST_OUTER_RATIO * s for s in sig]
    return [G(grads[a] * grads[b], outer) for a, b in pairs(ndim)]


def assert_eigen_close(actual, expected):
    scale = float(np.abs(expected).max())
    assert scale > 0, "the test image gives all-zero eigenvalues; it proves nothing"
    assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


# -- the four plain families: bit-exact with scipy -------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_gaussian_smoothing_is_scipy_gaussian_filter(ndim, sigma, dtype):
    image = make_image(ndim, dtype)
    out = whole(image, FeatureBank({"gaussian_smoothing": [sigma]}))
    ref = ndi.gaussian_filter(image.astype(np.float32), sigma, truncate=3.5)
    assert out.dtype == np.float32
    assert out.shape == (1, *image.shape)
    assert_array_equal(out[0], ref, strict=True)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_laplacian_of_gaussian_is_scipy_gaussian_laplace(ndim, sigma):
    image = make_image(ndim)
    out = whole(image, FeatureBank({"laplacian_of_gaussian": [sigma]}))
    ref = ndi.gaussian_laplace(image.astype(np.float32), sigma, truncate=3.5)
    assert_array_equal(out[0], ref, strict=True)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_gradient_magnitude_is_scipy_gaussian_gradient_magnitude(ndim, sigma):
    image = make_image(ndim)
    out = whole(image, FeatureBank({"gaussian_gradient_magnitude": [sigma]}))
    ref = ndi.gaussian_gradient_magnitude(image.astype(np.float32), sigma, truncate=3.5)
    assert_array_equal(out[0], ref, strict=True)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_difference_of_gaussians(ndim, sigma):
    image = make_image(ndim)
    f = image.astype(np.float32)
    out = whole(image, FeatureBank({"difference_of_gaussians": [sigma]}))
    ref = G(f, sigma) - G(f, DOG_RATIO * sigma)
    assert DOG_RATIO == 0.66
    assert_array_equal(out[0], ref, strict=True)


# -- eigenvalue families ---------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_hessian_eigenvalues_match_eigvalsh(ndim, sigma):
    image = make_image(ndim)
    out = whole(image, FeatureBank({"hessian_of_gaussian_eigenvalues": [sigma]}))
    expected = eigvalsh_desc(hessian_elements(image.astype(np.float32), sigma), ndim)
    assert out.shape == (ndim, *image.shape)
    assert np.all(np.diff(out, axis=0) <= 0), "eigenvalues must come largest first"
    assert_eigen_close(out, expected)


@pytest.mark.parametrize("ndim", [2, 3])
def test_hessian_eigenvalues_match_skimage(ndim):
    from skimage.feature import hessian_matrix_eigvals

    image = make_image(ndim, seed=3)
    sigma = 1.6
    out = whole(image, FeatureBank({"hessian_of_gaussian_eigenvalues": [sigma]}))
    elements = [e.astype(np.float64) for e in hessian_elements(image.astype(np.float32), sigma)]
    expected = hessian_matrix_eigvals(elements)
    assert expected.shape == out.shape
    assert_eigen_close(out, expected)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_structure_tensor_eigenvalues_match_eigvalsh(ndim, sigma):
    image = make_image(ndim, seed=4)
    out = whole(image, FeatureBank({"structure_tensor_eigenvalues": [sigma]}))
    expected = eigvalsh_desc(structure_elements(image.astype(np.float32), sigma), ndim)
    assert out.shape == (ndim, *image.shape)
    assert np.all(np.diff(out, axis=0) <= 0)
    assert out[-1].min() >= -1e-3 * out.max(), "a structure tensor is positive semi-definite"
    assert_eigen_close(out, expected)


# -- anisotropic spacing ---------------------------------------------------------------------

SPACINGS = {2: (2.0, 1.0), 3: (3.0, 1.0, 1.5)}


@pytest.mark.parametrize("ndim", [2, 3])
def test_anisotropic_spacing_scales_sigma_and_derivatives(ndim):
    spacing = SPACINGS[ndim]
    sigma = 1.6
    rel = relative_spacing(spacing)
    sig = [sigma * min(spacing) / s for s in spacing]
    image = make_image(ndim, seed=5)
    f = image.astype(np.float32)
    bank = FeatureBank(
        {
            "gaussian_smoothing": [sigma],
            "laplacian_of_gaussian": [sigma],
            "gaussian_gradient_magnitude": [sigma],
            "difference_of_gaussians": [sigma],
            "structure_tensor_eigenvalues": [sigma],
            "hessian_of_gaussian_eigenvalues": [sigma],
        }
    )
    out = whole(image, bank, spacing=spacing)
    names = bank.feature_names(ndim=ndim, n_channels=1)
    got = {}
    for name, value in zip(names, out, strict=True):
        got.setdefault(name.family, []).append(value)

    assert_array_equal(got["gaussian_smoothing"][0], G(f, sig), strict=True)
    assert_array_equal(
        got["difference_of_gaussians"][0],
        G(f, sig) - G(f, [DOG_RATIO * s for s in sig]),
        strict=True,
    )
    d2 = [G(f, sig, unit(ndim, a, a)) / np.float32(rel[a] ** 2) for a in range(ndim)]
    assert_allclose(got["laplacian_of_gaussian"][0], sum(d2), rtol=1e-5, atol=1e-4)
    d1 = [G(f, sig, unit(ndim, a)) / np.float32(rel[a]) for a in range(ndim)]
    assert_allclose(
        got["gaussian_gradient_magnitude"][0],
        np.sqrt(sum(d * d for d in d1)),
        rtol=1e-5,
        atol=1e-4,
    )
    assert_eigen_close(
        np.stack(got["hessian_of_gaussian_eigenvalues"]),
        eigvalsh_desc(hessian_elements(f, sigma, spacing), ndim),
    )
    assert_eigen_close(
        np.stack(got["structure_tensor_eigenvalues"]),
        eigvalsh_desc(structure_elements(f, sigma, spacing), ndim),
    )
    # and the spacing really changed something (the test would pass trivially otherwise)
    isotropic = whole(image, bank)
    assert not np.array_equal(isotropic, out)


def test_spacing_is_relative_to_the_finest_axis():
    image = make_image(3, seed=6)
    bank = FeatureBank({"gaussian_smoothing": [1.6], "hessian_of_gaussian_eigenvalues": [1.0]})
    assert_array_equal(
        whole(image, bank, spacing=(2.0, 1.0, 1.0)), whole(image, bank, spacing=(0.5, 0.25, 0.25))
    )
    assert_array_equal(whole(image, bank, spacing=(0.3, 0.3, 0.3)), whole(image, bank))


# -- stack layout ----------------------------------------------------------------------------


def test_stack_order_follows_feature_names_for_every_channel():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 255, size=(2, 21, 23)).astype(np.uint8)  # (channels, y, x)
    bank = FeatureBank(
        {
            "hessian_of_gaussian_eigenvalues": [1.0, 1.6],
            "gaussian_smoothing": [1.6, 0.7],
            "structure_tensor_eigenvalues": [1.0],
            "laplacian_of_gaussian": [1.0],
        }
    )
    out = block_features(image, bank=bank, inner=(slice(None), slice(None)))
    names = bank.feature_names(ndim=2, n_channels=2)
    assert out.shape == (len(names), 21, 23) == (bank.n_features(ndim=2, n_channels=2), 21, 23)
    per_channel = [whole(image[c], bank) for c in range(2)]
    assert_array_equal(out, np.concatenate(per_channel))
    for name, value in zip(names, out, strict=True):
        f = image[name.channel].astype(np.float32)
        if name.family == "gaussian_smoothing":
            assert_array_equal(value, G(f, name.sigma))
        elif name.family == "laplacian_of_gaussian":
            assert_array_equal(value, ndi.gaussian_laplace(f, name.sigma, truncate=3.5))
        elif name.family == "hessian_of_gaussian_eigenvalues":
            ref = eigvalsh_desc(hessian_elements(f, name.sigma), 2)[name.component]
            assert_allclose(value, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        else:
            ref = eigvalsh_desc(structure_elements(f, name.sigma), 2)[name.component]
            assert_allclose(value, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_inner_region_gives_the_block_of_the_whole_result():
    image = make_image(2, seed=8)
    bank = FeatureBank({"structure_tensor_eigenvalues": [1.0], "gaussian_smoothing": [1.6]})
    full = whole(image, bank)
    inner = (slice(9, 25), slice(10, 19))
    assert_array_equal(
        block_features(image[np.newaxis], bank=bank, inner=inner), full[(slice(None), *inner)]
    )


# -- closed-form eigenvalues -----------------------------------------------------------------


def _upper(m: np.ndarray, ndim: int) -> list[np.ndarray]:
    return [m[:, a, b] for a, b in pairs(ndim)]


def _check_eigenvalues(m: np.ndarray) -> None:
    ndim = m.shape[-1]
    got = np.stack(symmetric_eigenvalues(_upper(m, ndim), ndim))
    expected = np.linalg.eigvalsh(m)[:, ::-1].T
    scale = max(1.0, float(np.abs(m).max()))
    assert got.dtype == np.float32
    assert_allclose(got, expected, rtol=1e-5, atol=2e-5 * scale)


@given(m=tst.symmetric_matrices(2))
@example(m=np.zeros((2, 2, 2)))
@example(m=np.stack([4.0 * np.eye(2), -3.0 * np.eye(2), np.ones((2, 2)), np.diag([0.0, 5.0])]))
def test_symmetric_eigenvalues_2x2_match_eigvalsh(m):
    _check_eigenvalues(m)


@given(m=tst.symmetric_matrices(3))
@example(m=np.zeros((1, 3, 3)))
@example(m=np.stack([7.5 * np.eye(3), -2 * np.eye(3), 1e-3 * np.eye(3)]))
@example(m=np.stack([np.diag([1.0, 1.0, 2.0]), np.diag([3.0, -1.0, 3.0]), np.ones((3, 3))]))
def test_symmetric_eigenvalues_3x3_match_eigvalsh(m):
    _check_eigenvalues(m)


def test_symmetric_eigenvalues_of_a_field_keep_its_shape():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((6, 6, 3, 3))
    m = a + np.swapaxes(a, -1, -2)
    elements = [m[..., i, j] for i, j in pairs(3)]
    got = symmetric_eigenvalues(elements, 3)
    assert [g.shape for g in got] == [(6, 6)] * 3
    assert_allclose(
        np.stack(got), np.moveaxis(np.linalg.eigvalsh(m)[..., ::-1], -1, 0), rtol=1e-5, atol=1e-5
    )


def test_symmetric_eigenvalues_refuse_other_dimensions():
    with pytest.raises(ValueError, match="4x4"):
        symmetric_eigenvalues([np.zeros(1)] * 10, 4)


@pytest.mark.parametrize("ndim", [2, 3])
def test_constant_image_gives_finite_reference_eigenvalues(ndim):
    """Degenerate matrices everywhere (p = 0 in the closed form): no NaN, same as eigvalsh.

    A truncated second-derivative kernel does not sum to exactly 0 (scipy's neither), so the
    Hessian of a constant is a tiny multiple of the identity, not 0; the structure tensor is 0.
    """
    flat = np.full(SHAPES[ndim], 17, dtype=np.uint8)
    f = flat.astype(np.float32)
    hessian = whole(flat, FeatureBank({"hessian_of_gaussian_eigenvalues": [1.0]}))
    structure = whole(flat, FeatureBank({"structure_tensor_eigenvalues": [1.0]}))
    assert np.isfinite(hessian).all()
    assert_allclose(hessian, eigvalsh_desc(hessian_elements(f, 1.0), ndim), rtol=1e-5, atol=1e-7)
    assert_array_equal(structure, np.zeros_like(structure))


def test_all_families_together_equal_each_family_alone():
    """Shared derivative passes must not change any family's values."""
    image = make_image(3, seed=10)
    families = [
        "gaussian_smoothing",
        "laplacian_of_gaussian",
        "gaussian_gradient_magnitude",
        "difference_of_gaussians",
        "structure_tensor_eigenvalues",
        "hessian_of_gaussian_eigenvalues",
    ]
    together = whole(image, FeatureBank({f: [1.0, 1.6] for f in families}))
    alone = np.concatenate([whole(image, FeatureBank({f: [1.0, 1.6]})) for f in families])
    assert_array_equal(together, alone)


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(range(3), 2)))
def test_hessian_off_diagonal_uses_both_axes(a, b):
    """A pure x_a * x_b saddle has Hessian eigenvalues +-1 along those axes (checks pairing)."""
    grid = np.indices((21, 21, 21), dtype=np.float64) - 10
    image = (grid[a] * grid[b]).astype(np.float32)
    out = whole(image, FeatureBank({"hessian_of_gaussian_eigenvalues": [1.0]}))
    centre = (slice(None), *(slice(8, 13),) * 3)
    assert_allclose(out[centre][0], 1.0, atol=1e-3)
    assert_allclose(out[centre][1], 0.0, atol=1e-3)
    assert_allclose(out[centre][2], -1.0, atol=1e-3)
