"""The model file: a verified round trip, and every kind of bad file refused without unpickling."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier

import tiledseg as ts
from tiledseg.errors import ModelFileError, OutputExistsError
from tiledseg.model import MAGIC, load_model


class MakesADirectory:
    """Unpickling this object calls ``os.mkdir(path)``: proof that something was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def feature_table(image, model) -> np.ndarray:
    feats = ts.feature_array(image, features=model.bank).compute()
    return feats.reshape(feats.shape[0], -1).T


@pytest.fixture(scope="module")
def rf_model(phantom2d, small_bank):
    return ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=small_bank,
        classifier="random-forest",
        cache_dir=None,
    )


# -- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["xgboost", "random-forest", "extra-trees"])
def test_round_trip_gives_identical_predictions(
    tmp_path, phantom2d, small_bank, fast_xgboost, kind
):
    classifier = {
        "xgboost": fast_xgboost(),
        "random-forest": "random-forest",
        "extra-trees": ExtraTreesClassifier(n_estimators=10, random_state=0),
    }[kind]
    model = ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=small_bank,
        classifier=classifier,
        spacing=(1.0, 1.5),
        cache_dir=None,
    )
    path = model.save(tmp_path / "m.tiledseg")
    loaded = load_model(path)
    assert loaded.checksum == hashlib.sha256(path.read_bytes()).hexdigest() == model.checksum
    assert loaded.classes.tolist() == model.classes.tolist()
    assert loaded.bank == model.bank
    assert loaded.spacing == (1.0, 1.5)
    assert (loaded.ndim, loaded.n_channels, loaded.channel_axis) == (2, 1, None)
    assert loaded.summary == json.loads(json.dumps(model.summary))
    assert loaded.feature_names == model.feature_names
    table = feature_table(phantom2d.image, model)
    np.testing.assert_array_equal(loaded.predict_proba(table), model.predict_proba(table))
    a = ts.predict(phantom2d.image, model, out=tmp_path / "a.zarr", probabilities=True)
    b = ts.predict(phantom2d.image, path, out=tmp_path / "b.zarr", probabilities=True)
    import zarr

    for name in ("labels/0", "probabilities/0"):
        np.testing.assert_array_equal(
            zarr.open_array(f"{a.path}/{name}")[...], zarr.open_array(f"{b.path}/{name}")[...]
        )
    info = loaded.describe()
    assert info["classes"] == [1, 2, 3]
    assert len(info["importance"]) == len(info["features"])


def test_round_trip_with_the_newer_families(tmp_path, phantom2d, fast_xgboost):
    """A bank with the families after ilastik's six is stored, reloaded and predicts the same."""
    bank = {
        "gaussian_smoothing": [1.0],
        "sobel": [1.0],
        "local_std": [2.0],
        "median": [1.5],
        "gabor": [4.0],
    }
    model = ts.train(
        phantom2d.image,
        phantom2d.scribbles,
        features=bank,
        classifier=fast_xgboost(),
        spacing=(1.0, 1.5),
        cache_dir=None,
    )
    path = model.save(tmp_path / "m.tiledseg")
    loaded = load_model(path)
    assert loaded.bank == model.bank == ts.resolve_bank(bank)
    assert loaded.feature_names == model.feature_names
    assert len(loaded.feature_names) == 1 + 3 + 1 + 1 + 4
    assert "sobel(sigma=1, channel=0, magnitude)" in loaded.feature_names
    assert "gabor(wavelength=4, channel=0, theta=45)" in loaded.feature_names
    table = feature_table(phantom2d.image, model)
    np.testing.assert_array_equal(loaded.predict_proba(table), model.predict_proba(table))


def test_saving_over_an_existing_file_needs_overwrite(tmp_path, rf_model):
    path = tmp_path / "m.tiledseg"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="exists.*--overwrite"):
        rf_model.save(path)
    assert path.read_bytes() == b"precious"
    rf_model.save(path, overwrite=True)
    assert load_model(path).classes.tolist() == [1, 2, 3]
    assert not list(tmp_path.glob(".*partial*")), "no temporary file is left behind"
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputExistsError, match="directory"):
        rf_model.save(tmp_path / "dir", overwrite=True)


# -- bad files -------------------------------------------------------------------------------


@pytest.fixture
def good_bytes(model_file):
    return model_file.read_bytes()


def _header_span(data: bytes) -> tuple[int, int]:
    start = len(MAGIC) + 8
    length = int.from_bytes(data[len(MAGIC) : start], "big")
    return start, start + length


def _write(tmp_path, data: bytes):
    path = tmp_path / "bad.tiledseg"
    path.write_bytes(data)
    return path


def test_the_good_file_loads(good_bytes, tmp_path):
    assert load_model(_write(tmp_path, good_bytes)).ndim == 2


def test_tampered_header_value(tmp_path, good_bytes):
    start, stop = _header_span(good_bytes)
    header = good_bytes[start:stop]
    assert b'"ndim": 2' in header
    tampered = good_bytes.replace(b'"ndim": 2', b'"ndim": 3', 1)
    with pytest.raises(ModelFileError, match="modified .header checksum"):
        load_model(_write(tmp_path, tampered))


@pytest.mark.parametrize("where", [0, 1, 2, -2])
def test_tampered_header_byte(tmp_path, good_bytes, where):
    start, stop = _header_span(good_bytes)
    position = (start + where) if where >= 0 else (stop + where)
    data = bytearray(good_bytes)
    data[position] ^= 0x01
    with pytest.raises(ModelFileError):
        load_model(_write(tmp_path, bytes(data)))


@pytest.mark.parametrize("where", [0, 100, -1])
def test_tampered_payload_byte(tmp_path, good_bytes, where):
    _, stop = _header_span(good_bytes)
    data = bytearray(good_bytes)
    data[stop + where if where >= 0 else where] ^= 0x40
    with pytest.raises(ModelFileError, match="payload checksum"):
        load_model(_write(tmp_path, bytes(data)))


def test_tampered_magic(tmp_path, good_bytes):
    with pytest.raises(ModelFileError, match="not a tiledseg model"):
        load_model(_write(tmp_path, b"X" + good_bytes[1:]))


@pytest.mark.parametrize("keep", [0.99, 0.5, "header", "length", "magic"])
def test_truncated_file(tmp_path, good_bytes, keep):
    start, stop = _header_span(good_bytes)
    size = {"header": stop - 5, "length": start - 3, "magic": 5}.get(
        keep, int(len(good_bytes) * keep) if isinstance(keep, float) else 0
    )
    with pytest.raises(ModelFileError):
        load_model(_write(tmp_path, good_bytes[:size]))


def test_length_field_larger_than_the_file(tmp_path, good_bytes):
    data = MAGIC + (10**12).to_bytes(8, "big") + good_bytes[len(MAGIC) + 8 :]
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(_write(tmp_path, data))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_is_refused_without_being_unpickled(tmp_path, protocol):
    trap = tmp_path / "unpickled"
    evil = pickle.dumps({"model": MakesADirectory(str(trap)), "classes": [1, 2]}, protocol=protocol)
    # the trap is live: unpickling these bytes does create the directory
    check = tmp_path / "check"
    pickle.loads(pickle.dumps(MakesADirectory(str(check)), protocol=protocol))
    assert check.is_dir()

    path = _write(tmp_path, evil)
    with pytest.raises(ModelFileError, match="pickle|not a tiledseg model"):
        load_model(path)
    assert not trap.exists(), "the file was unpickled"


def test_a_pickled_payload_behind_a_valid_header_is_not_unpickled(tmp_path, rf_model):
    """Even a well-formed file whose payload is a pickle (checksums made to match) is refused."""
    trap = tmp_path / "unpickled"
    data = rf_model.to_bytes()
    start, stop = _header_span(data)
    header = json.loads(data[start:stop])
    payload = pickle.dumps(MakesADirectory(str(trap)))
    header.update(payload_bytes=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest())
    from tiledseg.model import _header_digest

    header["header_sha256"] = _header_digest(header)
    blob = json.dumps(header, sort_keys=True).encode()
    path = _write(tmp_path, MAGIC + len(blob).to_bytes(8, "big") + blob + payload)
    with pytest.raises(ModelFileError):
        load_model(path)
    assert not trap.exists()


def test_a_zip_file_is_refused(tmp_path):
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("schema.json", "{}")
    with pytest.raises(ModelFileError, match="zip archive"):
        load_model(path)


def test_an_empty_file_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="not a tiledseg model"):
        load_model(_write(tmp_path, b""))


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nothing.tiledseg")
    with pytest.raises(ModelFileError, match="is a folder"):
        load_model(tmp_path)  # a directory


def test_a_newer_format_version_is_refused(tmp_path, good_bytes):
    start, stop = _header_span(good_bytes)
    header = json.loads(good_bytes[start:stop])
    header["format_version"] = 99
    from tiledseg.model import _header_digest

    header["header_sha256"] = _header_digest(header)
    blob = json.dumps(header, sort_keys=True).encode()
    data = MAGIC + len(blob).to_bytes(8, "big") + blob + good_bytes[stop:]
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model(_write(tmp_path, data))


def test_model_errors_are_tiledseg_errors():
    assert issubclass(ModelFileError, ts.TiledsegError)


def test_a_payload_naming_a_builtin_function_is_refused(tmp_path, monkeypatch):
    """skops would call builtins.eval with arguments from the file: refuse by exact type name."""
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import FunctionTransformer

    from tiledseg.classifiers import SklearnClassifier
    from tiledseg.errors import ModelFileError, TiledsegError

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)).astype(np.float32), np.arange(60) % 2
    forest = SklearnClassifier(RandomForestClassifier(n_estimators=3, random_state=0))
    forest.fit(X, y, n_threads=1)
    model = ts.Model(
        classifier=forest,
        classes=np.array([1, 2]),
        bank=ts.resolve_bank("minimal"),
        ndim=2,
        n_channels=1,
        spacing=(1.0, 1.0),
    )
    evil = sio.dumps(FunctionTransformer(func=eval))
    assert "builtins.eval" in sio.get_untrusted_types(data=evil)
    monkeypatch.setattr(SklearnClassifier, "to_bytes", lambda self: evil)
    path = model.save(tmp_path / "evil.tseg")  # checksums are right: only the types give it away
    with pytest.raises(ModelFileError, match="builtins.eval"):
        ts.load_model(path)
    monkeypatch.undo()
    # and such an estimator is refused when saving, so no unloadable model is ever written
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(FunctionTransformer(func=abs), LogisticRegression())
    pipeline.fit(X, y)
    with pytest.raises(TiledsegError, match="builtins.abs"):
        SklearnClassifier(pipeline).to_bytes()


def test_a_pipeline_trains_and_round_trips(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tiledseg.testing import make_phantom

    phantom = make_phantom((48, 48), n_classes=2, seed=0)
    model = ts.train(
        phantom.image,
        phantom.scribbles,
        features="minimal",
        classifier=make_pipeline(StandardScaler(), LogisticRegression()),
        cache_dir=None,
    )
    assert model.classifier.name == "Pipeline"
    path = model.save(tmp_path / "pipe.tseg")
    loaded = ts.load_model(path)
    X = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict_proba(X), loaded.predict_proba(X))


def test_a_model_with_class_values_like_85_170_255_loads_again(tmp_path):
    """The summary's class keys are integers: the header digest must be of the JSON form."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 30)).astype(np.float32)
    image[:, 15:] += 2
    labels = np.zeros(image.shape, np.uint8)
    labels[3:17, 3], labels[3:17, 27], labels[10, 5:25] = 85, 170, 255
    model = ts.train(image, labels, features={"gaussian_smoothing": [1.0]}, cache_dir=None)
    again = ts.load_model(model.save(tmp_path / "m.tseg"))
    assert again.classes.tolist() == [85, 170, 255]
    assert again.summary["labelled_voxels"] == {"85": 14, "170": 14, "255": 20}
