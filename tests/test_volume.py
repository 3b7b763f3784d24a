"""Opening volumes from every supported source; axes, channels, spacing; pickling; errors."""

from __future__ import annotations

import pickle

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
import zarr
from numpy.testing import assert_array_equal

from tiledseg.errors import InputDataError, TiledsegError
from tiledseg.volume import Volume, open_volume, parse_region, parse_spacing


@pytest.fixture
def data(rng):
    return rng.integers(0, 255, size=(12, 14, 10), dtype=np.uint8)


def check_reads(volume: Volume, expected: np.ndarray, channel_axis=None) -> None:
    """The volume reads ``expected`` (channels moved first) region by region."""
    channels_first = (
        expected[np.newaxis] if channel_axis is None else np.moveaxis(expected, channel_axis, 0)
    )
    spatial = channels_first.shape[1:]
    assert volume.shape == spatial
    assert volume.n_channels == channels_first.shape[0]
    assert_array_equal(volume.read(tuple(slice(0, n) for n in spatial)), channels_first)
    region = tuple(slice(1, max(2, n - 2)) for n in spatial)
    assert_array_equal(volume.read(region), channels_first[(slice(None), *region)])


def roundtrip(volume: Volume) -> Volume:
    return pickle.loads(pickle.dumps(volume))


# -- zarr ------------------------------------------------------------------------------------


def test_zarr_v3_array(tmp_path, data):
    path = str(tmp_path / "img.zarr")
    z = zarr.create_array(path, shape=data.shape, chunks=(5, 5, 5), dtype=data.dtype)
    z[...] = data
    volume = open_volume(path)
    check_reads(volume, data)
    assert volume.chunks == (5, 5, 5)
    assert volume.axes == "zyx"
    assert volume.spacing == (1.0, 1.0, 1.0)
    assert not volume.spacing_from_metadata
    check_reads(roundtrip(volume), data)


def test_zarr_v2_array(tmp_path, data):
    path = str(tmp_path / "img_v2.zarr")
    z = zarr.open_array(
        path, mode="w", shape=data.shape, chunks=(4, 7, 3), dtype=data.dtype, zarr_format=2
    )
    z[...] = data
    volume = open_volume(path)
    check_reads(volume, data)
    assert volume.chunks == (4, 7, 3)
    check_reads(roundtrip(volume), data)


def test_array_inside_a_group(tmp_path, data):
    root = zarr.open_group(str(tmp_path / "store.zarr"), mode="w")
    root.create_array("other", shape=(3, 3), dtype="u1")
    root.create_array("another", shape=(3, 3), dtype="u1")
    arr = (
        root.create_group("path")
        .create_group("to")
        .create_array("array", shape=data.shape, dtype=data.dtype, chunks=(6, 7, 5))
    )
    arr[...] = data
    volume = open_volume(str(tmp_path / "store.zarr/path/to/array"))
    check_reads(volume, data)
    check_reads(roundtrip(volume), data)
    # the group itself holds two arrays: the error says how to address one
    with pytest.raises(InputDataError, match=r"2 arrays .*store\.zarr/NAME"):
        open_volume(str(tmp_path / "store.zarr"))


def test_group_with_one_array_opens_it(tmp_path, data):
    root = zarr.open_group(str(tmp_path / "one.zarr"), mode="w")
    root.create_array("image", shape=data.shape, dtype=data.dtype)[...] = data
    check_reads(open_volume(str(tmp_path / "one.zarr")), data)


def _ome_levels(rng, channels=True):
    full = rng.integers(0, 255, size=(2, 16, 20) if channels else (16, 20), dtype=np.uint16)
    half = full[..., ::2, ::2].copy()
    return full, half


def _ome_multiscales(version, channels=True):
    axes = [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    extra = [1.0] if channels else []
    if channels:
        axes.insert(0, {"name": "c", "type": "channel"})
    return [
        {
            "version": version,
            "axes": axes,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [*extra, 0.5, 0.25]}],
                },
                {
                    "path": "1",
                    "coordinateTransformations": [{"type": "scale", "scale": [*extra, 1.0, 0.5]}],
                },
            ],
        }
    ]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_levels_spacing_and_channel_axis(tmp_path, rng, version):
    path = str(tmp_path / f"ome{version}.zarr")
    full, half = _ome_levels(rng)
    if version == "0.4":
        root = zarr.open_group(path, mode="w", zarr_format=2)
        root.attrs["multiscales"] = _ome_multiscales(version)
    else:
        root = zarr.open_group(path, mode="w", zarr_format=3)
        root.attrs["ome"] = {"version": "0.5", "multiscales": _ome_multiscales(version)}
    root.create_array("0", shape=full.shape, dtype=full.dtype, chunks=(1, 8, 8))[...] = full
    root.create_array("1", shape=half.shape, dtype=half.dtype, chunks=(1, 8, 8))[...] = half

    level0 = open_volume(path)
    assert level0.channel_axis == 0
    assert level0.axes == "cyx"
    assert level0.spacing == (0.5, 0.25)
    assert level0.spacing_from_metadata
    check_reads(level0, full, channel_axis=0)

    level1 = open_volume(path, level=1)
    assert level1.spacing == (1.0, 0.5)
    assert level1.shape == (8, 10)
    assert level1.n_channels == 2
    check_reads(level1, half, channel_axis=0)
    check_reads(roundtrip(level1), half, channel_axis=0)

    # explicit settings beat the metadata
    override = open_volume(path, spacing="2,2", channel_axis=0)
    assert override.spacing == (2.0, 2.0)
    assert not override.spacing_from_metadata
    with pytest.raises(InputDataError, match="2 levels; level 2 does not exist"):
        open_volume(path, level=2)


# -- files -----------------------------------------------------------------------------------


def test_tiff(tmp_path, data):
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, data)
    volume = open_volume(str(path))
    check_reads(volume, data)
    check_reads(roundtrip(volume), data)
    check_reads(open_volume(path), data)  # a Path works too


def test_tiff_volume_leaves_no_file_open(tmp_path, data):
    import gc
    import warnings

    path = tmp_path / "img.tif"
    tifffile.imwrite(path, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = open_volume(str(path))
        check_reads(volume, data)
        del volume
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_tiff_2d_with_channels(tmp_path, rng):
    data = rng.integers(0, 255, size=(20, 30, 3), dtype=np.uint8)
    path = tmp_path / "rgb.tiff"
    tifffile.imwrite(path, data)
    volume = open_volume(str(path), channel_axis=-1)
    assert volume.channel_axis == 2
    assert volume.axes == "yxc"
    check_reads(volume, data, channel_axis=2)


def test_hdf5_dataset_in_a_group(tmp_path, data):
    path = tmp_path / "file.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("group/dataset", data=data, chunks=(4, 4, 4))
        f.create_dataset("other", data=np.zeros((3, 3)))
    volume = open_volume(f"{path}:/group/dataset")
    check_reads(volume, data)
    check_reads(roundtrip(volume), data)
    with pytest.raises(InputDataError, match="2 datasets"):
        open_volume(str(path))
    with pytest.raises(InputDataError, match="no dataset 'nope'"):
        open_volume(f"{path}:/nope")


def test_npy_is_memory_mapped(tmp_path, data):
    path = tmp_path / "img.npy"
    np.save(path, data)
    volume = open_volume(str(path))
    assert isinstance(volume.source.array, np.memmap)
    check_reads(volume, data)
    check_reads(roundtrip(volume), data)


def test_numpy_and_dask_arrays(data):
    check_reads(open_volume(data), data)
    check_reads(roundtrip(open_volume(data)), data)
    lazy = da.from_array(data, chunks=(5, 6, 7))
    volume = open_volume(lazy)
    check_reads(volume, data)
    check_reads(roundtrip(volume), data)
    check_reads(open_volume(data.tolist()), data)  # plain nested lists become arrays
    assert open_volume(volume) is volume


def test_pickled_path_volume_carries_no_data(tmp_path, rng):
    data = rng.integers(0, 255, size=(200, 200), dtype=np.uint8)
    np.save(tmp_path / "big.npy", data)
    volume = open_volume(str(tmp_path / "big.npy"))
    volume.read((slice(0, 5), slice(0, 5)))  # opened in this process
    assert len(pickle.dumps(volume)) < data.nbytes // 10
    check_reads(roundtrip(volume), data)


def test_channel_axis_of_an_array(rng):
    data = rng.integers(0, 255, size=(9, 3, 11, 12), dtype=np.uint8)  # z c y x
    volume = open_volume(data, channel_axis=1)
    assert volume.axes == "zcyx"
    assert volume.ndim == 3
    check_reads(volume, data, channel_axis=1)
    assert volume.describe()["channels"] == 3


# -- errors ----------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    for name in ("nothing.zarr", "nothing.tif", "nothing.npy", "nothing.h5:/data"):
        with pytest.raises(InputDataError, match="does not exist"):
            open_volume(str(tmp_path / name))


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4, 5, 6)])
def test_wrong_number_of_axes(shape):
    with pytest.raises(InputDataError, match=r"2D \(y, x\) or 3D"):
        open_volume(np.zeros(shape, dtype=np.uint8))


def test_four_axes_without_channel_axis_gives_a_hint():
    with pytest.raises(InputDataError, match="--channel-axis"):
        open_volume(np.zeros((4, 5, 6, 2), dtype=np.uint8))
    assert open_volume(np.zeros((4, 5, 6, 2), dtype=np.uint8), channel_axis=3).n_channels == 2


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.bool_, "U3"])
def test_unsupported_dtypes(dtype):
    with pytest.raises(InputDataError, match="dtype"):
        open_volume(np.zeros((4, 5), dtype=dtype))


def test_other_errors(tmp_path):
    with pytest.raises(InputDataError, match="out of range"):
        open_volume(np.zeros((4, 5, 2)), channel_axis=3)
    with pytest.raises(InputDataError, match="no channel axis"):
        open_volume(np.zeros((4, 5, 2)), channel_axis=2, role="labels", allow_channels=False)
    with pytest.raises(InputDataError, match="empty"):
        open_volume(np.zeros((0, 5)))
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputDataError, match="not a zarr store"):
        open_volume(str(tmp_path / "plain"))
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputDataError, match="not a readable TIFF"):
        open_volume(str(tmp_path / "bad.tif"))
    (tmp_path / "bad.npy").write_bytes(b"nope")
    with pytest.raises(InputDataError, match="not a plain .npy"):
        open_volume(str(tmp_path / "bad.npy"))
    (tmp_path / "bad.h5").write_bytes(b"nope")
    with pytest.raises(InputDataError, match="not a readable HDF5"):
        open_volume(str(tmp_path / "bad.h5"))


# -- parsing ---------------------------------------------------------------------------------


def test_parse_spacing():
    assert parse_spacing("2,0.5,0.5") == (2.0, 0.5, 0.5)
    assert parse_spacing([1, 2]) == (1.0, 2.0)
    assert parse_spacing(None) is None
    for bad in ("a,b", "0,1", "-1,1", "nan,1"):
        with pytest.raises(TiledsegError, match="spacing"):
            parse_spacing(bad)
    with pytest.raises(TiledsegError, match="2 values but the image has 3"):
        parse_spacing("1,1", 3)
    with pytest.raises(TiledsegError, match="2 values but the image has 3"):
        open_volume(np.zeros((3, 4, 5)), spacing=(1, 1))


def test_parse_region():
    assert parse_region("10:50,:,100:", (60, 70, 120)) == (
        slice(10, 50),
        slice(0, 70),
        slice(100, 120),
    )
    assert parse_region("-10:,0:500", (60, 70)) == (slice(50, 60), slice(0, 70))
    assert parse_region(None, (5, 5)) is None
    for bad in ("1:2", "1:2,3", "a:b,1:2", "5:5,1:2", "1:2:3,1:2"):
        with pytest.raises(TiledsegError, match="region"):
            parse_region(bad, (10, 10))


def _ome_group(path, data, axes):
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": axes,
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [1.0] * data.ndim}
                        ],
                    }
                ],
            }
        ],
    }
    group.create_array("0", shape=data.shape, dtype=data.dtype)[...] = data
    return path


def test_a_single_time_point_is_dropped_and_a_time_series_refused(tmp_path):
    data = np.arange(2 * 6 * 7, dtype=np.uint8).reshape(1, 2, 6, 7)
    axes = [
        {"name": "t", "type": "time"},
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    vol = open_volume(str(_ome_group(tmp_path / "one.zarr", data, axes)))
    assert (vol.shape, vol.n_channels, vol.channel_axis) == ((6, 7), 2, 0)
    np.testing.assert_array_equal(vol.read((slice(0, 6), slice(2, 5))), data[0, :, :, 2:5])
    series = np.zeros((3, 6, 7), dtype=np.uint8)
    axes = [{"name": "t"}, {"name": "y"}, {"name": "x"}]  # kinds from the names
    with pytest.raises(InputDataError, match="time axis of 3 points"):
        open_volume(str(_ome_group(tmp_path / "series.zarr", series, axes)))
