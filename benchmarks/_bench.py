"""Helpers shared by the benchmark scripts: child processes, peak memory, phantoms, tables.

Every measurement runs in a fresh child process started with ``sys.executable`` (the
same interpreter and virtualenv), so that each one's peak memory is its own. The parent
starts a child as ``SCRIPT --child TASK --params P --result R``; the child runs the
function registered for ``TASK`` on the JSON parameters in ``P`` and writes its JSON
result to ``R``.

Peak memory is the child's own ``VmHWM`` from ``/proc/self/status``, not
``getrusage().ru_maxrss``: on Linux a child's ``ru_maxrss`` also holds its parent's peak
at the time of the fork (folded in at ``exec``), so a fresh child of a parent that once
held 2 GiB reports at least 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

GIB = float(2**30)
CHILD_FLAG = "--child"
RESULTS = Path(__file__).resolve().parent / "results"


# -- measuring inside a process ---------------------------------------------------------------


def _status_kib(field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in KiB, or ``None`` off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+)\s+kB", text, flags=re.MULTILINE)
    return int(match.group(1)) if match else None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far: ``VmHWM`` (elsewhere ``ru_maxrss``)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)


def current_rss_bytes() -> int:
    """Current resident set size of this process, in bytes."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return int(psutil.Process().memory_info().rss)


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used (all its threads)."""
    times = os.times()
    return float(times.user + times.system)


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (``None`` without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    t = psutil.cpu_times()
    extra = ("nice", "irq", "softirq")
    return float(t.user + t.system + sum(getattr(t, name, 0.0) for name in extra))


# -- child processes ------------------------------------------------------------------------------


@dataclass
class ChildOutcome:
    """What a child process gave back.

    ``ok``: it exited 0 and wrote a result without ``error``; ``reason``: why not;
    ``wall_seconds``: its lifetime, imports included; ``others_cores``: the average
    number of cores other processes kept busy meanwhile (the machine's busy CPU time
    minus the child's own, over the wall time); ``loadavg``: the 1-minute load
    average before and after; ``log``: its captured stdout and stderr.
    """

    ok: bool
    result: dict[str, Any]
    reason: str
    wall_seconds: float
    others_cores: float | None
    loadavg: tuple[float, float]
    log: Path


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").rstrip().splitlines()[-lines:])
    except OSError:
        return ""


def run_child(
    script: str | Path,
    task: str,
    params: Mapping[str, Any],
    *,
    workdir: Path,
    timeout: float | None = None,
    label: str | None = None,
) -> ChildOutcome:
    """Run ``task`` of ``script`` (its :func:`child_entry` knows it) in a fresh process.

    The parameter, result and log files are ``workdir/LABEL.*`` (``label`` defaults to
    the task's name); the child is killed after ``timeout`` seconds.
    """
    stem = label or task
    params_path = workdir / f"{stem}.params.json"
    result_path = workdir / f"{stem}.result.json"
    log_path = workdir / f"{stem}.log"
    params_path.write_text(json.dumps(dict(params), indent=1))
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(script), CHILD_FLAG, task]
    cmd += ["--params", str(params_path), "--result", str(result_path)]
    load_before, busy_before = os.getloadavg()[0], busy_cpu_seconds()
    started = time.perf_counter()
    reason = ""
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # os.wait4 gives the child's own CPU time, up to its exit (for the "others" estimate)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.perf_counter() - started > timeout:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                reason = f"timed out after {timeout:g} s and was killed"
                break
            time.sleep(0.05)
    code = proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    busy_after, load_after = busy_cpu_seconds(), os.getloadavg()[0]
    result: dict[str, Any] = {}
    if result_path.is_file():
        try:
            result = json.loads(result_path.read_text())
        except json.JSONDecodeError as exc:
            reason = reason or f"unreadable result file: {exc}"
    if code < 0 and not reason:
        hint = " (the kernel's OOM killer? check dmesg)" if -code == signal.SIGKILL else ""
        reason = f"killed by {signal.Signals(-code).name}{hint}"
    elif not reason and "error" in result:
        reason = str(result["error"])
    elif not reason and (code != 0 or not result):
        what = f"exit status {code}" if code else "no result written"
        reason = f"{what}; last lines of {log_path}:\n{_tail(log_path)}"
    others = None
    if busy_before is not None and busy_after is not None and wall > 0:
        own = usage.ru_utime + usage.ru_stime
        others = max(0.0, (busy_after - busy_before - own) / wall)
    return ChildOutcome(
        not reason, result, reason, wall, others, (load_before, load_after), log_path
    )


def child_entry(argv: Sequence[str], tasks: Mapping[str, Callable[[dict], dict]]) -> int:
    """Run one task in this (child) process, from ``TASK --params P --result R``.

    Returns 0, or 1 when the task raised (its error and traceback are in the result).
    """
    parser = argparse.ArgumentParser(prog="child")
    parser.add_argument("task", choices=sorted(tasks))
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(list(argv))
    status = 0
    try:
        result = dict(tasks[args.task](json.loads(args.params.read_text())))
    except Exception as exc:  # reported to the parent, which carries on
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        traceback.print_exc()
        status = 1
    result["process_cpu_seconds"] = cpu_seconds()
    result.setdefault("process_peak_rss_bytes", peak_rss_bytes())
    args.result.write_text(json.dumps(result, indent=1, default=_json_default))
    return status


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value.tolist() if hasattr(value, "tolist") else str(value)


# -- the parent's options and work folder ---------------------------------------------------------


def add_run_options(
    parser: argparse.ArgumentParser, *, timeout: float, json_path: Path | None = None
) -> None:
    """``--json``, ``--timeout`` (per child), ``--workdir`` and ``--keep``."""
    parser.add_argument("--json", type=Path, default=json_path, help="write the results here")
    parser.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds per child (default {timeout:g})"
    )
    parser.add_argument("--workdir", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")


def open_workdir(args: argparse.Namespace, prefix: str) -> Path:
    """``--workdir``, or a new temporary folder."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def close_workdir(args: argparse.Namespace, workdir: Path, *, failed: bool = False) -> None:
    """Remove a temporary work folder, unless ``--keep`` or something failed (its logs)."""
    if failed:
        print(f"logs kept in {workdir}")
    elif not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


def write_json(path: str | Path | None, record: Mapping[str, Any]) -> None:
    """Write ``record`` to ``path`` (nothing when ``None``) and say so."""
    if path is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"results written to {path}")


# -- phantoms on disk ---------------------------------------------------------------------------


def make_phantom_files(params: Mapping[str, Any]) -> dict[str, Any]:
    """Make a phantom and write it to disk (in a child of its own: large phantoms need GiBs).

    ``params``: ``shape``, ``seed``, ``scribbles`` (``"balls"``, the default, or
    ``"strokes"``), ``out`` (folder), ``format`` (``"npy"`` or ``"zarr"``), ``chunks``
    (zarr's chunk edge, 64) and ``arrays`` (of ``image``, ``truth``, ``scribbles``; all).
    Returns the paths written, the shape, voxel and labelled voxel counts, and seconds.
    """
    import numpy as np

    from tiledseg.testing import make_phantom

    started = time.perf_counter()
    phantom = make_phantom(
        tuple(params["shape"]), seed=int(params["seed"]), scribbles=params.get("scribbles", "balls")
    )
    made = time.perf_counter() - started
    out = Path(params["out"])
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in params.get("arrays", ["image", "truth", "scribbles"]):
        data = getattr(phantom, name)
        if params.get("format", "npy") == "zarr":
            import zarr

            path = out / f"{name}.zarr"
            chunks = (int(params.get("chunks", 64)),) * data.ndim
            zarr.create_array(
                store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, overwrite=True
            )[...] = data
        else:
            path = out / f"{name}.npy"
            np.save(path, data)
        paths[name] = str(path)
    return {
        "paths": paths,
        "shape": list(phantom.image.shape),
        "voxels": int(phantom.image.size),
        "labelled_voxels": int(np.count_nonzero(phantom.scribbles)),
        "classes": int(phantom.truth.max()),
        "make_seconds": made,
        "total_seconds": time.perf_counter() - started,
    }


# -- reporting ------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """The machine, the library versions, the tiledseg commit and the date, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [x for x in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in x]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    except OSError:
        pass
    try:
        import psutil

        memory = psutil.virtual_memory()
        memory_gib, available_gib = memory.total / GIB, memory.available / GIB
    except ImportError:
        memory_gib = available_gib = float("nan")
    versions = {}
    packages = ("tiledseg", "numpy", "scipy", "scikit-image", "scikit-learn", "xgboost", "zarr")
    for package in (*packages, "dask", "ndtomo"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": date.today().isoformat(),
        "tiledseg_git": _git_state(),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "available_gib_at_start": round(available_gib, 1),
        "python": platform.python_version(),
        "versions": versions,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def print_machine(machine: Mapping[str, Any], workdir: Path | None = None) -> None:
    """Print the machine, the versions and the tiledseg commit."""
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB "
        f"({machine['available_gib_at_start']} GiB available), python {machine['python']}"
    )
    print(f"versions: {json.dumps(machine['versions'])}")
    if machine["omp_num_threads"]:
        print(f"warning: OMP_NUM_THREADS={machine['omp_num_threads']} caps the libraries' threads")
    print(f"tiledseg checkout: {machine['tiledseg_git']}; work folder: {workdir}", flush=True)


def _git_state() -> str | None:
    """Commit of the checkout tiledseg is imported from, ``+dirty`` if its files changed."""
    try:
        import tiledseg

        root = str(Path(tiledseg.__file__).resolve().parent.parent)

        def git(*args: str) -> str:
            done = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
            done.check_returncode()
            return done.stdout.strip()

        dirty = git("status", "--porcelain", "tiledseg")
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (ImportError, OSError, subprocess.CalledProcessError):
        return None


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``n/a``."""
    return "n/a" if value is None else format(value, spec)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as a Markdown table: the first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str], align: Callable[[str, int], str]) -> str:
        rest = [align(c, w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join([row[0].ljust(widths[0]), *rest]) + " |"

    lines = [line(cells[0], str.ljust), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(lines + [line(row, str.rjust) for row in cells[1:]])
