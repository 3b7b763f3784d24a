"""Lazy block plans: a plan computed from its grid, items drawn a wave at a time, and a
``predict`` that never holds every block (issue 15: the driver's memory stays flat)."""

from __future__ import annotations

import itertools
import weakref
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tiledseg as ts
from tiledseg import blocks as blocks_module
from tiledseg import cluster as cluster_module
from tiledseg.blocks import Block, BlockPlan, haloed, plan_blocks, resolve_block
from tiledseg.cluster import Executor
from tiledseg.testing import strategies as tst

#: Items per test: many times the in-flight bound the tests set.
N_ITEMS = 60


def identity(args: tuple) -> int:
    return args[0]


def fails_at(args: tuple) -> int:
    i, bad = args[0], args[1]
    if i in bad:
        raise ValueError(f"item {i} fails")
    return i


# -- BlockPlan -------------------------------------------------------------------------------


@st.composite
def grids_and_rois(draw):
    shape = draw(tst.shapes(min_side=1, max_side=30))
    halo = tuple(draw(st.integers(0, 8)) for _ in shape)
    block = resolve_block(draw(tst.block_shapes(shape, halo)), shape=shape, halo=halo)
    roi = None
    if draw(st.booleans()):
        roi = []
        for n in shape:
            start = draw(st.integers(0, n - 1))
            roi.append(slice(start, draw(st.integers(start + 1, n))))
        roi = tuple(roi)
    return shape, block, halo, roi


def every_block(shape, block, halo, roi) -> list[Block]:
    """The plan, the slow way: every block of the grid, kept where it meets ``roi``."""
    inside = np.ones(shape, dtype=bool)
    if roi is not None:
        inside[...] = False
        inside[roi] = True
    found = []
    for index in itertools.product(*(range(-(-n // b)) for n, b in zip(shape, block, strict=True))):
        region = tuple(
            slice(i * b, min(n, (i + 1) * b)) for i, b, n in zip(index, block, shape, strict=True)
        )
        if inside[region].any():
            found.append(Block(index, region, haloed(region, halo, shape)))
    return found


@given(grid=grids_and_rois())
def test_a_plan_is_the_grid_blocks_meeting_the_roi_in_grid_order(grid):
    shape, block, halo, roi = grid
    plan = BlockPlan(shape, block, halo, roi=roi)
    expected = every_block(shape, block, halo, roi)
    assert list(plan) == expected == plan_blocks(shape, block, halo, roi=roi)
    assert list(plan) == expected, "a plan can be gone over again"
    assert len(plan) == len(expected)
    kept = {b.index for b in expected}
    for index in itertools.product(
        *(range(-1, -(-n // b) + 1) for n, b in zip(shape, block, strict=True))
    ):
        assert (index in plan) == (index in kept)
    assert (0,) * (len(shape) + 1) not in plan


def test_a_plan_of_a_million_blocks_makes_none_until_iterated():
    plan = BlockPlan((16_000, 16_000), (16, 16), (12, 12))
    assert len(plan) == 10**6
    assert (999, 999) in plan
    assert (1000, 0) not in plan
    assert next(iter(plan)).index == (0, 0)
    assert plan.block_at((999, 999)).region == (slice(15984, 16000), slice(15984, 16000))


# -- Executor.imap draws its items a wave at a time ------------------------------------------


@pytest.fixture
def small_waves(monkeypatch):
    """In-flight bound of 4 items: N_ITEMS is many waves."""
    monkeypatch.setattr(cluster_module, "MIN_IN_FLIGHT", 4)
    monkeypatch.setattr(cluster_module, "IN_FLIGHT_PER_THREAD", 2)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(params=["threads", "cluster"])
def executor(request, small_waves):
    if request.param == "threads":
        return Executor(n_workers=2, quiet=True)
    return Executor(client=request.getfixturevalue("client"), n_workers=2, quiet=True)


class Drawn:
    """An iterator of ``(i,)`` items that counts how many have been drawn from it."""

    def __init__(self, n: int, *rest):
        self.n, self.rest, self.drawn = n, rest, 0

    def __iter__(self):
        for i in range(self.n):
            self.drawn += 1
            yield (i, *self.rest)


def test_items_are_drawn_at_most_a_wave_ahead_of_the_results(executor):
    bound = 4  # in_flight() on a cluster; 2 per thread x 2 threads here
    items = Drawn(N_ITEMS)
    ahead, got = [], {}
    for i, value in executor.imap(identity, iter(items), desc="x", total=N_ITEMS):
        got[i] = value
        ahead.append(items.drawn - len(got))
    assert got == {i: i for i in range(N_ITEMS)}
    # a materialising map would have drawn all 60 before the first result
    assert max(ahead) <= bound < N_ITEMS
    assert items.drawn == N_ITEMS


def test_map_takes_an_iterator_and_keeps_the_item_order(executor):
    assert executor.map(identity, iter(Drawn(N_ITEMS)), desc="x") == list(range(N_ITEMS))
    assert executor.map(identity, iter([]), desc="x") == []


def test_imap_gives_on_error_the_item_it_no_longer_holds(client, small_waves):
    executor = Executor(client=client, n_workers=2, quiet=True)
    bad = frozenset({7, 50})
    found = dict(
        executor.imap(
            fails_at,
            iter(Drawn(N_ITEMS, bad)),
            desc="x",
            on_error=lambda i, item, exc: (i, item, type(exc).__name__),
        )
    )
    assert found == {i: (i, (i, bad), "ValueError") if i in bad else i for i in range(N_ITEMS)}


def test_a_later_item_holding_another_object_sends_its_own():
    class FakeClient:
        def submit(self, func, value, pure):
            return ("future", value)

    a, b = object(), object()
    put = cluster_module._share(FakeClient(), [(a, 1), (a, 2)])
    assert put((a, 3)) == (("future", a), 3)
    assert put((b, 3)) == (b, 3)
    assert put([a]) == [a]
    put.release()
    assert put((a, 3)) == (a, 3)


# -- predict ---------------------------------------------------------------------------------


def test_predict_never_holds_every_block(tmp_path, monkeypatch, phantom2d, model2d):
    """Blocks are made as their tasks are submitted, and let go when they are done: at any
    result, the blocks alive and the tasks drawn ahead are a wave's, not the plan's."""
    monkeypatch.setattr(cluster_module, "IN_FLIGHT_PER_THREAD", 1)
    alive = [0]  # blocks made and not yet collected (a Block is unhashable: no WeakSet)
    block_at = BlockPlan.block_at

    def gone() -> None:
        alive[0] -= 1

    def tracked(self, index):
        made = block_at(self, index)
        alive[0] += 1
        weakref.finalize(made, gone)
        return made

    monkeypatch.setattr(blocks_module.BlockPlan, "block_at", tracked)
    imap = Executor.imap
    seen: dict[str, list[int]] = {"alive": [], "ahead": []}

    def watched(self, func, items, **kwargs):
        drawn = 0

        def counted():
            nonlocal drawn
            for item in items:
                drawn += 1
                yield item

        for n, pair in enumerate(imap(self, func, counted(), **kwargs), start=1):
            if func.__name__ == "_guarded_call":
                seen["alive"].append(alive[0])
                seen["ahead"].append(drawn - n)
            yield pair

    monkeypatch.setattr(Executor, "imap", watched)
    shape = phantom2d.image.shape
    result = ts.predict(phantom2d.image, model2d, out=tmp_path / "a.zarr", block=(8, 8))
    n_blocks = 6 * 5
    assert (result.blocks, result.voxels) == (n_blocks, int(np.prod(shape)))
    assert len(seen["ahead"]) == n_blocks
    bound = max(2, cluster_module.available_cores())
    assert max(seen["ahead"]) <= bound
    # the blocks in flight, and a few more a worker thread has not yet let go of
    assert max(seen["alive"]) <= 2 * bound + 2 < n_blocks
    assert Path(result.path, "labels").is_dir()
