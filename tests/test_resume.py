"""Runs that stop and continue: SIGKILL + rerun, failed blocks, lost workers, identity checks.

The killed runs are real ``tiledseg`` processes killed with SIGKILL while they
write; the rerun is the same command line. Every rerun must give the bytes an
uninterrupted run gives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import tiledseg as ts
from tiledseg.blocks import Block
from tiledseg.cli import cli, main
from tiledseg.errors import BlocksFailedError, OutputExistsError

# the module, not the function that tiledseg exports under its name
from tiledseg.predict import PredictionJob
from tiledseg.runs import DONE_DIR, done_blocks
from tiledseg.testing import make_phantom
from tiledseg.testing.processes import kill_when

SHAPE = (32, 64, 64)
BLOCK = 16  # 2 x 4 x 4 = 32 blocks
N = 32


@pytest.fixture(scope="module")
def work(tmp_path_factory, model3d):
    """A zarr image chunked like the blocks, a saved model, and the uninterrupted outputs."""
    folder = tmp_path_factory.mktemp("resume")
    ph = make_phantom(SHAPE, n_classes=3, feature_size=6.0, seed=21)
    image = folder / "image.zarr"
    zarr.create_array(str(image), shape=SHAPE, chunks=(BLOCK,) * 3, dtype=ph.image.dtype)[...] = (
        ph.image
    )
    model = model3d.save(folder / "model.tseg")
    return {"folder": folder, "image": image, "model": model, "phantom": ph}


def predict_args(work, out: Path, *extra: str) -> list[str]:
    return [
        "predict",
        str(work["image"]),
        "--model",
        str(work["model"]),
        "--out",
        str(out),
        "--block",
        str(BLOCK),
        "--quiet",
        *extra,
    ]


def read_outputs(out: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(out), mode="r")
    return {name: root[f"{name}/0"][...] for name in root.attrs["tiledseg"]["arrays"]}


def provenance(out: Path) -> dict:
    return dict(zarr.open_group(str(out), mode="r").attrs["tiledseg"])


@pytest.fixture(scope="module")
def uninterrupted(work):
    """Outputs of runs that were never stopped, per option set."""
    found = {}

    def get(*extra: str) -> dict[str, np.ndarray]:
        if extra not in found:
            out = work["folder"] / f"whole-{len(found)}.zarr"
            result = CliRunner().invoke(cli, predict_args(work, out, *extra))
            assert result.exit_code == 0, result.output
            found[extra] = read_outputs(out)
        return found[extra]

    return get


def kill_after_markers(args: list[str], out: Path, at_least: int) -> int:
    """Start ``tiledseg ARGS`` and SIGKILL it once ``at_least`` blocks are marked done."""
    markers = out / DONE_DIR
    kill_when(args, lambda: markers.is_dir() and len(os.listdir(markers)) >= at_least)
    return len(done_blocks(out))


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [("--probabilities", "--uncertainty"), ("--smooth", "graphcut")],
    ids=["plain", "graphcut"],
)
def test_a_killed_run_continues_and_equals_an_uninterrupted_one(work, uninterrupted, extra):
    out = work["folder"] / f"killed-{extra[0].strip('-')}.zarr"
    args = predict_args(work, out, *extra)
    done = kill_after_markers(args, out, at_least=8)
    assert 8 <= done < N
    assert provenance(out)["complete"] is False

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"resumed: {done} of {N} blocks were already done and skipped" in result.stdout
    info = provenance(out)
    assert info["complete"] is True
    assert info["resumed"][-1]["skipped"] == done
    assert not (out / DONE_DIR).exists()
    expected = uninterrupted(*extra)
    got = read_outputs(out)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.fixture
def partial(work, tmp_path, monkeypatch):
    """An unfinished output: the API run with some blocks failing on purpose."""

    def make(*, smooth: str | None = None, fail=lambda b: b.index[2] == 3, name=None):
        name = name or ("costs" if smooth else "predict")
        real = getattr(PredictionJob, name)

        def failing(job, block, *rest):
            assert isinstance(block, Block)
            if fail(block):
                raise OSError(f"injected read error in {block.name}")
            return real(job, block, *rest)

        out = tmp_path / "partial.zarr"
        with monkeypatch.context() as patch:
            patch.setattr(PredictionJob, name, failing)
            with pytest.raises(BlocksFailedError) as failed:
                ts.predict(
                    str(work["image"]), str(work["model"]), out=out, block=BLOCK, smooth=smooth
                )
        return out, failed.value

    return make


def test_failed_blocks_are_reported_stay_not_done_and_a_rerun_does_only_them(
    work, uninterrupted, partial
):
    out, error = partial()
    failed = {f.index for f in error.failures}
    assert len(failed) == 8  # x block 3 of every (z, y)
    assert f"8 of {N} blocks failed" in str(error)
    assert "injected read error in z 0:16, y 0:16, x 48:64" in str(error)
    assert (
        done_blocks(out)
        == {(z, y, x) for z in range(2) for y in range(4) for x in range(4)} - failed
    )
    result = ts.predict(str(work["image"]), str(work["model"]), out=out, block=BLOCK)
    assert (result.blocks, result.skipped) == (N, N - 8)
    np.testing.assert_array_equal(read_outputs(out)["labels"], uninterrupted()["labels"])


def test_a_smoothed_run_reports_the_blocks_a_failed_block_leaves_unsmoothed(work, partial):
    out, error = partial(smooth="graphcut", fail=lambda b: b.index == (0, 0, 0))
    named = {f.index: f for f in error.failures}
    assert "injected read error" in named[0, 0, 0].error
    # the blocks whose windows (first pass) or seam slabs (one block further per pass)
    # need its results fail naming it; here that is all of them: nothing is marked done
    assert "needs block z 0:16, y 0:16, x 0:16, which failed" in named[1, 1, 1].error
    assert "needs block z 0:16, y 0:16, x 0:16, which failed" in named[1, 3, 3].error
    assert len(named) == N
    assert done_blocks(out) == set()


def test_a_smoothed_run_resumes_and_equals_an_uninterrupted_one(work, uninterrupted, partial):
    out, error = partial(
        smooth="graphcut", fail=lambda b: b.index == (1, 2, 2), name="write_labels"
    )
    assert [f.index for f in error.failures] == [(1, 2, 2)]
    result = ts.predict(
        str(work["image"]), str(work["model"]), out=out, block=BLOCK, smooth="graphcut"
    )
    assert (result.skipped, result.voxels) == (N - 1, BLOCK**3)
    expected = uninterrupted("--smooth", "graphcut")["labels"]
    np.testing.assert_array_equal(read_outputs(out)["labels"], expected)


def test_the_cli_reports_failed_blocks_with_exit_status_1(work, tmp_path):
    """A corrupt chunk of the image: the blocks that read it fail, the others are written."""
    image = tmp_path / "image.zarr"
    source = zarr.open_array(str(work["image"]), mode="r")
    zarr.create_array(str(image), shape=SHAPE, chunks=(BLOCK,) * 3, dtype=source.dtype)[...] = (
        source[...]
    )
    chunk = image / "c" / "1" / "2" / "2"
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x00garbage" * 7)
    out = tmp_path / "out.zarr"
    args = predict_args(work, out)
    args[1] = str(image)
    proc = subprocess.run(
        [sys.executable, "-m", "tiledseg.cli", *args], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"tiledseg: error: 18 of {N} blocks failed")
    # the corrupt chunk's block and the blocks whose halo reaches into it
    assert any("block z 16:32, y 32:48, x 32:48" in line for line in lines[1:])
    assert len(lines) - 1 == 18  # 2 x 3 x 3: every block whose read reaches the chunk
    assert provenance(out)["complete"] is False
    assert len(done_blocks(out)) == N - 18

    chunk.write_bytes(good)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"resumed: {N - 18} of {N} blocks" in result.stdout


def test_overwrite_starts_afresh(work, partial):
    out, _ = partial()
    result = ts.predict(
        str(work["image"]), str(work["model"]), out=out, block=BLOCK, overwrite=True
    )
    assert result.skipped == 0
    assert provenance(out).get("resumed") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("model", r"a different model \(checksum\)"),
        ("image", "a different image "),
        ("block", r"a different block \(it had \[16, 16, 16\], this run has \[24, 24, 24\]\)"),
        ("probabilities", "a different set of outputs"),
        ("roi", "a different region"),
        ("smooth", "a different smoothing"),
    ],
)
def test_an_unfinished_output_is_not_continued_with_another_run(
    work, partial, model2d, tmp_path, change, message
):
    out, _ = partial()
    kwargs = {"out": out, "block": BLOCK}
    image, model = str(work["image"]), str(work["model"])
    if change == "model":
        other = make_phantom(SHAPE, n_classes=3, feature_size=6.0, seed=5)
        model = ts.train(
            other.image,
            other.scribbles,
            features=ts.FeatureBank({"gaussian_smoothing": [1.0]}),
            cache_dir=None,
        )
    elif change == "image":
        np.save(tmp_path / "other.npy", make_phantom(SHAPE, seed=3).image)
        image = str(tmp_path / "other.npy")
    elif change == "block":
        kwargs["block"] = 24
    elif change == "roi":
        kwargs["roi"] = "0:16,:,:"
    elif change == "smooth":
        kwargs["smooth"] = "graphcut"
    else:
        kwargs["probabilities"] = True
    before = done_blocks(out)
    with pytest.raises(OutputExistsError, match=message):
        ts.predict(image, model, **kwargs)
    assert done_blocks(out) == before


def test_a_complete_output_is_not_redone_without_overwrite(work, tmp_path):
    out = tmp_path / "done.zarr"
    ts.predict(str(work["image"]), str(work["model"]), out=out, block=BLOCK)
    with pytest.raises(OutputExistsError, match="exists and is complete; .* --overwrite"):
        ts.predict(str(work["image"]), str(work["model"]), out=out, block=BLOCK)


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_replaced_and_the_output_is_identical(
    work, uninterrupted, tmp_path
):
    from distributed import Client, LocalCluster

    out = tmp_path / "lost.zarr"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        pids = client.run(os.getpid)
        errors, results = [], []

        def run():
            try:
                results.append(
                    ts.predict(
                        str(work["image"]),
                        str(work["model"]),
                        out=out,
                        block=BLOCK,
                        scheduler=cluster.scheduler_address,
                    )
                )
            except Exception as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        markers = out / DONE_DIR
        while thread.is_alive() and not (markers.is_dir() and len(os.listdir(markers)) >= 10):
            time.sleep(0.005)
        assert thread.is_alive(), "the run ended before a worker could be killed"
        victim = next(iter(pids.values()))
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=300)
        assert not errors, errors
        # the nanny started a new worker process in place of the killed one
        assert victim not in client.run(os.getpid).values()
    assert provenance(out)["complete"] is True
    # every block counted once, the lost worker's included
    assert results[0].voxels == provenance(out)["voxels"] == np.prod(SHAPE)
    np.testing.assert_array_equal(read_outputs(out)["labels"], uninterrupted()["labels"])


def test_a_refusal_names_the_setting_that_differs(tmp_path):
    from tiledseg.runs import _check_same_run

    was = {"smoothing": {"method": "graphcut", "weight": 2.0, "neighbours": 6}}
    now = {"smoothing": {"method": "graphcut", "weight": 3.0, "neighbours": 6}}
    with pytest.raises(OutputExistsError) as error:
        _check_same_run(tmp_path, was, now)
    assert "a different smoothing weight (it had 2.0, this run has 3.0)" in str(error.value)


def test_an_in_memory_image_is_never_resumed(work, tmp_path, partial):
    out, _ = partial()
    with pytest.raises(OutputExistsError, match="exists; choose another path or pass --overwrite"):
        ts.predict(work["phantom"].image, str(work["model"]), out=out, block=BLOCK)


def test_info_says_how_far_an_unfinished_output_got(partial):
    out, _ = partial()
    result = CliRunner().invoke(cli, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert f"complete: False ({N - 8} blocks done; the same command again continues" in (
        result.output
    )


def test_segment_continues_with_the_model_its_first_run_wrote(work, tmp_path, monkeypatch, capsys):
    ph = work["phantom"]
    np.save(tmp_path / "labels.npy", ph.scribbles)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"image: {work['image']}\nlabels: labels.npy\nmodel: m.tseg\nout: out.zarr\n"
        f"features: minimal\nblock: {BLOCK}\n"
    )
    real = PredictionJob.predict

    def failing(job, block):
        if block.index[0] == 1:
            raise OSError("disk full (on purpose)")
        return real(job, block)

    with monkeypatch.context() as patch:
        patch.setattr(PredictionJob, "predict", failing)
        assert main(["segment", str(config), "--quiet"]) == 1
    assert "16 of 32 blocks failed" in capsys.readouterr().err
    checksum = ts.load_model(tmp_path / "m.tseg").checksum
    assert main(["segment", str(config), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "training skipped, prediction resumed" in said
    assert "resumed: 16 of 32 blocks were already done and skipped" in said
    assert ts.load_model(tmp_path / "m.tseg").checksum == checksum
    # another bank in the config: the old model is not reused (and not overwritten)
    (tmp_path / "out.zarr" / DONE_DIR).mkdir()  # (as if unfinished again)
    zarr.open_group(str(tmp_path / "out.zarr")).attrs["tiledseg"] = {
        **provenance(tmp_path / "out.zarr"),
        "complete": False,
    }
    config.write_text(config.read_text().replace("minimal", "default"))
    assert main(["segment", str(config), "--quiet"]) == 2
    assert "m.tseg' exists" in capsys.readouterr().err
