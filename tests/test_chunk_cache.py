"""The chunk cache of training's reads: each stored chunk decoded once, bytes bounded, same bits.

Reads are counted on a real zarr store on disk, through a store that wraps it and counts
the chunk keys it is asked for (each get is one chunk read and decoded).
"""

from __future__ import annotations

import pickle
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from zarr.storage import LocalStore, WrapperStore

import tiledseg as ts
from tiledseg.blocks import resolve_block
from tiledseg.chunk_cache import (
    CHUNK_CACHE_ENV,
    ChunkCache,
    chunk_cache_bytes,
    release,
    run_cache,
)
from tiledseg.cluster import open_executor
from tiledseg.errors import TiledsegError
from tiledseg.training import training_table
from tiledseg.volume import chunk_cacheable, open_volume, with_chunk_cache, with_extra_channels

BANK = {"gaussian_smoothing": [0.7, 1.6], "gaussian_gradient_magnitude": [1.0]}
SHAPE = (40, 48, 44)
CHUNKS = (16, 16, 16)


class CountingStore(WrapperStore):
    """A store that counts the gets of each chunk key (zarr v3 keys start with ``c/``),
    as ``"folder/key"``."""

    def __init__(self, store, counts: Counter):
        super().__init__(store)
        self.counts = counts

    def _with_store(self, store):
        return type(self)(store, self.counts)

    async def get(self, key, prototype, byte_range=None):
        if key.startswith("c/"):
            self.counts[f"{Path(str(self._store.root)).name}/{key}"] += 1
        return await super().get(key, prototype, byte_range)


def _write(path: Path, data: np.ndarray, chunks=CHUNKS) -> Path:
    array = zarr.create_array(store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype)
    array[...] = data
    return path


def _counted(path: Path, counts: Counter) -> zarr.Array:
    return zarr.open_array(CountingStore(LocalStore(path, read_only=True), counts), mode="r")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict:
    """A noisy image and an extra channel as zarr (16³ chunks), with many small strokes."""
    rng = np.random.default_rng(3)
    image = rng.normal(size=SHAPE).astype(np.float32)
    extra = rng.normal(size=SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    # short strokes on every fourth plane, far apart in y: one box each
    for z in range(2, SHAPE[0], 4):
        for i, y in enumerate(range(3, SHAPE[1], 14)):
            x = int(rng.integers(0, SHAPE[2] - 6))
            labels[z, y, x : x + 5] = 1 + (i + z) % 2
    folder = tmp_path_factory.mktemp("chunk-cache")
    return {
        "image": _write(folder / "image.zarr", image),
        "extra": _write(folder / "extra.zarr", extra),
        "labels": labels,
        "image_data": image,
    }


def _table(image, labels, *, chunk_cache, cache_dir=None, block=(16, 24, 24)):
    bank = ts.resolve_bank(BANK)
    volume = open_volume(image) if not isinstance(image, ts.Volume) else image
    shape = resolve_block(block, shape=volume.shape, halo=bank.halo(volume.spacing))
    with open_executor(quiet=True) as executor:
        return training_table(
            volume,
            open_volume(labels, role="labels"),
            bank=bank,
            block=shape,
            executor=executor,
            cache_dir=cache_dir,
            chunk_cache=chunk_cache,
        )


@pytest.mark.parametrize("hashed", [False, True], ids=["no table cache", "table cache"])
def test_each_chunk_is_read_once_in_a_training_run_with_many_boxes(stores, tmp_path, hashed):
    """Without the cache, boxes decode the chunks they share again (and the table cache's
    hash reads every box once more); with it, each chunk of image and extra is read once."""
    reads = {}
    for cached in (0, 64 << 20):
        counts = Counter()
        volume = with_extra_channels(
            open_volume(_counted(stores["image"], counts)), [_counted(stores["extra"], counts)]
        )
        cache_dir = tmp_path / f"tables-{cached}" if hashed else None
        table = _table(volume, stores["labels"], chunk_cache=cached, cache_dir=cache_dir)
        reads[cached] = counts
    assert len(table.scans) >= 40  # many boxes
    assert max(reads[0].values()) > 2  # the case the cache is for
    assert len(reads[0]) == 2 * 27  # every chunk of both stores is needed
    assert set(reads[64 << 20]) == set(reads[0])  # the same chunks are read...
    assert max(reads[64 << 20].values()) == 1  # ...once each


def test_the_table_is_the_same_bits_with_and_without_the_cache(stores, tmp_path):
    """Paths opened lazily (image and extra channel), a small cache that evicts, none."""
    tables = {}
    for cached in (0, 3 * 16**3 * 4, 64 << 20):
        volume = with_extra_channels(open_volume(str(stores["image"])), [str(stores["extra"])])
        tables[cached] = _table(
            volume, stores["labels"], chunk_cache=cached, cache_dir=tmp_path / str(cached)
        )
    first = tables[0]
    for table in tables.values():
        assert_array_equal(table.X, first.X)
        assert_array_equal(table.y, first.y)
        assert_array_equal(table.coords, first.coords)
        assert table.key == first.key  # the cache key hashes the same image


def test_a_trained_model_is_the_same_with_and_without_the_cache(stores, monkeypatch):
    models = []
    for cached in ("0", str(64 << 20)):
        monkeypatch.setenv(CHUNK_CACHE_ENV, cached)
        model = ts.train(
            str(stores["image"]),
            stores["labels"],
            features=BANK,
            extra_channels=[str(stores["extra"])],
            cache_dir=None,
            spacing=(1, 1, 1),
        )
        models.append(model)
    n_features = models[0].summary["n_features"]
    probe = np.random.default_rng(0).normal(size=(64, n_features)).astype(np.float32)
    assert_array_equal(
        models[0].classifier.predict_proba(probe), models[1].classifier.predict_proba(probe)
    )


def test_the_byte_bound_is_kept_by_evicting_the_least_recently_used(stores):
    counts = Counter()
    chunk_bytes = 16**3 * 4
    cache = ChunkCache(3 * chunk_bytes)
    volume = with_chunk_cache(open_volume(_counted(stores["image"], counts)), cache)
    region = (slice(0, 40), slice(0, 48), slice(0, 44))  # every chunk (3 x 3 x 3)
    assert_array_equal(volume.read(region)[0], stores["image_data"])
    stats = cache.stats()
    assert stats["misses"] == 27
    assert sum(counts.values()) == 27
    assert stats["peak_bytes"] <= 3 * chunk_bytes
    assert stats["bytes"] <= 3 * chunk_bytes
    assert stats["evictions"] == 27 - stats["chunks"] > 0  # (edge chunks are smaller)
    # the last chunk read is still held; the first was evicted and is read again
    last = (slice(32, 40), slice(32, 48), slice(32, 44))
    volume.read(last)
    assert counts["image.zarr/c/2/2/2"] == 1
    volume.read((slice(0, 4), slice(0, 4), slice(0, 4)))
    assert counts["image.zarr/c/0/0/0"] == 2


def test_a_chunk_larger_than_the_bound_is_read_but_not_kept(stores):
    cache = ChunkCache(100)
    volume = with_chunk_cache(open_volume(str(stores["image"])), cache)
    region = (slice(3, 20), slice(5, 30), slice(0, 7))
    assert_array_equal(volume.read(region)[0], stores["image_data"][region])
    assert cache.stats()["bytes"] == 0
    assert cache.stats()["chunks"] == 0


@pytest.mark.parametrize("max_bytes", [1 << 30, 5 * 16**3 * 4], ids=["holds all", "evicts"])
def test_threads_reading_through_one_cache(stores, max_bytes):
    """Many threads, overlapping regions: right values, each chunk decoded once when it
    fits (a chunk two threads want at once is decoded by one), the bound kept."""
    counts = Counter()
    cache = ChunkCache(max_bytes)
    volume = with_chunk_cache(open_volume(_counted(stores["image"], counts)), cache)
    rng = np.random.default_rng(11)
    regions = []
    for _ in range(200):
        lo = rng.integers(0, np.subtract(SHAPE, 1))
        hi = lo + rng.integers(1, 24, size=3)
        regions.append(
            tuple(slice(int(a), int(min(b, n))) for a, b, n in zip(lo, hi, SHAPE, strict=True))
        )
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda r: volume.read(r)[0], regions))
    for region, got in zip(regions, results, strict=True):
        assert_array_equal(got, stores["image_data"][region])
    stats = cache.stats()
    assert stats["peak_bytes"] <= max_bytes
    assert stats["misses"] == sum(counts.values())
    if max_bytes == 1 << 30:
        assert max(counts.values()) == 1


def test_integer_and_strided_indices_read_the_stored_values(stores):
    cache = ChunkCache(1 << 20)
    array = zarr.open_array(stores["image"], mode="r")
    volume = with_chunk_cache(open_volume(array), cache)
    source, data = volume.source, stores["image_data"]
    assert_array_equal(source[5, 3:40, -1], data[5, 3:40, -1])
    assert_array_equal(source[-3], data[-3])
    assert_array_equal(source[::2, 1:9, 4], data[::2, 1:9, 4])  # read from the store as is
    assert source[3:9, :, 1:2].flags.writeable  # the caller's copy, not the cache's chunk


def test_unchunked_sources_are_left_as_they_are(stores, tmp_path):
    np.save(tmp_path / "image.npy", stores["image_data"])
    cache = ChunkCache(1 << 20)
    for image in (stores["image_data"], str(tmp_path / "image.npy")):
        volume = open_volume(image)
        assert not chunk_cacheable(volume)
        assert with_chunk_cache(volume, cache) is volume
    zarr_volume = with_chunk_cache(open_volume(str(stores["image"])), cache)
    assert not chunk_cacheable(zarr_volume)  # already through one
    assert with_chunk_cache(zarr_volume, ChunkCache(1 << 20)) is zarr_volume
    # an npy image with a zarr extra channel: only the extra is cached
    both = with_extra_channels(open_volume(str(tmp_path / "image.npy")), [str(stores["extra"])])
    assert chunk_cacheable(both)
    assert not chunk_cacheable(with_chunk_cache(both, cache))


def test_a_pickled_volume_finds_its_runs_cache_in_the_process(stores):
    """What a dask worker does: the cache travels by the run's name, not with its chunks."""
    with run_cache(1 << 20) as cache:
        volume = with_chunk_cache(open_volume(str(stores["image"])), cache)
        volume.read((slice(0, 4),) * 3)
        sent = pickle.dumps(volume)
        assert len(sent) < 4096
        copy = pickle.loads(sent)
        assert copy.source.cache is cache
        copy.read((slice(0, 4),) * 3)
        assert cache.stats()["misses"] == 1
        assert cache.stats()["hits"] == 1
    after = pickle.loads(sent)  # after the run: a new, empty cache of that run
    assert after.source.cache is not cache
    assert after.source.cache.stats()["chunks"] == 0
    release(cache.run)


def test_the_bound_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(CHUNK_CACHE_ENV, raising=False)
    assert chunk_cache_bytes() == 512 << 20
    monkeypatch.setenv(CHUNK_CACHE_ENV, "1000")
    assert chunk_cache_bytes() == 1000
    assert chunk_cache_bytes(0) == 0
    for bad in ("lots", "-1"):
        monkeypatch.setenv(CHUNK_CACHE_ENV, bad)
        with pytest.raises(TiledsegError, match=CHUNK_CACHE_ENV):
            chunk_cache_bytes()


@pytest.mark.slow
def test_each_worker_process_has_its_own_cache_of_the_run(stores):
    """On a cluster a task finds its worker's cache of the run (each chunk decoded at most
    once per worker, whatever task reads it), and the run's end forgets every worker's."""
    import logging

    from distributed import Client, LocalCluster

    def read(item):  # nested: sent by value, the workers cannot import this module
        import os

        volume, region = item
        volume.read(region)
        return os.getpid(), volume.source.cache.stats()["misses"]

    def held():
        from tiledseg import chunk_cache

        return len(chunk_cache._runs)

    region = (slice(3, 30), slice(0, 20), slice(10, 30))  # 2 x 2 x 2 chunks
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        with run_cache(1 << 26, client) as cache:
            volume = with_chunk_cache(open_volume(str(stores["image"])), cache)
            futures = client.map(read, [(volume, region)] * 16, pure=False)
            results = client.gather(futures)
            assert set(client.run(held).values()) == {1}
        assert set(client.run(held).values()) == {0}
    misses = {}
    for pid, count in results:
        misses[pid] = max(misses.get(pid, 0), count)
    assert all(count == 8 for count in misses.values())  # each worker decoded the 8 once


@pytest.mark.parametrize("kind", ["hdf5", "tiff"])
def test_other_chunked_stores_read_the_same_values_through_the_cache(stores, tmp_path, kind):
    data = stores["image_data"]
    if kind == "hdf5":
        h5py = pytest.importorskip("h5py")
        path = tmp_path / "image.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("image", data=data, chunks=(8, 16, 16), compression="gzip")
    else:
        tifffile = pytest.importorskip("tifffile")
        path = tmp_path / "image.tif"
        tifffile.imwrite(path, data, tile=(16, 16), compression="zlib")
    volume = open_volume(str(path))
    assert chunk_cacheable(volume)
    cache = ChunkCache(1 << 24)
    cached = with_chunk_cache(volume, cache)
    region = (slice(3, 31), slice(5, 40), slice(0, 29))
    for _ in range(2):
        assert_array_equal(cached.read(region), volume.read(region))
    assert cache.stats()["hits"] == cache.stats()["misses"] > 0
    volume.source.close()


def test_chunks_larger_than_half_the_cache_are_read_directly(stores):
    # such a chunk (16³ float32: 16 KiB) would be decoded whole for every box and hardly
    # ever kept
    volume = open_volume(str(stores["image"]))
    assert with_chunk_cache(volume, ChunkCache(16 * 16**3 * 4)) is not volume
    assert with_chunk_cache(volume, ChunkCache(16**3 * 4)) is volume
