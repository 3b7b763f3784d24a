"""Tiling changes nothing: features of uneven haloed blocks equal the untiled ones, bit for bit.

Shapes, blocks, banks, spacings, channel counts and dtypes are drawn by the strategies
shipped in :mod:`tiledseg.testing.strategies`; every drawn block is one the block
planner accepts (at least the halo along each axis, or the whole axis).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from tiledseg import feature_array
from tiledseg.errors import BlockSizeError
from tiledseg.features import FAMILIES, FeatureBank, block_features
from tiledseg.testing import strategies as tst
from tiledseg.testing.strategies import TilingCase

#: Every family; halo 6 (the structure tensor at 1.0: 4 + 2).
ALL_FAMILIES = FeatureBank({f: [0.7, 1.0] for f in FAMILIES})


def tiled(case: TilingCase, block) -> np.ndarray:
    return feature_array(
        case.image(),
        features=case.bank,
        block=block,
        spacing=case.spacing,
        channel_axis=case.channel_axis,
    ).compute()


def check_case(case: TilingCase) -> None:
    image = case.image()
    arr = feature_array(
        image,
        features=case.bank,
        block=case.block,
        spacing=case.spacing,
        channel_axis=case.channel_axis,
    )
    # the chunks are the processing blocks (clipped to the volume)
    for n, b, chunks in zip(case.shape, case.block, arr.chunks[1:], strict=True):
        assert chunks[0] == min(n, b)
        assert sum(chunks) == n
    got = arr.compute()
    one_block = tiled(case, case.shape)
    assert got.dtype == np.float32
    assert got.shape == (
        case.bank.n_features(ndim=len(case.shape), n_channels=case.n_channels),
        *case.shape,
    )
    assert_array_equal(got, one_block, strict=True)
    # and one block is the kernel on the whole array
    channels_first = image[np.newaxis] if case.n_channels == 1 else np.moveaxis(image, -1, 0)
    direct = block_features(
        channels_first,
        bank=case.bank,
        inner=(slice(None),) * len(case.shape),
        spacing=case.spacing,
    )
    assert_array_equal(one_block, direct, strict=True)


UNEVEN_2D = [
    # a block smaller than the shape along one axis only, not dividing it
    TilingCase((31, 17), 1, "uint8", ALL_FAMILIES, (1.0, 1.0), (7, 40), seed=1),
    TilingCase((31, 17), 1, "float32", ALL_FAMILIES, (1.0, 1.0), (31, 6), seed=2),
    # uneven along both axes, anisotropic, two channels
    TilingCase((29, 26), 2, "float64", ALL_FAMILIES, (2.0, 1.0), (6, 9), seed=3),
]
UNEVEN_3D = [
    TilingCase((13, 15, 11), 1, "uint8", ALL_FAMILIES, (1.0, 1.0, 1.0), (6, 15, 7), seed=4),
    TilingCase((12, 14, 16), 2, "float32", ALL_FAMILIES, (3.0, 1.0, 1.5), (2, 6, 5), seed=5),
]


@given(case=tst.tiling_cases(ndim=2))
@example(case=UNEVEN_2D[0])
@example(case=UNEVEN_2D[1])
@example(case=UNEVEN_2D[2])
def test_tiled_features_equal_untiled_2d(case):
    check_case(case)


@given(case=tst.tiling_cases(ndim=3))
@example(case=UNEVEN_3D[0])
@example(case=UNEVEN_3D[1])
def test_tiled_features_equal_untiled_3d(case):
    check_case(case)


@given(
    case=tst.tiling_cases(
        ndim=3,
        max_side=14,
        anisotropic=False,
        channels=False,
        bank=st.just(FeatureBank({"structure_tensor_eigenvalues": [1.6]})),
    )
)
def test_structure_tensor_tiles_exactly_at_its_largest_halo(case):
    """The structure tensor needs gradients an outer radius beyond the block (halo 9 here)."""
    check_case(case)


def test_strategies_draw_uneven_blocks():
    """The drawn cases do exercise what the property tests claim (not only one-block cases)."""
    from hypothesis import find

    find(
        tst.tiling_cases(ndim=2),
        lambda c: (
            any(n % b for n, b in zip(c.shape, c.block, strict=True) if b < n)
            and any(b >= n for n, b in zip(c.shape, c.block, strict=True))
        ),
    )
    find(
        tst.tiling_cases(ndim=3),
        lambda c: all(b < n and n % b for n, b in zip(c.shape, c.block, strict=True)),
    )


def test_block_smaller_than_halo_is_refused():
    image = np.zeros((40, 40), dtype=np.uint8)
    bank = FeatureBank({"gaussian_smoothing": [1.6]})  # halo 6
    with pytest.raises(BlockSizeError, match=r"block size 5 along y is smaller than the halo 6"):
        feature_array(image, features=bank, block=5)
    # along an axis shorter than the halo, a block covering the axis is fine
    out = feature_array(np.zeros((4, 40), dtype=np.uint8), features=bank, block=(4, 6))
    assert out.chunks[1:] == ((4,), (6,) * 6 + (4,))


def test_features_of_a_chunked_store_are_independent_of_its_chunks(tmp_path):
    """Store chunks (5 x 7) that match neither the blocks nor the halo change nothing."""
    rng = np.random.default_rng(11)
    data = rng.integers(0, 256, size=(33, 29), dtype=np.uint8)
    z = zarr.create_array(
        str(tmp_path / "img.zarr"), shape=data.shape, chunks=(5, 7), dtype=data.dtype
    )
    z[...] = data
    from_store = feature_array(
        str(tmp_path / "img.zarr"), features=ALL_FAMILIES, block=(9, 11)
    ).compute()
    from_dask = feature_array(
        da.from_array(data, chunks=(4, 30)), features=ALL_FAMILIES, block=(33, 29)
    ).compute()
    assert_array_equal(from_store, from_dask)


def test_a_nan_in_a_block_is_reported():
    from tiledseg.errors import InputDataError

    image = np.ones((20, 20), dtype=np.float32)
    image[15, 3] = np.nan
    arr = feature_array(image, features={"gaussian_smoothing": [0.7]}, block=10)
    with pytest.raises(InputDataError, match="NaN or infinite"):
        arr.compute()


def test_the_dask_name_depends_on_the_image_not_on_the_object(tmp_path):
    """One image opened twice names one graph; two images of one shape name two."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, size=(24, 20), dtype=np.uint8)
    b = a.copy()
    b[3, 4] ^= 1
    bank = {"gaussian_smoothing": [0.7]}

    def name(image, **kw):
        return feature_array(image, features=bank, block=(12, 10), **kw).name

    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    assert name(str(tmp_path / "a.npy")) == name(str(tmp_path / "a.npy"))
    assert name(str(tmp_path / "a.npy")) != name(str(tmp_path / "b.npy"))
    # in-memory arrays: by their values (a copy names the same graph)
    assert name(a) == name(a.copy())
    assert name(a) != name(b)
    # and what else sets the values: spacing, block, bank, extra channels
    assert name(a) != name(a, spacing=(2.0, 1.0))
    assert name(a) != feature_array(a, features=bank, block=(24, 20)).name
    assert name(a) != feature_array(a, features={"gaussian_smoothing": [1.0]}, block=12).name
    assert name(a, extra_channels=[str(tmp_path / "a.npy")]) == name(
        a, extra_channels=[str(tmp_path / "a.npy")]
    )
    assert name(a, extra_channels=[str(tmp_path / "a.npy")]) != name(
        a, extra_channels=[str(tmp_path / "b.npy")]
    )


def test_the_feature_array_meta_is_a_float32_numpy_array(monkeypatch):
    """The meta is given to dask, not left for it to infer from the dtype."""
    given = {}

    class Recording(da.Array):
        def __new__(cls, *args, **kwargs):
            given.update(kwargs)
            return da.core.Array.__new__(da.core.Array, *args, **kwargs)

    monkeypatch.setattr(da, "Array", Recording)
    arr = feature_array(
        np.zeros((3, 16, 18), dtype=np.uint8), features={"gaussian_smoothing": [0.7]}, block=8
    )
    meta = given.get("meta")
    assert type(meta) is np.ndarray
    assert meta.dtype == np.float32
    assert meta.shape == (0,) * arr.ndim
    assert type(arr._meta) is np.ndarray
    assert arr._meta.dtype == np.float32
    assert arr._meta.ndim == arr.ndim == 4
