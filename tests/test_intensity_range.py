"""The intensity range a model records, and the one warning predict prints far from it.

Training records the dtype and the 0.1 and 99.9 percentiles of the image's values in its
boxes of scribbles; predicting on an image of another dtype or with values far from
them prints one warning line on stderr (the run goes on: rescaling may be on purpose).
An image without variation where the scribbles are is refused for training. Each test
runs the command (:func:`tiledseg.cli.main`) on files in ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tiledseg as ts
from tiledseg.cli import main
from tiledseg.model import load_model
from tiledseg.predict import intensity_warnings
from tiledseg.testing import make_phantom
from tiledseg.volume import open_volume

SHAPE = (24, 40, 40)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, n_classes=3, feature_size=6.0, seed=7)


@pytest.fixture
def work(tmp_path, monkeypatch, phantom):
    """The current folder, holding image.npy (the phantom's uint8) and scribbles.npy."""
    np.save(tmp_path / "image.npy", phantom.image)
    np.save(tmp_path / "scribbles.npy", phantom.scribbles)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *args: object) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err.splitlines()


TRAIN = ["train", "image.npy", "scribbles.npy", "--model", "model.tseg", "--quiet"]
TRAIN += ["--no-cache", "--features", "minimal"]


def predict(capsys, image: str, out: str = "out.zarr") -> list[str]:
    """Predict ``image`` with model.tseg; return stderr's lines (the run must succeed)."""
    args = ["predict", image, "--model", "model.tseg", "--out", out, "--quiet"]
    status, _, err = run(capsys, *args)
    assert status == 0, err
    assert Path(out, "labels").exists()
    return err


@pytest.fixture
def trained(work, capsys):
    status, _, err = run(capsys, *TRAIN)
    assert status == 0, err
    return load_model("model.tseg")


def test_the_model_records_the_dtype_and_range_training_read(trained, phantom):
    record = trained.intensity
    assert record == trained.summary["intensity"]
    assert record["dtype"] == "uint8"
    # the scribbles' boxes hold every phase: their range is most of the image's
    assert phantom.image.min() <= record["low"] < record["high"] <= phantom.image.max()
    assert record["high"] - record["low"] > 0.5 * np.ptp(phantom.image)


def test_the_same_kind_of_image_gives_no_warning(trained, capsys, phantom):
    assert predict(capsys, "image.npy") == []
    # another float type is the same values
    ts.train(phantom.image.astype(np.float32), phantom.scribbles, features="minimal").save(
        "float.tseg"
    )
    np.save("double.npy", phantom.image.astype(np.float64))
    args = ["predict", "double.npy", "--model", "float.tseg", "--out", "d.zarr", "--quiet"]
    status, _, err = run(capsys, *args)
    assert status == 0
    assert err == []


def test_a_rescaled_image_gives_one_warning_line_with_the_numbers(trained, capsys, phantom):
    np.save("wide.npy", phantom.image.astype(np.uint16) * 200)
    err = predict(capsys, "wide.npy")
    assert len(err) == 1, err
    low, high = trained.intensity["low"], trained.intensity["high"]
    assert err[0].startswith(
        f"warning: the model was trained on uint8 values {low:g}..{high:g}; image wide.npy is "
        "uint16 "
    )
    assert err[0].endswith(": rescale it if that is not on purpose")
    wide = phantom.image.astype(np.uint16) * 200
    assert f"{np.percentile(wide, 99.9, method='nearest'):g}" in err[0]


@pytest.mark.parametrize(
    ("scale", "shift", "warned"),
    [
        (1.0, 0.0, False),
        (1.5, 0.0, False),  # a little brighter
        (1.0, 0.3, False),  # shifted by less than half the range
        (1 / 255, 0.0, True),  # 0..1 where training saw 0..255
        (5.0, 0.0, True),  # a range 5 times wider
        (1.0, 0.8, True),  # shifted: less than half of the ranges in common
    ],
)
def test_far_ranges_warn_close_ones_do_not(phantom, scale, shift, warned):
    image = phantom.image.astype(np.float32)
    model = ts.train(image, phantom.scribbles, features="minimal", cache=False)
    width = model.intensity["high"] - model.intensity["low"]
    other = open_volume(image * np.float32(scale) + np.float32(shift * width))
    lines = intensity_warnings(model, other)
    assert len(lines) == int(warned), lines


def test_a_model_without_the_record_gives_no_warning(trained, capsys, phantom):
    del trained.summary["intensity"]  # as a model saved before the record was kept
    trained.save("model.tseg", overwrite=True)
    assert load_model("model.tseg").intensity is None
    np.save("wide.npy", phantom.image.astype(np.uint16) * 200)
    assert predict(capsys, "wide.npy") == []


def test_an_image_without_variation_at_the_scribbles_is_refused(work, capsys):
    flat = np.full(SHAPE, 7, dtype=np.uint16)
    np.save("flat.npy", flat)
    args = [a if a != "image.npy" else "flat.npy" for a in TRAIN]
    status, out, err = run(capsys, *args)
    assert status == 2
    assert out == ""
    assert err == [
        "tiledseg: error: image flat.npy has no variation (all values are 7) where the "
        "scribbles are: nothing to learn from"
    ]
    assert not Path("model.tseg").exists()
