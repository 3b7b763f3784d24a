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
    "train": {"images", "model_path", "overwrite"},
    "predict": {"images", "model_path", "out", "out_dir", "overwrite"},
    "segment": {"config_path", "overwrite"},
    "cluster": {"image", "out", "overwrite"},
    "report": {"output", "out", "truth", "image", "model_path", "overwrite"},
    "demo": {"out", "size"},
    "evaluate": {"prediction", "truth", "as_json"},
    "info": {"path", "as_json"},
    "instances": {"prediction", "out", "image", "overwrite"},
    "import-ilastik": {"project", "labels", "bank", "lane", "overwrite"},
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
    assert option["stages"].help.startswith(field.description)
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
    # built directly too, a bad value is one TiledsegError line
    with pytest.raises(TiledsegError, match="integers separated by commas"):
        Execution(block="big")
    with pytest.raises(TiledsegError, match=r"^workers=0: give a positive number$"):
        Execution(workers=0)
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


def test_a_model_updated_keeps_its_objects(tmp_path):
    from pathlib import Path

    from tiledseg.cluster_config import load_cluster_config

    bank = ts.resolve_bank("minimal", ndim=2)
    training = Training(features=bank).updated(seed=3)
    assert training.features is bank
    assert training.seed == 3
    cluster = load_cluster_config("local")
    assert Execution(cluster=cluster).updated(quiet=False).cluster is cluster
    # a Path is taken where text is
    assert Execution(scheduler=Path("s.json")).scheduler == "s.json"
    assert Training(cache_dir=tmp_path).cache_dir == str(tmp_path)


def test_a_missing_option_is_named_for_its_door(tmp_path):
    from tiledseg.cli import main

    with pytest.raises(TiledsegError, match=r"^classes is required$"):
        ts.cluster_phases("image.npy", out=tmp_path / "o.zarr")
    assert main(["cluster", "image.npy", "--out", str(tmp_path / "o.zarr")]) == 2


def test_cache_dir_in_a_config_is_relative_to_it(tmp_path):
    from tiledseg.config import load_config

    (tmp_path / "job").mkdir()
    path = tmp_path / "job" / "run.yaml"
    path.write_text("image: a.npy\nlabels: b.npy\nmodel: m.tseg\nout: o.zarr\ncache_dir: c\n")
    assert load_config(path).cache_dir == str(tmp_path / "job" / "c")


def test_help_shows_defaults_plainly():
    from click.testing import CliRunner

    text = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output
    assert "[default: 1]" in text
    assert "[default: (" not in text
    assert "--cache / --no-cache" in text
