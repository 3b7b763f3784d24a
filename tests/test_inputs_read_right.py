"""Inputs read right (issue 18): TIFF samples and OME-TIFF axes, spacing, extras' channels.

Images are real files written in ``tmp_path`` (tifffile, h5py, numpy); the commands run
through :func:`tiledseg.cli.main`, as a user runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from tiledseg.cli import main
from tiledseg.errors import InputDataError
from tiledseg.model import load_model
from tiledseg.testing import make_phantom
from tiledseg.volume import (
    open_volume,
    same_path,
    shape_mismatch,
    split_options,
    with_extra_channels,
)

SHAPE = (48, 40)
FAST = ["--features", "minimal", "--quiet", "--no-cache"]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, n_classes=3, feature_size=8.0, scribble_fraction=0.05, seed=1)


def rgb_of(grey: np.ndarray) -> np.ndarray:
    """Three channels that differ, from one grey image."""
    return np.stack([grey, 255 - grey, grey // 2], axis=-1).astype(np.uint8)


def run(capsys, *args: object) -> str:
    """Run ``main(args)``; assert it succeeds and return its stdout."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def one_error_line(capsys, *args: object) -> str:
    """Run ``main(args)``: assert exit status 2 and one line on stderr; return it."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def scribbled_accuracy(out: Path, phantom) -> float:
    labels = zarr.open_group(str(out), mode="r")["labels/0"][...]
    assert labels.shape == SHAPE
    scribbled = phantom.scribbles > 0
    return float(np.mean(labels[scribbled] == phantom.scribbles[scribbled]))


# -- TIFF samples (RGB) are channels ---------------------------------------------------------


def test_an_rgb_tiff_is_2d_with_3_channels_and_trains_on_2d_scribbles(tmp_path, capsys, phantom):
    image, scribbles = tmp_path / "rgb.tif", tmp_path / "scribbles.tif"
    tifffile.imwrite(image, rgb_of(phantom.image), photometric="rgb")
    tifffile.imwrite(scribbles, phantom.scribbles.astype(np.uint8))
    info = json.loads(run(capsys, "info", image, "--json"))
    assert info["shape"] == list(SHAPE)
    assert info["axes"] == "yxc"
    assert info["channels"] == 3
    assert info["metadata"] == "TIFF"
    model, out = tmp_path / "m.tseg", tmp_path / "out.zarr"
    run(capsys, "train", image, scribbles, "--model", model, *FAST)
    assert load_model(model).n_channels == 3
    run(capsys, "predict", image, "--model", model, "--out", out, "--quiet")
    assert scribbled_accuracy(out, phantom) > 0.9


def test_an_rgb_tiff_is_drawn_in_colour_by_report(tmp_path, capsys, phantom):
    pytest.importorskip("matplotlib")
    from PIL import Image

    grey, scribbles = tmp_path / "grey.tif", tmp_path / "s.tif"
    tifffile.imwrite(grey, phantom.image)
    tifffile.imwrite(scribbles, phantom.scribbles.astype(np.uint8))
    model, out = tmp_path / "m.tseg", tmp_path / "out.zarr"
    run(capsys, "train", grey, scribbles, "--model", model, *FAST)
    run(capsys, "predict", grey, "--model", model, "--out", out, "--quiet")
    red = np.zeros((*SHAPE, 3), np.uint8)
    red[..., 0] = 255  # pure red: drawn as its first channel, it would be grey
    tifffile.imwrite(tmp_path / "red.tif", red, photometric="rgb")
    text = run(capsys, "report", out, "--out", tmp_path / "r.html", "--image", tmp_path / "red.tif")
    assert "drawn in colour (RGB)" in text
    slices = np.asarray(Image.open(tmp_path / "r_files" / "slices.png").convert("RGB"))
    top = slices[: slices.shape[0] // 2]  # the image row, without labels over it
    pure = (top[..., 0] > 200) & (top[..., 1] < 60) & (top[..., 2] < 60)
    assert pure.sum() > 0.25 * SHAPE[0] * SHAPE[1]


def test_a_colour_tiff_given_as_labels_is_refused(tmp_path, capsys, phantom):
    tifffile.imwrite(tmp_path / "grey.tif", phantom.image)
    tifffile.imwrite(tmp_path / "s.tif", rgb_of(phantom.scribbles), photometric="rgb")
    line = one_error_line(
        capsys, "train", tmp_path / "grey.tif", tmp_path / "s.tif", "--model", tmp_path / "m"
    )
    assert "has a channel axis (TIFF axes YXS" in line
    assert "one value per voxel" in line


# -- OME-TIFF axes and spacing ----------------------------------------------------------------


def ome_tiff(path: Path, data: np.ndarray, axes: str, **sizes: object) -> Path:
    tifffile.imwrite(path, data, metadata={"axes": axes, **sizes})
    return path


def test_an_ome_tiff_zcyx_is_read_with_its_axes_and_spacing(tmp_path, capsys, rng):
    data = rng.integers(0, 1000, size=(5, 2, 16, 20), dtype=np.uint16)
    path = ome_tiff(
        tmp_path / "cells.ome.tif", data, "ZCYX",
        PhysicalSizeZ=2.0, PhysicalSizeY=0.5, PhysicalSizeX=0.25,
    )  # fmt: skip
    volume = open_volume(str(path))
    assert volume.axes == "zcyx"
    assert volume.shape == (5, 16, 20)
    assert volume.n_channels == 2
    assert volume.spacing == (2.0, 0.5, 0.25)
    assert volume.spacing_from_metadata
    region = (slice(1, 4), slice(2, 9), slice(3, 17))
    np.testing.assert_array_equal(volume.read(region), data[1:4, :, 2:9, 3:17].swapaxes(0, 1))
    info = json.loads(run(capsys, "info", path, "--json"))
    assert info["spacing"] == [2.0, 0.5, 0.25]
    assert info["spacing_from"] == "metadata"
    assert info["metadata"] == "OME-TIFF"
    given = open_volume(str(path), spacing="1,1,1")  # the option beats the metadata
    assert given.spacing == (1.0, 1.0, 1.0)
    assert not given.spacing_from_metadata


def test_ome_tiff_spacing_in_other_units_is_in_micrometres(tmp_path, rng):
    data = rng.integers(0, 255, size=(4, 16, 20), dtype=np.uint8)
    path = ome_tiff(
        tmp_path / "mixed.ome.tif", data, "ZYX",
        PhysicalSizeZ=1.0, PhysicalSizeZUnit="µm", PhysicalSizeY=250.0,
        PhysicalSizeYUnit="nm", PhysicalSizeX=250.0, PhysicalSizeXUnit="nm",
    )  # fmt: skip
    assert open_volume(str(path)).spacing == pytest.approx((1.0, 0.25, 0.25))
    bare = ome_tiff(tmp_path / "bare.ome.tif", data, "ZYX")  # no physical sizes
    assert not open_volume(str(bare)).spacing_from_metadata


def test_an_ome_tiff_tczyx_of_one_time_point(tmp_path, rng):
    data = rng.integers(0, 255, size=(1, 3, 4, 16, 20), dtype=np.uint8)
    volume = open_volume(str(ome_tiff(tmp_path / "t.ome.tif", data, "TCZYX")))
    assert volume.axes == "czyx"
    assert volume.shape == (4, 16, 20)
    full = (slice(None),) * 3
    np.testing.assert_array_equal(volume.read(full), data[0])
    series = rng.integers(0, 255, size=(2, 4, 16, 20), dtype=np.uint8)
    with pytest.raises(InputDataError, match="time axis of 2 points"):
        open_volume(str(ome_tiff(tmp_path / "t2.ome.tif", series, "TZYX")))


# -- an extra input's own channels ------------------------------------------------------------


def test_split_options():
    assert split_options("dist.h5:/data[channel_axis=-1]") == (
        "dist.h5:/data",
        {"channel_axis": -1},
    )
    assert split_options("a.npy[channel_axis=none]") == ("a.npy", {"channel_axis": None})
    assert split_options("plain.tif") == ("plain.tif", {})
    assert same_path("d.h5:/data[channel_axis=2]", "d.h5")
    with pytest.raises(InputDataError, match=r"\[channels=\.\.\.\] is no option"):
        split_options("a.npy[channels=2]")
    with pytest.raises(InputDataError, match="channel_axis='x' is not an integer"):
        split_options("a.npy[channel_axis=x]")


def test_an_existing_file_whose_name_looks_like_options_is_a_path(tmp_path, rng):
    data = rng.integers(0, 255, size=SHAPE, dtype=np.uint8)
    path = tmp_path / "odd[channel_axis=0].npy"
    np.save(path, data)
    assert open_volume(str(path)).shape == SHAPE


def channels_last(phantom) -> np.ndarray:
    """Two co-registered channels, last: the phantom's classes as smooth maps."""
    maps = [(phantom.truth == c).astype(np.float32) for c in (1, 2)]
    return np.stack(maps, axis=-1)


def test_a_channels_last_extra_is_given_with_its_channel_axis(tmp_path, capsys, phantom):
    tifffile.imwrite(tmp_path / "grey.tif", phantom.image)
    tifffile.imwrite(tmp_path / "s.tif", phantom.scribbles.astype(np.uint8))
    with h5py.File(tmp_path / "dist.h5", "w") as f:
        f["data"] = channels_last(phantom)
        f["other"] = np.zeros(3)
    extra = f"{tmp_path / 'dist.h5'}:/data[channel_axis=-1]"
    model, out = tmp_path / "m.tseg", tmp_path / "out.zarr"
    train = ["train", tmp_path / "grey.tif", tmp_path / "s.tif", "--model", model]
    run(capsys, *train, "--extra-channels", extra, *FAST)
    loaded = load_model(model)
    assert loaded.bank.extra_channels == 2  # each of the extra's channels is a feature
    assert loaded.summary["extra_channels"] == [extra]
    predict = ["predict", tmp_path / "grey.tif", "--model", model, "--out", out, "--quiet"]
    run(capsys, *predict, "--extra-channels", extra)
    assert scribbled_accuracy(out, phantom) > 0.9


def test_a_channels_last_npy_extra_through_the_api(tmp_path, phantom):
    np.save(tmp_path / "maps.npy", channels_last(phantom))
    volume = with_extra_channels(
        open_volume(phantom.image), [f"{tmp_path / 'maps.npy'}[channel_axis=2]"]
    )
    assert volume.n_extra == 2
    assert volume.n_channels == 3
    np.testing.assert_array_equal(
        volume.read((slice(None),) * 2)[1:], np.moveaxis(channels_last(phantom), -1, 0)
    )


def test_an_extra_with_an_unsaid_channel_axis_names_the_syntax(tmp_path, capsys, phantom, rng):
    tifffile.imwrite(tmp_path / "grey.tif", phantom.image)
    tifffile.imwrite(tmp_path / "s.tif", phantom.scribbles.astype(np.uint8))
    with h5py.File(tmp_path / "dist.h5", "w") as f:
        f["data"] = rng.random((*SHAPE, 6), dtype=np.float32)  # nDTomo's layout
    train = ["train", tmp_path / "grey.tif", tmp_path / "s.tif", "--model", tmp_path / "m"]
    line = one_error_line(capsys, *train, "--extra-channels", f"{tmp_path / 'dist.h5'}:/data")
    assert f"'{tmp_path / 'dist.h5'}:/data[channel_axis=2]'" in line
    assert "resample" not in line
    # an extra 3D image of 4 axes without its channel axis: the same fix
    np.save(tmp_path / "four.npy", np.zeros((2, 3, *SHAPE), np.float32))
    image = open_volume(np.zeros((3, *SHAPE), np.float32))
    with pytest.raises(InputDataError, match=r"four.npy\[channel_axis=0\]"):
        with_extra_channels(image, [str(tmp_path / "four.npy")])
    np.save(tmp_path / "small.npy", np.zeros((10, 10), np.float32))
    with pytest.raises(InputDataError, match="resample them first"):
        with_extra_channels(open_volume(phantom.image), [str(tmp_path / "small.npy")])


# -- a shape that differs by a channel axis names --channel-axis -------------------------------


def test_shape_mismatch_names_the_channel_axis(tmp_path, phantom):
    np.save(tmp_path / "rgb.npy", rgb_of(phantom.image))  # no metadata: read as 3D
    tifffile.imwrite(tmp_path / "s.tif", phantom.scribbles.astype(np.uint8))
    image = open_volume(str(tmp_path / "rgb.npy"))
    labels = open_volume(str(tmp_path / "s.tif"), role="labels", allow_channels=False)
    error = shape_mismatch(image, labels, "labels")
    assert "have shape (48, 40) but image" in str(error)
    assert "give --channel-axis 2" in str(error)
    same = open_volume(phantom.image)
    assert "channel" not in str(shape_mismatch(same, open_volume(np.zeros((5, 5))), "truth"))


def test_labels_of_an_unsaid_rgb_image_name_the_channel_axis(tmp_path, capsys, phantom):
    np.save(tmp_path / "rgb.npy", rgb_of(phantom.image))  # no metadata: read as 3D
    tifffile.imwrite(tmp_path / "s.tif", phantom.scribbles.astype(np.uint8))
    line = one_error_line(
        capsys, "train", tmp_path / "rgb.npy", tmp_path / "s.tif", "--model", tmp_path / "m"
    )
    assert "have shape (48, 40) but image" in line
    assert "spatial shape (48, 40, 3)" in line
    assert "give --channel-axis 2" in line


def test_labels_of_planes_read_as_channels_name_channel_axis_none(tmp_path, capsys, rng):
    planes = rng.integers(0, 255, size=(3, *SHAPE), dtype=np.uint8)
    image = tmp_path / "planes.tif"
    tifffile.imwrite(image, planes, photometric="rgb", planarconfig="separate")
    assert open_volume(str(image)).axes == "cyx"
    labels = np.zeros((3, *SHAPE), np.uint8)
    labels[1, 10:20, 10:20], labels[1, 30:40, 20:30] = 1, 2
    tifffile.imwrite(tmp_path / "s.tif", labels, photometric="minisblack")
    train = ["train", image, tmp_path / "s.tif", "--model", tmp_path / "m"]
    line = one_error_line(capsys, *train)
    assert f"give the image as '{image}[channel_axis=none]'" in line
    assert open_volume(f"{image}[channel_axis=none]").axes == "zyx"
