"""The plugin's engine without Qt (tiledseg.napari.session): runs wherever tiledseg does."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

import tiledseg as ts
from tiledseg.errors import InputDataError, OutputExistsError, TiledsegError
from tiledseg.napari.session import Session, lazy_outputs
from tiledseg.testing import make_phantom


@pytest.fixture(scope="module")
def trained():
    ph = make_phantom((12, 40, 44), n_classes=2, scribble_fraction=0.02, seed=5)
    session = Session()
    session.train(ph.image, ph.scribbles, features="minimal", spacing=(3.0, 1.0, 1.0))
    return ph, session


def test_a_preview_is_the_plane_of_a_whole_prediction(trained, tmp_path):
    ph, session = trained
    result = session.segment_all(ph.image, tmp_path / "o.zarr", spacing=(3.0, 1.0, 1.0))
    whole = zarr.open_array(f"{result.path}/labels/0", mode="r")[...]
    for plane in (0, 5, 11):  # (the first and last read their halo clipped)
        preview = session.preview(ph.image, plane=plane, spacing=(3.0, 1.0, 1.0))
        assert preview.plane == plane
        assert_array_equal(preview.labels, whole[plane])
        assert preview.uncertainty.shape == whole[plane].shape
    arrays = lazy_outputs(result.path)
    assert set(arrays) == {"labels", "uncertainty"}
    assert_array_equal(np.asarray(arrays["labels"]), whole)


def test_the_preview_makes_the_checks_a_prediction_makes(trained, tmp_path):
    ph, session = trained
    with pytest.raises(TiledsegError):  # (a 2D image for a 3D model: one line)
        session.preview(ph.image[0], plane=None)
    with pytest.raises(InputDataError, match="retrain with this image's spacing"):
        session.preview(ph.image, plane=3, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(TiledsegError, match="plane 12 is not one of the volume's 0..11"):
        session.preview(ph.image, plane=12, spacing=(3.0, 1.0, 1.0))


def test_save_and_load_keep_what_the_user_had(trained, tmp_path):
    _, session = trained
    path = tmp_path / "m.tsm"
    session.save(path)
    with pytest.raises(OutputExistsError, match="exists"):
        session.save(path)
    session.save(path, overwrite=True)
    other = Session()
    with pytest.raises(TiledsegError, match="no model yet"):
        other.preview(np.zeros((8, 8)), plane=None)
    assert other.load(path).classes.tolist() == session.model.classes.tolist()
    assert ts.load_model(path).bank == session.model.bank
