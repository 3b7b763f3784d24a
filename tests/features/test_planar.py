"""ilastik's "compute in 2D": chosen families on each yx plane of a volume.

A planar family on a volume equals the 2D kernel applied to each plane, needs no
halo along z, has the 2D component count, and tiles exactly like every family.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from test_filters import whole
from test_tiling import check_case

from tiledseg import TiledsegError, load_model, predict, train
from tiledseg.features import FAMILIES, FeatureBank
from tiledseg.testing import strategies as tst
from tiledseg.testing.strategies import TilingCase

rng = np.random.default_rng(7)
VOLUME = rng.standard_normal((9, 24, 21)).astype(np.float32) * 30 + 100


@pytest.mark.parametrize("family", FAMILIES)
def test_a_planar_family_is_the_2d_kernel_on_each_plane(family):
    planar = whole(VOLUME, FeatureBank({family: [1.0, 2.0]}, in_2d=[family]), spacing=(5, 1, 1))
    for z in range(VOLUME.shape[0]):
        flat = whole(VOLUME[z], FeatureBank({family: [1.0, 2.0]}))
        assert_array_equal(planar[:, z], flat, strict=True)


def test_planar_families_equal_scipy_on_each_plane():
    from scipy import ndimage as ndi

    from tiledseg.features.bank import TRUNCATE

    bank = FeatureBank(
        {"gaussian_smoothing": [1.6], "gaussian_gradient_magnitude": [1.6]},
        in_2d=["gaussian_smoothing", "gaussian_gradient_magnitude"],
    )
    out = whole(VOLUME, bank, spacing=(3, 1, 1))
    for z in range(VOLUME.shape[0]):
        kwargs = {"mode": "reflect", "truncate": TRUNCATE}
        assert_array_equal(out[0, z], ndi.gaussian_filter(VOLUME[z], 1.6, **kwargs))
        assert_array_equal(out[1, z], ndi.gaussian_gradient_magnitude(VOLUME[z], 1.6, **kwargs))


def test_planar_families_need_no_halo_along_z_and_have_2d_components():
    families = {"gaussian_smoothing": [2.0], "hessian_of_gaussian_eigenvalues": [2.0]}
    volumetric = FeatureBank(families)
    planar = FeatureBank(families, in_2d=["hessian_of_gaussian_eigenvalues"])
    assert volumetric.halo((1, 1, 1)) == (7, 7, 7)
    assert planar.halo((1, 1, 1)) == (7, 7, 7)  # the 3D Gaussian still needs z
    only = FeatureBank(
        {"hessian_of_gaussian_eigenvalues": [2.0]}, in_2d=["HessianOfGaussianEigenvalues"]
    )
    assert only.halo((1, 1, 1)) == (0, 7, 7)
    assert volumetric.n_features(ndim=3, n_channels=1) == 1 + 3
    assert planar.n_features(ndim=3, n_channels=1) == 1 + 2
    names = [str(n) for n in planar.feature_names(ndim=3, n_channels=1)]
    assert names[1] == "hessian_of_gaussian_eigenvalues(sigma=2, channel=0, eigenvalue=0, in 2D)"
    assert len(names) == 3
    # on a 2D image the option changes nothing
    image = VOLUME[0]
    assert_array_equal(whole(image, planar), whole(image, volumetric))
    assert "in 2D" not in str(planar.feature_names(ndim=2, n_channels=1)[1])


def test_the_option_round_trips_through_plain_data_and_yaml(tmp_path):
    bank = FeatureBank({"gaussian_smoothing": [1.0], "sobel": [1.0]}, in_2d=["sobel"])
    assert bank.to_dict() == {"gaussian_smoothing": [1.0], "sobel": [1.0], "in_2d": ["sobel"]}
    assert FeatureBank.from_dict(bank.to_dict()) == bank
    assert FeatureBank.from_dict(bank.to_dict()) != FeatureBank(bank.families)
    path = tmp_path / "bank.yaml"
    path.write_text("gaussian_smoothing: [1.0]\nsobel: [1.0]\nin_2d: [sobel]\n")
    assert FeatureBank.from_yaml(path) == bank
    assert "sobel: 1 (in 2D)" in bank.describe()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_in_2d_at_some_scales_only(family, tmp_path):
    """ilastik chooses 2D per scale: each scale is the 2D or the 3D kernel, as chosen."""
    bank = FeatureBank({family: [1.0, 2.0]}, in_2d={family: [2.0]})
    mixed = whole(VOLUME, bank, spacing=(5, 1, 1))
    in_3d = whole(VOLUME, FeatureBank({family: [1.0]}), spacing=(5, 1, 1))
    n = len(in_3d)
    assert_array_equal(mixed[:n], in_3d, strict=True)
    for z in range(VOLUME.shape[0]):
        assert_array_equal(mixed[n:, z], whole(VOLUME[z], FeatureBank({family: [2.0]})))
    names = bank.feature_names(ndim=3, n_channels=1)
    assert [n.planar for n in names] == [False] * n + [True] * (len(mixed) - n)
    assert bank.halo((5, 1, 1))[0] == FeatureBank({family: [1.0]}).halo((5, 1, 1))[0]
    assert bank.to_dict()["in_2d"] == [{family: [2.0]}]
    path = tmp_path / "bank.yaml"
    path.write_text(f"{family}: [1.0, 2.0]\nin_2d: [{{{family}: [2]}}]\n")
    assert FeatureBank.from_yaml(path) == bank
    assert FeatureBank.from_dict(bank.to_dict()) == bank
    assert f"{family}: 1, 2 (in 2D)" in bank.describe()
    # a family left without scales in 2D is not in 2D at all (the same bank, the same keys)
    assert bank.restricted({family: [1.0]}) == FeatureBank({family: [1.0]})
    assert FeatureBank({family: [1.0]}, in_2d=[{family: []}]) == FeatureBank({family: [1.0]})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sobel": [1.0], "in_2d": ["gabor"]}, "in_2d names 'gabor', which is not a family"),
        ({"sobel": [1.0], "in_2d": "sobel"}, "in_2d must be a list of families"),
        (
            {"sobel": [1.0], "in_2d": [{"sobel": [3]}]},
            r"in_2d gives 'sobel' scale 3, a scale the bank does not compute it at \(1\)",
        ),
    ],
)
def test_a_bad_in_2d_is_one_clear_error(data, message):
    with pytest.raises(TiledsegError, match=message):
        FeatureBank.from_dict(data)


PLANAR_CASES = [
    TilingCase(
        (11, 15, 13),
        2,
        "float32",
        FeatureBank({f: [0.7, 1.5] for f in FAMILIES}, in_2d=FAMILIES[::2]),
        (4.0, 1.0, 1.5),
        (3, 9, 7),
        seed=11,
    ),
]


@pytest.mark.parametrize("case", PLANAR_CASES)
def test_planar_families_tile_exactly_on_uneven_blocks(case):
    assert case.halo[0] < FeatureBank(case.bank.families).halo(case.spacing)[0]
    check_case(case)


@st.composite
def planar_banks(draw):
    bank = draw(tst.banks())
    chosen = draw(st.lists(st.sampled_from(tuple(bank.families)), unique=True))
    # (a family at all its scales, or at some only: ilastik chooses 2D per scale)
    some = {f: draw(st.lists(st.sampled_from(bank.families[f]), min_size=1)) for f in chosen}
    return FeatureBank(bank.families, in_2d=draw(st.sampled_from([chosen, some])))


@given(tst.tiling_cases(ndim=3, bank=planar_banks()))
def test_planar_tiling_is_exact_for_drawn_cases(case):
    check_case(case)


def test_a_model_keeps_its_planar_families(tmp_path, fast_xgboost):
    import zarr

    from tiledseg.testing import make_phantom

    ph = make_phantom((12, 40, 40), n_classes=2, scribble_fraction=0.02, seed=3)
    bank = FeatureBank(
        {"gaussian_smoothing": [1.0], "hessian_of_gaussian_eigenvalues": [1.5]},
        in_2d=["hessian_of_gaussian_eigenvalues"],
    )
    model = train(
        ph.image,
        ph.scribbles,
        features=bank,
        spacing=(4, 1, 1),
        classifier=fast_xgboost(),
        cache_dir=None,
    )
    model.save(tmp_path / "m.tsm")
    again = load_model(tmp_path / "m.tsm")
    assert again.bank == bank
    assert again.bank.in_2d == {"hessian_of_gaussian_eigenvalues": (1.5,)}
    assert again.halo == (1, 5, 5)  # z: the Gaussian at 1.0 / 4 only; the planar Hessian none
    labels = []
    for name, block in (("tiled", (5, 16, 17)), ("one", ph.image.shape)):
        predict(ph.image, again, out=tmp_path / f"{name}.zarr", block=block)
        labels.append(zarr.open_array(f"{tmp_path}/{name}.zarr/labels/0", mode="r")[...])
    assert_array_equal(labels[0], labels[1])


def test_a_model_in_2d_at_some_scales_is_format_7_and_keeps_them(tmp_path, fast_xgboost):
    from tiledseg.testing import make_phantom

    ph = make_phantom((10, 32, 32), n_classes=2, scribble_fraction=0.02, seed=4)
    bank = FeatureBank({"gaussian_smoothing": [0.7, 2.0]}, in_2d={"gaussian_smoothing": [2.0]})
    model = train(ph.image, ph.scribbles, features=bank, classifier=fast_xgboost(), cache_dir=None)
    assert model._format_version == 7  # (older tiledseg refuses it: "update tiledseg")
    model.save(tmp_path / "m.tsm")
    again = load_model(tmp_path / "m.tsm")
    assert again.bank == bank
    assert FeatureBank({"gaussian_smoothing": [2.0]}, in_2d=["gaussian_smoothing"]) != bank
