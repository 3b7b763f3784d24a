"""The run configuration of ``tiledseg segment``: strict keys, clear messages, relative paths."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from tiledseg.config import SegmentConfig, load_config
from tiledseg.errors import TiledsegError

REQUIRED = "image: img.npy\nlabels: scribbles.npy\nmodel: model.tseg\nout: out.zarr\n"


def write(folder: Path, text: str, name: str = "run.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_relative_paths_are_taken_relative_to_the_config_folder(tmp_path, monkeypatch):
    job = tmp_path / "job"
    job.mkdir()
    monkeypatch.chdir(tmp_path)  # not the config's folder
    path = write(
        job,
        "image: data/img.h5:/raw/volume\nlabels: ../scribbles.npy\nmodel: /abs/model.tseg\n"
        "out: out.zarr\ntruth: truth.zarr\nfeatures: banks/mine.yaml\n",
    )
    config = load_config(path)
    assert config.image == f"{job}/data/img.h5:/raw/volume"
    assert Path(config.labels) == job / ".." / "scribbles.npy"
    assert config.model == "/abs/model.tseg"
    assert config.out == str(job / "out.zarr")
    assert config.truth == str(job / "truth.zarr")
    assert config.features == str(job / "banks" / "mine.yaml")


def test_config_folder_given_relative_to_cwd(tmp_path, monkeypatch):
    (tmp_path / "job").mkdir()
    write(tmp_path / "job", REQUIRED)
    monkeypatch.chdir(tmp_path)
    config = load_config("job/run.yaml")
    assert config.image == str(tmp_path / "job" / "img.npy")


def test_defaults_and_values(tmp_path):
    config = load_config(write(tmp_path, REQUIRED))
    assert config.truth is None
    assert config.features == "default"  # a bank name is not a path
    assert config.classifier == "random-forest"
    assert config.block is None
    assert config.workers is None
    assert (config.probabilities, config.uncertainty, config.overwrite) == (False, False, False)
    assert config.seed == 0

    config = load_config(
        write(
            tmp_path,
            REQUIRED + "features: {gaussian_smoothing: [1.0, 2.0]}\nclassifier: random-forest\n"
            "spacing: [2, 1, 1]\nblock: [16, 32, 32]\nworkers: 2\nroi: '0:10,:,:'\n"
            "probabilities: true\nseed: 7\n",
        )
    )
    assert config.features == {"gaussian_smoothing": [1.0, 2.0]}
    assert config.classifier == "random-forest"
    assert config.spacing == [2.0, 1.0, 1.0]
    assert config.block == [16, 32, 32]
    assert config.workers == 2
    assert config.roi == "0:10,:,:"
    assert config.probabilities is True
    assert config.seed == 7


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, REQUIRED))
    with pytest.raises(pydantic.ValidationError):
        config.seed = 3


def test_typo_in_a_key_names_the_key_and_suggests_the_right_one(tmp_path):
    path = write(tmp_path, REQUIRED + "uncertainity: true\n")
    with pytest.raises(TiledsegError, match=r"unknown key 'uncertainity'") as info:
        load_config(path)
    message = str(info.value)
    assert "did you mean 'uncertainty'?" in message
    assert "known keys: image, labels, model, out" in message
    assert str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("workers: many", r"key 'workers' = 'many': Input should be a valid integer"),
        ("workers: 0", r"key 'workers' = 0: Input should be greater than 0"),
        ("classifier: svm", r"key 'classifier' = 'svm': Input should be 'random-forest' or"),
        ("block: 0", r"key 'block' = 0: Input should be greater than 0$"),
        ("block: [16, 0, 16]", r"key 'block' = \[16, 0, 16\]: item 1: .*greater than 0$"),
        ("spacing: [1, a, 1]", r"key 'spacing' = \[1, 'a', 1\]: item 1: .*valid number"),
        ("features: 3", r"key 'features' = 3: .*valid string; or .*valid dictionary"),
        ("probabilities: maybe", r"key 'probabilities' = 'maybe': .*valid boolean"),
    ],
)
def test_wrong_type_names_the_key_and_the_value(tmp_path, line, expected):
    with pytest.raises(TiledsegError, match=expected) as info:
        load_config(write(tmp_path, REQUIRED + line + "\n"))
    # pydantic's names for union members never reach the user
    assert "constrained-int" not in str(info.value)
    assert "dict[str" not in str(info.value)


def test_missing_required_key(tmp_path):
    text = REQUIRED.replace("labels: scribbles.npy\n", "")
    with pytest.raises(TiledsegError, match=r"required key 'labels' is missing"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "must hold a mapping of keys"),
        ("- image: a.npy\n", "must hold a mapping of keys"),
        ("image: [unclosed\n", "is not valid YAML"),
    ],
)
def test_not_a_mapping_or_not_yaml(tmp_path, text, expected):
    with pytest.raises(TiledsegError, match=expected):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(TiledsegError, match=r"config file '.*nope\.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_schema_requires_the_four_paths_and_forbids_other_keys():
    schema = SegmentConfig.model_json_schema()
    assert set(schema["required"]) == {"image", "labels", "model", "out"}
    assert schema["additionalProperties"] is False
