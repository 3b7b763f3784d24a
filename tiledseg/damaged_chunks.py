"""Naming the chunk files behind a zarr read that failed.

A damaged chunk makes its codec fail with a message that names neither the chunk nor
the array ("Zstd decompression error: invalid input data"). When a read of a region
fails, :func:`damaged_chunk_error` reads the region's stored chunks one at a time to
find the ones that fail, and returns an error naming them, their files and the array.
This runs only after a failure: a good read costs nothing more.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiledseg.errors import DamagedChunkError

__all__ = ["DamagedChunkError", "damaged_chunk_error"]

#: How many damaged chunks a message names (the others are counted).
_NAMED = 3


def damaged_chunk_error(
    array: Any, starts: Sequence[int], stops: Sequence[int], exc: Exception
) -> DamagedChunkError | None:
    """Return an error naming the chunks of a region that cannot be read, if any.

    Parameters
    ----------
    array : zarr.Array
        The array whose read of the region failed.
    starts, stops : sequence of int
        The region, per axis of ``array``.
    exc : Exception
        The error of the failed read (given when no single chunk fails).

    Returns
    -------
    DamagedChunkError or None
        The error naming the array, the chunk keys and files that fail, and the first
        chunk's error; ``None`` if each chunk reads on its own (the failure was not a
        chunk's) or the array's chunk grid is not regular.
    """
    grid = getattr(getattr(array.metadata, "chunk_grid", None), "chunk_shape", None)
    if grid is None:
        return None
    ranges = [range(a // c, -(-b // c)) for a, b, c in zip(starts, stops, grid, strict=True)]
    failed: list[tuple[str, Exception]] = []
    for position in itertools.product(*ranges):
        lo = [p * c for p, c in zip(position, grid, strict=True)]
        hi = [min(a + c, n) for a, c, n in zip(lo, grid, array.shape, strict=True)]
        try:
            array[tuple(map(slice, lo, hi))]
        except MemoryError:
            raise
        except Exception as error:  # the codec's or the store's error, whatever its type
            failed.append((array.metadata.encode_chunk_key(position), error))
    if not failed:
        return None
    return DamagedChunkError(_message(array, failed))


def _message(array: Any, failed: list[tuple[str, Exception]]) -> str:
    """Return the one line naming the failed chunks, their files and the first error."""
    root = _array_location(array)
    named = [f"{key} (file {_join(root, key)})" for key, _ in failed[:_NAMED]]
    more = f" and {len(failed) - _NAMED} more" if len(failed) > _NAMED else ""
    what = f"chunk {named[0]}" if len(failed) == 1 else f"chunks {', '.join(named)}{more}"
    first = failed[0][1]
    said = " ".join(str(first).split())[:200] or "no message"
    that = "that chunk" if len(failed) == 1 else "those chunks"
    return (
        f"cannot read {what} of array {root}: {type(first).__name__}: {said}; the store may "
        f"be damaged there: rewrite {that} or the array"
    )


def _array_location(array: Any) -> str:
    """Return where the array is stored: a folder for a local store, else the store's URL."""
    store_path = array.store_path
    root = getattr(store_path.store, "root", None)
    if isinstance(root, Path | str):
        return str(Path(root, store_path.path)) if store_path.path else str(root)
    return str(store_path)


def _join(root: str, key: str) -> str:
    """Return the file (or URL) of a chunk key under the array's location."""
    return f"{root.rstrip('/')}/{key}"
