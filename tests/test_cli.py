"""The ``tiledseg`` command line, in process, on a small 3D phantom: the happy paths.

Bad input (exit status 2, one line on stderr, nothing written) is in test_bad_input.py.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import tiledseg
from tiledseg.cli import cli, main
from tiledseg.demo import write_ome_zarr
from tiledseg.testing import make_phantom

SHAPE = (40, 40, 40)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """The training-table cache never goes to ~/.cache."""
    monkeypatch.setenv("TILEDSEG_CACHE_DIR", str(tmp_path / "cache"))


def run_ok(*args: str) -> str:
    """Run the CLI in process and return its stdout; fail with its output otherwise."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    if result.exit_code != 0:
        raise AssertionError(
            f"tiledseg {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
        ) from result.exception
    return result.stdout


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, seed=0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, phantom):
    """The phantom's image, scribbles and truth as .npy files and as zarr arrays."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = {}
    for name in ("image", "scribbles", "truth"):
        data = getattr(phantom, name)
        np.save(folder / f"{name}.npy", data)
        zarr.save_array(str(folder / f"{name}.zarr"), data)
        paths[name, "npy"] = folder / f"{name}.npy"
        paths[name, "zarr"] = folder / f"{name}.zarr"
    return paths


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, inputs):
    path = tmp_path_factory.mktemp("model") / "model.tseg"
    run_ok(
        "train",
        inputs["image", "npy"],
        inputs["scribbles", "npy"],
        "--model",
        path,
        "--no-cache",
        "--quiet",
    )
    return path


@pytest.fixture(scope="module")
def full_labels(tmp_path_factory, inputs, model_path):
    """Labels of the whole phantom, predicted with the default block."""
    out = tmp_path_factory.mktemp("full") / "full.zarr"
    run_ok("predict", inputs["image", "npy"], "--model", model_path, "--out", out, "--quiet")
    return zarr.open_group(str(out), mode="r")["labels/0"][...]


@pytest.mark.parametrize("fmt", ["npy", "zarr"])
def test_train_predict_evaluate(tmp_path, inputs, fmt):
    image, scribbles, truth = (inputs[n, fmt] for n in ("image", "scribbles", "truth"))
    model = tmp_path / "model.tseg"
    out = run_ok("train", image, scribbles, "--model", model, "--no-cache", "--quiet")
    assert (
        "labelled voxels per class: 1: 25 (25.0%), 2: 25 (25.0%), 3: 25 (25.0%), 4: 25 (25.0%)"
        in out
    )
    assert "note: class" not in out
    assert f"model written to {model}" in out
    assert model.is_file()
    assert not (tmp_path / "cache").exists()  # --no-cache

    pred = tmp_path / "pred.zarr"
    out = run_ok(
        "predict",
        image,
        "--model",
        model,
        "--out",
        pred,
        "--probabilities",
        "--uncertainty",
        "--quiet",
    )
    assert "64,000 voxels in" in out
    assert "Mvox/s" in out
    assert f"written to {pred}" in out
    root = zarr.open_group(str(pred), mode="r")
    assert root.attrs["tiledseg"]["complete"] is True
    labels = root["labels/0"][...]
    assert labels.shape == SHAPE
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {1, 2, 3, 4}
    proba = root["probabilities/0"][...]
    assert proba.shape == (4, *SHAPE)
    assert proba.dtype == np.uint8
    # uint8 probabilities: each voxel's sum is 255 up to rounding, and the label is the argmax
    assert np.abs(proba.sum(axis=0, dtype=np.int64) - 255).max() <= 4
    top = proba.max(axis=0)
    picked = np.take_along_axis(proba, (labels.astype(np.int64) - 1)[np.newaxis], 0)[0]
    assert np.all(picked >= top.astype(np.int64) - 1)
    uncertainty = root["uncertainty/0"][...]
    assert uncertainty.shape == SHAPE
    assert uncertainty.dtype == np.uint8

    text = run_ok("evaluate", pred, truth)
    match = re.search(r"accuracy (\d\.\d+), mean IoU (\d\.\d+) over 64,000 voxels", text)
    assert match, text
    assert "confusion (rows: truth, columns: prediction)" in text
    for value in (1, 2, 3, 4):
        assert f"class {value}: IoU" in text

    scores = json.loads(run_ok("evaluate", pred, truth, "--json"))
    assert {"accuracy", "iou", "mean_iou", "confusion"} <= set(scores)
    assert scores["accuracy"] == pytest.approx(float(match.group(1)), abs=1e-4)
    assert scores["accuracy"] > 0.6  # 100 scribbled voxels on a noisy 4-phase phantom
    assert set(scores["iou"]) == {"1", "2", "3", "4"}
    assert scores["mean_iou"] == pytest.approx(np.mean(list(scores["iou"].values())))
    confusion = np.array(scores["confusion"])
    assert confusion.shape == (4, 4)
    assert confusion.sum() == np.prod(SHAPE)
    assert np.trace(confusion) / confusion.sum() == pytest.approx(scores["accuracy"])


def test_predict_records_the_command_it_was_given(tmp_path, inputs, model_path, capsys):
    out = tmp_path / "pred.zarr"
    args = ["predict", str(inputs["image", "npy"]), "--model", str(model_path), "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    provenance = zarr.open_group(str(out), mode="r").attrs["tiledseg"]
    # the arguments given to main(), not the host process's sys.argv
    assert provenance["command"] == shlex.join(["tiledseg", *args, "--quiet"])
    assert "written to" in capsys.readouterr().out


def test_info_model(model_path):
    model = tiledseg.load_model(model_path)
    text = run_ok("info", model_path)
    assert "model: random-forest, classes [1, 2, 3, 4], 3D, 1 channel(s)" in text
    assert f"halo {list(model.halo)}" in text
    assert re.search(r"^versions: .*tiledseg .*xgboost", text, re.MULTILINE)
    assert f"{len(model.feature_names)} features (importance):" in text
    assert re.search(r"^\s+0 gaussian_smoothing\(sigma=0\.7, channel=0\)\s+\d\.\d{4}$", text, re.M)

    data = json.loads(run_ok("info", model_path, "--json"))
    assert data["kind"] == "model"
    assert data["classes"] == [1, 2, 3, 4]
    assert data["halo"] == list(model.halo)
    assert {"tiledseg", "numpy", "xgboost"} <= set(data["versions"])
    assert data["features"] == model.feature_names
    assert len(data["importance"]) == len(data["features"])
    assert sum(data["importance"]) == pytest.approx(1.0, abs=1e-3)
    assert data["checksum"] == model.checksum


def test_info_zarr_store(tmp_path, phantom):
    path = tmp_path / "chunked.zarr"
    zarr.create_array(str(path), data=phantom.image, chunks=(20, 20, 10))
    fields = dict(
        re.match(r"\s*(\w+): (.*)", line).groups() for line in run_ok("info", path).splitlines()
    )
    assert fields["shape"] == "[40, 40, 40]"
    assert fields["dtype"] == "uint8"
    assert fields["chunks"] == "[20, 20, 10]"
    assert fields["axes"] == "zyx"
    assert fields["channels"] == "1"
    assert fields["spacing"] == "[1.0, 1.0, 1.0]"
    assert fields["spacing_from"] == "default"
    data = json.loads(run_ok("info", path, "--json"))
    assert data["kind"] == "image"
    assert data["shape"] == [40, 40, 40]


def test_info_ome_zarr_group(tmp_path, phantom):
    path = tmp_path / "image.ome.zarr"
    write_ome_zarr(path, phantom.image, spacing=(2.0, 0.5, 0.25), chunks=(16, 32, 40))
    data = json.loads(run_ok("info", path, "--json"))
    assert data["shape"] == [40, 40, 40]
    assert data["dtype"] == "uint8"
    assert data["chunks"] == [16, 32, 40]
    assert data["axes"] == "zyx"
    assert data["spacing"] == [2.0, 0.5, 0.25]
    assert data["spacing_from"] == "metadata"
    text = run_ok("info", path)
    assert "spacing: [2.0, 0.5, 0.25]" in text
    assert "spacing_from: metadata" in text


def test_predict_roi_writes_only_the_blocks_it_meets(tmp_path, inputs, model_path, full_labels):
    out = tmp_path / "roi.zarr"
    text = run_ok(
        "predict",
        inputs["image", "npy"],
        "--model",
        model_path,
        "--out",
        out,
        "--roi",
        "0:10,:,:",
        "--block",
        "20",
        "--quiet",
    )
    assert "32,000 voxels in 4 blocks" in text
    root = zarr.open_group(str(out), mode="r")
    labels = root["labels/0"][...]
    assert root.attrs["tiledseg"]["roi"] == [[0, 10], [0, 40], [0, 40]]
    assert np.all(labels[20:] == 0)  # blocks that miss the ROI are not written
    # tiled (block 20) equals untiled (one block) voxel for voxel
    np.testing.assert_array_equal(labels[:20], full_labels[:20])


def test_segment_config_with_relative_paths(tmp_path, inputs, monkeypatch):
    job = tmp_path / "job"
    (job / "data").mkdir(parents=True)
    for name in ("image", "scribbles", "truth"):
        shutil.copy(inputs[name, "npy"], job / "data" / f"{name}.npy")
    (job / "bank.yaml").write_text("gaussian_smoothing: [0.7, 1.6]\nlaplacian_of_gaussian: [1.6]\n")
    (job / "segment.yaml").write_text(
        "image: data/image.npy\nlabels: data/scribbles.npy\ntruth: data/truth.npy\n"
        "model: model.tseg\nout: prediction.zarr\nfeatures: bank.yaml\nuncertainty: true\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    text = run_ok("segment", job / "segment.yaml", "--quiet")
    assert f"model written to {job / 'model.tseg'}" in text
    assert f"written to {job / 'prediction.zarr'}" in text
    assert re.search(r"^accuracy \d\.\d{4}, mean IoU \d\.\d{4} over 64,000 voxels$", text, re.M)
    assert list(elsewhere.iterdir()) == []  # nothing written beside the caller
    model = tiledseg.load_model(job / "model.tseg")
    bank = {"gaussian_smoothing": [0.7, 1.6], "laplacian_of_gaussian": [1.6]}
    assert model.bank.to_dict() == bank
    root = zarr.open_group(str(job / "prediction.zarr"), mode="r")
    assert set(root.group_keys()) == {"labels", "uncertainty"}
    assert root.attrs["tiledseg"]["command"] == f"tiledseg segment {job / 'segment.yaml'}"

    assert len(list((tmp_path / "cache").glob("table-*.npz"))) == 1  # TILEDSEG_CACHE_DIR

    # a second run refuses to replace what the first wrote, unless told to
    assert main(["segment", str(job / "segment.yaml"), "--quiet"]) == 2
    text = run_ok("segment", job / "segment.yaml", "--quiet", "--overwrite")
    assert "(training table from cache)" in text


def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    text = run_ok("demo", "--size", "48", "--out", out, "--quiet")
    assert re.search(r"^mIoU \d\.\d{3} \(per class", text, re.M)
    assert re.search(r"\d+\.\d\d Mvox/s", text)
    assert f"outputs: {out / 'prediction.zarr'}" in text
    assert re.search(r"^demo done in \d+\.\d s$", text, re.M)
    for name in ("image.zarr", "scribbles.zarr", "truth.zarr", "model.tseg", "prediction.zarr"):
        assert (out / name).exists(), name
    assert "uncertainty: true" in (out / "segment.yaml").read_text()
    # the report its help promises
    assert f"report: {out / 'report.html'}" in text
    assert "<img" in (out / "report.html").read_text()

    # a rerun replaces the demo's own files, and keeps the user's ...
    (out / "notes.txt").write_text("the user's, beside the demo's")
    run_ok("demo", "--size", "32", "--out", out, "--quiet")
    assert (out / "notes.txt").read_text() == "the user's, beside the demo's"
    assert zarr.open_group(str(out / "prediction.zarr"), mode="r")["labels/0"].shape == (32,) * 3

    # ... but never a folder the demo did not make
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    capsys.readouterr()
    assert main(["demo", "--size", "32", "--out", str(foreign), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "was not made by the demo" in err
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_version_and_help():
    assert tiledseg.__version__ in run_ok("--version")
    text = run_ok("--help")
    for command in ("train", "predict", "segment", "evaluate", "info", "demo"):
        assert command in text


def test_unexpected_exception_is_reported_as_internal_error(monkeypatch, capsys, inputs):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tiledseg, "evaluate", broken)
    truth = str(inputs["truth", "npy"])
    assert main(["evaluate", truth, truth]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tiledseg: internal error: RuntimeError: boom")
    assert "--debug" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_predict_on_worker_processes(tmp_path, inputs, model_path, full_labels):
    out = tmp_path / "workers.zarr"
    text = run_ok(
        "predict",
        inputs["image", "npy"],
        "--model",
        model_path,
        "--out",
        out,
        "--workers",
        "2",
        "--block",
        "20",
        "--quiet",
    )
    assert "64,000 voxels in 8 blocks" in text
    labels = zarr.open_group(str(out), mode="r")["labels/0"][...]
    np.testing.assert_array_equal(labels, full_labels)


def test_train_and_predict_on_a_running_scheduler(tmp_path, inputs, model_path, full_labels):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        address = cluster.scheduler_address
        model = tmp_path / "m.tseg"
        run_ok(
            "train",
            inputs["image", "npy"],
            inputs["scribbles", "npy"],
            "--model",
            model,
            "--scheduler",
            address,
            "--quiet",
        )
        out = tmp_path / "sched.zarr"
        text = run_ok(
            "predict",
            inputs["image", "npy"],
            "--model",
            model_path,
            "--out",
            out,
            "--scheduler",
            address,
            "--block",
            "20",
            "--quiet",
        )
    assert "64,000 voxels in 8 blocks" in text
    assert model.exists()
    labels = zarr.open_group(str(out), mode="r")["labels/0"][...]
    np.testing.assert_array_equal(labels, full_labels)


def test_info_on_an_output_shows_its_provenance(tmp_path, inputs, model_path):
    out = tmp_path / "out.zarr"
    run_ok("predict", inputs["image", "npy"], "--model", model_path, "--out", out, "--quiet")
    text = run_ok("info", out)
    assert "complete: True" in text
    assert "output: labels;" in text
    data = json.loads(run_ok("info", out, "--json"))
    assert data["kind"] == "tiledseg output"
    assert data["provenance"]["model_checksum"] == tiledseg.load_model(model_path).checksum


def test_a_rare_class_gets_a_note_after_training(tmp_path, inputs, phantom):
    scribbles = phantom.scribbles.copy()
    rare = np.argwhere(scribbles == 4)
    scribbles[tuple(rare[1:].T)] = 0  # one voxel of class 4 left
    np.save(tmp_path / "scribbles.npy", scribbles)
    out = run_ok(
        "train",
        inputs["image", "npy"],
        tmp_path / "scribbles.npy",
        "--model",
        tmp_path / "m.tseg",
        "--no-cache",
        "--quiet",
    )
    assert "4: 1 (1.3%)" in out
    assert "note: class(es) 4 hold less than 2% of the labelled voxels" in out
