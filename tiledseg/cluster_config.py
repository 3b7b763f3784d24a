"""Cluster configuration files (``--cluster FILE``): which dask cluster to start, and how.

A file names one kind of cluster as its top key, with that cluster class's own
keyword arguments under it, so what users know from dask-jobqueue, dask-cuda or
``distributed.LocalCluster`` can be pasted as is::

    slurm:                      # dask_jobqueue.SLURMCluster(**these)
      cores: 4
      memory: 16GiB
      walltime: "02:00:00"
      queue: ${TILEDSEG_SLURM_PARTITION:-}
    adapt:                      # cluster.adapt(**these); or  scale: {jobs: 2}
      minimum_jobs: 1
      maximum_jobs: 8

Kinds: ``local`` (LocalCluster), ``slurm`` (dask-jobqueue SLURMCluster),
``local-cuda`` (dask-cuda LocalCUDACluster). Keys are checked against the
class's own parameters (hyphens as in jobqueue.yaml, or underscores as in
Python); an unknown key is an error that names it. ``${NAME}`` and
``${NAME:-default}`` in values are replaced by environment variables after the
YAML is read, so a shipped file needs no edit: an empty value means "not set"
(the class's default). A SLURM config with neither ``scale`` nor ``adapt``
gets one job.

Workers run the driver's Python (``python:`` changes it for SLURM jobs).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiledseg.errors import ClusterConfigError, MissingExtraError

__all__ = ["ClusterConfig", "KINDS", "load_cluster_config", "shipped_configs"]

#: Cluster kinds and the extra each needs (None: part of the base install).
KINDS = {"local": None, "slurm": "slurm", "local-cuda": "gpu"}

# dask-jobqueue still reads these, with a deprecation warning: name the new key
_DEPRECATED = {
    "env_extra": "job_script_prologue",
    "extra": "worker_extra_args",
    "job_extra": "job_extra_directives",
    "header_skip": "job_directives_skip",
}
# keyword arguments LocalCluster passes on to its workers
#: glibc's mmap threshold in workers (bytes): blocks' arrays reuse the heap
_MMAP_THRESHOLD = "33554432"
_LOCAL_WORKER_KEYS = {
    "env",
    "memory_limit",
    "local_directory",
    "resources",
    "lifetime",
    "lifetime_stagger",
    "lifetime_restart",
}
_SCALE_KEYS = {"local": {"n"}, "local-cuda": {"n"}, "slurm": {"jobs", "n", "cores", "memory"}}
_ADAPT_KEYS = {"minimum", "maximum", "interval", "wait_count", "target_duration"}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class ClusterConfig:
    """A parsed, checked cluster configuration.

    Attributes
    ----------
    kind : str
        ``local``, ``slurm`` or ``local-cuda``.
    options : dict
        Keyword arguments of the cluster class.
    scale, adapt : dict or None
        Keyword arguments of ``cluster.scale`` / ``cluster.adapt`` (at most one).
    source : str
        Where it was read from, for messages.
    """

    kind: str
    options: dict[str, Any]
    scale: dict[str, Any] | None = None
    adapt: dict[str, Any] | None = None
    source: str = "<config>"

    @classmethod
    def local_workers(cls, n_workers: int) -> ClusterConfig:
        """Return the LocalCluster of ``--workers N``: N single-threaded worker processes."""
        return cls("local", _defaults("local", {"n_workers": int(n_workers)}), source="--workers")

    def cluster_class(self) -> type:
        """Return the cluster class (imported only now: each is an optional dependency)."""
        return _cluster_class(self.kind, self.source)

    def planned_threads(self) -> int:
        """Worker threads once scaled up (adaptive: at its maximum); for block planning."""
        from tiledseg.cluster import available_cores

        opts, grow = self.options, self.adapt or self.scale or {}
        if self.kind == "slurm":
            processes = max(1, int(opts.get("processes") or 1))
            per_worker = max(1, int(opts.get("cores") or 1) // processes)
            if "maximum_jobs" in grow or "jobs" in grow:
                workers = int(grow.get("maximum_jobs", grow.get("jobs")) or 0) * processes
            elif "maximum" in grow or "n" in grow:
                workers = int(grow.get("maximum", grow.get("n")) or 0)
            elif "cores" in grow:
                workers = int(grow["cores"]) // per_worker
            else:
                workers = int(opts.get("n_workers") or 0)
            return max(1, workers * per_worker)
        per_worker = max(1, int(opts.get("threads_per_worker") or 1))
        if "maximum" in grow or "n" in grow:
            return max(1, int(grow.get("maximum", grow.get("n")) or 0) * per_worker)
        if self.kind == "local":
            return max(1, int(opts.get("n_workers", available_cores())) * per_worker)
        # local-cuda: one worker per visible GPU
        visible = opts.get("CUDA_VISIBLE_DEVICES") or os.environ.get("CUDA_VISIBLE_DEVICES")
        n = opts.get("n_workers") or (len(str(visible).split(",")) if visible else 1)
        return max(1, int(n) * per_worker)

    def start(self) -> Any:
        """Start the cluster and scale it as configured; returns the cluster object."""
        import dask

        cls = self.cluster_class()
        # dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off
        # glibc's dynamic mmap threshold: every feature image of a block became a fresh
        # mmap and blocks took 1.5x as long (benchmarks/RESULTS.md, section 6). Workers
        # started here go without it, and with a fixed mmap threshold in case they inherit
        # it anyway (a nanny started earlier in this process leaves it in os.environ);
        # SLURM jobs set the threshold in their job script (slurm.yaml).
        keep_malloc = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
        options = dict(self.options)
        if self.kind != "slurm":
            options["env"] = {"MALLOC_MMAP_THRESHOLD_": _MMAP_THRESHOLD, **options.get("env", {})}
        try:
            with dask.config.set(keep_malloc if self.kind != "slurm" else {}):
                cluster = cls(**options)
        except (TypeError, ValueError) as exc:
            raise ClusterConfigError(
                f"cluster config {self.source}: {cls.__name__} refused its options: "
                + " ".join(str(exc).split())
            ) from None
        try:
            if self.kind == "slurm":
                _check_job_script(cluster.job_script(), self.source)
            if self.adapt is not None:
                cluster.adapt(**self.adapt)
            elif self.scale is not None:
                cluster.scale(**self.scale)
        except BaseException:
            cluster.close()
            raise
        return cluster


def _check_job_script(script: str, source: str) -> None:
    """Ask SLURM whether it would run a worker job (``sbatch --test-only``).

    A wrong partition, account or size is then one clear error, not a run that waits forever.
    """
    import shutil
    import subprocess
    import tempfile

    if shutil.which("sbatch") is None:
        raise ClusterConfigError(
            f"cluster config {source}: sbatch is not on PATH; a slurm cluster config runs "
            "where SLURM jobs can be submitted (a login node, or inside a job)"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="tiledseg-job-") as file:
        file.write(script)
        file.flush()
        try:
            done = subprocess.run(
                ["sbatch", "--test-only", file.name], capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            return  # a slow controller is no reason to refuse: the jobs will tell
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
        raise ClusterConfigError(
            f"cluster config {source}: SLURM would not run the worker job ({said}); check "
            "queue (partition), account, cores, memory and walltime"
        )


def shipped_configs() -> dict[str, Path]:
    """Return the example configs shipped in the package (name -> path).

    They are in the package's ``tiledseg/cluster_configs/``. They are package data: an
    installed wheel finds them as a source checkout does.
    """
    folder = Path(__file__).resolve().parent / "cluster_configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"), key=lambda p: p.stem)}


# values read as strings even when they look like numbers ("0", "012345")
_STRING_KEYS = {
    "CUDA_VISIBLE_DEVICES",
    "account",
    "queue",
    "name",
    "job_name",
    "walltime",
    "memory",
    "interface",
    "log_directory",
    "local_directory",
    "python",
}


def _substitute(value: Any, where: str, source: str) -> Any:
    """``value`` with ``${NAME}`` / ``${NAME:-default}`` replaced from the environment.

    Done on the parsed values, not the text, so comments and quoting are YAML's own
    and an environment value cannot change the file's structure. A value that is one
    reference alone takes the variable's type (an integer for ``4``; an empty value
    is "not set"), except for keys that are strings by nature.
    """
    if isinstance(value, dict):
        return {
            k: _substitute(v, f"{where}.{k}" if where else str(k), source) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    text = _ENV.sub(lambda match: _lookup(match, where, source), value)
    if _ENV.fullmatch(value) is None:
        return text
    return _typed(text, where)


def _lookup(match: re.Match, where: str, source: str) -> str:
    """Return the environment's value for one ``${NAME}`` or ``${NAME:-default}``."""
    name, default = match.group(1), match.group(2)
    # as in the shell's ${NAME:-default}: unset or empty takes the default
    found = os.environ.get(name, "")
    if found != "":
        return found
    if default is not None:
        return default
    raise ClusterConfigError(
        f"cluster config {source}: {where} needs environment variable {name}, which is "
        f"not set; set it (export {name}=...) or write ${{{name}:-default}}"
    )


def _typed(text: str, where: str) -> Any:
    """Type the value of a reference that stood alone.

    ``None`` if empty, else a number where it reads as one (not for string keys), else the text.
    """
    if text == "":
        return None
    if where.rsplit(".", 1)[-1].replace("-", "_") in _STRING_KEYS:
        return text
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
        return int(text)
    if re.fullmatch(r"-?[0-9]*\.[0-9]+", text):
        return float(text)
    return text


def load_cluster_config(path: str | os.PathLike) -> ClusterConfig:
    """Read and check a cluster configuration file.

    Parameters
    ----------
    path : path
        A YAML file (see the module docstring), or the name of a shipped config
        (``local``, ``slurm``, ``slurm-gpu``, ``local-cuda``).

    Returns
    -------
    ClusterConfig
        The cluster kind, its options (defaults filled in) and its scale or adapt.

    Raises
    ------
    ClusterConfigError
        The file is missing, not YAML, or has a key its cluster class does not take.
    MissingExtraError
        The cluster kind needs an extra that is not installed.
    """
    source = str(path)
    data = _read_yaml(_config_file(path), source)
    kind = _top_kind(data, source)
    data = _substitute(data, "", source)
    options = _mapping(data[kind], kind, source)
    # deprecated jobqueue.yaml keys left empty (as in dask-jobqueue's own defaults) are
    # the same as absent
    options = {
        _python_name(k): v
        for k, v in options.items()
        if not (v is None and _python_name(k) in _DEPRECATED)
    }
    _check_keys(options, _allowed_keys(kind, source), kind, source)
    scale, adapt = _sizing(data, kind, source)
    options = _defaults(kind, options)
    if kind == "slurm" and scale is None and adapt is None and not options.get("n_workers"):
        # a SLURMCluster starts with no job at all: without this the run would wait forever
        scale = {"jobs": 1}
    return ClusterConfig(kind, options, scale=scale, adapt=adapt, source=source)


def _config_file(path: str | os.PathLike) -> Path:
    """Find the file ``path`` names: itself, or the shipped config of that name."""
    source = str(path)
    file = Path(path)
    if not file.is_file() and source in shipped_configs():
        file = shipped_configs()[source]
    if not file.is_file():
        shipped = ", ".join(shipped_configs()) or "none found"
        raise ClusterConfigError(
            f"cluster config {source!r} does not exist; give a YAML file, or the name of one "
            f"in tiledseg/cluster_configs/ ({shipped})"
        )
    return file


def _read_yaml(file: Path, source: str) -> dict[str, Any]:
    """Parse the file; return its top mapping."""
    import yaml

    try:
        data = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ClusterConfigError(
            f"cluster config {source} is not valid YAML: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise ClusterConfigError(
            f"cluster config {source}: expected a mapping with one of {', '.join(KINDS)} as its "
            "top key"
        )
    return data


def _top_kind(data: dict[str, Any], source: str) -> str:
    """Return the one cluster kind among the top keys (the others may be scale and adapt)."""
    kinds = [k for k in data if k in KINDS]
    unknown = [k for k in data if k not in KINDS and k not in ("scale", "adapt")]
    if unknown:
        raise ClusterConfigError(
            f"cluster config {source}: unknown top-level key {unknown[0]!r}"
            f"{_did_you_mean(unknown[0], [*KINDS, 'scale', 'adapt'])}; the top keys are one "
            f"cluster kind ({', '.join(KINDS)}) and optionally scale or adapt"
        )
    if len(kinds) != 1:
        raise ClusterConfigError(
            f"cluster config {source}: give exactly one cluster kind as a top key (one of "
            f"{', '.join(KINDS)}), not {len(kinds)}"
        )
    return kinds[0]


def _sizing(
    data: dict[str, Any], kind: str, source: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Check and return the ``scale`` and ``adapt`` mappings (one at most; ``None`` if absent)."""
    if "scale" in data and "adapt" in data:
        raise ClusterConfigError(
            f"cluster config {source}: give scale or adapt, not both (adapt: the cluster "
            "grows and shrinks with the work; scale: a fixed size)"
        )
    scale = adapt = None
    if data.get("scale") is not None:
        scale = {_python_name(k): v for k, v in _mapping(data["scale"], "scale", source).items()}
        _check_keys(scale, _SCALE_KEYS[kind], "scale", source)
    if data.get("adapt") is not None:
        adapt = {_python_name(k): v for k, v in _mapping(data["adapt"], "adapt", source).items()}
        allowed = _ADAPT_KEYS | ({"minimum_jobs", "maximum_jobs"} if kind == "slurm" else set())
        _check_keys(adapt, allowed, "adapt", source)
    return scale, adapt


def _python_name(key: Any) -> str:
    # jobqueue.yaml spells keys with hyphens, the Python classes with underscores
    return str(key).replace("-", "_")


def _mapping(value: Any, key: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ClusterConfigError(
            f"cluster config {source}: {key!r} must be a mapping of option: value, not "
            f"{type(value).__name__}"
        )
    return dict(value)


def _check_keys(given: dict[str, Any], allowed: set[str], where: str, source: str) -> None:
    for key in given:
        if key in allowed:
            continue
        if key in _DEPRECATED:
            hint = f"; dask-jobqueue renamed it {_DEPRECATED[key]!r}"
        else:
            hint = _did_you_mean(key, allowed) or f"; {where} takes: {', '.join(sorted(allowed))}"
        raise ClusterConfigError(
            f"cluster config {source}: unknown key {key!r} under {where!r}{hint}"
        )


def _did_you_mean(key: str, choices: Any) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _cluster_class(kind: str, source: str) -> type:
    try:
        if kind == "local":
            from distributed import LocalCluster

            return LocalCluster
        if kind == "slurm":
            from dask_jobqueue import SLURMCluster

            return SLURMCluster
        from dask_cuda import LocalCUDACluster

        return LocalCUDACluster
    except ImportError:
        package = {"slurm": "dask-jobqueue", "local-cuda": "dask-cuda"}[kind]
        raise MissingExtraError(
            f"cluster config {source}: a {kind!r} cluster needs {package}: "
            f"pip install 'tiledseg[{KINDS[kind]}]'"
        ) from None


def _parameters(func: Any) -> set[str]:
    return {
        name
        for name, p in inspect.signature(func).parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def _allowed_keys(kind: str, source: str) -> set[str]:
    """Return the keyword arguments the kind's class takes, from the class itself."""
    cls = _cluster_class(kind, source)
    if kind == "local":
        return _parameters(cls.__init__) | _LOCAL_WORKER_KEYS
    if kind == "slurm":
        import dask
        from dask_jobqueue.core import JobQueueCluster

        # what jobqueue.yaml lists for slurm (the job's options) and the cluster's own
        job = {_python_name(k) for k in dask.config.get("jobqueue.slurm")}
        return (job | _parameters(JobQueueCluster.__init__)) - set(_DEPRECATED) - {"job_cls"}
    # LocalCUDACluster passes what it does not name on to LocalCluster
    from distributed import LocalCluster

    return _parameters(cls.__init__) | _parameters(LocalCluster.__init__) | _LOCAL_WORKER_KEYS


def _defaults(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Add tiledseg's defaults where the file says nothing (never over what it says)."""
    # an empty value means "not set": the class's (or tiledseg's) default applies
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "local":
        from tiledseg.cluster import available_cores

        options.setdefault("n_workers", available_cores())
        # blocks are the parallelism: one thread per worker process
        options.setdefault("threads_per_worker", 1)
        options.setdefault("processes", True)
    # distributed's INFO lines would bury the progress bar
    options.setdefault("silence_logs", logging.ERROR)
    # no fixed dashboard port: two runs on one host would clash on :8787
    if kind == "slurm":
        # workers must run the Python (and the tiledseg) that planned the run
        options.setdefault("python", sys.executable)
        options["scheduler_options"] = {
            "dashboard_address": ":0",
            **options.get("scheduler_options", {}),
        }
    else:
        options.setdefault("dashboard_address", ":0")
    return options
