"""Cluster configs (``--cluster FILE``), scheduler files and worker threads, on real clusters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import tiledseg as ts
from tiledseg.cluster import Executor, open_executor
from tiledseg.cluster_config import load_cluster_config, shipped_configs
from tiledseg.errors import ClusterConfigError, MissingExtraError, TiledsegError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


def test_the_shipped_configs_are_found_and_valid(monkeypatch):
    assert set(shipped_configs()) == {"local", "slurm", "slurm-gpu", "local-cuda"}
    pytest.importorskip("dask_jobqueue")
    for name in ("local", "slurm", "slurm-gpu"):
        config = load_cluster_config(ROOT / "tiledseg" / "cluster_configs" / f"{name}.yaml")
        assert config.kind == name.split("-")[0]
    slurm = load_cluster_config("slurm")
    # what a user fills in comes from the environment; nothing else needs editing
    assert "queue" not in slurm.options
    assert slurm.options["python"] == sys.executable
    assert slurm.adapt == {"minimum_jobs": 1, "maximum_jobs": 4}
    monkeypatch.setenv("TILEDSEG_SLURM_PARTITION", "short")
    monkeypatch.setenv("TILEDSEG_SLURM_CORES", "2")
    slurm = load_cluster_config("slurm")
    assert (slurm.options["queue"], slurm.options["cores"]) == ("short", 2)
    assert slurm.planned_threads() == 8
    assert load_cluster_config("slurm-gpu").options["job_extra_directives"] == ["--gres=gpu:1"]


def test_local_cuda_needs_dask_cuda():
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"pip install 'tiledseg\[gpu\]'"):
            load_cluster_config("local-cuda")
    else:
        assert load_cluster_config("local-cuda").kind == "local-cuda"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "slurm:\n  walltme: '01:00:00'\n",
            "unknown key 'walltme' under 'slurm' (did you mean 'walltime'?)",
        ),
        ("slurm:\n  job-extra: ['--qos=x']\n", "renamed it 'job_extra_directives'"),
        (
            "local:\n  n_worker: 2\n",
            "unknown key 'n_worker' under 'local' (did you mean 'n_workers'?)",
        ),
        (
            "local:\n  n_workers: 2\nadapt:\n  maximum_jobs: 3\n",
            "unknown key 'maximum_jobs' under 'adapt'",
        ),
        (
            "slurm:\n  cores: 1\nscale:\n  jbos: 2\n",
            "unknown key 'jbos' under 'scale' (did you mean 'jobs'?)",
        ),
        ("slurn:\n  cores: 1\n", "unknown top-level key 'slurn' (did you mean 'slurm'?)"),
        ("local: {}\nslurm: {}\n", "exactly one cluster kind"),
        ("slurm: {}\nscale: {jobs: 1}\nadapt: {maximum_jobs: 2}\n", "scale or adapt, not both"),
        ("slurm:\n  cores: [1\n", "is not valid YAML"),
        ("- slurm\n", "expected a mapping"),
        ("slurm: 4\n", "'slurm' must be a mapping"),
        (
            "slurm:\n  queue: ${TILEDSEG_TEST_UNSET_VAR}\n",
            "slurm.queue needs environment variable TILEDSEG_TEST_UNSET_VAR, which is not set",
        ),
    ],
)
def test_a_bad_config_is_one_clear_error(tmp_path, text, message):
    pytest.importorskip("dask_jobqueue")
    with pytest.raises(ClusterConfigError) as error:
        load_cluster_config(write(tmp_path, text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_hyphens_as_in_jobqueue_yaml_and_comments_are_not_expanded(tmp_path):
    pytest.importorskip("dask_jobqueue")
    config = load_cluster_config(
        write(
            tmp_path,
            "slurm:  # ${NOT_EXPANDED_IN_A_COMMENT}\n"
            "  job-extra-directives: ['--qos=low']\n"
            "  death-timeout: 30\n"
            "  memory: ${TILEDSEG_TEST_UNSET_VAR:-2GiB}\n",
        )
    )
    assert config.options["job_extra_directives"] == ["--qos=low"]
    assert config.options["death_timeout"] == 30
    assert config.options["memory"] == "2GiB"


def test_a_missing_config_file_names_the_shipped_ones(tmp_path):
    with pytest.raises(ClusterConfigError, match="does not exist.*local, local-cuda, slurm"):
        load_cluster_config(tmp_path / "nope.yaml")


def test_cluster_with_workers_is_refused():
    with pytest.raises(TiledsegError, match="give one"), open_executor(2, cluster="local"):
        pass


def test_predict_on_a_local_cluster_config_equals_threads(tmp_path, phantom3d, model3d):
    config = write(tmp_path, "local:\n  n_workers: 2\n  threads_per_worker: 1\n")
    threads = ts.predict(phantom3d.image, model3d, out=tmp_path / "t.zarr", block=8)
    cluster = ts.predict(phantom3d.image, model3d, out=tmp_path / "c.zarr", block=8, cluster=config)
    np.testing.assert_array_equal(
        zarr.open_array(f"{cluster.path}/labels/0")[...],
        zarr.open_array(f"{threads.path}/labels/0")[...],
    )


def test_the_cli_takes_cluster_and_scheduler_files(tmp_path, phantom3d, model3d):
    """--cluster FILE (train and predict) and --scheduler SCHEDULER_FILE, as a user runs them."""
    from distributed import Client, LocalCluster

    np.save(tmp_path / "image.npy", phantom3d.image)
    np.save(tmp_path / "labels.npy", phantom3d.scribbles)
    cli = [sys.executable, "-m", "tiledseg.cli"]
    env = {**os.environ, "TILEDSEG_WORKERS": "2"}
    config = ROOT / "tiledseg" / "cluster_configs" / "local.yaml"
    model = tmp_path / "m.tseg"
    subprocess.run(
        [
            *cli,
            "train",
            tmp_path / "image.npy",
            tmp_path / "labels.npy",
            "--model",
            model,
            "--features",
            "minimal",
            "--cluster",
            config,
            "--quiet",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    done = subprocess.run(
        [
            *cli,
            "predict",
            tmp_path / "image.npy",
            "--model",
            model,
            "--out",
            tmp_path / "a.zarr",
            "--cluster",
            config,
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "dask dashboard: http://" in done.stderr
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.write_scheduler_file(str(tmp_path / "scheduler.json"))
        subprocess.run(
            [
                *cli,
                "predict",
                tmp_path / "image.npy",
                "--model",
                model,
                "--out",
                tmp_path / "b.zarr",
                "--scheduler",
                tmp_path / "scheduler.json",
                "--quiet",
            ],
            check=True,
            capture_output=True,
        )
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "a.zarr/labels/0"))[...],
        zarr.open_array(str(tmp_path / "b.zarr/labels/0"))[...],
    )


def test_xgboost_in_a_worker_gets_the_workers_cores_not_omp_num_threads_1(model3d, phantom3d):
    """dask's worker launcher sets OMP_NUM_THREADS=1; the threads are passed explicitly."""
    from distributed import Client, LocalCluster

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores")
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        assert set(client.run(os.getenv, "OMP_NUM_THREADS").values()) == {"1"}
        executor = Executor(client=client, n_workers=1)
        threads = executor.threads_per_task(10)
        assert threads == len(os.sched_getaffinity(0))

        def booster_threads(model, table, n):
            model.predict_proba(table, n_threads=n)
            import json

            config = json.loads(model.classifier.booster.save_config())
            return int(config["learner"]["generic_param"]["nthread"])

        table = np.zeros((10, model3d.bank.n_features(ndim=model3d.ndim, n_channels=1)), np.float32)
        used = client.submit(booster_threads, model3d, table, threads).result()
        assert used == threads


def test_environment_values_keep_their_meaning(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    path = write(
        tmp_path,
        "slurm:\n"
        "  account: ${ACCT}\n"
        "  cores: ${CORES:-4}\n"
        "  memory: ${MEM:-2GiB}\n"
        "  queue: 'a # ${PART:-short}'\n"
        "  job_extra_directives: ['--qos=${QOS:-normal}']\n"
        "  extra: null\n",
    )
    monkeypatch.setenv("ACCT", "012345")  # an account, not an octal number
    monkeypatch.setenv("CORES", "")  # set but empty: the default, as in the shell
    monkeypatch.setenv("QOS", "high: now")  # cannot change the file's structure
    config = load_cluster_config(path)
    assert config.options["account"] == "012345"
    assert config.options["cores"] == 4
    assert config.options["queue"] == "a # short"
    assert config.options["job_extra_directives"] == ["--qos=high: now"]
    assert "extra" not in config.options  # jobqueue.yaml's own empty deprecated keys pass
    assert config.scale == {"jobs": 1}  # neither scale nor adapt: one job, not none


@pytest.mark.parametrize(
    ("text", "threads"),
    [
        ("slurm: {cores: 4, processes: 2}\nadapt: {maximum_jobs: 3}\n", 12),
        ("slurm: {cores: 4, processes: 2}\nadapt: {maximum: 4}\n", 8),
        ("slurm: {cores: 4, processes: 2}\nscale: {cores: 16}\n", 16),
        ("slurm: {cores: 4}\nscale: {jobs: 2}\n", 8),
        ("slurm: {cores: 2}\n", 2),
        ("local: {n_workers: 3, threads_per_worker: 2}\n", 6),
        ("local: {n_workers: 0}\nadapt: {maximum: 8}\n", 8),
    ],
)
def test_planned_threads_counts_workers_at_full_size(tmp_path, text, threads):
    pytest.importorskip("dask_jobqueue")
    assert load_cluster_config(write(tmp_path, text)).planned_threads() == threads


def test_a_scheduler_file_that_does_not_exist_is_one_line_at_once(tmp_path):
    import time

    started = time.perf_counter()
    with (
        pytest.raises(TiledsegError, match="neither a scheduler address .* nor an existing"),
        open_executor(scheduler=tmp_path / "scheduler.json"),
    ):
        pass
    assert time.perf_counter() - started < 5


def test_a_corrupt_chunk_in_training_is_one_line_naming_the_block(tmp_path, phantom3d, capsys):
    from tiledseg.cli import main

    image = tmp_path / "image.zarr"
    zarr.create_array(str(image), shape=phantom3d.image.shape, chunks=(10, 11, 9), dtype="f4")[
        ...
    ] = phantom3d.image
    np.save(tmp_path / "labels.npy", phantom3d.scribbles)
    for chunk in (image / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"not a chunk")
    code = main(
        [
            "train",
            str(image),
            str(tmp_path / "labels.npy"),
            "--model",
            str(tmp_path / "m.tseg"),
            "--features",
            "minimal",
            "--quiet",
            "--no-cache",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("tiledseg: error: reading block z ")
    assert "the store may be damaged" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.tseg").exists()


def test_local_workers_keep_glibcs_adaptive_malloc():
    """dask's nanny sets MALLOC_TRIM_THRESHOLD_ in workers: blocks were 1.5x slower."""
    with open_executor(1, quiet=True) as executor:
        run = executor.client.run
        # (a nanny started earlier in this process may have left it in os.environ)
        if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
            assert set(run(os.getenv, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
        assert set(run(os.getenv, "MALLOC_MMAP_THRESHOLD_").values()) == {"33554432"}
        assert set(run(os.getenv, "OMP_NUM_THREADS").values()) == {"1"}


def test_blocks_are_planned_for_the_threads_of_a_given_scheduler():
    # not the local cores: a remote cluster has its own (here 3 workers of 2 threads)
    from distributed import LocalCluster

    from tiledseg.cluster import planned_workers

    with LocalCluster(
        n_workers=3, threads_per_worker=2, processes=False, dashboard_address=":0"
    ) as cluster:
        assert planned_workers(scheduler=cluster.scheduler_address) == 6


def test_an_installed_wheel_finds_the_shipped_configs_by_name(tmp_path):
    # built and installed outside the repository, as a user's pip install does
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(wheels.glob("tiledseg-*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import tiledseg\n"
        "from tiledseg.cluster_config import load_cluster_config, shipped_configs\n"
        "assert tiledseg.__file__.startswith(sys.argv[1]), tiledseg.__file__\n"
        "print(sorted(shipped_configs()), load_cluster_config('local').kind)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split("]")[0] == "['local', 'local-cuda', 'slurm', 'slurm-gpu'"
    assert done.stdout.strip().endswith("local")
