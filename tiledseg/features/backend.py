"""Array backends for the feature kernels.

A kernel never imports numpy or scipy by name: it receives a :class:`Backend`
chosen from the type of the block it is given, as dask-image's dispatch does.
numpy + scipy.ndimage, and cupy + cupyx.scipy.ndimage for cupy blocks (imported only
when a cupy block arrives; checked against the CPU in ``tests/features/test_backends.py``,
whose cupy cases need a GPU).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["Backend", "get_backend"]


@dataclass(frozen=True)
class Backend:
    """The array namespace and the ndimage namespace a kernel computes with."""

    name: str
    xp: ModuleType
    ndi: ModuleType


# Backends registered by the top-level module of the array type; each is
# imported the first time a block of that type is seen.
_LAZY: dict[str, tuple[str, str]] = {
    "numpy": ("numpy", "scipy.ndimage"),
    "cupy": ("cupy", "cupyx.scipy.ndimage"),
}
_LOADED: dict[str, Backend] = {}


def get_backend(array: Any) -> Backend:
    """Return the backend for ``array``, from the module its type belongs to.

    Parameters
    ----------
    array : array-like
        A block; numpy arrays (and subclasses such as ``np.memmap``) use
        numpy + scipy.ndimage.

    Returns
    -------
    Backend
    """
    root = type(array).__module__.split(".")[0]
    if root not in _LAZY:
        import numpy as np

        if not isinstance(array, np.ndarray):
            raise TypeError(
                f"no feature backend for blocks of type {type(array).__name__}; "
                f"known: {', '.join(sorted(_LAZY))}"
            )
        root = "numpy"
    if root not in _LOADED:
        xp_name, ndi_name = _LAZY[root]
        _LOADED[root] = Backend(
            root, importlib.import_module(xp_name), importlib.import_module(ndi_name)
        )
    return _LOADED[root]
