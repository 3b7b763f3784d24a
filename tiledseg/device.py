"""Where blocks are computed: the CPU or a CUDA GPU.

This module decides, it computes nothing: :func:`resolve_device` turns ``cpu``,
``cuda`` or ``auto`` into the device a worker uses, and :func:`gpu_block` picks a
block edge that fits a GPU's free memory. cupy is imported lazily, only to ask
whether a GPU is there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tiledseg.errors import MissingExtraError, TiledsegError

__all__ = ["DEVICES", "check_device", "gpu_block", "gpu_count", "resolve_device"]

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


def gpu_block(
    free_bytes: int,
    *,
    n_features: int,
    halo: Sequence[int],
    n_classes: int = 2,
    fraction: float = 0.5,
    multiple: int = 16,
) -> tuple[int, ...]:
    """Return the largest cubic block whose working set fits ``fraction`` of ``free_bytes``.

    The working set is the haloed block times :data:`_WORKING_ARRAYS` float32
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

    Returns
    -------
    tuple of int
        The block edge per axis.
    """
    if free_bytes <= 0 or not 0 < fraction <= 1:
        raise TiledsegError("gpu_block needs free memory > 0 and 0 < fraction <= 1")
    budget = free_bytes * fraction

    def cost(edge: int) -> float:
        haloed = math.prod(edge + 2 * h for h in halo)
        inner = edge ** len(halo)
        return 4.0 * (_WORKING_ARRAYS * haloed + (n_features + n_classes) * inner)

    low = max(multiple, max(halo, default=0))
    edge = low
    while cost(edge + multiple) <= budget:
        edge += multiple
    return (edge,) * len(halo)
