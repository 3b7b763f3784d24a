"""PNG and JPEG inputs, and inputs of no kind tiledseg reads (issue 17).

Images and scribbles are real files written in ``tmp_path``; the commands run through
:func:`tiledseg.cli.main`, as a user runs them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from tiledseg.cli import main
from tiledseg.errors import InputDataError
from tiledseg.formats import READABLE, file_kind
from tiledseg.model import MAGIC
from tiledseg.testing import make_phantom
from tiledseg.volume import open_volume

Image = pytest.importorskip("PIL.Image")

SHAPE = (48, 40)
PALETTE = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]  # 0 black, 1 red, 2 green, 3 blue


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, n_classes=3, feature_size=8.0, scribble_fraction=0.05, seed=1)


def rgb_of(grey: np.ndarray) -> np.ndarray:
    """Three channels that differ, from one grey image."""
    return np.stack([grey, 255 - grey, grey // 2], axis=-1).astype(np.uint8)


def palette_png(path: Path, values: np.ndarray) -> Path:
    """Save ``values`` (0..3) as a palette PNG, as a paint program stores scribbles."""
    image = Image.fromarray(values.astype(np.uint8), mode="P")
    image.putpalette(PALETTE)
    image.save(path)
    return path


def one_error_line(capsys, args: list[object], status: int = 2) -> str:
    """Run ``main(args)``: assert the exit status and one line on stderr; return it."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- reading ---------------------------------------------------------------------------------


def test_grey_png_is_y_x(tmp_path, phantom):
    Image.fromarray(phantom.image).save(tmp_path / "grey.png")
    volume = open_volume(str(tmp_path / "grey.png"))
    assert (volume.shape, volume.channel_axis, volume.dtype) == (SHAPE, None, np.uint8)
    np.testing.assert_array_equal(volume.read((slice(None), slice(None)))[0], phantom.image)


def test_16_bit_png_keeps_its_values(tmp_path, rng):
    pixels = rng.integers(0, 65535, SHAPE, dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    volume = open_volume(str(tmp_path / "deep.png"))
    assert volume.dtype == np.uint16
    np.testing.assert_array_equal(volume.read((slice(None), slice(None)))[0], pixels)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_png_channels_are_last(tmp_path, phantom, mode):
    pixels = rgb_of(phantom.image)
    if mode == "RGBA":
        pixels = np.concatenate([pixels, np.full((*SHAPE, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(pixels, mode=mode).save(tmp_path / "colour.png")
    volume = open_volume(str(tmp_path / "colour.png"))
    assert (volume.shape, volume.channel_axis, volume.n_channels) == (SHAPE, 2, len(mode))
    block = volume.read((slice(3, 20), slice(5, 9)))
    np.testing.assert_array_equal(block, np.moveaxis(pixels[3:20, 5:9], -1, 0))


def test_jpeg_is_read_with_its_channels(tmp_path, phantom):
    Image.fromarray(rgb_of(phantom.image)).save(tmp_path / "photo.jpg", quality=95)
    volume = open_volume(str(tmp_path / "photo.jpg"))
    assert (volume.shape, volume.n_channels, volume.dtype) == (SHAPE, 3, np.uint8)
    Image.fromarray(phantom.image).save(tmp_path / "grey.jpeg", quality=95)
    assert open_volume(str(tmp_path / "grey.jpeg")).channel_axis is None


def test_palette_png_is_its_indices_as_labels_and_its_colours_as_an_image(tmp_path, phantom):
    path = palette_png(tmp_path / "scribbles.png", phantom.scribbles)
    labels = open_volume(str(path), role="labels", allow_channels=False)
    np.testing.assert_array_equal(labels.read((slice(None), slice(None)))[0], phantom.scribbles)
    image = open_volume(str(path))
    assert image.n_channels == 3
    red = image.read((slice(None), slice(None)))[0]
    np.testing.assert_array_equal(red, np.where(phantom.scribbles == 1, 255, 0))


def test_a_png_volume_pickles_without_its_pixels(tmp_path, phantom):
    Image.fromarray(rgb_of(phantom.image)).save(tmp_path / "colour.png")
    volume = open_volume(str(tmp_path / "colour.png"))
    copy = pickle.loads(pickle.dumps(volume))
    assert len(pickle.dumps(volume)) < phantom.image.nbytes
    np.testing.assert_array_equal(copy.read((slice(None),) * 2), volume.read((slice(None),) * 2))


def test_a_file_of_another_name_is_read_by_its_first_bytes(tmp_path, phantom):
    tifffile.imwrite(tmp_path / "scan.dat", phantom.image)
    Image.fromarray(phantom.image).save(tmp_path / "grey.image", format="PNG")
    for name in ("scan.dat", "grey.image"):
        volume = open_volume(str(tmp_path / name))
        np.testing.assert_array_equal(volume.read((slice(None),) * 2)[0], phantom.image)
    assert file_kind(str(tmp_path / "scan.dat")) == "tiff"


# -- train and predict on PNG ----------------------------------------------------------------


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
def test_train_and_predict_on_png_with_scribbles_painted_in_a_png(
    tmp_path, capsys, phantom, colour
):
    pixels = rgb_of(phantom.image) if colour else phantom.image
    Image.fromarray(pixels).save(tmp_path / "image.png")
    palette_png(tmp_path / "scribbles.png", phantom.scribbles)
    model, out = tmp_path / "m.tseg", tmp_path / "out.zarr"
    train = ["train", tmp_path / "image.png", tmp_path / "scribbles.png", "--model", model]
    assert main([str(a) for a in [*train, "--features", "minimal", "--quiet", "--no-cache"]]) == 0
    predict = ["predict", tmp_path / "image.png", "--model", model, "--out", out, "--quiet"]
    assert main([str(a) for a in predict]) == 0, capsys.readouterr().err
    labels = zarr.open_group(str(out), mode="r")["labels/0"][...]
    assert labels.shape == SHAPE
    scribbled = phantom.scribbles > 0
    assert np.mean(labels[scribbled] == phantom.scribbles[scribbled]) > 0.9


# -- refused ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.tseg", "model.png", "model.zarr"])
def test_a_model_file_given_as_the_image_is_named_a_model(tmp_path, capsys, model_file, name):
    (tmp_path / name).write_bytes(Path(model_file).read_bytes())
    args = ["predict", tmp_path / name, "--model", model_file, "--out", tmp_path / "o.zarr"]
    line = one_error_line(capsys, args)
    assert f"image '{tmp_path / name}' is not a file tiledseg reads" in line
    assert "tiledseg model file" in line
    assert READABLE in line
    assert not (tmp_path / "o.zarr").exists()


def test_a_file_of_no_kind_tiledseg_reads_lists_the_kinds(tmp_path, capsys, model_file):
    (tmp_path / "notes.txt").write_text("not an image\n")
    args = ["predict", tmp_path / "notes.txt", "--model", model_file, "--out", tmp_path / "o"]
    line = one_error_line(capsys, args)
    assert "is not a file tiledseg reads; give zarr, OME-Zarr, TIFF" in line
    assert "PNG or JPEG" in line
    assert "model" not in line.split("reads;")[0]


def test_a_folder_that_is_not_a_zarr_store_or_whose_metadata_is_damaged(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputDataError, match="is a folder but not a zarr store") as error:
        open_volume(str(tmp_path / "plain"))
    assert READABLE in str(error.value)
    store = tmp_path / "broken.zarr"
    zarr.create_array(str(store), shape=(4, 4), dtype="u1")
    (store / "zarr.json").write_text("{ not json")
    with pytest.raises(InputDataError, match="is a zarr store that zarr cannot open"):
        open_volume(str(store))


def test_scribbles_in_a_jpeg_or_a_colour_png_are_refused(tmp_path, capsys, phantom):
    Image.fromarray(phantom.image).save(tmp_path / "image.png")
    Image.fromarray(phantom.scribbles * 60).save(tmp_path / "scribbles.jpg")
    Image.fromarray(rgb_of(phantom.scribbles * 60)).save(tmp_path / "colour.png")
    for name, needle in [
        ("scribbles.jpg", "is a JPEG, whose lossy compression changes the values"),
        ("colour.png", "is a colour image (Pillow mode RGB); a label map holds one value"),
    ]:
        args = ["train", tmp_path / "image.png", tmp_path / name, "--model", tmp_path / "m"]
        line = one_error_line(capsys, args)
        assert f"labels '{tmp_path / name}' " in line
        assert needle in line
    assert not (tmp_path / "m").exists()


def test_a_damaged_png_is_one_line(tmp_path, capsys, model_file):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    args = ["predict", tmp_path / "broken.png", "--model", model_file, "--out", tmp_path / "o"]
    line = one_error_line(capsys, args)
    assert "is not a readable PNG or JPEG file" in line


def test_model_magic_is_the_models(tmp_path):
    (tmp_path / "m").write_bytes(MAGIC + b"rest")
    assert file_kind(str(tmp_path / "m")) == "model"
