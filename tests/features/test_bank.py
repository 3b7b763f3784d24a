"""Feature banks: validation, names and counts, the halo, (de)serialisation, named banks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from numpy.testing import assert_array_equal
from scipy import ndimage as ndi

from tiledseg.blocks import Block
from tiledseg.errors import TiledsegError
from tiledseg.features import FAMILIES, NAMED_BANKS, FeatureBank, block_features, resolve_bank
from tiledseg.features.bank import ILASTIK_FAMILIES, TRUNCATE, kernel_radius, relative_spacing
from tiledseg.testing import strategies as tst

# -- validation ------------------------------------------------------------------------------


def test_families_are_ordered_merged_and_sorted():
    bank = FeatureBank(
        {
            "hessian_of_gaussian_eigenvalues": [1.6, 0.7],
            "GaussianSmoothing": [3.5, 1.0],  # ilastik name
            "gaussian_smoothing": [1.0, 0.3],  # duplicate 1.0 is merged
            "laplacian_of_gaussian": [],  # no scales: dropped
        }
    )
    assert list(bank.families) == ["gaussian_smoothing", "hessian_of_gaussian_eigenvalues"]
    assert bank.families["gaussian_smoothing"] == (0.3, 1.0, 3.5)
    assert bank.families["hessian_of_gaussian_eigenvalues"] == (0.7, 1.6)


def test_every_ilastik_name_is_accepted():
    ilastik = {
        "GaussianSmoothing": [1.0],
        "LaplacianOfGaussian": [1.0],
        "GaussianGradientMagnitude": [1.0],
        "DifferenceOfGaussians": [1.0],
        "StructureTensorEigenvalues": [1.0],
        "HessianOfGaussianEigenvalues": [1.0],
    }
    assert tuple(FeatureBank(ilastik).families) == ILASTIK_FAMILIES == FAMILIES[:6]


@pytest.mark.parametrize(
    ("families", "match"),
    [
        ({"gaussian_blur": [1.0]}, "unknown feature family 'gaussian_blur'"),
        ({}, "empty"),
        ({"gaussian_smoothing": []}, "empty"),
        ({"gaussian_smoothing": [0.0]}, "scale 0.0 .* positive"),
        ({"gaussian_smoothing": [-1]}, "scale -1 .* positive"),
        ({"gaussian_smoothing": [float("nan")]}, "positive"),
        ({"gaussian_smoothing": [float("inf")]}, "positive"),
        ({"gaussian_smoothing": ["big"]}, "'big' .* not a number"),
    ],
)
def test_bad_banks_are_refused(families, match):
    with pytest.raises(TiledsegError, match=match):
        FeatureBank(families)


@pytest.mark.parametrize("data", [[1.0, 2.0], "gaussian_smoothing", 3])
def test_from_dict_refuses_non_mappings(data):
    with pytest.raises(TiledsegError, match="mapping"):
        FeatureBank.from_dict(data)


def test_from_dict_accepts_a_single_scale_and_refuses_text_scales():
    bank = FeatureBank.from_dict({"gaussian_smoothing": 2})
    assert bank.families == {"gaussian_smoothing": (2.0,)}
    with pytest.raises(TiledsegError, match="list of numbers"):
        FeatureBank.from_dict({"gaussian_smoothing": "1.0"})


# -- names, counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("n_channels", [1, 3])
def test_count_names_and_stack_agree(ndim, n_channels):
    bank = FeatureBank({f: [1.0, 1.6] for f in ILASTIK_FAMILIES})
    names = bank.feature_names(ndim=ndim, n_channels=n_channels)
    # 4 scalar families + 2 eigen families of ndim values, at 2 scales
    assert len(names) == bank.n_features(ndim=ndim, n_channels=n_channels)
    assert len(names) == n_channels * 2 * (4 + 2 * ndim)
    assert len({str(n) for n in names}) == len(names), "names must be unique"
    image = np.zeros((n_channels, *(9,) * ndim), dtype=np.float32)
    out = block_features(image, bank=bank, inner=(slice(None),) * ndim)
    assert out.shape[0] == len(names)
    assert str(names[0]) == "gaussian_smoothing(sigma=1, channel=0)"
    eigen = [n for n in names if n.family == "hessian_of_gaussian_eigenvalues"]
    assert [n.component for n in eigen[:ndim]] == list(range(ndim))
    assert "eigenvalue=0" in str(eigen[0])
    assert [n.channel for n in names] == sorted(n.channel for n in names)


@given(bank=tst.banks())
def test_n_features_matches_names_for_random_banks(bank):
    for ndim in (2, 3):
        for channels in (1, 2):
            assert bank.n_features(ndim=ndim, n_channels=channels) == len(
                bank.feature_names(ndim=ndim, n_channels=channels)
            )


# -- halo ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.3, 0.5, 0.7, 1.0, 1.6, 2.0, 3.5, 5.0, 10.0])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_kernel_radius_is_scipys_radius(sigma, order):
    impulse = np.zeros(201)
    impulse[100] = 1.0
    response = ndi.gaussian_filter1d(
        impulse, sigma, order=order, mode="constant", truncate=TRUNCATE
    )
    support = np.flatnonzero(response)
    radius = max(100 - support.min(), support.max() - 100)
    assert radius == kernel_radius(sigma)


def test_halo_values():
    bank = FeatureBank({"gaussian_smoothing": [1.6], "structure_tensor_eigenvalues": [1.0]})
    # smoothing 1.6: radius 6; structure tensor 1.0: 4 + radius(0.5) = 4 + 2 = 6
    assert bank.halo((1.0, 1.0)) == (6, 6)
    bank = FeatureBank({"structure_tensor_eigenvalues": [3.5]})
    assert bank.halo((1.0, 1.0, 1.0)) == (12 + 6,) * 3
    assert bank.halo((2.0, 1.0, 1.0)) == (kernel_radius(1.75) + kernel_radius(0.875), 18, 18)


def test_halo_shrinks_along_coarse_axes():
    bank = FeatureBank({"gaussian_smoothing": [3.5]})
    assert relative_spacing((4.0, 1.0, 2.0)) == (4.0, 1.0, 2.0)
    assert bank.halo((4.0, 1.0, 2.0)) == (
        kernel_radius(3.5 / 4),
        kernel_radius(3.5),
        kernel_radius(3.5 / 2),
    )


@pytest.mark.parametrize(
    "families",
    [
        {"gaussian_smoothing": [1.6]},
        {"laplacian_of_gaussian": [1.0]},
        {"difference_of_gaussians": [1.6]},
        {"structure_tensor_eigenvalues": [1.6]},
        {"hessian_of_gaussian_eigenvalues": [1.0]},
    ],
)
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 2.0)])
def test_halo_is_enough_and_not_more(families, spacing):
    """A centre block read with the halo is exact; read with one voxel less along an axis, not."""
    bank = FeatureBank(families)
    halo = bank.halo(spacing)
    image = np.random.default_rng(0).integers(0, 256, (60, 60)).astype(np.float32)
    whole = block_features(image[None], bank=bank, inner=(slice(None),) * 2, spacing=spacing)
    region = (slice(25, 35), slice(25, 35))

    def block_with(h):
        read = tuple(slice(r.start - e, r.stop + e) for r, e in zip(region, h, strict=True))
        block = Block((0, 0), region, read)
        return block_features(
            image[block.read][None], bank=bank, inner=block.inner, spacing=spacing
        )

    assert_array_equal(block_with(halo), whole[(slice(None), *region)])
    for axis in range(2):
        short = list(halo)
        short[axis] -= 1
        assert not np.array_equal(block_with(short), whole[(slice(None), *region)])


# -- (de)serialisation -------------------------------------------------------------------------


@given(bank=tst.banks())
def test_dict_round_trip(bank):
    assert FeatureBank.from_dict(bank.to_dict()) == bank


def test_yaml_round_trip_and_errors(tmp_path):
    path = tmp_path / "bank.yaml"
    path.write_text("GaussianSmoothing: [1.0, 0.5]\nhessian_of_gaussian_eigenvalues: 2\n")
    bank = FeatureBank.from_yaml(path)
    assert bank.to_dict() == {
        "gaussian_smoothing": [0.5, 1.0],
        "hessian_of_gaussian_eigenvalues": [2.0],
    }
    assert resolve_bank(str(path)) == bank
    assert "gaussian_smoothing: 0.5, 1" in bank.describe()
    with pytest.raises(TiledsegError, match="does not exist"):
        FeatureBank.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gaussian_smoothing: [1.0\n")
    with pytest.raises(TiledsegError, match="not valid YAML"):
        FeatureBank.from_yaml(bad)


def test_resolve_bank():
    assert resolve_bank(None) is NAMED_BANKS["default"]
    assert resolve_bank("minimal") is NAMED_BANKS["minimal"]
    bank = FeatureBank({"gaussian_smoothing": [1.0]})
    assert resolve_bank(bank) is bank
    assert resolve_bank({"gaussian_smoothing": [1.0]}) == bank
    with pytest.raises(TiledsegError, match="neither a bank name"):
        resolve_bank("no-such-bank")
    with pytest.raises(TiledsegError, match="does not exist"):
        resolve_bank("no-such-bank.yaml")


def test_named_banks():
    assert {"default", "minimal", "ilastik-full"} <= set(NAMED_BANKS)
    assert NAMED_BANKS["default"].n_features(ndim=2, n_channels=1) == 15
    # the default bank fits the default 3D block of 128 with room to spare
    assert max(NAMED_BANKS["default"].halo((1.0, 1.0, 1.0))) <= 32
    full = NAMED_BANKS["ilastik-full"]
    assert set(full.families) == set(ILASTIK_FAMILIES)
