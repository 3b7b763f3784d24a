"""Plug-in features: a user function with a declared halo and output count is a family.

The example plug-in lives in ``plugin_example.py`` (an importable module, as a user's
would be); it is named in banks as ``plugin_example:smoothed_and_max``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from plugin_example import reference
from test_filters import whole
from test_tiling import check_case

import tiledseg as ts
from tiledseg import TiledsegError, check_plugin, register_feature
from tiledseg.features import FeatureBank
from tiledseg.features.bank import relative_spacing
from tiledseg.testing import strategies as tst

NAME = "plugin_example:smoothed_and_max"
HERE = Path(__file__).parent


def test_a_plugin_is_its_function_on_the_whole_array():
    image = np.random.default_rng(0).random((20, 23), dtype=np.float32) * 100
    out = whole(image, FeatureBank({NAME: [1.0, 2.0]}))
    expected = np.concatenate([reference(image, s, (1.0, 1.0)) for s in (1.0, 2.0)])
    assert_array_equal(out, expected, strict=True)
    bank = FeatureBank({NAME: [2.0]})
    assert bank.halo((1.0, 1.0)) == (7 + 1, 7 + 1)
    assert [str(n) for n in bank.feature_names(ndim=2, n_channels=1)] == [
        f"{NAME}(sigma=2, channel=0, output=0)",
        f"{NAME}(sigma=2, channel=0, output=1)",
    ]


def test_a_plugin_sees_the_relative_spacing():
    image = np.random.default_rng(1).random((9, 16, 14), dtype=np.float32)
    out = whole(image, FeatureBank({NAME: [1.5]}), spacing=(3.0, 1.0, 1.0))
    assert_array_equal(out, reference(image, 1.5, relative_spacing((3.0, 1.0, 1.0))))


@pytest.mark.parametrize(
    ("shape", "block", "spacing"),
    [((31, 26), (9, 11), (1.0, 1.0)), ((14, 19, 17), (6, 7, 8), (2.0, 1.0, 1.0))],
)
def test_a_plugin_tiles_exactly_on_uneven_blocks(shape, block, spacing):
    # the declared halo is the same along every axis, whatever the spacing
    bank = FeatureBank({NAME: [0.7, 1.5], "gaussian_smoothing": [1.0]})
    assert bank.halo(spacing) == (6,) * len(shape)
    check_case(tst.TilingCase(shape, 2, "float32", bank, spacing, block, seed=5))


@given(
    tst.tiling_cases(
        bank=st.sampled_from(
            [
                FeatureBank({NAME: [1.0]}),
                FeatureBank({NAME: [0.7, 2.0], "sobel": [1.0]}, in_2d=[NAME]),
            ]
        )
    )
)
def test_plugin_tiling_is_exact_for_drawn_cases(case):
    check_case(case)


# -- registering through the API ---------------------------------------------------------------


def local_range(image, scale, *, spacing):
    """Maximum minus minimum in a (2r+1) box: a registered (not decorated) function."""
    from scipy import ndimage as ndi

    size = 2 * int(scale) + 1
    return (
        ndi.maximum_filter(image, size=size, mode="reflect")
        - ndi.minimum_filter(image, size=size, mode="reflect")
    )[np.newaxis]


def test_a_registered_function_is_a_family_under_its_short_name():
    plugin = register_feature(local_range, halo=lambda s: int(s), outputs=1, name="local_range")
    assert plugin.name == "local_range"
    image = np.random.default_rng(2).random((25, 30), dtype=np.float32)
    bank = FeatureBank({"local_range": [2, 3]})
    assert bank.halo((1.0, 1.0)) == (3, 3)
    out = whole(image, bank)
    assert_array_equal(out[1], local_range(image, 3, spacing=(1, 1))[0])
    check_plugin("local_range", scale=3)
    check_plugin(local_range, scale=2)
    # its module:function name reaches the same function
    assert FeatureBank({f"{__name__}:local_range": [2]}).n_features(ndim=2, n_channels=1) == 1


def test_check_plugin_catches_a_halo_smaller_than_the_reach():
    register_feature(local_range, halo=lambda s: int(s) - 1, outputs=1, name="range_short_halo")
    with pytest.raises(TiledsegError, match="differs tiled and untiled.*declared halo 2"):
        check_plugin("range_short_halo", scale=3)


def wrong_shape(image, scale, *, spacing):
    return image[np.newaxis, 1:]


def test_a_plugin_that_returns_the_wrong_shape_is_named():
    register_feature(wrong_shape, halo=0, outputs=1, name="wrong_shape")
    with pytest.raises(TiledsegError, match="'wrong_shape' returned shape .* must return"):
        whole(np.zeros((8, 8), np.float32), FeatureBank({"wrong_shape": [1]}))


def undeclared(image, scale, *, spacing):
    return image[np.newaxis]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_family", "unknown feature family 'no_such_family'.*package.module:function"),
        ("no_such_module_xyz:f", "cannot be imported here \\(ModuleNotFoundError"),
        (":f", "is not a 'package.module:function' name"),
        (".x:f", "is not a 'package.module:function' name"),
        ("plugin_example:missing", "cannot be imported here \\(AttributeError"),
        (f"{__name__}:undeclared", "is not a declared feature: decorate it"),
    ],
)
def test_an_unknown_or_undeclared_plugin_is_one_clear_error(name, message):
    with pytest.raises(TiledsegError, match=message):
        FeatureBank({name: [1.0]})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"halo": -1, "outputs": 1}, "halo of plug-in feature .* integer >= 0"),
        ({"halo": 1, "outputs": 0}, "output count of plug-in feature .* integer >= 1"),
        ({"halo": 1.5, "outputs": 1}, "integer >= 0, got 1.5"),
        ({"halo": 1, "outputs": 1, "name": "sobel"}, "taken by a built-in family"),
    ],
)
def test_bad_declarations_are_refused_when_registered(kwargs, message):
    with pytest.raises(TiledsegError, match=message):
        register_feature(undeclared, **kwargs)


def test_outputs_may_depend_on_the_dimensionality_and_planes():
    def gradient(image, scale, *, spacing):
        return np.stack(np.gradient(image))

    register_feature(gradient, halo=1, outputs=lambda ndim: ndim, name="np_gradient")
    volume = np.random.default_rng(3).random((6, 12, 13), dtype=np.float32)
    assert FeatureBank({"np_gradient": [1]}).n_features(ndim=3, n_channels=1) == 3
    planar = FeatureBank({"np_gradient": [1]}, in_2d=["np_gradient"])
    assert planar.n_features(ndim=3, n_channels=1) == 2
    assert planar.halo((1, 1, 1)) == (0, 1, 1)
    out = whole(volume, planar)
    assert_array_equal(out[:, 2], np.stack(np.gradient(volume[2])))


# -- a plug-in through the whole engine ------------------------------------------------------


def test_a_plugin_bank_file_trains_and_predicts_in_fresh_processes(tmp_path):
    """The CLI in new processes, and dask worker processes, import the plug-in by name."""
    from tiledseg.testing import make_phantom

    ph = make_phantom((40, 44), n_classes=2, scribble_fraction=0.03, seed=2)
    np.save(tmp_path / "image.npy", ph.image)
    np.save(tmp_path / "labels.npy", ph.scribbles)
    (tmp_path / "bank.yaml").write_text(f"gaussian_smoothing: [1.0]\n'{NAME}': [1.0, 2.0]\n")
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "TILEDSEG_PLUGINS": "plugin_example"}

    def cli(*args):
        run = subprocess.run(
            [sys.executable, "-m", "tiledseg", *args], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return run

    cli("train", str(tmp_path / "image.npy"), str(tmp_path / "labels.npy"),
        "--features", str(tmp_path / "bank.yaml"), "--model", str(tmp_path / "m.tsm"),
        "--quiet")  # fmt: skip
    # a model file imports plug-in code only where TILEDSEG_PLUGINS allows it
    refused = subprocess.run(
        [sys.executable, "-m", "tiledseg", "info", str(tmp_path / "m.tsm")],
        env={**env, "TILEDSEG_PLUGINS": ""},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "only when allowed: set TILEDSEG_PLUGINS=plugin_example" in refused.stderr
    assert refused.stderr.count("\n") == 1
    info = cli("info", str(tmp_path / "m.tsm")).stdout
    assert f"{NAME}(sigma=2, channel=0, output=1)" in info
    cli("predict", str(tmp_path / "image.npy"), "--model", str(tmp_path / "m.tsm"),
        "--out", str(tmp_path / "threads.zarr"), "--block", "17")  # fmt: skip
    cli("predict", str(tmp_path / "image.npy"), "--model", str(tmp_path / "m.tsm"),
        "--out", str(tmp_path / "workers.zarr"), "--block", "23", "--workers", "2")  # fmt: skip
    model = ts.load_model(tmp_path / "m.tsm")
    assert NAME in model.bank.families
    one = tmp_path / "one.zarr"
    ts.predict(ph.image, model, out=one, block=ph.image.shape)
    expected = zarr.open_array(f"{one}/labels/0", mode="r")[...]
    for name in ("threads", "workers"):
        got = zarr.open_array(f"{tmp_path}/{name}.zarr/labels/0", mode="r")[...]
        assert_array_equal(got, expected)
    assert (expected == ph.truth).mean() > 0.8


def test_a_model_whose_plugin_is_not_here_is_one_clear_error(tmp_path, monkeypatch, fast_xgboost):
    from tiledseg.features import plugins
    from tiledseg.testing import make_phantom

    register_feature(local_range, halo=lambda s: int(s), outputs=1, name="local_range")
    ph = make_phantom((30, 32), n_classes=2, scribble_fraction=0.05, seed=1)
    model = ts.train(
        ph.image,
        ph.scribbles,
        features={"local_range": [1], "gaussian_smoothing": [1.0]},
        classifier=fast_xgboost(),
        cache_dir=None,
    )
    model.save(tmp_path / "m.tsm")
    assert ts.load_model(tmp_path / "m.tsm").bank == model.bank
    # a new session that has not registered the short name
    monkeypatch.setattr(plugins, "_REGISTRY", {})
    with pytest.raises(TiledsegError, match="unknown feature family 'local_range'"):
        ts.load_model(tmp_path / "m.tsm")


PROBE = """
import pathlib
import numpy as np
import tiledseg

pathlib.Path(__file__).with_name("imported").touch()


@tiledseg.feature_plugin(halo=0, outputs=1)
def double(image, scale, *, spacing):
    return (image * scale)[np.newaxis]
"""


def tiny_pair():
    image = np.random.default_rng(0).random((20, 20), dtype=np.float32)
    labels = np.zeros((20, 20), np.uint8)
    labels[:5], labels[-5:] = 1, 2
    return image, labels


def test_loading_a_model_imports_no_code_unless_allowed(tmp_path, monkeypatch, fast_xgboost):
    """A model file may come from anywhere: naming a module must not run it."""
    from tiledseg.features import plugins

    (tmp_path / "probe_plugin.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    image, labels = tiny_pair()
    bank = {"probe_plugin:double": [1.0], "gaussian_smoothing": [1.0]}  # a bank: imported
    model = ts.train(image, labels, features=bank, classifier=fast_xgboost(), cache_dir=None)
    model.save(tmp_path / "m.tsm")
    assert (tmp_path / "imported").exists()
    # a new session: nothing imported or registered yet
    (tmp_path / "imported").unlink()
    monkeypatch.delitem(sys.modules, "probe_plugin")
    monkeypatch.setattr(plugins, "_REGISTRY", {})
    monkeypatch.delenv("TILEDSEG_PLUGINS", raising=False)
    with pytest.raises(TiledsegError, match="set TILEDSEG_PLUGINS=probe_plugin if you trust"):
        ts.load_model(tmp_path / "m.tsm")
    assert not (tmp_path / "imported").exists()
    monkeypatch.setenv("TILEDSEG_PLUGINS", "other, probe_plugin")
    assert ts.load_model(tmp_path / "m.tsm").bank == model.bank
    assert (tmp_path / "imported").exists()


def test_models_with_bank_options_or_plugins_are_format_version_3(fast_xgboost):
    import json
    import struct

    from tiledseg.model import MAGIC

    image, labels = tiny_pair()
    banks = {
        "plain": ({"gaussian_smoothing": [1.0], "sobel": [1.0]}, 1),
        "planar": (FeatureBank({"sobel": [1.0]}, in_2d=["sobel"]), 3),
        "plugin": ({NAME: [1.0]}, 3),
    }
    for name, (bank, version) in banks.items():
        model = ts.train(image, labels, features=bank, classifier=fast_xgboost(), cache_dir=None)
        data = model.to_bytes()
        (length,) = struct.unpack(">Q", data[len(MAGIC) : len(MAGIC) + 8])
        header = json.loads(data[len(MAGIC) + 8 : len(MAGIC) + 8 + length])
        assert header["format_version"] == version, name


def test_a_changed_plugin_does_not_reuse_the_cached_table(tmp_path, fast_xgboost):
    def first(image, scale, *, spacing):
        return image[np.newaxis] * 2

    def second(image, scale, *, spacing):
        return image[np.newaxis] * 3

    image, labels = tiny_pair()
    reused = []
    for function in (first, first, second):
        register_feature(function, halo=0, outputs=1, name="edited")
        model = ts.train(
            image, labels, features={"edited": [1]}, classifier=fast_xgboost(), cache_dir=tmp_path
        )
        reused.append(model.summary["table_from_cache"])
    assert reused == [False, True, False]


def in_place(image, scale, *, spacing):
    image *= 2
    return image[np.newaxis]


def test_a_plugin_cannot_change_the_block_others_read():
    register_feature(in_place, halo=0, outputs=1, name="in_place")
    with pytest.raises(TiledsegError, match="'in_place' failed at scale 1 .*read-only"):
        whole(np.ones((6, 6), np.float32), FeatureBank({"in_place": [1, 2]}))


@pytest.mark.parametrize("name", ["raw", "in_2d", "extra_channels"])
def test_reserved_names_are_refused(name):
    with pytest.raises(TiledsegError, match="taken by a built-in family or bank key"):
        register_feature(undeclared, halo=0, outputs=1, name=name)


def test_a_short_name_does_not_change_the_module_name_declaration():
    register_feature(local_range, halo=lambda s: int(s), outputs=1, name="local_range")
    register_feature(local_range, halo=0, outputs=1, name="range_no_halo")
    assert FeatureBank({f"{__name__}:local_range": [3]}).halo((1, 1)) == (3, 3)
