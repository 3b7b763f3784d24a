"""Alpha-expansion through the compiled library of gco-wrapper (gco-v3.0).

Why not gco-wrapper's Python functions (``cut_general_graph``):

- they scale float energies by a factor computed from each call's own maximum,
  so two blocks would round the same energy differently and disagree at their
  border; tiledseg quantises every term with one global scale instead
  (:mod:`tiledseg.smoothing.energy`);
- the library keeps its graphs in one process-wide ``std::map`` that it reads and
  writes without a lock, and ctypes releases the GIL, so two threads solving at
  once can corrupt it (and the library calls ``exit()`` on a handle it cannot
  find). Each thread here loads its own copy of the library, with its own map;
- importing ``gco`` patches numpy (it sets ``numpy.int``, ``numpy.float`` and
  ``numpy.bool`` when missing); finding the package without importing it leaves
  numpy as it is.
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from tiledseg.errors import MissingExtraError

__all__ = ["check_available", "expansion"]

_local = threading.local()


def _library_file() -> Path:
    spec = importlib.util.find_spec("gco")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            "--smooth graphcut needs the optional solver gco-wrapper: "
            "pip install 'tiledseg[graphcut]' (its licence is research-only, see the README)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(p for p in folder.glob("libcgco*") if p.suffix in (".so", ".pyd", ".dll"))
    if not found:
        raise MissingExtraError(
            f"gco-wrapper is installed in {folder} but its compiled library libcgco is "
            "missing; reinstall it: pip install --force-reinstall gco-wrapper"
        )
    return found[0]


def check_available() -> None:
    """Raise :class:`MissingExtraError` unless the solver can be loaded."""
    _library_file()


def _library() -> ctypes.CDLL:
    lib = getattr(_local, "lib", None)
    if lib is not None:
        return lib
    source = _library_file()
    folder = tempfile.mkdtemp(prefix="tiledseg-gco-")
    try:
        # a copy under another path is a separate dlopen with its own static graph map
        path = Path(folder) / source.name
        shutil.copyfile(source, path)
        lib = ctypes.CDLL(str(path))
    finally:
        # the loaded library stays mapped: removing the file now leaves nothing behind,
        # even when the process is killed (an atexit hook would not run then)
        shutil.rmtree(folder, ignore_errors=True)
    ints = np.ctypeslib.ndpointer(dtype=np.intc, flags="C_CONTIGUOUS")
    handle = ctypes.c_int
    lib.gcoCreateGeneralGraph.argtypes = [ctypes.c_int, ctypes.c_int, ints]
    lib.gcoDestroyGraph.argtypes = [handle]
    lib.gcoSetDataCost.argtypes = [handle, ints]
    lib.gcoSetAllNeighbors.argtypes = [handle, ints, ints, ints, ctypes.c_int]
    lib.gcoSetSmoothCost.argtypes = [handle, ints]
    lib.gcoExpansion.argtypes = [
        handle,
        ctypes.c_int,
        np.ctypeslib.ndpointer(dtype=np.longlong, flags="C_CONTIGUOUS"),
    ]
    lib.gcoGetLabels.argtypes = [handle, ints]
    _local.lib = lib
    return lib


def expansion(
    unary: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    weights: np.ndarray,
    *,
    iterations: int = -1,
) -> np.ndarray:
    """Minimise a Potts energy by alpha-expansion; return the label of every site.

    Parameters
    ----------
    unary : ndarray of intc, shape (n_sites, n_labels)
        Cost of each label at each site.
    first, second : ndarray of intc, shape (n_edges,)
        The two sites of each edge, ``first < second``.
    weights : ndarray of intc, shape (n_edges,)
        Cost of giving the two sites of an edge different labels.
    iterations : int
        Expansion cycles over all labels; -1 runs to convergence.
    """
    n_sites, n_labels = unary.shape
    if n_sites == 0:
        return np.zeros(0, dtype=np.intc)
    if n_labels == 1:
        return np.zeros(n_sites, dtype=np.intc)
    lib = _library()
    out = np.empty(1, dtype=np.intc)
    lib.gcoCreateGeneralGraph(n_sites, n_labels, out)
    handle = int(out[0])
    try:
        lib.gcoSetDataCost(handle, np.ascontiguousarray(unary, dtype=np.intc))
        if len(weights):
            lib.gcoSetAllNeighbors(
                handle,
                np.ascontiguousarray(first, dtype=np.intc),
                np.ascontiguousarray(second, dtype=np.intc),
                np.ascontiguousarray(weights, dtype=np.intc),
                len(weights),
            )
        potts = np.ascontiguousarray(1 - np.eye(n_labels), dtype=np.intc)
        lib.gcoSetSmoothCost(handle, potts)
        energy = np.zeros(1, dtype=np.longlong)
        lib.gcoExpansion(handle, int(iterations), energy)
        labels = np.empty(n_sites, dtype=np.intc)
        lib.gcoGetLabels(handle, labels)
    finally:
        lib.gcoDestroyGraph(handle)
    return labels
