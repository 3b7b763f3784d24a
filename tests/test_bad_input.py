"""Bad input on the command line: exit status 2, one clear line on stderr, nothing written.

Each test calls :func:`tiledseg.cli.main`, the console entry point, so what is checked
is what a user sees: the exit status and the one line on stderr. Every refusal also
leaves the folder it ran in exactly as it was: no model file, no output store, no
cache entry, no half-written file, inputs unchanged.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import tiledseg
from tiledseg.cli import main
from tiledseg.model import MAGIC
from tiledseg.testing import make_phantom

SHAPE = (40, 40, 40)


# -- fixtures and helpers -------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, seed=0)


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory, phantom):
    """A model file trained on the 1-channel 3D phantom with the default bank."""
    model = tiledseg.train(phantom.image, phantom.scribbles, cache_dir=None)
    return model.save(tmp_path_factory.mktemp("model") / "model.tseg").read_bytes()


@pytest.fixture
def work(tmp_path, monkeypatch, phantom, model_bytes):
    """A folder with image.npy, scribbles.npy, model.tseg; the current directory.

    The training cache is pointed inside ``tmp_path`` so that a cache entry written
    by a refused command would show up as a change.
    """
    folder = tmp_path / "work"
    folder.mkdir()
    np.save(folder / "image.npy", phantom.image)
    np.save(folder / "scribbles.npy", phantom.scribbles)
    (folder / "model.tseg").write_bytes(model_bytes)
    monkeypatch.setenv("TILEDSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(folder)
    return folder


def snapshot(root: Path) -> dict[str, object]:
    """Every path under ``root`` with its size, mtime and content digest."""
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_dir():
            out[key] = "dir"
        else:
            stat = path.stat()
            out[key] = (
                stat.st_size,
                stat.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return out


def refused(capsys, args: list[object], *needles: str) -> str:
    """Run ``main(args)``: assert exit 2, one stderr line holding ``needles``, no change.

    The whole pytest ``tmp_path`` (inputs, would-be outputs, cache) is compared before
    and after, so nothing may be created, changed or removed.
    """
    root = Path.cwd().parent
    capsys.readouterr()
    before = snapshot(root)
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert status == 2, captured
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("tiledseg: error: ")
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in line, line
    after = snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the refused command created, changed or removed: {changed}"
    return line


TRAIN = ["train", "image.npy", "scribbles.npy", "--model", "new.tseg", "--quiet"]
PREDICT = ["predict", "image.npy", "--model", "model.tseg", "--out", "out.zarr", "--quiet"]


def with_image(args: list[str], image: str) -> list[str]:
    return [image if a == "image.npy" else a for a in args]


# -- images and labels ------------------------------------------------------------------


@pytest.mark.parametrize("role", ["image", "scribbles"])
def test_missing_input_path(work, capsys, role):
    args = [f"missing-{a}" if a == f"{role}.npy" else a for a in TRAIN]
    what = "image" if role == "image" else "labels"
    refused(capsys, args, f"{what} path 'missing-{role}.npy' does not exist")


def test_labels_with_another_shape(work, capsys, phantom):
    np.save("short.npy", phantom.scribbles[:20])
    args = ["train", "image.npy", "short.npy", "--model", "new.tseg", "--quiet"]
    refused(capsys, args, "shape (20, 40, 40)", "spatial shape (40, 40, 40)", "must match")


def test_labels_without_a_labelled_voxel(work, capsys):
    np.save("empty.npy", np.zeros(SHAPE, np.uint8))
    args = ["train", "image.npy", "empty.npy", "--model", "new.tseg", "--quiet"]
    refused(capsys, args, "empty.npy hold no labelled voxel", "at least two classes")


def test_labels_of_a_single_class(work, capsys, phantom):
    np.save("one.npy", np.where(phantom.scribbles == 2, 2, 0).astype(np.uint8))
    args = ["train", "image.npy", "one.npy", "--model", "new.tseg", "--quiet"]
    refused(capsys, args, "only one class (value 2)", "at least two classes")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_float_image(work, capsys, phantom, value):
    # (predict refuses it per block, writing the others: tests/test_nan_policy.py, issue 17)
    image = phantom.image.astype(np.float32)
    # at a scribbled voxel, so training has to read it
    image[tuple(np.argwhere(phantom.scribbles)[0])] = value
    np.save("float.npy", image)
    args = with_image(TRAIN, "float.npy")
    refused(capsys, args, "image float.npy holds NaN or infinite values", "nan_to_num")


@pytest.mark.parametrize(("shape", "axes"), [((64,), 1), ((2, 3, 4, 5, 6), 5)])
def test_image_of_wrong_dimensionality(work, capsys, shape, axes):
    np.save("odd.npy", np.zeros(shape, np.uint8))
    for args in (with_image(TRAIN, "odd.npy"), with_image(PREDICT, "odd.npy")):
        refused(capsys, args, f"shape {shape}", "2D (y, x) or 3D (z, y, x)", f"{axes} spatial")


def test_fractional_labels(work, capsys, phantom):
    labels = phantom.scribbles.astype(np.float32)
    labels[labels == 3] = 2.5
    np.save("frac.npy", labels)
    args = ["train", "image.npy", "frac.npy", "--model", "new.tseg", "--quiet"]
    refused(capsys, args, "fractional value 2.5", "labels are integers")


def test_negative_labels(work, capsys, phantom):
    labels = phantom.scribbles.astype(np.int8)
    labels[labels == 1] = -1
    np.save("neg.npy", labels)
    args = ["train", "image.npy", "neg.npy", "--model", "new.tseg", "--quiet"]
    refused(capsys, args, "negative value -1")


def test_unsupported_dtype(work, capsys, phantom):
    np.save("complex.npy", phantom.image.astype(np.complex64))
    for args in (with_image(TRAIN, "complex.npy"), with_image(PREDICT, "complex.npy")):
        refused(capsys, args, "dtype complex64", "convert it to an integer or float type")


def test_channel_count_differs_from_the_model(work, capsys, phantom):
    np.save("two.npy", np.stack([phantom.image, phantom.image], axis=-1))
    args = [*with_image(PREDICT, "two.npy"), "--channel-axis", "3"]
    refused(capsys, args, "has 2 channel(s) but the model was trained on 1")


def test_prediction_and_truth_of_different_shapes(work, capsys, phantom):
    np.save("truth.npy", phantom.truth[:, :30])
    refused(capsys, ["evaluate", "scribbles.npy", "truth.npy"], "(40, 40, 40)", "(40, 30, 40)")


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--roi", "0:10,:", "region '0:10,:' has 2 axes but the image has 3"),
        ("--roi", "5:5,:,:", "region '5:5,:,:' is empty"),
        ("--roi", "a:b,:,:", "is not start:stop of integers"),
        ("--workers", "0", "--workers 0: give a positive number"),
    ],
)
def test_bad_predict_option(work, capsys, option, value, needle):
    refused(capsys, [*PREDICT, option, value], needle)


def test_scheduler_that_cannot_be_reached(work, capsys):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        refused(
            capsys,
            [*PREDICT, "--scheduler", "tcp://127.0.0.1:9"],
            "--scheduler tcp://127.0.0.1:9: cannot reach a dask scheduler there",
        )


def test_workers_and_scheduler_together(work, capsys):
    refused(
        capsys,
        [*TRAIN, "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"],
        "--workers 2 and --scheduler tcp://127.0.0.1:9: give one",
    )


# -- graph-cut smoothing ----------------------------------------------------------------

SMOOTH = [*PREDICT, "--smooth", "graphcut"]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("0", "smooth weight 0 must be a positive number"),
        ("-1", "smooth weight -1 must be a positive number"),
        ("nan", "smooth weight nan must be a positive number"),
        ("inf", "smooth weight inf must be a positive number"),
        ("1e6", "smooth weight 1e+06 is outside [0.01, 1000]"),
        ("strong", "smooth weight 'strong' is not a number"),
    ],
)
def test_bad_smooth_weight(work, capsys, value, needle):
    line = refused(capsys, [*SMOOTH, "--smooth-weight", value], needle)
    assert "try 1 to 4" in line


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "many"])
def test_bad_smooth_iterations(work, capsys, value):
    refused(capsys, [*SMOOTH, "--smooth-iterations", value], f"smooth iterations '{value}'")


@pytest.mark.parametrize("value", ["-1", "nan", "11", "blurry"])
def test_bad_smooth_contrast_sigma(work, capsys, value):
    refused(capsys, [*SMOOTH, "--smooth-contrast-sigma", value], f"contrast sigma {value}:")


def test_bad_smooth_neighbourhood(work, capsys):
    refused(capsys, [*SMOOTH, "--smooth-neighbours", "8"], "8 is not offered for 3D", "6 or 26")


def test_smooth_weight_without_smoothing(work, capsys):
    refused(capsys, [*PREDICT, "--smooth-weight", "2"], "need --smooth graphcut")
    refused(capsys, [*PREDICT, "--smooth-iterations", "2"], "need --smooth graphcut")


def test_smoothing_with_a_model_without_probabilities(work, capsys, phantom):
    from sklearn.svm import LinearSVC

    model = tiledseg.train(
        phantom.image, phantom.scribbles, classifier=LinearSVC(), features="minimal", cache_dir=None
    )
    model.save("svc.tseg")
    args = [a if a != "model.tseg" else "svc.tseg" for a in SMOOTH]
    refused(capsys, args, "(LinearSVC) gives labels, not probabilities", "--smooth graphcut")
    args = [a if a != "model.tseg" else "svc.tseg" for a in [*PREDICT, "--probabilities"]]
    refused(capsys, args, "--probabilities needs them")


def test_config_with_a_bad_smooth_weight_fails_before_training(work, capsys):
    Path("run.yaml").write_text(CONFIG + "smooth: graphcut\nsmooth_weight: -2\n")
    refused(capsys, ["segment", "run.yaml", "--quiet"], "smooth weight -2.0 must be a positive")


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--spacing", "1,x,1", "spacing '1,x,1' must be numbers separated by commas"),
        ("--spacing", "1,1", "spacing '1,1' has 2 values but the image has 3 spatial axes"),
        ("--spacing", "1,0,1", "positive finite numbers"),
        ("--features", "nonsense", "nonsense"),
        ("--workers", "-1", "--workers -1: give a positive number"),
    ],
)
def test_bad_train_option(work, capsys, option, value, needle):
    refused(capsys, [*TRAIN, option, value], needle)


# -- blocks -----------------------------------------------------------------------------


@pytest.mark.parametrize("base", [TRAIN, PREDICT], ids=["train", "predict"])
def test_block_smaller_than_the_halo(work, capsys, base):
    halo = max(tiledseg.load_model("model.tseg").halo)  # the default bank's, as for train
    assert halo > 2
    refused(capsys, [*base, "--block", "2"], "block size 2", f"halo {halo}", f"--block {halo}")


@pytest.mark.parametrize("base", [TRAIN, PREDICT], ids=["train", "predict"])
@pytest.mark.parametrize("block", ["0", "16,0,16", "-4"])
def test_block_not_positive(work, capsys, base, block):
    refused(capsys, [*base, "--block", block], f"block '{block}'", "positive integer")


# -- model files ------------------------------------------------------------------------


def test_missing_model_file(work, capsys):
    args = [a if a != "model.tseg" else "nope.tseg" for a in PREDICT]
    refused(capsys, args, "model file 'nope.tseg' does not exist")


@pytest.mark.parametrize("keep", [20, 200, -100], ids=["length", "header", "payload"])
def test_truncated_model(work, capsys, model_bytes, keep):
    Path("model.tseg").write_bytes(model_bytes[:keep])
    refused(capsys, PREDICT, "model file 'model.tseg' is truncated", "copy it again")
    refused(capsys, ["info", "model.tseg"], "is truncated")


def test_tampered_model_payload(work, capsys, model_bytes):
    data = bytearray(model_bytes)
    data[-50] ^= 0x01
    Path("model.tseg").write_bytes(bytes(data))
    refused(capsys, PREDICT, "model.tseg", "modified (payload checksum mismatch)")
    refused(capsys, ["info", "model.tseg"], "payload checksum mismatch")


def test_tampered_model_header(work, capsys, model_bytes):
    # a plausible edit that keeps the header valid JSON: 3D -> 2D
    at = model_bytes.index(b'"ndim": 3') + len(b'"ndim": ')
    start = len(MAGIC) + 8
    (length,) = struct.unpack(">Q", model_bytes[len(MAGIC) : start])
    assert start < at < start + length
    data = bytearray(model_bytes)
    data[at] ^= 0x01  # "3" -> "2"
    Path("model.tseg").write_bytes(bytes(data))
    refused(capsys, PREDICT, "model.tseg", "modified (header checksum mismatch)")
    refused(capsys, ["info", "model.tseg"], "header checksum mismatch")


def test_model_file_that_is_not_a_model(work, capsys):
    Path("notes.txt").write_text("hello")
    refused(
        capsys,
        ["predict", "image.npy", "--model", "notes.txt", "--out", "o.zarr"],
        "not a tiledseg model file",
    )


class _OpensAFile:
    """Unpickling this creates (truncates) the file at ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_payload_is_live(tmp_path):
    """Control: the payload used below really does create its file when unpickled."""
    marker = tmp_path / "CONTROL"
    pickle.loads(pickle.dumps(_OpensAFile(str(marker)))).close()
    assert marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("command", ["predict", "info"])
def test_pickle_posing_as_a_model_is_never_loaded(work, capsys, command, protocol):
    marker = work.parent / "MARKER"
    Path("evil.tseg").write_bytes(pickle.dumps(_OpensAFile(str(marker)), protocol=protocol))
    if command == "predict":
        args = ["predict", "image.npy", "--model", "evil.tseg", "--out", "out.zarr", "--quiet"]
    else:
        args = ["info", "evil.tseg"]
    refused(capsys, args, "'evil.tseg'")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("command", ["predict", "info"])
def test_pickle_posing_as_a_model_is_named_a_pickle(work, capsys, command, protocol):
    marker = work.parent / "MARKER"
    Path("evil.tseg").write_bytes(pickle.dumps(_OpensAFile(str(marker)), protocol=protocol))
    if command == "predict":
        args = ["predict", "image.npy", "--model", "evil.tseg", "--out", "out.zarr", "--quiet"]
    else:
        args = ["info", "evil.tseg"]
    refused(capsys, args, "is a Python pickle", "never unpickles")
    assert not marker.exists()


def test_pickle_posing_as_an_npy_image(work, capsys):
    marker = work.parent / "MARKER"
    Path("evil.npy").write_bytes(pickle.dumps(_OpensAFile(str(marker))))
    refused(capsys, ["info", "evil.npy"], "'evil.npy'", "pickle")
    refused(capsys, with_image(TRAIN, "evil.npy"), "'evil.npy'", "pickle")
    assert not marker.exists()


def test_existing_model_file(work, capsys):
    Path("new.tseg").write_bytes(b"an earlier model")
    refused(capsys, TRAIN, "model file 'new.tseg' exists", "--overwrite")
    assert Path("new.tseg").read_bytes() == b"an earlier model"
    assert main([*TRAIN, "--overwrite"]) == 0
    assert tiledseg.load_model("new.tseg").classes.tolist() == [1, 2, 3, 4]


def test_model_path_that_is_an_input(work, capsys):
    for target in ("image.npy", "./scribbles.npy"):
        args = ["train", "image.npy", "scribbles.npy", "--model", target, "--overwrite", "--quiet"]
        refused(capsys, args, f"model file '{target}' is one of the inputs")


def test_model_path_that_is_a_folder(work, capsys):
    Path("models").mkdir()
    for extra in ([], ["--overwrite"]):
        args = [*TRAIN[:3], "--model", "models", "--quiet", *extra]
        refused(capsys, args, "model path 'models' is a directory")


def test_model_in_a_missing_folder(work, capsys):
    args = [*TRAIN[:3], "--model", "no/such/model.tseg", "--quiet"]
    refused(capsys, args, "folder of model 'no/such/model.tseg' does not exist")


# -- outputs ----------------------------------------------------------------------------


def test_existing_output(work, capsys):
    tiledseg.predict("image.npy", "model.tseg", out="out.zarr", uncertainty=True)
    (work / "out.zarr" / "left-over.txt").write_text("from the first run")
    refused(capsys, PREDICT, "output 'out.zarr' exists", "--overwrite")

    # with --overwrite, a tiledseg output is replaced as a whole
    assert main([*PREDICT, "--overwrite"]) == 0
    root = zarr.open_group("out.zarr", mode="r")
    assert set(root.group_keys()) == {"labels"}
    assert root.attrs["tiledseg"]["complete"] is True
    assert not (work / "out.zarr" / "left-over.txt").exists()


@pytest.mark.parametrize("kind", ["folder", "zarr-array", "file"])
def test_output_that_is_not_a_tiledseg_output(work, capsys, phantom, kind):
    if kind == "folder":
        Path("out.zarr").mkdir()
        Path("out.zarr/thesis.tex").write_text("precious")
    elif kind == "zarr-array":
        zarr.save_array("out.zarr", phantom.image)
    else:
        Path("out.zarr").write_text("precious")
    for extra in ([], ["--overwrite"]):
        refused(capsys, [*PREDICT, *extra], "output 'out.zarr' exists")
    line = refused(capsys, [*PREDICT, "--overwrite"], "not a tiledseg output")
    assert "even with --overwrite" in line


def test_output_that_is_the_input(work, capsys, phantom):
    tiledseg.predict("image.npy", "model.tseg", out="pred.zarr")
    args = ["predict", "pred.zarr", "--model", "model.tseg", "--out", "pred.zarr", "--overwrite"]
    refused(capsys, args, "output 'pred.zarr' is one of the inputs")


def test_output_in_a_missing_folder(work, capsys):
    args = [*PREDICT[:4], "--out", "no/such/out.zarr", "--quiet"]
    refused(capsys, args, "folder of output 'no/such/out.zarr' does not exist")


# -- config files -----------------------------------------------------------------------

CONFIG = "image: image.npy\nlabels: scribbles.npy\nmodel: seg.tseg\nout: seg.zarr\n"


def test_config_with_a_typo_in_a_key(work, capsys):
    Path("run.yaml").write_text(CONFIG + "uncertanty: true\n")
    refused(
        capsys,
        ["segment", "run.yaml", "--quiet"],
        "unknown key 'uncertanty'",
        "did you mean 'uncertainty'?",
    )


def test_config_with_a_wrong_type(work, capsys):
    Path("run.yaml").write_text(CONFIG + "block: big\n")
    line = refused(capsys, ["segment", "run.yaml", "--quiet"], "key 'block' = 'big'")
    assert "constrained-int" not in line


def test_config_with_truth_of_another_shape(work, capsys, phantom):
    """Found before training, so no model file is left behind."""
    np.save("truth.npy", phantom.truth[:30])
    Path("run.yaml").write_text(CONFIG + "truth: truth.npy\n")
    refused(capsys, ["segment", "run.yaml", "--quiet"], "truth", "(30, 40, 40)", "must match")


def test_config_with_a_bad_roi(work, capsys):
    Path("run.yaml").write_text(CONFIG + "roi: '0:10,:'\n")
    refused(capsys, ["segment", "run.yaml", "--quiet"], "region '0:10,:' has 2 axes")


def test_config_whose_model_and_output_are_one_path(work, capsys):
    Path("run.yaml").write_text(CONFIG.replace("seg.tseg", "seg.zarr"))
    refused(capsys, ["segment", "run.yaml", "--quiet"], "model and out are the same path")


def test_config_output_replacing_an_input(work, capsys):
    Path("run.yaml").write_text(CONFIG.replace("out: seg.zarr", "out: scribbles.npy"))
    refused(capsys, ["segment", "run.yaml", "--quiet", "--overwrite"], "is one of the inputs")


def test_missing_config(work, capsys):
    refused(capsys, ["segment", "nope.yaml"], "config file 'nope.yaml' does not exist")


# -- the real entry point ---------------------------------------------------------------


def test_console_entry_point_exit_status_and_debug(work):
    """A real process: status 2 and one line without --debug; the traceback with it."""
    script = Path(sys.executable).with_name("tiledseg")  # the installed console script
    entry = [str(script)] if script.is_file() else [sys.executable, "-m", "tiledseg.cli"]
    command = [*entry, "train", "missing.npy", "scribbles.npy", "--model", "new.tseg", "--quiet"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    plain = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert plain.returncode == 2
    assert plain.stdout == ""
    assert plain.stderr == "tiledseg: error: image path 'missing.npy' does not exist\n"

    # --debug is accepted anywhere on the line
    debug = subprocess.run(
        [*command, "--debug"], capture_output=True, text=True, env=env, check=False
    )
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "InputDataError: image path 'missing.npy' does not exist" in debug.stderr
    assert not Path("new.tseg").exists()


# -- issue 17: mistakes found by trying real commands -------------------------------------


@pytest.fixture
def predicted(work, phantom):
    """``out.zarr``, predicted from the phantom, and ``truth.npy``."""
    np.save("truth.npy", phantom.truth)
    assert main([*PREDICT, "--block", "20"]) == 0
    return work


def test_evaluate_refuses_an_intensity_image_as_truth(predicted, capsys, phantom):
    np.save("grey.npy", phantom.image.astype(np.float32) / 255 + 0.001)
    refused(capsys, ["evaluate", "out.zarr", "grey.npy"], "truth grey.npy holds fractional value")
    levels = np.arange(np.prod(SHAPE)).reshape(SHAPE) % 200 + 1
    np.save("levels.npy", levels.astype(np.uint16))
    refused(capsys, ["evaluate", "out.zarr", "levels.npy"], "holds 200 classes", "is it the image")


def test_evaluate_refuses_a_truth_without_the_predicted_classes(predicted, capsys, phantom):
    np.save("other.npy", (phantom.truth * 10).astype(np.uint8))
    refused(capsys, ["evaluate", "out.zarr", "other.npy"], "share no class value", "10, 20")


def test_evaluate_says_how_far_an_unfinished_output_got(work, capsys, phantom, monkeypatch):
    from tiledseg.predict import PredictionJob

    np.save("truth.npy", phantom.truth)
    real = PredictionJob.predict

    def failing(job, block):
        if block.index[0] == 1:
            raise OSError("disk full (on purpose)")
        return real(job, block)

    with monkeypatch.context() as patch:
        patch.setattr(PredictionJob, "predict", failing)
        assert main([*PREDICT, "--block", "20"]) == 1
    refused(capsys, ["evaluate", "out.zarr", "truth.npy"], "unfinished: 4 of 8 blocks are done")


def test_more_workers_than_cores_are_capped_in_one_line(work, capsys):
    from tiledseg.cluster import available_cores

    assert main([*PREDICT, "--workers", "999"]) == 0
    err = capsys.readouterr().err
    cores = available_cores()
    assert f"--workers 999 is more than this machine's {cores} cores can run" in err, err
    assert f"starting {cores} worker processes" in err
    assert "Traceback" not in err


def test_an_output_whose_folder_is_a_file(work, capsys):
    Path("notes.txt").write_text("a file, not a folder")
    args = [*PREDICT[:4], "--out", "notes.txt/out.zarr", "--quiet"]
    refused(capsys, args, "the folder of output 'notes.txt/out.zarr' is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_an_output_in_a_folder_that_cannot_be_written(work, capsys):
    Path("locked").mkdir(mode=0o500)
    args = [*PREDICT[:4], "--out", "locked/out.zarr", "--quiet"]
    refused(capsys, args, "cannot write output 'locked/out.zarr'", "is not writable")


def test_an_output_inside_the_input_store(work, capsys, phantom):
    zarr.save_array("in.zarr", phantom.image)
    args = [*with_image(PREDICT, "in.zarr")[:4], "--out", "in.zarr/pred.zarr", "--quiet"]
    refused(capsys, args, "output 'in.zarr/pred.zarr' is inside input 'in.zarr'")


def test_all_blocks_failing_says_nothing_was_written(work, capsys, monkeypatch):
    from tiledseg.predict import PredictionJob

    def failing(job, block):
        raise OSError("disk full (on purpose)")

    monkeypatch.setattr(PredictionJob, "predict", failing)
    assert main([*PREDICT, "--block", "20"]) == 1
    err = capsys.readouterr().err
    assert "all 8 of 8 blocks failed; no block was written" in err
    assert "the other blocks are written" not in err


def test_progress_in_a_log_is_plain_lines(work, capsys, monkeypatch):
    from tiledseg.cluster import LogProgress

    monkeypatch.setattr(LogProgress, "interval", 0.0)
    args = [a for a in PREDICT if a != "--quiet"]
    assert main([*args, "--block", "20"]) == 0  # stderr is captured: not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "predict: 8/8 blocks (100%)" in err


def test_a_permission_error_is_one_line():
    from tiledseg.cli import _failed

    assert _failed(PermissionError(13, "Permission denied", "/x/out.zarr"), debug=False) == 2


def test_a_second_run_into_an_output_in_use_is_refused(work, capsys):
    import json
    import socket

    from tiledseg.locks import lock_path

    lock = lock_path("out.zarr")
    holder = subprocess.Popen(["sleep", "60"])  # a live process of this host holds it
    try:
        held = {"pid": holder.pid, "host": socket.gethostname(), "since": "2026-12-06T15:00"}
        lock.write_text(json.dumps(held))
        refused(
            capsys,
            PREDICT,
            f"output 'out.zarr' is in use by another run (pid {holder.pid} on host",
            "if that run is dead",
        )
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale, taken over, and removed when the run ends
    assert main(PREDICT) == 0
    assert not lock.exists()
    assert not (work / "out.zarr" / ".tiledseg-done").exists()


def test_the_lock_is_held_once_per_process(tmp_path):
    from tiledseg.locks import output_lock

    out = tmp_path / "out.zarr"
    with output_lock(out) as lock:
        assert lock.is_file()
        with output_lock(out):  # segment holds it around its prediction
            pass
        assert lock.is_file()
    assert not lock.exists()


def test_a_model_that_cannot_be_saved_is_refused_before_training(work, capsys):
    Path("notes.txt").write_text("a file, not a folder")
    args = [*TRAIN[:3], "--model", "notes.txt/m.tseg", "--quiet"]
    refused(capsys, args, "the folder of model 'notes.txt/m.tseg' is a file")


def test_more_mistakes_a_user_tried(work, capsys, phantom):
    # a binary file given as a config
    refused(capsys, ["segment", "image.npy"], "'image.npy' is not a YAML text file")
    # a wrong option: one line, as any error
    refused(capsys, [*PREDICT, "--nan-fill", "abc"], "'abc' is not a valid float", "--help")
    # train --overwrite never replaces a file that is not a model
    np.save("data.npy", phantom.truth)
    args = [*TRAIN[:3], "--model", "data.npy", "--overwrite", "--quiet"]
    refused(capsys, args, "'data.npy' exists and is a npy data file, not a tiledseg model")
    # an image given as the prediction
    np.save("truth.npy", phantom.truth)
    refused(capsys, ["evaluate", "image.npy", "truth.npy"], "prediction image.npy holds")


def test_demo_into_a_folder_that_is_a_file(work, capsys):
    Path("notes.txt").write_text("a file, not a folder")
    refused(capsys, ["demo", "--out", "notes.txt/demo", "--quiet"], "cannot make demo folder")


def test_a_lock_left_on_another_host_is_taken_over_once_stale(work, capsys):
    import json

    from tiledseg.locks import STALE_AFTER, lock_path

    lock = lock_path("out.zarr")
    held = {"pid": 1, "host": "another-node", "since": "2026-12-06T15:00"}
    lock.write_text(json.dumps(held))
    refused(capsys, PREDICT, "in use by another run (pid 1 on host another-node")
    old = time.time() - STALE_AFTER - 5  # a walltime kill: no one touches it any more
    os.utime(lock, (old, old))
    assert main(PREDICT) == 0
    assert not lock.exists()
