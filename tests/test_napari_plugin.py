"""The napari plugin, driven in a real viewer as a user would (under Xvfb).

Skipped where napari, pytest-qt or a display (pytest-xvfb's Xvfb) is missing; CI installs
them (`.ci/run`), so they run there.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

import tiledseg as ts
from tiledseg.testing import make_phantom

# CI installs what they need (.ci/run, tools/viewer_deps.sh): there they must run
REQUIRED = os.environ.get("TILEDSEG_REQUIRE_VIEWER") == "1"


def _missing() -> str | None:
    import importlib.util

    for module in ("napari", "pytestqt", "pytest_xvfb"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (the dev extra has it)"
    if not os.environ.get("DISPLAY"):
        return "no display (install Xvfb: pytest-xvfb starts it; tools/viewer_deps.sh)"
    return None


if (why := _missing()) is not None:
    if REQUIRED:
        raise RuntimeError(f"TILEDSEG_REQUIRE_VIEWER=1 but {why}")
    pytest.skip(why, allow_module_level=True)

pytestmark = [
    # (napari, vispy and Qt warn about their own deprecations; tiledseg's are errors still)
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def dock(viewer):
    """Open the plugin's widget through its npe2 manifest, as napari's Plugins menu does."""
    _, widget = viewer.window.add_plugin_dock_widget("tiledseg", "Scribble segmentation")
    return widget


def wait_for(qtbot, widget, timeout=120_000):
    """Wait until the widget's workers (and those they started: the preview) are done."""
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def test_train_preview_and_segment_all_in_2d(make_napari_viewer, qtbot, tmp_path):
    ph = make_phantom((160, 200), n_classes=3, scribble_fraction=0.02, seed=1)
    viewer = make_napari_viewer(show=True)  # (shown, on Xvfb's display: drawn for the shot)
    viewer.add_image(ph.image, name="micrograph")
    viewer.add_labels(ph.scribbles, name="scribbles")
    widget = dock(viewer)
    assert widget.image.value.name == "micrograph"
    assert widget.scribbles.value.name == "scribbles"
    widget.features.value = "minimal"
    widget.train()
    wait_for(qtbot, widget)
    assert "tiledseg preview" in viewer.layers
    preview = viewer.layers["tiledseg preview"].data
    expected = ts.predict(ph.image, widget.session.model, out=tmp_path / "whole.zarr")
    whole = zarr.open_array(f"{expected.path}/labels/0", mode="r")[...]
    assert_array_equal(preview, whole)  # (the preview is the prediction, voxel for voxel)
    assert np.mean(preview == ph.truth) > 0.9
    shot = viewer.screenshot(canvas_only=True, flash=False)
    from PIL import Image

    Image.fromarray(shot).save(tmp_path / "after-training.png")
    assert shot[..., :3].std() > 10  # (neither blank nor uniform)
    assert len(np.unique(shot[..., :3].reshape(-1, 3), axis=0)) > 50
    widget.out.value = str(tmp_path / "all.zarr")
    widget.segment_all()
    wait_for(qtbot, widget)
    layer = viewer.layers["all labels"]
    assert type(layer.data).__module__.startswith("dask")  # (lazy: read as it is shown)
    assert_array_equal(np.asarray(layer.data), whole)
    assert "all uncertainty" in viewer.layers


def test_a_volume_previews_the_plane_shown_and_follows_it(make_napari_viewer, qtbot, tmp_path):
    ph = make_phantom((24, 64, 64), n_classes=2, scribble_fraction=0.01, seed=2)
    store = zarr.create_array(str(tmp_path / "image.zarr"), shape=ph.image.shape,
                              chunks=(8, 32, 32), dtype=ph.image.dtype)  # fmt: skip
    store[...] = ph.image
    import dask.array as da

    viewer = make_napari_viewer()
    viewer.add_image(da.from_zarr(store), name="volume", scale=(2.0, 1.0, 1.0))
    viewer.add_labels(ph.scribbles, name="scribbles", scale=(2.0, 1.0, 1.0))
    widget = dock(viewer)
    widget.features.value = "minimal"
    viewer.dims.set_current_step(0, 5)
    widget.train()
    wait_for(qtbot, widget)
    assert widget.last_preview.plane == 5
    out = ts.predict(ph.image, widget.session.model, out=tmp_path / "whole.zarr",
                     spacing=(2.0, 1.0, 1.0))  # fmt: skip
    whole = zarr.open_array(f"{out.path}/labels/0", mode="r")
    assert_array_equal(viewer.layers["tiledseg preview"].data, whole[5])
    viewer.dims.set_current_step(0, 17)  # (the user moves to another plane)
    wait_for(qtbot, widget)
    assert widget.last_preview.plane == 17
    assert_array_equal(viewer.layers["tiledseg preview"].data, whole[17])
    # save and load the model file; an existing one is replaced only when asked
    widget.model_path.value = str(tmp_path / "m.tsm")
    widget.save_model()
    assert ts.load_model(tmp_path / "m.tsm").classes.tolist() == [1, 2]
    widget.save_model()
    assert "exists" in widget.status.value
    widget.overwrite.value = True
    widget.save_model()
    assert widget.status.value.startswith("model saved")
    widget.session.model = None
    widget.load_model()  # (it previews with the model it loaded)
    wait_for(qtbot, widget)
    assert widget.session.model is not None
    assert "preview of plane 17" in widget.status.value


def test_mistakes_are_one_line_in_the_status(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    widget.train()
    assert "choose an image layer" in widget.status.value
    viewer.add_image(np.random.default_rng(0).random((32, 32)), name="img")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="empty")
    widget.train()
    wait_for(qtbot, widget)
    assert widget.status.value.startswith("error: labels <")
    assert "hold no labelled voxel" in widget.status.value
    widget.segment_all()
    assert "output path" in widget.status.value
    widget.model_path.value = str(tmp_path / "none.tsm")
    widget.load_model()
    assert widget.status.value.startswith("error:")


def test_napari_ome_zarr_opens_the_outputs_with_their_levels(make_napari_viewer, tmp_path):
    """napari's own OME-Zarr reader plug-in shows labels as labels, with every level."""
    pytest.importorskip("napari_ome_zarr")
    ph = make_phantom((16, 200, 208), n_classes=2, scribble_fraction=0.01, seed=3)
    model = ts.train(ph.image, ph.scribbles, features="minimal", cache_dir=None)
    out = ts.predict(ph.image, model, out=tmp_path / "o.zarr", uncertainty=True, pyramid=1)
    viewer = make_napari_viewer()
    (labels,) = viewer.open(f"{out.path}/labels", plugin="napari-ome-zarr")
    (uncertainty,) = viewer.open(f"{out.path}/uncertainty", plugin="napari-ome-zarr")
    assert type(labels).__name__ == "Labels"
    assert type(uncertainty).__name__ == "Image"
    assert [tuple(level.shape) for level in labels.data] == [(16, 200, 208), (8, 100, 104)]
    whole = zarr.open_array(f"{out.path}/labels/0", mode="r")[...]
    assert_array_equal(np.asarray(labels.data[0]), whole)
