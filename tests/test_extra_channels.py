"""Extra channels: co-registered images appended as raw features (and optionally filtered).

The multi-modal phantom has two classes with the same intensity in the image that
only a second modality tells apart, as in nDTomo's battery tutorial (XRD + XRF maps).
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

import tiledseg as ts
from tiledseg.cli import main
from tiledseg.features import FeatureBank
from tiledseg.testing import make_phantom

BANK = {"gaussian_smoothing": [0.7, 1.6], "gaussian_gradient_magnitude": [1.0]}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEDSEG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def modalities():
    """Image: classes 2 and 3 look alike; extra: they differ (and class 1 sits between)."""
    ph = make_phantom((96, 90), n_classes=3, feature_size=9.0, scribble_fraction=0.03, seed=5)
    rng = np.random.default_rng(0)
    image = np.choose(ph.truth - 1, [60.0, 170.0, 170.0]) + rng.normal(0, 12, ph.truth.shape)
    extra = np.choose(ph.truth - 1, [0.5, 0.1, 0.9]) + rng.normal(0, 0.08, ph.truth.shape)
    return ph, image.astype(np.float32), extra.astype(np.float32)


def test_raw_extra_channels_come_after_the_image_features(modalities):
    _, image, extra = modalities
    second = (extra * 3).astype(np.float64)
    stack = ts.feature_array(image, features=BANK, block=(41, 37), extra_channels=[extra, second])
    own = ts.feature_array(image, features=BANK, block=(41, 37))
    got = stack.compute()
    n = own.shape[0]
    assert got.shape == (n + 2, *image.shape)
    assert_array_equal(got[:n], own.compute())
    assert_array_equal(got[n], extra)
    assert_array_equal(got[n + 1], second.astype(np.float32))
    bank = FeatureBank(BANK).with_extra_channels(2, filtered=False)
    names = [str(f) for f in bank.feature_names(ndim=2, n_channels=3)]
    assert names[n:] == ["raw(channel=1)", "raw(channel=2)"]


def test_filtered_extra_channels_get_every_family_and_tile_exactly(modalities):
    _, image, extra = modalities
    kwargs = {"features": BANK, "extra_channels": [extra], "filter_extra_channels": True}
    tiled = ts.feature_array(image, block=(23, 29), **kwargs).compute()
    untiled = ts.feature_array(image, block=image.shape, **kwargs).compute()
    assert_array_equal(tiled, untiled, strict=True)
    own = ts.feature_array(image, features=BANK, block=image.shape).compute()
    of_extra = ts.feature_array(extra, features=BANK, block=image.shape).compute()
    n = own.shape[0]
    assert tiled.shape[0] == 2 * n + 1
    assert_array_equal(tiled[:n], own)
    assert_array_equal(tiled[n], extra)
    assert_array_equal(tiled[n + 1 :], of_extra)


def test_a_second_modality_separates_what_the_image_cannot(modalities, fast_xgboost, tmp_path):
    ph, image, extra = modalities
    scores = {}
    for name, extras in (("image only", None), ("with extra", [extra])):
        model = ts.train(
            image,
            ph.scribbles,
            features=BANK,
            classifier=fast_xgboost(),
            cache_dir=None,
            extra_channels=extras,
        )
        out = tmp_path / f"{name}.zarr"
        ts.predict(image, model, out=out, extra_channels=extras, block=(40, 50))
        labels = zarr.open_array(f"{out}/labels/0", mode="r")[...]
        scores[name] = float((labels == ph.truth).mean())
    assert scores["image only"] < 0.8  # classes 2 and 3 are a coin toss
    assert scores["with extra"] > 0.95, scores


def extra_shape(files):
    return np.load(files["extra"], mmap_mode="r").shape


@pytest.fixture
def files(tmp_path, modalities):
    ph, image, extra = modalities
    paths = {}
    for name, data in (("image", image), ("labels", ph.scribbles), ("extra", extra)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], data)
    paths["extra2"] = tmp_path / "extra2.zarr"
    zarr.save_array(str(paths["extra2"]), (extra * 100).astype(np.uint16))
    paths["bank"] = tmp_path / "bank.yaml"
    paths["bank"].write_text("gaussian_smoothing: [0.7, 1.6]\ngaussian_gradient_magnitude: [1.0]\n")
    return {k: str(v) for k, v in paths.items()}


def test_the_cli_records_the_extras_and_predict_needs_them(files, tmp_path, capsys):
    model = str(tmp_path / "m.tsm")
    # the option once per path
    args = ["train", files["image"], files["labels"], "--model", model, "--features", files["bank"]]
    both = ["--extra-channels", files["extra"], "--extra-channels", files["extra2"]]
    assert main([*args, *both, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", model]) == 0
    info = capsys.readouterr().out
    assert (
        f"extra channels: 2 (raw values), trained with {files['extra']}, {files['extra2']}" in info
    )
    assert "raw(channel=2)" in info
    loaded = ts.load_model(model)
    assert loaded.n_channels == 3
    assert loaded.bank.extra_channels == 2

    predict = ["predict", files["image"], "--model", model, "--quiet"]
    out = str(tmp_path / "out.zarr")
    assert main([*predict, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "the model was trained with 2 extra channel(s)" in err
    assert "--extra-channels, in the same order" in err
    assert err.count("\n") == 1
    assert main([*predict, "--out", out, "--extra-channels", files["extra"]]) == 2
    assert "give 1 channel(s) but the model was trained with 2" in capsys.readouterr().err
    assert main([*predict, "--out", out, *both]) == 0
    # the same labels as the API gives, and the run's identity names the extras
    api = tmp_path / "api.zarr"
    ts.predict(files["image"], model, out=api, extra_channels=[files["extra"], files["extra2"]])
    read = lambda p: zarr.open_array(f"{p}/labels/0", mode="r")[...]  # noqa: E731
    assert_array_equal(read(out), read(api))
    identity = zarr.open_group(out, mode="r").attrs["tiledseg"]["identity"]
    assert len(identity["extra_channels"]) == 2
    # an unfinished run is continued only with the same extras, in the same order
    root = zarr.open_group(out, mode="r+")
    root.attrs["tiledseg"] = {**root.attrs["tiledseg"], "complete": False}
    swapped = [*predict, "--out", out, *both[2:], *both[:2]]
    assert main(swapped) == 2
    assert "unfinished run with a different set of extra channels" in capsys.readouterr().err
    # and no extra is ever the output
    assert main([*predict, "--out", files["extra2"], "--extra-channels", files["extra"],
                 "--extra-channels", files["extra2"], "--overwrite"]) == 2  # fmt: skip
    assert zarr.open_array(files["extra2"], mode="r").shape == extra_shape(files)


def test_a_positional_argument_after_the_option_stays_positional(files, tmp_path, capsys):
    model = str(tmp_path / "m.tsm")
    train = ["train", "--extra-channels", files["extra"], files["image"], files["labels"]]
    assert main([*train, "--model", model, "--features", files["bank"], "--quiet"]) == 0
    assert ts.load_model(model).bank.extra_channels == 1
    # two paths after one flag: the second is an image to predict (a collection needs
    # --out-dir), not an extra
    predict = ["predict", files["image"], "--model", model, "--out", str(tmp_path / "o.zarr")]
    assert main([*predict, "--extra-channels", files["extra"], files["extra2"]]) == 2
    assert "2 images: give --out-dir DIR, not --out" in capsys.readouterr().err


def test_bad_extra_channels_are_one_clear_line(files, tmp_path, capsys):
    model = str(tmp_path / "m.tsm")
    train = ["train", files["image"], files["labels"], "--model", model, "--quiet"]
    np.save(tmp_path / "small.npy", np.zeros((10, 10), np.float32))
    assert main([*train, "--extra-channels", str(tmp_path / "small.npy")]) == 2
    err = capsys.readouterr().err
    assert "has spatial shape (10, 10)" in err
    assert "co-registered" in err
    assert err.count("\n") == 1
    assert main([*train, "--filter-extra-channels"]) == 2
    assert "--filter-extra-channels needs extra channels" in capsys.readouterr().err
    assert not (tmp_path / "m.tsm").exists()
    # a model trained without extras refuses them
    assert main([*train, "--features", files["bank"]]) == 0
    out = str(tmp_path / "o.zarr")
    predict = ["predict", files["image"], "--model", model, "--out", out, "--quiet"]
    assert main([*predict, "--extra-channels", files["extra"]]) == 2
    assert "trained without extra channels" in capsys.readouterr().err


def test_segment_config_with_filtered_extras(files, tmp_path, modalities):
    ph = modalities[0]
    np.save(tmp_path / "truth.npy", ph.truth)
    config = tmp_path / "job.yaml"
    config.write_text(
        "image: image.npy\nlabels: labels.npy\ntruth: truth.npy\nmodel: m.tsm\nout: o.zarr\n"
        "features: bank.yaml\nextra_channels: [extra.npy]\nfilter_extra_channels: true\n"
    )
    assert main(["segment", str(config), "--quiet"]) == 0
    model = ts.load_model(tmp_path / "m.tsm")
    assert model.bank.extra_channels == 1
    assert model.bank.filter_extra
    assert model.summary["extra_channels"] == [str(tmp_path / "extra.npy")]
    assert len(model.feature_names) == 2 * 3 + 1  # both channels filtered, one raw
    labels = zarr.open_array(f"{tmp_path}/o.zarr/labels/0", mode="r")[...]
    assert (labels == ph.truth).mean() > 0.9


def test_a_selected_model_keeps_its_extra_channels(modalities, tmp_path):
    ph, image, extra = modalities
    model = ts.train(
        image,
        ph.scribbles,
        features=BANK,
        classifier="random-forest",
        cache_dir=None,
        extra_channels=[extra],
        filter_extra_channels=True,
        select_features=3,
    )
    assert len(model.feature_names) == 3
    model.save(tmp_path / "m.tsm")
    with pytest.raises(ts.TiledsegError, match="trained with 1 extra channel"):
        ts.predict(image, model, out=tmp_path / "none.zarr")
    again = ts.load_model(tmp_path / "m.tsm")
    assert again.feature_names == model.feature_names
    ts.predict(image, again, out=tmp_path / "o.zarr", extra_channels=[extra])
    labels = zarr.open_array(f"{tmp_path}/o.zarr/labels/0", mode="r")[...]
    assert (labels == ph.truth).mean() > 0.9
