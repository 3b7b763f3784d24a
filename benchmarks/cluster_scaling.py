"""Wall time of ``tiledseg.predict`` on 1 and 2 local workers, threads, and SLURM.

Steps, each in its own fresh child process (``_bench.run_child``):

1. make a ``--size``^3 phantom (strokes on 8 z-slices) and write its image as a zarr
   array (64^3 chunks); with ``--slurm`` also a longer one, ``--slurm-shape``, for a
   job of about a minute on 2 local workers;
2. train tiledseg's defaults once on the phantom's scribbles, save the model, and
   predict once with the default threaded executor (unmeasured: it warms the page
   cache and gives the reference labels);
3. for each of ``--repeats`` rounds, each configuration in turn (interleaved, so that
   a drift in the machine's speed touches them all):

   - ``threads-1``: the default executor in a child pinned to one core
     (``sched_setaffinity``: one dask thread, one XGBoost thread);
   - ``threads-2``: the default executor (2 threads on this 2-core machine);
   - ``workers-1`` / ``workers-2``: ``predict(..., workers=N)``, a LocalCluster of N
     single-threaded worker processes;
   - ``workers-1-notrim`` / ``workers-2-notrim``: the same, with dask's
     ``distributed.nanny.pre-spawn-environ`` set (in the benchmark's child, not in
     tiledseg) without ``MALLOC_TRIM_THRESHOLD_``, which the nanny otherwise exports to
     its workers: set explicitly, it turns off glibc's dynamic mmap threshold, so that
     every array above 128 KiB is a fresh mmap (page faults: system CPU time);

   and with ``--slurm``, on the longer image: ``long-slurm-2``, ``predict(...,
   cluster="tiledseg/cluster_configs/slurm.yaml")`` through a private single-node SLURM
   (``tiledseg/testing/slurm.py``) with the file filled in by ``TILEDSEG_SLURM_*``
   only (2 one-core jobs, adapt minimum = maximum = 2), against ``long-workers-2``
   (``workers=2``) on the same image; SLURM's daemons and jobs are not children of
   the measured process, so their CPU time is sampled and not counted as "others".

Each child reads the image and the model from their paths, as the command line does.
It times the whole ``predict`` call and, by wrapping ``open_executor`` as
``tiledseg.predict`` sees it (tiledseg's code is unchanged), the executor's start (for
a cluster: ``import distributed`` is done before; the cluster and its client), the work
inside it, and its close; on a cluster it also takes dask's task stream (each block's
compute time on its worker), the workers' CPU seconds and when each worker joined. The
labels of every run are hashed and must equal the reference (asserted). Before each
child the script waits for the CPU to be quiet, and re-runs a child during which other
processes used more than ``--max-others`` cores.

    python benchmarks/cluster_scaling.py [--size 256] [--repeats 3] [--slurm]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _bench

ROOT = Path(__file__).resolve().parents[1]
SLURM_CONFIG = ROOT / "tiledseg" / "cluster_configs" / "slurm.yaml"
GOAL_SPEEDUP = 1.8
LOCAL_CONFIGS = (
    "threads-1",
    "threads-2",
    "workers-1",
    "workers-2",
    "workers-1-notrim",
    "workers-2-notrim",
)
#: dask's nanny environment for its worker processes without MALLOC_TRIM_THRESHOLD_
NOTRIM_ENVIRON = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}


# -- child tasks ----------------------------------------------------------------------------------


def task_train(params: dict[str, Any]) -> dict[str, Any]:
    """Train the default bank on the phantom's scribbles, save it, predict once (reference).

    Parameters
    ----------
    params : dict
        ``image`` (zarr path), ``scribbles`` (npy path), ``model`` (file to write),
        ``out`` (the reference prediction's output group).
    """
    import numpy as np

    import tiledseg

    started = time.perf_counter()
    model = tiledseg.train(params["image"], np.load(params["scribbles"]), cache_dir=None)
    trained = time.perf_counter() - started
    model.save(params["model"], overwrite=True)
    started = time.perf_counter()
    result = tiledseg.predict(params["image"], params["model"], out=params["out"])
    return {
        "train_seconds": trained,
        "reference_predict_seconds": time.perf_counter() - started,
        "blocks": result.blocks,
        "rounds": model.summary.get("rounds"),
        "n_features": model.summary.get("n_features"),
        "labels": _labels_digest(result.path),
    }


def _labels_digest(out: str) -> dict[str, Any]:
    import numpy as np
    import zarr

    labels = zarr.open_array(f"{out}/labels/0", mode="r")[...]
    values_counts = np.unique(labels, return_counts=True)
    return {
        "sha256": hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest(),
        "counts": dict(zip(*(v.tolist() for v in values_counts), strict=True)),
    }


def task_predict(params: dict[str, Any]) -> dict[str, Any]:
    """Time one ``tiledseg.predict`` call with one configuration's executor.

    Parameters
    ----------
    params : dict
        ``image``, ``model``, ``out`` (paths); ``kwargs`` (``workers`` or ``cluster``
        for ``predict``; none: threads); ``affinity`` (CPUs to pin this process to
        before anything is imported); ``env`` (variables to set first);
        ``nanny_environ`` (dask's ``distributed.nanny.pre-spawn-environ``);
        ``expect_workers`` (workers to watch for).
    """
    if params.get("affinity"):
        os.sched_setaffinity(0, set(params["affinity"]))
    os.environ.update(params.get("env") or {})
    started = time.perf_counter()
    import dask
    import distributed  # noqa: F401  (imported by every config: not part of the timing)

    if params.get("nanny_environ") is not None:
        dask.config.set({"distributed.nanny.pre-spawn-environ": params["nanny_environ"]})

    import tiledseg

    # (``tiledseg.predict`` the attribute is the function; the module is wanted here)
    tp = importlib.import_module("tiledseg.predict")
    imports = time.perf_counter() - started
    model = tiledseg.load_model(params["model"])
    record: dict[str, Any] = {"maps": []}
    threads = not params["kwargs"]
    _instrument(tp, record, int(params.get("expect_workers", 0)), per_block=threads)
    cpu_before = os.times()
    started = time.perf_counter()
    result = tp.predict(params["image"], model, out=params["out"], **params["kwargs"])
    total = time.perf_counter() - started
    cpu_after = os.times()
    record.update(
        total_s=total,
        result_seconds=result.seconds,
        driver_cpu_s=cpu_after[0] + cpu_after[1] - cpu_before[0] - cpu_before[1],
        driver_sys_s=cpu_after[1] - cpu_before[1],
        nanny_environ=dask.config.get("distributed.nanny.pre-spawn-environ"),
        imports_s=imports,
        blocks=result.blocks,
        voxels=result.voxels,
        labels=_labels_digest(result.path),
        available_cores=len(os.sched_getaffinity(0)),
    )
    return record


def _instrument(tp: Any, record: dict[str, Any], expect_workers: int, per_block: bool) -> None:
    """Wrap ``open_executor`` (and with ``per_block`` the block task) as
    ``tiledseg.predict`` sees them.

    Only this process's module attributes are replaced. The block task is wrapped for
    the threaded executor only: a cluster's workers run tiledseg's own function, and
    their per-block times come from dask's task stream.
    """
    original_open = tp.open_executor
    original_task = tp._predict_task
    block_times: list[float] = []
    lock = threading.Lock()

    def timed_task(args: tuple) -> Any:
        t = time.perf_counter()
        try:
            return original_task(args)
        finally:
            with lock:
                block_times.append(time.perf_counter() - t)

    @contextlib.contextmanager
    def timed_open(*args: Any, **kwargs: Any):
        t_open = time.perf_counter()
        with original_open(*args, **kwargs) as executor:
            opened = time.perf_counter()
            record["open_s"] = opened - t_open
            record["n_workers"] = executor.n_workers
            client = executor.client
            watcher = _WorkerWatcher(client, t_open, expect_workers) if client else None
            if client is not None:
                client.get_task_stream(count=1)  # installs the scheduler's task-stream plugin
                record["workers_at_open"] = len(client.scheduler_info()["workers"])
                cpu_open = _worker_cpu(client)
            wall_open = time.time()
            cpu_driver = os.times()
            original_map = executor.map

            def timed_map(func: Any, items: Sequence[Any], **kw: Any) -> list[Any]:
                t = time.perf_counter()
                out = original_map(func, items, **kw)
                record["maps"].append(
                    {"desc": kw.get("desc"), "items": len(items), "s": time.perf_counter() - t}
                )
                return out

            executor.map = timed_map
            try:
                yield executor
            finally:
                record["work_s"] = time.perf_counter() - opened
                cpu_now = os.times()
                record["driver_cpu_work_s"] = cpu_now[0] + cpu_now[1] - sum(cpu_driver[:2])
                record["driver_sys_work_s"] = cpu_now[1] - cpu_driver[1]
                if client is not None:
                    watcher.stop()
                    record["worker_joined_s"] = watcher.joined
                    record["task_stream"] = _task_stream_summary(
                        client.get_task_stream(start=wall_open), wall_open
                    )
                    cpu_close = _worker_cpu(client)
                    zero = (0.0, 0.0)
                    record["worker_cpu_s"] = {
                        w: round(sum(c) - sum(cpu_open.get(w, zero)), 3)
                        for w, c in cpu_close.items()
                    }
                    record["worker_sys_s"] = {
                        w: round(c[1] - cpu_open.get(w, zero)[1], 3) for w, c in cpu_close.items()
                    }
                    record["worker_cpu_total_s"] = {
                        w: round(sum(c), 3) for w, c in cpu_close.items()
                    }
                else:
                    record["block_s"] = list(block_times)
                t_close = time.perf_counter()
        record["close_s"] = time.perf_counter() - t_close

    tp.open_executor = timed_open
    if per_block:
        tp._predict_task = timed_task


def _worker_cpu(client: Any) -> dict[str, tuple[float, float]]:
    """User and system CPU seconds of each worker process so far (from its start)."""
    try:
        times = client.run(os.times)
    except Exception:  # a worker left meanwhile
        return {}
    return {w: (float(t[0]), float(t[1])) for w, t in times.items()}


class _WorkerWatcher:
    """Polls the scheduler for workers and notes when the 1st, 2nd ... one joined."""

    def __init__(self, client: Any, since: float, expect: int):
        self.client, self.since = client, since
        self.joined: list[float] = []
        self._seen = 0
        self._stop = threading.Event()
        self._poll()
        self._thread = threading.Thread(target=self._run, args=(max(expect, 1),), daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        try:
            n = len(self.client.scheduler_info()["workers"])
        except Exception:
            return
        now = time.perf_counter() - self.since
        while self._seen < n:
            self.joined.append(round(now, 3))
            self._seen += 1

    def _run(self, expect: int) -> None:
        while not self._stop.is_set() and self._seen < expect:
            self._poll()
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _task_stream_summary(stream: list[dict[str, Any]], since: float) -> dict[str, Any]:
    """Per-worker block count and compute time from dask's task stream; idle and latency."""
    per_worker: dict[str, dict[str, float]] = {}
    computes: list[float] = []
    first = last = None
    other: dict[str, float] = {}
    for task in stream:
        if not str(task.get("key", "")).startswith("_predict_task"):
            continue
        w = per_worker.setdefault(task["worker"], {"blocks": 0, "compute_s": 0.0})
        w["blocks"] += 1
        for ss in task.get("startstops", ()):
            d = ss["stop"] - ss["start"]
            if ss["action"] == "compute":
                w["compute_s"] += d
                computes.append(d)
                first = ss["start"] if first is None else min(first, ss["start"])
                last = ss["stop"] if last is None else max(last, ss["stop"])
            else:
                other[ss["action"]] = other.get(ss["action"], 0.0) + d
    return {
        "workers": {
            k: {"blocks": v["blocks"], "compute_s": round(v["compute_s"], 3)}
            for k, v in per_worker.items()
        },
        "block_compute_s": [round(c, 3) for c in computes],
        "first_block_start_s": None if first is None else round(first - since, 3),
        "last_block_end_s": None if last is None else round(last - since, 3),
        "other_actions_s": {k: round(v, 3) for k, v in other.items()},
    }


def task_phantom(params: dict[str, Any]) -> dict[str, Any]:
    """``_bench.make_phantom_files`` (a phantom written to disk by a child of its own)."""
    return _bench.make_phantom_files(params)


TASKS = {"phantom": task_phantom, "train": task_train, "predict": task_predict}


# -- the parent: quiet CPU, SLURM's own CPU --------------------------------------------------------


def _busy_cores(seconds: float) -> float:
    """Cores busy system-wide over ``seconds`` (nothing of ours runs meanwhile)."""
    import psutil

    def busy() -> float:
        t = psutil.cpu_times()
        return (
            t.user
            + t.system
            + getattr(t, "nice", 0.0)
            + getattr(t, "irq", 0.0)
            + getattr(t, "softirq", 0.0)
        )

    b0, t0 = busy(), time.perf_counter()
    time.sleep(seconds)
    return (busy() - b0) / (time.perf_counter() - t0)


def _wait_for_quiet(limit: float, patience: float) -> float:
    """Wait (up to ``patience`` s) until other processes use at most ``limit`` cores."""
    deadline = time.monotonic() + patience
    while True:
        load = _busy_cores(2.0)
        if load <= limit or time.monotonic() > deadline:
            return load
        print(f"    CPU busy ({load:.2f} cores used by others): waiting", flush=True)
        time.sleep(15)


class _SlurmCpu:
    """CPU seconds of our private SLURM's processes (daemons and jobs), sampled.

    They are not children of the measured child, so ``run_child`` would count them as
    "other processes": their CPU time is subtracted. The daemons are the controller's
    own PIDs; a job's processes are those ``scontrol listpids`` names (asked until two
    jobs are seen), their descendants, and the ``slurmstepd`` that is their parent. A
    process that exits loses at most one sampling interval (0.25 s) of its CPU time.
    The benchmark's own CPU time while it samples (this process and its ``scontrol``
    calls) is counted too: it is not "other processes" either.
    """

    def __init__(self, controller: Any, jobs: int = 2):
        import psutil

        self.controller, self.jobs = controller, jobs
        self._roots: set[int] = set()
        self._job_ids: set[str] = set()
        self._start: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._psutil = psutil
        daemons = list(controller._pids.values())
        self._daemons = [psutil.Process(pid) for pid in daemons if psutil.pid_exists(pid)]
        self._stop = threading.Event()
        self._self0 = _own_cpu(resource.RUSAGE_SELF)
        self._scontrol = 0.0
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _find_jobs(self) -> None:
        before = _own_cpu(resource.RUSAGE_CHILDREN)
        done = self.controller.command("scontrol", "listpids", check=False)
        self._scontrol += _own_cpu(resource.RUSAGE_CHILDREN) - before
        for line in done.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit():
                self._roots.add(int(fields[0]))
                self._job_ids.add(fields[1])

    def _processes(self) -> list[Any]:
        psutil = self._psutil
        found: dict[int, Any] = {}
        for proc in self._daemons:
            found[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        for pid in self._roots:
            try:
                proc = psutil.Process(pid)
                found[pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
                parent = proc.parent()
                if parent is not None and parent.name() == "slurmstepd":
                    found[parent.pid] = parent
            except psutil.Error:
                continue
        return list(found.values())

    def _sample(self, first: bool = False) -> None:
        if len(self._job_ids) < self.jobs:
            self._find_jobs()
        for proc in self._processes():
            try:
                key = (proc.pid, proc.create_time())
                t = proc.cpu_times()
            except self._psutil.Error:
                continue
            cpu = t.user + t.system
            self._start.setdefault(key, cpu if first else 0.0)
            self._last[key] = cpu

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def stop(self) -> dict[str, float]:
        """Stop sampling; the CPU seconds our SLURM's processes and this one used."""
        self._stop.set()
        self._thread.join()
        self._sample()
        return {
            "slurm_processes": sum(self._last[k] - self._start.get(k, 0.0) for k in self._last),
            "benchmark": _own_cpu(resource.RUSAGE_SELF) - self._self0 + self._scontrol,
        }


def _own_cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# -- the parent: measurements ---------------------------------------------------------------------


def _measure(
    script: Path,
    name: str,
    params: dict[str, Any],
    *,
    args: argparse.Namespace,
    workdir: Path,
    reference: str,
    slurm: Any = None,
) -> dict[str, Any]:
    """Run one configuration's child until it ran on a quiet CPU (or retries run out)."""
    attempts = []
    for attempt in range(args.retries + 1):
        before = _wait_for_quiet(args.max_others, args.patience)
        shutil.rmtree(params["out"], ignore_errors=True)
        sampler = _SlurmCpu(slurm) if slurm is not None else None
        outcome = _bench.run_child(
            script, "predict", params, workdir=workdir, timeout=args.timeout, label=name
        )
        ours = sampler.stop() if sampler else {}
        slurm_cpu = sum(ours.values())
        if not outcome.ok:
            raise RuntimeError(f"{name} failed: {outcome.reason}")
        others = outcome.others_cores
        if others is not None and slurm_cpu:
            others = max(0.0, others - slurm_cpu / outcome.wall_seconds)
        run = dict(outcome.result)
        run.update(
            others_cores=others,
            others_before=before,
            slurm_processes_cpu_s=ours.get("slurm_processes", 0.0),
            benchmark_cpu_s=ours.get("benchmark"),
            loadavg=list(outcome.loadavg),
            child_wall_s=outcome.wall_seconds,
        )
        attempts.append(run)
        digest = run["labels"]["sha256"]
        assert digest == reference, f"{name}: labels differ from the reference run's"
        if others is None or others <= args.max_others:
            break
        if attempt < args.retries:
            print(
                f"    {name}: other processes used {others:.2f} cores (> {args.max_others}); "
                f"re-running in {args.retry_wait:g} s",
                flush=True,
            )
            time.sleep(args.retry_wait)
    run = attempts[-1]
    run["discarded_attempts"] = attempts[:-1]
    return run


def _describe(run: dict[str, Any]) -> str:
    return (
        f"total {run['total_s']:.2f} s (start {run['open_s']:.2f}, work {run['work_s']:.2f}, "
        f"close {run['close_s']:.2f}); others {_f(run['others_cores'], '.2f')} cores"
    )


def _f(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and spreads of one configuration's kept runs."""
    out: dict[str, Any] = {}
    for key in ("total_s", "open_s", "work_s", "close_s", "driver_cpu_work_s"):
        out[key] = _stats([r[key] for r in runs])
    out["others_cores_max"] = max((r["others_cores"] or 0.0) for r in runs)
    blocks = [b for r in runs for b in _block_times(r)]
    if blocks:
        out["block_s"] = _stats(blocks)
    cpu = [sum(r["worker_cpu_s"].values()) for r in runs if r.get("worker_cpu_s")]
    if cpu:
        out["workers_cpu_work_s"] = _stats(cpu)
        util = [
            sum(r["worker_cpu_s"].values()) / (r["work_s"] * len(r["worker_cpu_s"]))
            for r in runs
            if r.get("worker_cpu_s")
        ]
        out["worker_cpu_per_wall"] = _stats(util)
    out["sys_share"] = _stats([_sys_share(r) for r in runs])
    busy = [_busy_fraction(r) for r in runs if r.get("task_stream")]
    if busy:
        out["worker_busy_fraction"] = _stats(busy)
    joined = [r["worker_joined_s"] for r in runs if r.get("worker_joined_s")]
    if joined:
        n = max(len(j) for j in joined)
        out["all_workers_joined_s"] = _stats([j[-1] for j in joined if len(j) == n])
    return out


def _sys_share(run: dict[str, Any]) -> float:
    """System share of the CPU time that computed the blocks (workers', or the driver's
    threads' while the executor was open)."""
    if run.get("worker_cpu_s"):
        total = sum(run["worker_cpu_s"].values())
        return sum(run["worker_sys_s"].values()) / total if total else 0.0
    total = run["driver_cpu_work_s"]
    return run["driver_sys_work_s"] / total if total else 0.0


def _block_times(run: dict[str, Any]) -> list[float]:
    if run.get("task_stream"):
        return run["task_stream"]["block_compute_s"]
    return run.get("block_s", [])


def _busy_fraction(run: dict[str, Any]) -> float:
    """Share of the workers' time (from the first block's start) spent computing blocks."""
    ts = run["task_stream"]
    span = ts["last_block_end_s"] - ts["first_block_start_s"]
    workers = len(ts["workers"])
    return sum(w["compute_s"] for w in ts["workers"].values()) / (span * workers)


def _slurm_env(controller: Any, workdir: Path) -> dict[str, str]:
    import tiledseg

    package_root = str(Path(tiledseg.__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return {
        "PYTHONPATH": pythonpath,
        "TILEDSEG_SLURM_PARTITION": controller.partition,
        "TILEDSEG_SLURM_CORES": "1",
        "TILEDSEG_SLURM_MEMORY": "4GiB",
        "TILEDSEG_SLURM_WALLTIME": "00:30:00",
        "TILEDSEG_SLURM_MIN_JOBS": "2",
        "TILEDSEG_SLURM_MAX_JOBS": "2",
        # one node: the loopback interface (a real cluster: ib0, eth0, ...)
        "TILEDSEG_SLURM_INTERFACE": "lo",
        "TILEDSEG_SLURM_LOGS": str(workdir / "slurm-logs"),
    }


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="cube side (default 256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--configs",
        nargs="*",
        default=list(LOCAL_CONFIGS),
        choices=LOCAL_CONFIGS,
        help="local configurations (default: all; none: only --slurm)",
    )
    parser.add_argument("--slurm", action="store_true", help="also SLURM against workers=2")
    parser.add_argument(
        "--slurm-shape",
        default="1024,256,256",
        help="z,y,x of the SLURM comparison's image (default 1024,256,256)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.3,
        help="re-run a child during which other processes used more cores (default 0.3)",
    )
    parser.add_argument("--retries", type=int, default=2, help="re-runs per child (default 2)")
    parser.add_argument("--retry-wait", type=float, default=30.0)
    parser.add_argument(
        "--patience", type=float, default=300.0, help="seconds to wait for a quiet CPU"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    parser.add_argument(
        "--json", default=str(Path(__file__).parent / "results" / "cluster_scaling.json")
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scaling benchmark, print its tables and write its JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_bench.CHILD_FLAG]:
        return _bench.child_entry(argv[1:], TASKS)
    args = _parse(argv)
    script = Path(__file__).resolve()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tiledseg-scaling-"))
    workdir.mkdir(parents=True, exist_ok=True)
    machine = _bench.machine_info()
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores; tiledseg "
        f"{machine['tiledseg_git']}; work folder {workdir}",
        flush=True,
    )
    shapes = {"main": [args.size] * 3}
    if args.slurm:
        shapes["long"] = [int(v) for v in args.slurm_shape.split(",")]
    data: dict[str, Any] = {}
    for which, shape in shapes.items():
        print(f"phantom {'x'.join(map(str, shape))} -> zarr ...", flush=True)
        made = _bench.run_child(
            script,
            "phantom",
            {
                "shape": shape,
                "seed": args.seed,
                "scribbles": "strokes",
                "out": str(workdir / which),
                "format": "zarr",
                "chunks": 64,
                "arrays": ["image", "scribbles"] if which == "main" else ["image"],
            },
            workdir=workdir,
            timeout=args.timeout,
            label=f"phantom-{which}",
        )
        if not made.ok:
            print(f"phantom failed: {made.reason}", file=sys.stderr)
            return 1
        data[which] = made.result
    # the scribbles went to zarr with the image; training reads them as an array
    import numpy as np
    import zarr

    scribbles = workdir / "scribbles.npy"
    np.save(scribbles, zarr.open_array(data["main"]["paths"]["scribbles"], mode="r")[...])
    model_path = workdir / "model.tsm"
    references: dict[str, str] = {}
    print("training (default bank) and one unmeasured threaded prediction ...", flush=True)
    shutil.rmtree(workdir / "reference-main.zarr", ignore_errors=True)
    trained = _bench.run_child(
        script,
        "train",
        {
            "image": data["main"]["paths"]["image"],
            "scribbles": str(scribbles),
            "model": str(model_path),
            "out": str(workdir / "reference-main.zarr"),
        },
        workdir=workdir,
        timeout=args.timeout,
    )
    if not trained.ok:
        print(f"training failed: {trained.reason}", file=sys.stderr)
        return 1
    references["main"] = trained.result["labels"]["sha256"]
    print(
        f"  trained in {trained.result['train_seconds']:.1f} s ({trained.result['rounds']} "
        f"rounds); reference prediction {trained.result['reference_predict_seconds']:.1f} s, "
        f"{trained.result['blocks']} blocks",
        flush=True,
    )
    cpu0 = min(os.sched_getaffinity(0))
    local = {
        "threads-1": {"kwargs": {}, "affinity": [cpu0]},
        "threads-2": {"kwargs": {}},
        "workers-1": {"kwargs": {"workers": 1}, "expect_workers": 1},
        "workers-2": {"kwargs": {"workers": 2}, "expect_workers": 2},
        "workers-1-notrim": {
            "kwargs": {"workers": 1},
            "expect_workers": 1,
            "nanny_environ": NOTRIM_ENVIRON,
        },
        "workers-2-notrim": {
            "kwargs": {"workers": 2},
            "expect_workers": 2,
            "nanny_environ": NOTRIM_ENVIRON,
        },
    }
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.configs}
    for r in range(args.repeats):
        for name in args.configs:
            params = {
                "image": data["main"]["paths"]["image"],
                "model": str(model_path),
                "out": str(workdir / f"{name}.zarr"),
                **local[name],
            }
            run = _measure(
                script,
                name,
                params,
                args=args,
                workdir=workdir,
                reference=references["main"],
            )
            runs[name].append(run)
            print(f"  round {r + 1} {name}: {_describe(run)}", flush=True)

    slurm_info: dict[str, Any] = {}
    if args.slurm:
        slurm_info = _run_slurm(script, args, workdir, data, model_path, runs)

    summaries = {name: _summary(rs) for name, rs in runs.items() if rs}
    ratios = _ratios(summaries)
    result = {
        "size": args.size,
        "shapes": shapes,
        "blocks": trained.result["blocks"],
        "repeats": args.repeats,
        "max_others": args.max_others,
        "train": trained.result,
        "summaries": summaries,
        "ratios": ratios,
        "slurm": slurm_info,
        "runs": runs,
        "machine": machine,
        "command": " ".join(["python", "benchmarks/cluster_scaling.py", *argv]),
    }
    _print_tables(summaries, ratios, shapes)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"results written to {args.json}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _run_slurm(
    script: Path,
    args: argparse.Namespace,
    workdir: Path,
    data: dict[str, Any],
    model_path: Path,
    runs: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """workers=2 against the shipped SLURM config on the longer image."""
    from tiledseg.testing.slurm import SlurmController

    image = data["long"]["paths"]["image"]
    reference = None
    controller = SlurmController(workdir / "slurm")
    controller.start()
    info: dict[str, Any] = {
        "daemons_start_s": controller.start_seconds,
        "install_s": controller.install_seconds,
    }
    try:
        env = _slurm_env(controller, workdir)
        info["env"] = env
        configs = {
            "long-workers-2": {"kwargs": {"workers": 2}, "expect_workers": 2},
            "long-slurm-2": {
                "kwargs": {"cluster": str(SLURM_CONFIG)},
                "env": env,
                "expect_workers": 2,
            },
        }
        for name in configs:
            runs[name] = []
        for r in range(args.repeats):
            for name, config in configs.items():
                params = {
                    "image": image,
                    "model": str(model_path),
                    "out": str(workdir / f"{name}.zarr"),
                    **config,
                }
                if reference is None:
                    # the first run of the long image is the reference of the others
                    reference = _first_digest(script, params, workdir, args)
                run = _measure(
                    script,
                    name,
                    params,
                    args=args,
                    workdir=workdir,
                    reference=reference,
                    slurm=controller if "slurm" in name else None,
                )
                runs[name].append(run)
                print(f"  round {r + 1} {name}: {_describe(run)}", flush=True)
    finally:
        controller.stop()
    return info


def _first_digest(script: Path, params: dict[str, Any], workdir: Path, args: Any) -> str:
    """Labels of an unmeasured threaded run on the long image (warms its page cache too)."""
    print("  unmeasured threaded prediction of the long image (reference) ...", flush=True)
    warm = dict(params, kwargs={}, out=str(workdir / "reference-long.zarr"))
    warm.pop("env", None)
    shutil.rmtree(warm["out"], ignore_errors=True)
    outcome = _bench.run_child(
        script, "predict", warm, workdir=workdir, timeout=args.timeout, label="reference-long"
    )
    if not outcome.ok:
        raise RuntimeError(f"reference run failed: {outcome.reason}")
    return outcome.result["labels"]["sha256"]


def _ratios(s: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def pair(name: str, slow: str, fast: str) -> None:
        if slow in s and fast in s:
            out[name] = {
                key: s[slow][key]["median"] / s[fast][key]["median"]
                for key in ("total_s", "work_s")
            }

    pair("workers 2 vs 1", "workers-1", "workers-2")
    pair("workers 2 vs 1, no MALLOC_TRIM_THRESHOLD_", "workers-1-notrim", "workers-2-notrim")
    pair("workers-2 notrim vs workers-2", "workers-2", "workers-2-notrim")
    pair("threads 2 vs 1", "threads-1", "threads-2")
    pair("workers-2 vs threads-1", "threads-1", "workers-2")
    pair("threads-2 vs workers-2", "workers-2", "threads-2")
    if "long-slurm-2" in s and "long-workers-2" in s:
        sl, lo = s["long-slurm-2"], s["long-workers-2"]
        out["slurm overhead"] = {
            key: {
                "seconds": sl[key]["median"] - lo[key]["median"],
                "percent": 100 * (sl[key]["median"] / lo[key]["median"] - 1),
            }
            for key in ("total_s", "work_s", "open_s", "close_s")
        }
    return out


def _print_tables(s: dict[str, Any], ratios: dict[str, Any], shapes: dict[str, Any]) -> None:
    def spread(st: dict[str, float]) -> str:
        return f"{st['median']:.2f} ({st['min']:.2f}-{st['max']:.2f})"

    rows = []
    for name, st in s.items():
        rows.append(
            [
                name,
                spread(st["total_s"]),
                spread(st["open_s"]),
                spread(st["work_s"]),
                spread(st["close_s"]),
                _f(st.get("block_s", {}).get("median"), ".2f"),
                _f(st.get("worker_cpu_per_wall", {}).get("median"), ".2f"),
                _f(st.get("worker_busy_fraction", {}).get("median"), ".2f"),
                f"{100 * st['sys_share']['median']:.0f}",
                f"{st['driver_cpu_work_s']['median']:.1f}",
                _f(st.get("all_workers_joined_s", {}).get("median"), ".1f"),
                f"{st['others_cores_max']:.2f}",
            ]
        )
    print()
    print(
        _bench.format_table(
            [
                "config",
                "total s",
                "start s",
                "work s",
                "close s",
                "block s",
                "worker CPU/wall",
                "busy",
                "sys %",
                "driver CPU s",
                "workers up s",
                "others max",
            ],
            rows,
        )
    )
    print()
    for name, value in ratios.items():
        if name == "slurm overhead":
            for key, v in value.items():
                print(f"SLURM overhead ({key}): {v['seconds']:+.2f} s, {v['percent']:+.1f}%")
        else:
            goal = f"  (goal >= {GOAL_SPEEDUP})" if name == "workers 2 vs 1" else ""
            print(
                f"speed-up {name}: {value['total_s']:.2f}x whole call, "
                f"{value['work_s']:.2f}x without start and close{goal}"
            )


if __name__ == "__main__":
    sys.exit(main())
