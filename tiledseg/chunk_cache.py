"""A cache of decoded storage chunks, bounded in bytes, for the reads of one training run.

Training reads a box around each group of scribbles, each with its halo, and reads it
twice (once to hash it for the table cache's key, once to make its features). Boxes
are small next to a zarr chunk and neighbouring boxes share chunks, so without a cache
every read decodes every chunk it touches again: 746 boxes over a 256³ volume with
64³ chunks decoded each chunk of an extra channel 58 times on average. Reading through
a :class:`ChunkCache` decodes each chunk once per run as long as the chunks a run
touches fit in the cache; beyond that the least recently used chunks are evicted and
may be decoded again, never more than the bound is held.

One cache serves one run (training makes one per table it builds); :func:`run_cache`
makes it and forgets it when the run ends.
On a dask cluster a cache travels by name: a task that unpickles one gets its worker
process's cache of the same run (made on first use, with the same bound), so each
worker process decodes a chunk at most once and holds at most the bound; the run
forgets the workers' caches at its end through the client.

The bound is :data:`DEFAULT_CHUNK_CACHE_BYTES`, or ``$TILEDSEG_CHUNK_CACHE_BYTES``
(bytes; ``0`` reads without a cache).
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np

from tiledseg.errors import TiledsegError

__all__ = [
    "CHUNK_CACHE_ENV",
    "DEFAULT_CHUNK_CACHE_BYTES",
    "ChunkCache",
    "chunk_cache_bytes",
    "release",
    "run_cache",
]

#: The bound of a training run's chunk cache per process, unless the environment says
#: otherwise. 512 MiB holds every chunk of a 256³ float32 image with two extra channels
#: (192 MiB), or two 64-plane slabs of chunks of a 500³ one (3 × 2 × 61 MiB): what one
#: row of blocks (visited in C order) shares with the next.
DEFAULT_CHUNK_CACHE_BYTES = 512 << 20

#: The environment variable that sets the bound in bytes (``0``: no cache).
CHUNK_CACHE_ENV = "TILEDSEG_CHUNK_CACHE_BYTES"

# caches of runs a worker process has seen: their drivers normally forget them, and
# this many are kept at most should a driver die first (a dropped cache only costs reads)
_MAX_RUNS = 4
_runs: OrderedDict[str, ChunkCache] = OrderedDict()
_runs_lock = threading.Lock()


def chunk_cache_bytes(value: int | str | None = None) -> int:
    """Return the cache bound in bytes.

    ``value``, else ``$TILEDSEG_CHUNK_CACHE_BYTES``, else the default.

    Raises
    ------
    TiledsegError
        For a bound that is not a non-negative whole number of bytes.
    """
    source = "chunk cache size"
    if value is None:
        value = os.environ.get(CHUNK_CACHE_ENV)
        source = f"${CHUNK_CACHE_ENV}"
        if value is None or not str(value).strip():
            return DEFAULT_CHUNK_CACHE_BYTES
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise TiledsegError(
            f"{source} {value!r} must be a whole number of bytes, e.g. {512 << 20} for "
            "512 MiB, or 0 to read without a chunk cache"
        )
    return number


class _Loading:
    """A chunk one thread is decoding; the others that want it wait for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: np.ndarray | None = None


class ChunkCache:
    """Decoded chunks, least recently used first out, at most ``max_bytes`` of them.

    Thread-safe: a chunk two threads want at once is decoded by one while the other
    waits. Values are returned read-only (callers copy what they keep).

    Parameters
    ----------
    max_bytes : int
        Bound on the bytes of the chunks held; a chunk larger than it is returned
        without being kept.
    run : str, optional
        The name a pickled cache is found by in another process (a new one by default).
    """

    def __init__(self, max_bytes: int, *, run: str | None = None):
        self.max_bytes = int(max_bytes)
        self.run = run or uuid.uuid4().hex
        self._chunks: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._loading: dict[Hashable, _Loading] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.peak_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __reduce__(self) -> tuple[Callable[..., ChunkCache], tuple[str, int]]:
        """Pickle the run and the bound, not the chunks."""
        # the chunks stay where they are: another process gets its own cache of the run
        return _cache_of_run, (self.run, self.max_bytes)

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the chunk ``key``, calling ``load()`` to decode it if it is not held."""
        with self._lock:
            value = self._chunks.get(key)
            if value is not None:
                self._chunks.move_to_end(key)
                self.hits += 1
                return value
            loading = self._loading.get(key)
            mine = loading is None
            if mine:
                loading = self._loading[key] = _Loading()
        if not mine:
            loading.done.wait()
            if loading.value is not None:
                with self._lock:
                    self.hits += 1
                return loading.value
            return self.get(key, load)  # its loader failed: try (and fail) here
        try:
            value = np.asarray(load())
            value.flags.writeable = False
            loading.value = value
        finally:
            with self._lock:
                del self._loading[key]
                if loading.value is not None:
                    self.misses += 1
                    self._keep(key, loading.value)
            loading.done.set()
        return value

    def _keep(self, key: Hashable, value: np.ndarray) -> None:
        """Hold ``value``, evicting the least recently used chunks past the bound (locked)."""
        if value.nbytes > self.max_bytes:
            return
        self._chunks[key] = value
        self.nbytes += value.nbytes
        while self.nbytes > self.max_bytes:
            _, old = self._chunks.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evictions += 1
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def stats(self) -> dict[str, int]:
        """Hits, misses (chunks decoded), evictions, bytes held now and at most, and the bound."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "chunks": len(self._chunks),
                "bytes": self.nbytes,
                "peak_bytes": self.peak_bytes,
                "max_bytes": self.max_bytes,
            }

    def clear(self) -> None:
        """Drop every chunk held (the counts stay)."""
        with self._lock:
            self._chunks.clear()
            self.nbytes = 0


def _cache_of_run(run: str, max_bytes: int) -> ChunkCache:
    """Return this process's cache of ``run``, made on first use (how a pickled cache arrives)."""
    with _runs_lock:
        cache = _runs.get(run)
        if cache is None:
            cache = _runs[run] = ChunkCache(max_bytes, run=run)
            while len(_runs) > _MAX_RUNS:
                _runs.popitem(last=False)[1].clear()
        return cache


def release(run: str) -> None:
    """Forget this process's cache of ``run`` and its chunks (nothing if there is none)."""
    with _runs_lock:
        cache = _runs.pop(run, None)
    if cache is not None:
        cache.clear()


@contextlib.contextmanager
def run_cache(max_bytes: int, client: Any = None) -> Iterator[ChunkCache]:
    """Yield a new chunk cache for one run, forgotten here and on ``client``'s workers at its end.

    Parameters
    ----------
    max_bytes : int
        The bound per process.
    client : distributed.Client, optional
        The run's cluster, whose workers may hold caches of the run.
    """
    cache = ChunkCache(max_bytes)
    with _runs_lock:
        _runs[cache.run] = cache  # a copy unpickled in this process finds this one
    try:
        yield cache
    finally:
        release(cache.run)
        if client is not None:
            # a worker that is gone took its cache with it; a failed release only leaves
            # memory that the bound of _MAX_RUNS caches gives back later
            with contextlib.suppress(Exception):
                client.run(release, cache.run)
