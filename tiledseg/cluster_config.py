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
``${NAME:-default}`` outside comments are replaced by environment variables
before the YAML is read, so a shipped file needs no edit: an empty value
means "not set" (the class's default).

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
_LOCAL_WORKER_KEYS = {"memory_limit", "local_directory", "resources", "lifetime"}
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

    def cluster_class(self) -> type:
        """The cluster class (imported only now: each is an optional dependency)."""
        return _cluster_class(self.kind, self.source)

    def planned_threads(self) -> int:
        """Worker threads once scaled up (adaptive: at its maximum); for block planning."""
        from tiledseg.cluster import available_cores

        opts = self.options
        if self.kind == "slurm":
            processes = int(opts.get("processes") or 1)
            per_job = int(opts.get("cores") or 1)
            if self.adapt:
                jobs = int(self.adapt.get("maximum_jobs") or self.adapt.get("maximum") or 1)
            elif self.scale:
                jobs = int(self.scale.get("jobs") or -(-int(self.scale.get("n", 1)) // processes))
            else:
                jobs = 1
            return max(1, jobs * max(per_job, processes))
        if self.kind == "local":
            n = opts.get("n_workers", available_cores())
            return max(1, int(n) * int(opts.get("threads_per_worker", 1)))
        # local-cuda: one worker per visible GPU, one thread each by default
        visible = opts.get("CUDA_VISIBLE_DEVICES") or os.environ.get("CUDA_VISIBLE_DEVICES")
        n = opts.get("n_workers") or (len(str(visible).split(",")) if visible else 1)
        return max(1, int(n) * int(opts.get("threads_per_worker", 1)))

    def start(self) -> Any:
        """Start the cluster and scale it as configured; returns the cluster object."""
        cls = self.cluster_class()
        try:
            cluster = cls(**self.options)
        except (TypeError, ValueError) as exc:
            raise ClusterConfigError(
                f"cluster config {self.source}: {cls.__name__} refused its options: {exc}"
            ) from None
        if self.adapt is not None:
            cluster.adapt(**self.adapt)
        elif self.scale is not None:
            cluster.scale(**self.scale)
        return cluster


def shipped_configs() -> dict[str, Path]:
    """The example configs shipped in ``cluster_configs/`` (name -> path), when present."""
    folder = Path(__file__).resolve().parents[1] / "cluster_configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"), key=lambda p: p.stem)}


def _expand(text: str, source: str) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}`` outside comments by the environment."""
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        code, hash_, comment = _split_comment(line)

        def value(match: re.Match, number: int = number) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ClusterConfigError(
                f"cluster config {source}, line {number}: environment variable {name} is not "
                f"set; set it (export {name}=...) or write ${{{name}:-default}}"
            )

        lines.append(_ENV.sub(value, code) + hash_ + comment)
    return "\n".join(lines)


def _split_comment(line: str) -> tuple[str, str, str]:
    """A line's YAML code and its comment (a '#' at the start or after a space)."""
    match = re.search(r"(^|\s)#", line)
    if match is None:
        return line, "", ""
    at = match.start() + len(match.group(1))
    return line[:at], "#", line[at + 1 :]


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

    Raises
    ------
    ClusterConfigError
        The file is missing, not YAML, or has a key its cluster class does not take.
    MissingExtraError
        The cluster kind needs an extra that is not installed.
    """
    import yaml

    source = str(path)
    file = Path(path)
    if not file.is_file() and source in shipped_configs():
        file = shipped_configs()[source]
    if not file.is_file():
        shipped = ", ".join(shipped_configs()) or "none found"
        raise ClusterConfigError(
            f"cluster config {source!r} does not exist; give a YAML file, or the name of one "
            f"in cluster_configs/ ({shipped})"
        )
    try:
        data = yaml.safe_load(_expand(file.read_text(), source))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ClusterConfigError(
            f"cluster config {source} is not valid YAML: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise ClusterConfigError(
            f"cluster config {source}: expected a mapping with one of {', '.join(KINDS)} as its "
            "top key"
        )
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
    kind = kinds[0]
    options = _mapping(data[kind], kind, source)
    options = {_python_name(k): v for k, v in options.items()}
    _check_keys(options, _allowed_keys(kind, source), kind, source)
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
    options = _defaults(kind, options)
    return ClusterConfig(kind, options, scale=scale, adapt=adapt, source=source)


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
    """The keyword arguments the kind's class takes, from the class itself."""
    cls = _cluster_class(kind, source)
    if kind == "local":
        return _parameters(cls.__init__) | _LOCAL_WORKER_KEYS
    if kind == "slurm":
        import dask
        from dask_jobqueue.core import JobQueueCluster

        # what jobqueue.yaml lists for slurm (the job's options) and the cluster's own
        job = {_python_name(k) for k in dask.config.get("jobqueue.slurm")}
        return (job | _parameters(JobQueueCluster.__init__)) - set(_DEPRECATED) - {"job_cls"}
    return _parameters(cls.__init__)


def _defaults(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """tiledseg's defaults where the file says nothing (never over what it says)."""
    # an empty value means "not set": the class's (or tiledseg's) default applies
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "local":
        from tiledseg.cluster import available_cores

        options.setdefault("n_workers", available_cores())
        # blocks are the parallelism: one thread per worker process
        options.setdefault("threads_per_worker", 1)
        options.setdefault("processes", True)
    if kind == "slurm":
        # workers must run the Python (and the tiledseg) that planned the run
        if options.get("python") is None:
            options["python"] = sys.executable
    # distributed's INFO lines would bury the progress bar
    options.setdefault("silence_logs", logging.ERROR)
    # no fixed dashboard port: two runs on one host would clash on :8787
    if kind == "slurm":
        options.setdefault("scheduler_options", {})
        options["scheduler_options"] = {"dashboard_address": ":0", **options["scheduler_options"]}
    else:
        options.setdefault("dashboard_address", ":0")
    return options
