"""Wall time of ``tiledseg.predict`` on 1 and 2 threads, 1 and 2 local workers, and SLURM.

Steps, each in its own fresh child process (``_bench.run_child``):

1. make a ``--size``^3 phantom (strokes on 8 z-slices) and write it as zarr (64^3
   chunks); with ``--slurm`` also a longer one, ``--slurm-shape``, for a job of about a
   minute on 2 local workers;
2. train tiledseg's defaults once on its scribbles, save the model, and predict once on
   threads (unmeasured: it warms the page cache and gives the reference labels);
3. ``--repeats`` rounds, each configuration in turn (so that a drift in the machine's
   speed touches them all): ``threads-1`` (the default executor pinned to one core with
   ``sched_setaffinity``), ``threads-2`` (the default executor), ``workers-1`` and
   ``workers-2`` (``predict(..., workers=N)``: a LocalCluster of N single-threaded
   worker processes); with ``--slurm``, on the longer image, ``long-slurm-2``
   (``cluster=`` the shipped ``slurm.yaml`` filled in by ``TILEDSEG_SLURM_*`` only: 2
   one-core jobs, adapt minimum = maximum = 2, through ``tiledseg.testing.slurm``'s
   private single-node SLURM) against ``long-workers-2``.

Each child reads the image and the model from their paths, as the command line does. It
times the whole ``predict`` call and, by wrapping ``open_executor`` as
``tiledseg.predict`` sees it (tiledseg's code is unchanged), the executor's start (the
cluster and its client; ``import distributed`` is done before), the work inside it and
its close. On a cluster it also takes dask's task stream (each block's compute time),
the workers' CPU seconds and when each worker joined; on threads it times each block's
task. Every run's labels must equal the reference's (asserted). Before each child the
script waits for a quiet CPU, and re-runs a child during which other processes used
more than ``--max-others`` cores; our SLURM's daemons and jobs are not children of the
child, so their CPU time is sampled and not counted as "others".

    python benchmarks/cluster_scaling.py [--size 256] [--repeats 3] [--slurm]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _bench

ROOT = Path(__file__).resolve().parents[1]
SLURM_CONFIG = ROOT / "tiledseg" / "cluster_configs" / "slurm.yaml"
GOAL_SPEEDUP = 1.8
LOCAL_CONFIGS = ("threads-1", "threads-2", "workers-1", "workers-2")


# -- child tasks ----------------------------------------------------------------------------------


def _labels_digest(out: str) -> str:
    import numpy as np
    import zarr

    labels = zarr.open_array(f"{out}/labels/0", mode="r")[...]
    return hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()


def task_train(params: dict[str, Any]) -> dict[str, Any]:
    """Train the default bank on the phantom's ``scribbles``, save it to ``model``, and
    predict ``image`` once to ``out`` (the reference labels)."""
    import numpy as np
    import zarr

    import tiledseg

    scribbles = np.asarray(zarr.open_array(params["scribbles"], mode="r")[...])
    started = time.perf_counter()
    model = tiledseg.train(params["image"], scribbles, cache_dir=None)
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


def task_predict(params: dict[str, Any]) -> dict[str, Any]:
    """Time one ``predict`` of ``image`` with ``model`` to ``out``, with ``kwargs`` (``workers``
    or ``cluster``; none: threads), pinned to the CPUs ``affinity`` before any import, with
    the variables ``env`` set, watching for ``expect_workers`` workers."""
    if params.get("affinity"):
        os.sched_setaffinity(0, set(params["affinity"]))
    os.environ.update(params.get("env") or {})
    import distributed  # noqa: F401  (imported by every config: not part of the timing)

    import tiledseg

    # (``tiledseg.predict`` the attribute is the function; the module is wanted here)
    tp = importlib.import_module("tiledseg.predict")
    model = tiledseg.load_model(params["model"])
    record: dict[str, Any] = {}
    _instrument(tp, record, int(params.get("expect_workers", 0)), threads=not params["kwargs"])
    cpu0, started = _bench.cpu_seconds(), time.perf_counter()
    result = tp.predict(params["image"], model, out=params["out"], **params["kwargs"])
    record.update(total_s=time.perf_counter() - started, driver_cpu_s=_bench.cpu_seconds() - cpu0)
    record.update(blocks=result.blocks, voxels=result.voxels)
    record["labels"] = _labels_digest(result.path)
    return record


def _instrument(tp: Any, record: dict[str, Any], expect_workers: int, threads: bool) -> None:
    """Wrap ``open_executor`` (and on threads the block task) as ``tiledseg.predict`` sees
    them, in this process only; a cluster's block times come from dask's task stream."""
    original_open, original_task = tp.open_executor, tp.PredictionJob.predict
    block_times: list[float] = []

    def timed_task(job: Any, block: Any) -> Any:
        t = time.perf_counter()
        try:
            return original_task(job, block)
        finally:
            block_times.append(time.perf_counter() - t)

    @contextlib.contextmanager
    def timed_open(*args: Any, **kwargs: Any):
        t_open, wall_open = time.perf_counter(), time.time()
        with original_open(*args, **kwargs) as executor:
            opened = time.perf_counter()
            record["open_s"] = opened - t_open
            client = executor.client
            if client is not None:
                joined, stop_watching = _watch_workers(client, t_open, expect_workers)
                client.get_task_stream(count=1)  # installs the scheduler's task-stream plugin
                cpu_open = _worker_cpu(client)
            cpu_driver = os.times()
            try:
                yield executor
            finally:
                record["work_s"] = time.perf_counter() - opened
                now = os.times()
                record["driver_cpu_work_s"] = now[0] + now[1] - cpu_driver[0] - cpu_driver[1]
                record["driver_sys_work_s"] = now[1] - cpu_driver[1]
                if client is None:
                    record["block_s"] = list(block_times)
                else:
                    stop_watching()
                    record["worker_joined_s"] = joined
                    stream = client.get_task_stream(start=wall_open)
                    record["task_stream"] = _task_stream_summary(stream, wall_open)
                    zero = (0.0, 0.0)
                    cpu = {
                        w: (u - cpu_open.get(w, zero)[0], s - cpu_open.get(w, zero)[1])
                        for w, (u, s) in _worker_cpu(client).items()
                    }
                    record["worker_cpu_s"] = {w: round(u + s, 3) for w, (u, s) in cpu.items()}
                    record["worker_sys_s"] = {w: round(s, 3) for w, (_, s) in cpu.items()}
                t_close = time.perf_counter()
        record["close_s"] = time.perf_counter() - t_close

    tp.open_executor = timed_open
    if threads:
        tp.PredictionJob.predict = timed_task


def _worker_cpu(client: Any) -> dict[str, tuple[float, float]]:
    """User and system CPU seconds of each worker process since its start."""
    try:
        times = client.run(os.times)
    except Exception:  # a worker left meanwhile
        return {}
    return {w: (float(t[0]), float(t[1])) for w, t in times.items()}


def _watch_workers(client: Any, since: float, expect: int) -> tuple[list[float], Any]:
    """Poll the scheduler until ``expect`` workers joined; the seconds (from ``since``) at
    which the 1st, 2nd ... one was seen, and a function that stops the polling."""
    joined: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set() and len(joined) < max(expect, 1):
            with contextlib.suppress(Exception):
                n = len(client.scheduler_info()["workers"])
                joined.extend([round(time.perf_counter() - since, 3)] * (n - len(joined)))
            stop.wait(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return joined, lambda: (stop.set(), thread.join())


def _task_stream_summary(stream: list[dict[str, Any]], since: float) -> dict[str, Any]:
    """Each worker's compute seconds, each block's, and the first start and last end."""
    per_worker: dict[str, float] = {}
    computes, starts, stops = [], [], []
    for task in stream:
        # a block's task is the executor's guarded call of the job's method
        if not str(task.get("key", "")).startswith("_guarded_call"):
            continue
        for ss in task.get("startstops", ()):
            if ss["action"] == "compute":
                seconds = ss["stop"] - ss["start"]
                per_worker[task["worker"]] = per_worker.get(task["worker"], 0.0) + seconds
                computes.append(round(seconds, 3))
                starts.append(ss["start"])
                stops.append(ss["stop"])
    return {
        "worker_compute_s": {w: round(s, 3) for w, s in per_worker.items()},
        "block_compute_s": computes,
        "first_block_start_s": round(min(starts) - since, 3) if starts else None,
        "last_block_end_s": round(max(stops) - since, 3) if stops else None,
    }


TASKS = {"phantom": _bench.make_phantom_files, "train": task_train, "predict": task_predict}


# -- the parent: quiet CPU, SLURM's own CPU --------------------------------------------------------


def _wait_for_quiet(limit: float, patience: float) -> float:
    """Wait (up to ``patience`` s) until other processes use at most ``limit`` cores."""
    deadline = time.monotonic() + patience
    while True:
        busy, started = _bench.busy_cpu_seconds(), time.perf_counter()
        time.sleep(2.0)
        load = (_bench.busy_cpu_seconds() - busy) / (time.perf_counter() - started)
        if load <= limit or time.monotonic() > deadline:
            return load
        print(f"    CPU busy ({load:.2f} cores used by others): waiting", flush=True)
        time.sleep(15)


class _SlurmCpu:
    """CPU seconds of our private SLURM's processes, sampled every 0.25 s until ``stop``.

    They are the controller's daemons, every ``slurmstepd`` (a job's step daemon, which
    leaves the daemons' process tree) and their descendants: the jobs' shells, nannies
    and workers. A process that exits loses at most one interval of its CPU time.
    """

    def __init__(self, controller: Any):
        import psutil

        self._psutil = psutil
        self._daemons = [
            psutil.Process(p) for p in controller._pids.values() if psutil.pid_exists(p)
        ]
        self._start: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self, first: bool = False) -> None:
        psutil = self._psutil
        steps = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "slurmstepd"]
        for root in [*self._daemons, *steps]:
            with contextlib.suppress(psutil.Error):
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        key, t = (proc.pid, proc.create_time()), proc.cpu_times()
                        self._start.setdefault(key, t.user + t.system if first else 0.0)
                        self._last[key] = t.user + t.system

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def stop(self) -> float:
        """Stop sampling; the CPU seconds our SLURM's processes used meanwhile."""
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(self._last[k] - self._start.get(k, 0.0) for k in self._last)


# -- the parent: measurements ---------------------------------------------------------------------


def _measure(
    script: Path, name: str, params: dict, args: Any, workdir: Path, reference: str, slurm=None
) -> dict[str, Any]:
    """Run one configuration's child until it ran on a quiet CPU (or retries run out)."""
    attempts = []
    for attempt in range(args.retries + 1):
        before = _wait_for_quiet(args.max_others, args.patience)
        shutil.rmtree(params["out"], ignore_errors=True)
        sampler = _SlurmCpu(slurm) if slurm is not None else None
        own = _bench.cpu_seconds()
        outcome = _bench.run_child(
            script, "predict", params, workdir=workdir, timeout=args.timeout, label=name
        )
        if not outcome.ok:
            raise RuntimeError(f"{name} failed: {outcome.reason}")
        # neither this process (it samples) nor our SLURM's processes are "others"
        ours = _bench.cpu_seconds() - own + (sampler.stop() if sampler else 0.0)
        others = outcome.others_cores
        if others is not None:
            others = max(0.0, others - ours / outcome.wall_seconds)
        run = dict(outcome.result, others_cores=others, others_before=before, our_cpu_s=ours)
        run.update(loadavg=list(outcome.loadavg), child_wall_s=outcome.wall_seconds)
        attempts.append(run)
        assert run["labels"] == reference, f"{name}: labels differ from the reference run's"
        if others is None or others <= args.max_others or attempt == args.retries:
            break
        print(
            f"    {name}: other processes used {others:.2f} cores (> {args.max_others}); "
            f"re-running in {args.retry_wait:g} s",
            flush=True,
        )
        time.sleep(args.retry_wait)
    run["discarded_attempts"] = attempts[:-1]
    print(
        f"  {name}: total {run['total_s']:.2f} s (start {run['open_s']:.2f}, work "
        f"{run['work_s']:.2f}, close {run['close_s']:.2f}); others "
        f"{_bench.fmt(others, '.2f')} cores",
        flush=True,
    )
    return run


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and ranges of one configuration's kept runs."""
    out: dict[str, Any] = {}
    for key in ("total_s", "open_s", "work_s", "close_s", "driver_cpu_work_s"):
        out[key] = _stats([r[key] for r in runs])
    out["others_cores_max"] = max((r["others_cores"] or 0.0) for r in runs)
    streams = [r["task_stream"] for r in runs if r.get("task_stream")]
    blocks = [b for ts in streams for b in ts["block_compute_s"]]
    blocks += [b for r in runs for b in r.get("block_s", [])]
    if blocks:
        out["block_s"] = _stats(blocks)
    sys_share = []
    for r in runs:
        if r.get("worker_cpu_s"):  # the workers' CPU, or the driver's threads' while open
            cpu, sys_cpu = sum(r["worker_cpu_s"].values()), sum(r["worker_sys_s"].values())
        else:
            cpu, sys_cpu = r["driver_cpu_work_s"], r["driver_sys_work_s"]
        sys_share.append(sys_cpu / cpu if cpu else 0.0)
    out["sys_share"] = _stats(sys_share)
    with_workers = [r for r in runs if r.get("worker_cpu_s")]
    if with_workers:
        out["worker_cpu_per_wall"] = _stats(
            [
                sum(r["worker_cpu_s"].values()) / (r["work_s"] * len(r["worker_cpu_s"]))
                for r in with_workers
            ]
        )
    streams = [ts for ts in streams if ts["first_block_start_s"] is not None]
    if streams:  # the workers' share of time computing blocks, from the first block's start
        out["worker_busy_fraction"] = _stats(
            [
                sum(ts["worker_compute_s"].values())
                / (
                    (ts["last_block_end_s"] - ts["first_block_start_s"])
                    * len(ts["worker_compute_s"])
                )
                for ts in streams
            ]
        )
        out["first_block_s"] = _stats([ts["first_block_start_s"] for ts in streams])
    joined = [r["worker_joined_s"] for r in runs if r.get("worker_joined_s")]
    if joined:
        n = max(len(j) for j in joined)
        out["all_workers_joined_s"] = _stats([j[-1] for j in joined if len(j) == n])
    return out


def _slurm_env(controller: Any, workdir: Path) -> dict[str, str]:
    import tiledseg

    package_root = str(Path(tiledseg.__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": pythonpath, "TILEDSEG_SLURM_PARTITION": controller.partition}
    # 2 one-core jobs from the start; one node: the loopback interface (a cluster: ib0, ...)
    settings = {"CORES": "1", "MEMORY": "4GiB", "WALLTIME": "00:30:00", "MIN_JOBS": "2"}
    settings.update(MAX_JOBS="2", INTERFACE="lo", LOGS=str(workdir / "slurm-logs"))
    return env | {f"TILEDSEG_SLURM_{k}": v for k, v in settings.items()}


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
        "--slurm-shape", default="1024,256,256", help="z,y,x of the SLURM comparison's image"
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
    parser.add_argument("--patience", type=float, default=300.0, help="wait for a quiet CPU")
    _bench.add_run_options(
        parser, timeout=1800.0, json_path=_bench.RESULTS / "cluster_scaling.json"
    )
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scaling benchmark, print its tables and write its JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_bench.CHILD_FLAG]:
        return _bench.child_entry(argv[1:], TASKS)
    args = _parse(argv)
    script = Path(__file__).resolve()
    workdir = _bench.open_workdir(args, "tiledseg-scaling-")
    machine = _bench.machine_info()
    _bench.print_machine(machine, workdir)
    run = {"workdir": workdir, "timeout": args.timeout}
    shapes = {"main": [args.size] * 3}
    if args.slurm:
        shapes["long"] = [int(v) for v in args.slurm_shape.split(",")]
    images = {}
    for which, shape in shapes.items():
        print(f"phantom {'x'.join(map(str, shape))} -> zarr ...", flush=True)
        params = {"shape": shape, "seed": args.seed, "scribbles": "strokes", "format": "zarr"}
        params.update(out=str(workdir / which), chunks=64)
        params["arrays"] = ["image", "scribbles"] if which == "main" else ["image"]
        made = _bench.run_child(script, "phantom", params, label=f"phantom-{which}", **run)
        if not made.ok:
            print(f"phantom failed: {made.reason}", file=sys.stderr)
            return 1
        images[which] = made.result["paths"]
    model = str(workdir / "model.tsm")
    print("training (default bank) and one unmeasured threaded prediction ...", flush=True)
    params = {"image": images["main"]["image"], "scribbles": images["main"]["scribbles"]}
    params.update(model=model, out=str(workdir / "reference-main.zarr"))
    shutil.rmtree(params["out"], ignore_errors=True)
    trained = _bench.run_child(script, "train", params, **run)
    if not trained.ok:
        print(f"training failed: {trained.reason}", file=sys.stderr)
        return 1
    t = trained.result
    print(
        f"  trained in {t['train_seconds']:.1f} s ({t['rounds']} rounds); reference "
        f"prediction {t['reference_predict_seconds']:.1f} s, {t['blocks']} blocks",
        flush=True,
    )
    local = {
        "threads-1": {"kwargs": {}, "affinity": [min(os.sched_getaffinity(0))]},
        "threads-2": {"kwargs": {}},
        "workers-1": {"kwargs": {"workers": 1}, "expect_workers": 1},
        "workers-2": {"kwargs": {"workers": 2}, "expect_workers": 2},
    }
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.configs}
    for r in range(args.repeats):
        print(f" round {r + 1}", flush=True)
        for name in args.configs:
            params = {"image": images["main"]["image"], "model": model}
            params.update(out=str(workdir / f"{name}.zarr"), **local[name])
            runs[name].append(_measure(script, name, params, args, workdir, t["labels"]))
    slurm_info = {}
    if args.slurm:
        slurm_info = _run_slurm(script, args, workdir, images["long"]["image"], model, runs)

    summaries = {name: _summary(rs) for name, rs in runs.items() if rs}
    ratios = _ratios(summaries)
    _print_tables(summaries, ratios)
    record = {"size": args.size, "shapes": shapes, "blocks": t["blocks"], "repeats": args.repeats}
    record.update(max_others=args.max_others, train=t, summaries=summaries, ratios=ratios)
    record.update(slurm=slurm_info, runs=runs, machine=machine)
    record["command"] = " ".join(["python", "benchmarks/cluster_scaling.py", *argv])
    _bench.write_json(args.json, record)
    _bench.close_workdir(args, workdir)
    return 0


def _run_slurm(
    script: Path, args: Any, workdir: Path, image: str, model: str, runs: dict[str, list]
) -> dict[str, Any]:
    """``workers=2`` against the shipped SLURM config on the longer image."""
    from tiledseg.testing.slurm import SlurmController

    print("  unmeasured threaded prediction of the long image (reference) ...", flush=True)
    params = {"image": image, "model": model, "kwargs": {}, "out": str(workdir / "long-ref.zarr")}
    done = _bench.run_child(
        script, "predict", params, workdir=workdir, timeout=args.timeout, label="reference-long"
    )
    if not done.ok:
        raise RuntimeError(f"reference run failed: {done.reason}")
    controller = SlurmController(workdir / "slurm")
    controller.start()
    info: dict[str, Any] = {
        "daemons_start_s": controller.start_seconds,
        "install_s": controller.install_seconds,
    }
    try:
        info["env"] = env = _slurm_env(controller, workdir)
        configs = {
            "long-workers-2": {"kwargs": {"workers": 2}},
            "long-slurm-2": {"kwargs": {"cluster": str(SLURM_CONFIG)}, "env": env},
        }
        for r in range(args.repeats):
            print(f" round {r + 1} (SLURM)", flush=True)
            for name, config in configs.items():
                params = {"image": image, "model": model, "out": str(workdir / f"{name}.zarr")}
                params.update(expect_workers=2, **config)
                slurm = controller if name == "long-slurm-2" else None
                run = _measure(script, name, params, args, workdir, done.result["labels"], slurm)
                runs.setdefault(name, []).append(run)
    finally:
        controller.stop()
    return info


def _ratios(s: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, slow, fast in [
        ("workers 2 vs 1", "workers-1", "workers-2"),
        ("threads 2 vs 1", "threads-1", "threads-2"),
        ("workers-2 vs threads-1", "threads-1", "workers-2"),
        ("threads-2 vs workers-2", "workers-2", "threads-2"),
    ]:
        if slow in s and fast in s:
            out[name] = {
                k: s[slow][k]["median"] / s[fast][k]["median"] for k in ("total_s", "work_s")
            }
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


def _print_tables(s: dict[str, Any], ratios: dict[str, Any]) -> None:
    def spread(st: dict[str, float]) -> str:
        return f"{st['median']:.2f} ({st['min']:.2f}-{st['max']:.2f})"

    def median(st: dict[str, Any], key: str, spec: str) -> str:
        return _bench.fmt(st.get(key, {}).get("median"), spec)

    rows = []
    for name, st in s.items():
        rows.append(
            [name, *(spread(st[k]) for k in ("total_s", "open_s", "work_s", "close_s"))]
            + [median(st, "block_s", ".2f"), median(st, "worker_cpu_per_wall", ".2f")]
            + [median(st, "worker_busy_fraction", ".2f"), f"{100 * st['sys_share']['median']:.0f}"]
            + [
                f"{st['driver_cpu_work_s']['median']:.1f}",
                median(st, "all_workers_joined_s", ".1f"),
            ]
            + [median(st, "first_block_s", ".1f"), f"{st['others_cores_max']:.2f}"]
        )
    headers = ["config", "total s", "start s", "work s", "close s", "block s", "worker CPU/wall"]
    headers += ["busy", "sys %", "driver CPU s", "workers up s", "first block s", "others max"]
    print("\n" + _bench.format_table(headers, rows) + "\n")
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
