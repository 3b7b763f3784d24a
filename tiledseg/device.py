"""Where blocks are computed: the CPU or a CUDA GPU.

This module decides and moves, it computes nothing: :func:`resolve_device` turns
``cpu``, ``cuda`` or ``auto`` into the device a worker uses (each worker decides for
itself, where it runs) and :func:`gpu_block` picks a block edge that fits a GPU's free
memory. Moving a block's arrays is :mod:`tiledseg.arrays`'s. cupy is imported lazily,
only when a GPU is asked for.

No code here picks a GPU: a process uses the first device it sees, and which one
that is belongs to ``CUDA_VISIBLE_DEVICES``, which dask-cuda (and SLURM's
``--gres``) set per worker.
"""

from __future__ import annotations

import functools
import math
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tiledseg.errors import MissingExtraError, TiledsegError

__all__ = [
    "DEVICES",
    "DevicePlan",
    "check_device",
    "describe_worker",
    "free_device_memory",
    "gpu_block",
    "gpu_count",
    "plan_devices",
    "resolve_device",
    "worker_device",
    "xgboost_has_cuda",
]

#: Accepted values of ``--device``.
DEVICES = ("cpu", "cuda", "auto")

#: Float32 arrays a block needs besides its features, in haloed-block voxels: the
#: channel, the derivative tree's intermediates (two per axis at most), and the
#: classifier's input copy. An estimate from the kernels' structure, not yet checked
#: against a GPU's measured peak (issue 6).
_WORKING_ARRAYS = 10


def check_device(device: str | None) -> str:
    """Return ``device`` if it is one of :data:`DEVICES` (``None``: ``"cpu"``)."""
    if device is None:
        return "cpu"
    if device not in DEVICES:
        raise TiledsegError(f"--device {device!r} is unknown; use one of {', '.join(DEVICES)}")
    return device


def gpu_count() -> int:
    """Return the CUDA devices this process sees (0 without cupy or a driver)."""
    try:
        import cupy
    except ImportError:
        return 0
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device, or a broken CUDA install: no GPU here
        return 0


def resolve_device(device: str | None) -> str:
    """Return ``"cpu"`` or ``"cuda"`` for this process.

    ``auto`` is ``cuda`` when a GPU and cupy are there, else ``cpu``; ``cuda``
    without them is an error that says what is missing.
    """
    device = check_device(device)
    if device == "cpu":
        return "cpu"
    if gpu_count() > 0:
        return "cuda"
    if device == "auto":
        return "cpu"
    try:
        import cupy  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "--device cuda needs cupy: pip install 'tiledseg[gpu]' (or --device auto to "
            "fall back to the CPU)"
        ) from None
    raise TiledsegError(
        "--device cuda: cupy sees no CUDA device in this process (check the driver and "
        "CUDA_VISIBLE_DEVICES), or use --device auto to fall back to the CPU"
    )


@functools.cache
def worker_device(device: str) -> str:
    """:func:`resolve_device` once per process: what a worker's block tasks run on."""
    return resolve_device(device)


def free_device_memory() -> int:
    """Free bytes on this process's CUDA device (0 without a GPU).

    Counts cupy's pooled free blocks as free.
    """
    if gpu_count() == 0:
        return 0
    import cupy

    free, _ = cupy.cuda.runtime.memGetInfo()
    return int(free) + int(cupy.get_default_memory_pool().free_bytes())


@functools.cache
def xgboost_has_cuda() -> bool:
    """Whether this process's XGBoost was built with CUDA.

    The ``xgboost-cpu`` and manylinux2014 wheels are not: without it XGBoost predicts and
    fits on the CPU.
    """
    try:
        import xgboost
    except ImportError:
        return False
    return bool(xgboost.build_info().get("USE_CUDA", False))


def describe_worker(device: str) -> dict[str, Any]:
    """Describe what a worker will compute on: run on each worker before a GPU run.

    Returns ``{"device": "cpu" | "cuda"}``, and on a GPU its ``gpu`` name, the
    physical device ``gpu_id`` (host and PCI address: processes that share a GPU
    report the same), its ``free_bytes`` and ``xgboost_cuda``. Raises the one-line
    error of :func:`resolve_device` when ``device`` is ``cuda`` and this worker has
    no GPU.
    """
    resolved = worker_device(device)
    if resolved == "cpu":
        return {"device": "cpu"}
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())
    name = props["name"]
    pci = ":".join(str(props.get(k, "?")) for k in ("pciDomainID", "pciBusID", "pciDeviceID"))
    return {
        "device": "cuda",
        "gpu": name.decode() if isinstance(name, bytes) else str(name),
        "gpu_id": f"{socket.gethostname()}/{pci}",
        "free_bytes": free_device_memory(),
        "xgboost_cuda": xgboost_has_cuda(),
    }


@dataclass(frozen=True)
class DevicePlan:
    """What the workers of a run compute on, found by asking each of them.

    Attributes
    ----------
    requested : str
        ``cpu``, ``cuda`` or ``auto``, as given; every block task resolves it again
        where it runs (:func:`worker_device`), so a worker added later decides for itself.
    workers : tuple of dict
        :func:`describe_worker` of every worker there was when the run started, with
        ``threads``, its task threads (blocks in flight on its device).
    """

    requested: str
    workers: tuple[dict[str, Any], ...]

    @property
    def kind(self) -> str:
        """``cpu`` or ``cuda`` when every worker computes there, else ``mixed``."""
        kinds = {w["device"] for w in self.workers}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def uses_gpu(self) -> bool:
        """Whether any worker computes on a GPU."""
        return self.kind != "cpu"

    def _threads_per_gpu(self) -> dict[str, int]:
        """Task threads on each physical GPU (workers that share one add up)."""
        out: dict[str, int] = {}
        for w in self.workers:
            if w["device"] == "cuda":
                key = w.get("gpu_id", str(id(w)))
                out[key] = out.get(key, 0) + (w.get("threads") or 1)
        return out

    @property
    def fits_on_gpus(self) -> bool:
        """Whether a distributed XGBoost fit can use the workers' GPUs.

        It can when every worker has its own GPU (NCCL refuses two processes on one
        device) and a CUDA XGBoost.
        """
        return (
            self.kind == "cuda"
            and len(self._threads_per_gpu()) == len(self.workers)
            and all(w.get("xgboost_cuda", False) for w in self.workers)
        )

    def gpu_block(
        self, *, shape: Sequence[int], halo: Sequence[int], n_features: int, n_classes: int
    ) -> tuple[int, ...] | None:
        """Return the block for a run on these workers' GPUs, or ``None`` to keep the CPU default.

        The CPU default is kept when some workers are on the CPU: GPU-sized blocks would
        not fit them.

        The largest block the most crowded GPU holds, one per task thread in flight on
        it (the threads of every worker sharing that GPU), clipped to ``shape``, then
        split along its longest axis until every GPU thread has a block (never below
        twice the halo, nor 16).
        """
        if self.kind != "cuda":
            return None
        per_gpu = self._threads_per_gpu()
        free = min(w["free_bytes"] for w in self.workers)
        edge = gpu_block(
            free,
            n_features=n_features,
            halo=halo,
            n_classes=n_classes,
            in_flight=max(per_gpu.values()),
        )
        from tiledseg.blocks import split_until

        return split_until(
            [min(n, e) for n, e in zip(shape, edge, strict=True)],
            shape=shape,
            halo=halo,
            min_blocks=sum(per_gpu.values()),
        )

    def to_dict(self) -> dict[str, Any]:
        """For the provenance: what was asked and what each worker had."""
        if self.requested == "cpu":
            return {"requested": "cpu"}
        gpus = sorted({w["gpu"] for w in self.workers if w["device"] == "cuda"})
        return {
            "requested": self.requested,
            "workers": len(self.workers),
            "gpu_workers": sum(w["device"] == "cuda" for w in self.workers),
            **({"gpus": gpus} if gpus else {}),
        }


def plan_devices(device: str | None, executor: Any) -> DevicePlan:
    """Ask every worker of ``executor`` what ``device`` means there.

    ``cuda`` on a worker without a GPU (or without cupy) is the one-line error of
    :func:`resolve_device`, raised before any block is computed.
    """
    device = check_device(device)
    if device == "cpu":
        return DevicePlan("cpu", ({"device": "cpu"},))
    found = executor.on_workers(functools.partial(describe_worker, device))
    return DevicePlan(
        device, tuple({**info, "threads": threads} for info, threads in found.values())
    )


def gpu_block(
    free_bytes: int,
    *,
    n_features: int,
    halo: Sequence[int],
    n_classes: int = 2,
    fraction: float = 0.5,
    multiple: int = 16,
    in_flight: int = 1,
) -> tuple[int, ...]:
    """Return the largest cubic block whose working set fits ``fraction`` of ``free_bytes``.

    That share of the free memory is divided between ``in_flight`` blocks computed at
    once. The working set is the haloed block times :data:`_WORKING_ARRAYS` float32
    arrays, plus the block's features and class probabilities (float32). The edge is
    a multiple of ``multiple`` (and at least the largest halo, as the planner needs).

    Parameters
    ----------
    free_bytes : int
        Free device memory (``cupy.cuda.runtime.memGetInfo()[0]``).
    n_features : int
        Features per voxel.
    halo : sequence of int
        Halo per axis.
    n_classes : int
    fraction : float
        Share of the free memory one block may use (the rest: the memory pool's
        slack, XGBoost's buffers, other blocks in flight).
    multiple : int
    in_flight : int
        Blocks on the device at the same time (the task threads of its worker).

    Returns
    -------
    tuple of int
        The block edge per axis.
    """
    if free_bytes <= 0 or not 0 < fraction <= 1:
        raise TiledsegError("gpu_block needs free memory > 0 and 0 < fraction <= 1")
    budget = free_bytes * fraction / max(1, in_flight)

    def cost(edge: int) -> float:
        haloed = math.prod(edge + 2 * h for h in halo)
        inner = edge ** len(halo)
        return 4.0 * (_WORKING_ARRAYS * haloed + (n_features + n_classes) * inner)

    low = max(multiple, max(halo, default=0))
    edge = low
    while cost(edge + multiple) <= budget:
        edge += multiple
    return (edge,) * len(halo)
