"""One definition per option: the models reach the command line, the config file and the API."""

from __future__ import annotations

import click
import pytest

import tiledseg as ts
from tiledseg.cli import cli
from tiledseg.cli_options import models_of
from tiledseg.config import SegmentConfig
from tiledseg.errors import TiledsegError
from tiledseg.options import CONCERNS, Execution, Smoothing, Training, build

# the arguments and options a command has besides the models' fields
OWN = {
    "train": {"image", "labels", "model_path", "overwrite"},
    "predict": {"image", "model_path", "out", "overwrite"},
    "segment": {"config_path", "overwrite"},
    "cluster": {"image", "out", "overwrite"},
    "report": {"output", "out", "truth", "image", "model_path", "overwrite"},
    "demo": {"out", "size"},
    "evaluate": {"prediction", "truth", "as_json"},
    "info": {"path", "as_json"},
}


def test_every_option_is_a_field_and_every_field_an_option():
    fields = {name for concern in CONCERNS for name in concern.model_fields}
    offered = set()
    for name, command in cli.commands.items():
        params = {p.name for p in command.params}
        generated = set(models_of(command))
        offered |= generated
        # an option no field stands for is one of the command's own (paths, --overwrite)
        assert params - generated == OWN[name], name
        assert generated <= fields, name
    assert fields == offered, f"fields without an option: {sorted(fields - offered)}"


def test_help_choices_and_defaults_come_from_the_field():
    train = cli.commands["train"]
    option = {p.name: p for p in train.params}
    field = Training.model_fields["stages"]
    assert option["stages"].help == field.description
    assert isinstance(option["classifier"].type, click.Choice)
    assert list(option["classifier"].type.choices) == ["random-forest", "xgboost"]
    assert list(option["device"].type.choices) == ["cpu", "cuda", "auto"]
    assert option["cache"].secondary_opts == ["--no-cache"]
    assert option["distributed_training"].secondary_opts == ["--local-training"]
    assert option["extra_channels"].multiple


def test_the_config_holds_every_field_of_its_concerns():
    from tiledseg.config import CONCERNS as IN_CONFIG

    keys = set(SegmentConfig.model_fields)
    for concern in IN_CONFIG:
        assert set(concern.model_fields) <= keys, concern.__name__
    assert {"image", "labels", "model", "out", "truth", "overwrite"} <= keys


def test_a_value_is_parsed_once_and_the_same_through_every_door():
    assert Execution(block="16,32,32").block == "16,32,32"  # kept as written, checked
    with pytest.raises(TiledsegError, match="integers separated by commas"):
        build(Execution, {"block": "big"}, "cli")
    # built directly, a model raises pydantic's error (a ValueError, as TiledsegError is)
    with pytest.raises(ValueError, match="integers separated by commas"):
        Execution(block="big")
    smoothing = Smoothing(smooth="graphcut", smooth_weight="3", smooth_iterations="-1")
    assert (smoothing.smooth_weight, smoothing.smooth_iterations) == (3.0, -1)
    assert Smoothing(smooth=None).smooth == "none"  # the API's None is the command's none


def test_models_are_frozen():
    with pytest.raises(Exception, match="frozen"):
        Execution().workers = 2  # type: ignore[misc]


def test_api_keywords_are_the_fields(tmp_path):
    with pytest.raises(TiledsegError, match=r"train\(\) has no option 'sead'; did you mean 'seed'"):
        ts.train("a.npy", "b.npy", sead=3)
    with pytest.raises(TiledsegError, match=r"predict\(\) has no option 'classifier'"):
        ts.predict("a.npy", "m.tseg", out=tmp_path / "o.zarr", classifier="xgboost")
    with pytest.raises(TiledsegError, match="execution= takes a tiledseg.options.Execution"):
        ts.train("a.npy", "b.npy", execution={"workers": 2})


def test_workers_and_scheduler_are_refused_together_in_the_model():
    with pytest.raises(TiledsegError, match="--workers 2 and --scheduler .*: give one"):
        build(Execution, {"workers": 2, "scheduler": "tcp://127.0.0.1:9"}, "api")


def test_segment_in_python_is_the_command(tmp_path):
    import numpy as np
    import zarr

    from tiledseg.cli import main
    from tiledseg.testing.phantoms import make_phantom

    ph = make_phantom((24, 24, 24), n_classes=2, feature_size=6.0, scribble_fraction=0.01)
    for name, array in (("image", ph.image), ("labels", ph.scribbles), ("truth", ph.truth)):
        np.save(tmp_path / f"{name}.npy", array)
    text = "image: image.npy\nlabels: labels.npy\ntruth: truth.npy\nfeatures: minimal\n"
    for run in ("api", "cli"):
        (tmp_path / f"{run}.yaml").write_text(text + f"model: {run}.tseg\nout: {run}.zarr\n")
    seen = []
    result = ts.segment(tmp_path / "api.yaml", on_model=lambda m, trained: seen.append(trained))
    assert seen == [True]
    assert result.trained
    assert result.prediction.blocks >= 1
    assert result.scores["accuracy"] > 0.8
    assert main(["segment", str(tmp_path / "cli.yaml"), "--quiet"]) == 0
    labels = [
        zarr.open_array(tmp_path / f"{run}.zarr" / "labels" / "0")[:] for run in ("api", "cli")
    ]
    np.testing.assert_array_equal(*labels)
