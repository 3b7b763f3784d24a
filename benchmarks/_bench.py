"""Helpers shared by the benchmark scripts: child processes, peak memory, phantoms, tables.

Every measurement runs in a fresh child process started with ``sys.executable``
(the same interpreter and virtualenv), so that each one's peak memory is its
own. The parent starts a child as ``SCRIPT --child TASK --params P --result R``;
the child runs the function registered for ``TASK`` on the JSON parameters in
``P`` and writes its JSON result to ``R``.

Peak memory is the child's own ``VmHWM`` (high-water resident set size of its
address space) from ``/proc/self/status``, not ``getrusage().ru_maxrss``: on
Linux a child's ``ru_maxrss`` also holds the parent's peak at the time of the
fork (the kernel folds the old address space's high-water mark in at ``exec``),
so a fresh child of a parent that once held 2 GiB reports at least 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

__all__ = [
    "GIB",
    "ChildOutcome",
    "child_entry",
    "cpu_seconds",
    "current_rss_bytes",
    "format_table",
    "machine_info",
    "make_phantom_files",
    "peak_rss_bytes",
    "run_child",
]

GIB = float(2**30)
CHILD_FLAG = "--child"
_TAIL_LINES = 15


# -- measuring inside a process ---------------------------------------------------------------


def _status_kib(field_name: str) -> int | None:
    """Return a ``kB`` field of ``/proc/self/status`` in KiB, or ``None`` off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+)\s+kB", text, flags=re.MULTILINE)
    return int(match.group(1)) if match else None


def peak_rss_bytes() -> int:
    """Return the peak resident set size of this process so far, in bytes.

    Returns
    -------
    int
        ``VmHWM`` on Linux; elsewhere ``ru_maxrss`` (which may include the parent's peak).
    """
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)


def current_rss_bytes() -> int:
    """Return the current resident set size of this process, in bytes."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return int(psutil.Process().memory_info().rss)


def cpu_seconds() -> float:
    """Return the user + system CPU seconds this process has used (all its threads)."""
    times = os.times()
    return float(times.user + times.system)


# -- child processes ------------------------------------------------------------------------------


@dataclass
class ChildOutcome:
    """What a child process gave back.

    Attributes
    ----------
    ok : bool
        The child exited 0 and wrote a result without an ``error`` key.
    result : dict
        The child's JSON result (may hold ``error`` and ``traceback``).
    reason : str
        Why it failed (empty when ``ok``).
    wall_seconds : float
        Wall-clock lifetime of the child, start-up and imports included.
    others_cores : float or None
        Average number of cores busy with *other* processes while the child ran
        (system-wide busy CPU time minus the child's own, over the wall time).
    loadavg : tuple of float
        1-minute load average before and after the child.
    log : Path
        The child's captured stdout and stderr.
    """

    ok: bool
    result: dict[str, Any]
    reason: str
    wall_seconds: float
    others_cores: float | None
    loadavg: tuple[float, float]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)


def _busy_cpu_seconds() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    t = psutil.cpu_times()
    return float(
        t.user
        + t.system
        + getattr(t, "nice", 0.0)
        + getattr(t, "irq", 0.0)
        + getattr(t, "softirq", 0.0)
    )


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def run_child(
    script: str | Path,
    task: str,
    params: Mapping[str, Any],
    *,
    workdir: Path,
    timeout: float | None = None,
    label: str | None = None,
) -> ChildOutcome:
    """Run ``task`` of ``script`` in a fresh Python process and collect its result.

    Parameters
    ----------
    script : path
        The benchmark script whose :func:`child_entry` knows ``task``.
    task : str
        Name of the registered child function.
    params : mapping
        JSON-serialisable parameters of the task.
    workdir : Path
        Folder for the parameter, result and log files.
    timeout : float, optional
        Seconds after which the child is killed.
    label : str, optional
        Stem of the files (default: the task name).

    Returns
    -------
    ChildOutcome
    """
    stem = label or task
    params_path = workdir / f"{stem}.params.json"
    result_path = workdir / f"{stem}.result.json"
    log_path = workdir / f"{stem}.log"
    params_path.write_text(json.dumps(dict(params), indent=1))
    result_path.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(script),
        CHILD_FLAG,
        task,
        "--params",
        str(params_path),
        "--result",
        str(result_path),
    ]
    load_before = os.getloadavg()[0]
    busy_before = _busy_cpu_seconds()
    started = time.perf_counter()
    reason = ""
    code: int | None = None
    child_rusage = None
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # os.wait4 gives the child's own CPU time, up to its exit (for the "others" estimate)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                proc.returncode = code
                child_rusage = usage
                break
            if timeout is not None and time.perf_counter() - started > timeout:
                proc.kill()
                _, status, child_rusage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                reason = f"timed out after {timeout:g} s and was killed"
                break
            time.sleep(0.05)
    wall = time.perf_counter() - started
    busy_after = _busy_cpu_seconds()
    load_after = os.getloadavg()[0]
    result: dict[str, Any] = {}
    if result_path.is_file():
        try:
            result = json.loads(result_path.read_text())
        except json.JSONDecodeError as exc:
            reason = reason or f"unreadable result file: {exc}"
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (the kernel's OOM killer? check dmesg)" if -code == signal.SIGKILL else ""
        reason = f"killed by {name}{hint}"
    elif not reason and "error" in result:
        reason = str(result["error"])
    elif not reason and code != 0:
        reason = f"exit status {code}; last lines of {log_path}:\n{_tail(log_path)}"
    elif not reason and not result:
        reason = f"no result written; last lines of {log_path}:\n{_tail(log_path)}"
    others = None
    child_cpu = None if child_rusage is None else child_rusage.ru_utime + child_rusage.ru_stime
    if busy_before is not None and busy_after is not None and child_cpu is not None and wall > 0:
        others = max(0.0, (busy_after - busy_before - float(child_cpu)) / wall)
    return ChildOutcome(
        ok=not reason,
        result=result,
        reason=reason,
        wall_seconds=wall,
        others_cores=others,
        loadavg=(load_before, load_after),
        log=log_path,
    )


def child_entry(argv: Sequence[str], tasks: Mapping[str, Callable[[dict], dict]]) -> int:
    """Run one registered task in this (child) process; the counterpart of :func:`run_child`.

    Parameters
    ----------
    argv : sequence of str
        ``TASK --params P --result R`` (what follows :data:`CHILD_FLAG`).
    tasks : mapping
        Task name to a function of the parameters returning a JSON-serialisable dict.

    Returns
    -------
    int
        Exit status: 0 when the task returned, 1 when it raised (the error is in the result).
    """
    parser = argparse.ArgumentParser(prog="child")
    parser.add_argument("task", choices=sorted(tasks))
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(list(argv))
    params = json.loads(args.params.read_text())
    status = 0
    try:
        result = dict(tasks[args.task](params))
    except Exception as exc:  # reported to the parent, which carries on with other peers
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
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# -- phantoms on disk ---------------------------------------------------------------------------


def make_phantom_files(params: Mapping[str, Any]) -> dict[str, Any]:
    """Make a phantom and write it to disk (run in its own child: large phantoms need GiBs).

    Parameters
    ----------
    params : mapping
        ``shape`` (list of int), ``seed`` (int), ``scribbles`` (``"balls"`` or
        ``"strokes"``, see ``make_phantom``), ``out`` (folder), ``format``
        (``"npy"`` or ``"zarr"``), ``chunks`` (int, zarr only) and ``arrays``
        (which of ``"image"``, ``"truth"``, ``"scribbles"`` to write; default all).

    Returns
    -------
    dict
        Paths written, shape, voxel count, labelled voxel count and timings.
    """
    import numpy as np

    from tiledseg.testing import make_phantom

    started = time.perf_counter()
    phantom = make_phantom(
        tuple(params["shape"]),
        seed=int(params["seed"]),
        scribbles=params.get("scribbles", "balls"),
    )
    made = time.perf_counter() - started
    out = Path(params["out"])
    out.mkdir(parents=True, exist_ok=True)
    wanted = params.get("arrays", ["image", "truth", "scribbles"])
    paths = {}
    for name in wanted:
        data = getattr(phantom, name)
        if params.get("format", "npy") == "zarr":
            import zarr

            path = out / f"{name}.zarr"
            chunks = (int(params.get("chunks", 64)),) * data.ndim
            array = zarr.create_array(
                store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, overwrite=True
            )
            array[...] = data
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
    """Return the machine, the library versions and the date, for the record."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory_gib = psutil.virtual_memory().total / GIB
        available_gib = psutil.virtual_memory().available / GIB
    except ImportError:
        memory_gib = available_gib = float("nan")
    versions = {}
    for package in (
        "tiledseg",
        "numpy",
        "scipy",
        "scikit-image",
        "scikit-learn",
        "xgboost",
        "zarr",
        "dask",
        "ndtomo",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {
        "date": date.today().isoformat(),
        "tiledseg_git": _git_state(),
        "cpu": cpu,
        "cores": cores,
        "memory_gib": round(memory_gib, 1),
        "available_gib_at_start": round(available_gib, 1),
        "python": platform.python_version(),
        "versions": versions,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def _git_state() -> str | None:
    """Commit of the checkout tiledseg is imported from, with ``+dirty`` if its files changed."""
    try:
        import tiledseg

        root = Path(tiledseg.__file__).resolve().parent.parent
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "tiledseg"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (ImportError, OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Format rows as a Markdown table (first column left-aligned, the others right-aligned).

    Parameters
    ----------
    headers : sequence of str
        Column titles.
    rows : sequence of sequences
        Cell values (already formatted as text, or anything ``str`` accepts).

    Returns
    -------
    str
    """
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        padded = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("| " + " | ".join(padded) + " |")
    return "\n".join(lines)
