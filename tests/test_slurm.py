"""tiledseg and dask on a real (private, single-node) SLURM: see the ``slurm`` fixture.

The first use installs Debian's slurm packages when they are missing (root only, else
the tests skip); the daemons then start in about a second.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

import tiledseg as ts
from tiledseg.classifiers import XGBoostClassifier
from tiledseg.demo import write_ome_zarr
from tiledseg.testing import make_phantom

ROOT = Path(__file__).resolve().parents[1]
INSIDE_ALLOCATION = ROOT / "examples" / "slurm" / "inside-allocation.sbatch"


def job_env(**extra: str) -> dict[str, str]:
    """The environment a job gets (sbatch exports it): this venv and this tiledseg first."""
    package_root = str(Path(ts.__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath, **extra}


def test_sbatch_runs_a_job(slurm, tmp_path):
    """Controller, slurmd and munge work together: a batch job runs and writes its output."""
    out = tmp_path / "hello.out"
    job_id = slurm.submit(
        f"--output={out}",
        f"--chdir={tmp_path}",
        "--wrap",
        "echo hello from $SLURM_JOB_ID on $SLURM_JOB_PARTITION",
    )
    assert slurm.wait(job_id, timeout=30) == ("COMPLETED", "0:0")
    assert out.read_text().strip() == f"hello from {job_id} on {slurm.partition}"


def test_slurm_cluster_workers_are_jobs(slurm, tmp_path):
    """dask-jobqueue's SLURMCluster: two jobs, two workers, two SLURM job ids."""
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    with (
        SLURMCluster(
            cores=1,
            processes=1,
            memory="1GiB",
            python=sys.executable,
            interface="lo",
            log_directory=str(tmp_path),
            walltime="00:10:00",
            queue=slurm.partition,
            scheduler_options={"dashboard_address": ":0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        logging.getLogger("distributed").setLevel(logging.ERROR)
        cluster.scale(jobs=2)
        client.wait_for_workers(2, timeout=60)
        # os.getenv, not os.environ.get: that bound method would carry this process's
        # os.environ along to the workers and read it there
        job_ids = client.run(os.getenv, "SLURM_JOB_ID")
    assert len(job_ids) == 2
    assert all(job_ids.values())
    assert len(set(job_ids.values())) == 2


@pytest.fixture(scope="module")
def allocation_inputs(tmp_path_factory):
    """A 3D phantom as OME-Zarr, a model trained on it, and a local threaded prediction."""
    folder = tmp_path_factory.mktemp("allocation")
    phantom = make_phantom(
        (24, 40, 40), n_classes=3, feature_size=6.0, scribble_fraction=0.03, seed=3
    )
    image = folder / "image.zarr"
    write_ome_zarr(image, phantom.image, spacing=(1.0, 1.0, 1.0), chunks=(12, 20, 20))
    bank = ts.FeatureBank({"gaussian_smoothing": [0.7, 1.6], "gaussian_gradient_magnitude": [1.0]})
    model = ts.train(
        str(image),
        phantom.scribbles,
        features=bank,
        classifier=XGBoostClassifier(max_rounds=15, patience=3, max_depth=3, seed=0),
        cache_dir=None,
    )
    model_path = model.save(folder / "model.tiledseg")
    block = "12,20,20"
    local = ts.predict(str(image), model_path, out=folder / "local.zarr", block=block)
    labels = zarr.open_array(f"{local.path}/labels/0", mode="r")[...]
    return image, model_path, block, labels


def test_inside_one_allocation(slurm, tmp_path, allocation_inputs):
    """examples/slurm/inside-allocation.sbatch: scheduler + srun workers + predict, one job."""
    image, model_path, block, expected = allocation_inputs
    out = tmp_path / "out.zarr"
    log = tmp_path / "job.out"
    env = job_env(
        TILEDSEG_VENV=str(Path(sys.executable).parent.parent),
        # one node: the loopback interface is always there (a real cluster: ib0, eth0...)
        TILEDSEG_DASK_INTERFACE="lo",
    )
    job_id = slurm.submit(
        f"--output={log}",
        f"--chdir={tmp_path}",
        "--mem-per-cpu=1G",
        "--time=00:05:00",
        str(INSIDE_ALLOCATION),
        str(image),
        str(model_path),
        str(out),
        "--block",
        block,
        env=env,
    )
    state = slurm.wait(job_id, timeout=240)
    text = log.read_text() if log.exists() else "(no job output)"
    assert state == ("COMPLETED", "0:0"), text
    workers = re.search(r"dask workers: (\d+) \((.*)\)", text)
    assert workers, text
    assert workers[1] == "2", text
    assert "task 0 on" in workers[2], text
    assert "task 1 on" in workers[2], text
    assert re.search(r"voxels in \d+ blocks", text), text
    labels = zarr.open_array(f"{out}/labels/0", mode="r")[...]
    assert labels.dtype == expected.dtype
    assert_array_equal(labels, expected)
    assert len(np.unique(labels)) == 3
    assert not list(tmp_path.glob("dask-scheduler-*.json")), "the scheduler file is removed"


def test_train_and_predict_through_the_shipped_slurm_config(slurm, tmp_path, allocation_inputs):
    """tiledseg/cluster_configs/slurm.yaml as shipped, filled in by environment variables only:
    training and prediction run as SLURM jobs and give the local threaded run's labels."""
    import subprocess

    pytest.importorskip("dask_jobqueue")
    image, model_path, block, expected = allocation_inputs
    logs = tmp_path / "logs"
    env = job_env(
        TILEDSEG_SLURM_PARTITION=slurm.partition,
        TILEDSEG_SLURM_CORES="1",
        TILEDSEG_SLURM_MEMORY="1GiB",
        TILEDSEG_SLURM_WALLTIME="00:10:00",
        TILEDSEG_SLURM_MAX_JOBS="2",
        # one node: the loopback interface (a real cluster: ib0, eth0, ...)
        TILEDSEG_SLURM_INTERFACE="lo",
        TILEDSEG_SLURM_LOGS=str(logs),
        TILEDSEG_CACHE_DIR=str(tmp_path / "cache"),
    )
    config = ROOT / "tiledseg" / "cluster_configs" / "slurm.yaml"
    cli = [sys.executable, "-m", "tiledseg.cli"]
    scribbles = tmp_path / "scribbles.npy"
    # the model trained on SLURM workers equals the one trained on threads
    np.save(
        scribbles,
        make_phantom(
            (24, 40, 40), n_classes=3, feature_size=6.0, scribble_fraction=0.03, seed=3
        ).scribbles,
    )
    trained = tmp_path / "m.tseg"
    for args in (
        ["train", image, scribbles, "--model", trained, "--features", "minimal"],
        ["predict", image, "--model", model_path, "--out", tmp_path / "out.zarr", "--block", block],
    ):
        done = subprocess.run(
            [*cli, *map(str, args), "--cluster", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert "dask dashboard: http://" in done.stderr
    labels = zarr.open_array(str(tmp_path / "out.zarr/labels/0"), mode="r")[...]
    assert_array_equal(labels, expected)
    # the workers were SLURM jobs: dask-jobqueue's job logs are where the config says
    assert list(logs.glob("dask-worker-*.err"))
    local = ts.train(str(image), np.load(scribbles), features="minimal", cache_dir=None)
    remote = ts.load_model(trained)
    # (the saved summary is JSON: its class keys are strings)
    assert remote.summary["labelled_voxels"] == {
        str(k): v for k, v in local.summary["labelled_voxels"].items()
    }
    assert_same_classifier(remote, local)


def assert_same_classifier(a, b) -> None:
    """The same fitted classifier: the same probabilities for any features (a forest's
    file bytes differ run to run: skops names its arrays by object id)."""
    X = np.random.default_rng(0).normal(0, 100, (2000, len(b.feature_names))).astype(np.float32)
    assert_array_equal(a.classifier.predict_proba(X), b.classifier.predict_proba(X))


def test_a_partition_slurm_refuses_is_one_line_not_a_run_that_waits(slurm, tmp_path):
    import subprocess

    pytest.importorskip("dask_jobqueue")
    np.save(tmp_path / "image.npy", np.zeros((8, 8), np.float32))
    env = job_env(
        TILEDSEG_SLURM_PARTITION="no-such-partition",
        TILEDSEG_SLURM_INTERFACE="lo",
        TILEDSEG_SLURM_LOGS=str(tmp_path / "logs"),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiledseg.cli",
            "train",
            str(tmp_path / "image.npy"),
            str(tmp_path / "image.npy"),
            "--model",
            str(tmp_path / "m.tseg"),
            "--cluster",
            str(ROOT / "tiledseg" / "cluster_configs" / "slurm.yaml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "SLURM would not run the worker job" in lines[0]
    assert "invalid partition" in lines[0].lower()


def test_the_whole_job_inside_one_allocation(slurm, tmp_path, allocation_inputs):
    """TILEDSEG_LABELS: the same script trains the model on its workers, then predicts;
    the model and labels equal a local threaded train + predict."""
    image = allocation_inputs[0]
    phantom = make_phantom(
        (24, 40, 40), n_classes=3, feature_size=6.0, scribble_fraction=0.03, seed=3
    )
    np.save(tmp_path / "scribbles.npy", phantom.scribbles)
    local_model = ts.train(str(image), phantom.scribbles, features="minimal", cache_dir=None)
    local = ts.predict(str(image), local_model, out=tmp_path / "local.zarr")
    model = tmp_path / "trained.tseg"
    log = tmp_path / "job.out"
    env = job_env(
        TILEDSEG_VENV=str(Path(sys.executable).parent.parent),
        TILEDSEG_DASK_INTERFACE="lo",
        TILEDSEG_LABELS=str(tmp_path / "scribbles.npy"),
        TILEDSEG_TRAIN_OPTIONS="--features minimal --no-cache",
    )
    job_id = slurm.submit(
        f"--output={log}",
        f"--chdir={tmp_path}",
        "--mem-per-cpu=1G",
        "--time=00:05:00",
        str(INSIDE_ALLOCATION),
        str(image),
        str(model),
        str(tmp_path / "out.zarr"),
        env=env,
    )
    state = slurm.wait(job_id, timeout=240)
    text = log.read_text() if log.exists() else "(no job output)"
    assert state == ("COMPLETED", "0:0"), text
    assert "model written to" in text, text
    assert_same_classifier(ts.load_model(model), local_model)
    assert_array_equal(
        zarr.open_array(str(tmp_path / "out.zarr/labels/0"), mode="r")[...],
        zarr.open_array(f"{local.path}/labels/0", mode="r")[...],
    )
