"""Array helpers for the per-block kernels.

Moving a block's arrays between host and GPU, and the one-line error when a GPU runs out
of memory.

Apart from :mod:`tiledseg.device`, which plans where blocks run: kernels need these
and nothing of the planning. cupy is imported only when a GPU array is made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tiledseg.errors import TiledsegError

__all__ = ["out_of_memory_hint", "to_device", "to_host"]


def to_device(array: np.ndarray, device: str) -> Any:
    """``array`` on ``device`` (``"cpu"``: unchanged; ``"cuda"``: a cupy array)."""
    if device == "cpu":
        return array
    import cupy

    return cupy.asarray(array)


def to_host(array: Any) -> np.ndarray:
    """``array`` in host memory (a cupy array is copied back; numpy is unchanged)."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    return get() if callable(get) else np.asarray(array)


@contextlib.contextmanager
def out_of_memory_hint(shape: Sequence[int]) -> Iterator[None]:
    """Turn cupy's out-of-memory error in a block task into one line that says what to do."""
    try:
        yield
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError" and type(exc).__module__.startswith("cupy"):
            raise TiledsegError(
                f"the GPU ran out of memory on a block of {'x'.join(map(str, shape))} voxels: "
                "give a smaller --block"
            ) from None
        raise
