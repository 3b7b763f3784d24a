"""``Executor.map`` in bounded waves: order, errors, lost tasks, progress, shared objects."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tiledseg import cluster as cluster_module
from tiledseg.cluster import Executor

#: Items per test: many times the in-flight bound the tests set.
N_ITEMS = 60


class Counted:
    """An object that appends a line to ``path`` each time it is unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")


def doubled(args: tuple) -> int:
    """``2 * i``; later items finish first now and then, so completion is out of order."""
    i = args[0]
    time.sleep(0.004 * (i % 3 == 0))
    return 2 * i


def fails_at(args: tuple) -> int:
    """``i``, or a ValueError for the items whose index is in ``args[1]``."""
    i, bad = args[0], args[1]
    if i in bad:
        raise ValueError(f"item {i} fails")
    return i


def kills_its_worker_at(args: tuple) -> int:
    """``i``, but item ``args[1]`` ends its worker process (the cluster loses the task)."""
    i, fatal = args
    if i == fatal:
        os._exit(1)
    return i


def uses_shared(args: tuple) -> int:
    shared, i, label = args
    assert isinstance(shared, Counted)
    assert label == "plain"
    return i


class Bar:
    """Records what :meth:`Executor.map` tells its progress bar."""

    def __init__(self, total: int):
        self.total, self.n = total, 0

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        pass


@pytest.fixture
def small_waves(monkeypatch):
    """In-flight bound of 4 items: N_ITEMS is many waves."""
    monkeypatch.setattr(cluster_module, "MIN_IN_FLIGHT", 4)
    monkeypatch.setattr(cluster_module, "IN_FLIGHT_PER_THREAD", 1)


@pytest.fixture
def bars(monkeypatch):
    made: list[Bar] = []

    def progress(total, desc, *, disable):
        made.append(Bar(total))
        return made[-1]

    monkeypatch.setattr(cluster_module, "_progress", progress)
    return made


@pytest.fixture(scope="module")
def client():
    """2 single-threaded worker processes; a task whose worker dies is lost at once."""
    import dask
    from distributed import Client, LocalCluster

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(params=["threads", "cluster"])
def executor(request, small_waves):
    if request.param == "threads":
        return Executor(n_workers=2, quiet=True)
    return Executor(client=request.getfixturevalue("client"), n_workers=2, quiet=True)


def test_the_bound_is_smaller_than_the_items(small_waves):
    assert Executor(n_workers=2).in_flight() == 4 < N_ITEMS


def test_results_come_in_item_order_and_progress_counts_every_item(executor, bars):
    items = [(i,) for i in range(N_ITEMS)]
    assert executor.map(doubled, items, desc="x") == [2 * i for i in range(N_ITEMS)]
    assert [(b.total, b.n) for b in bars] == [(N_ITEMS, N_ITEMS)]


def test_the_first_error_is_raised_without_on_error(executor):
    items = [(i, {41}) for i in range(N_ITEMS)]
    with pytest.raises(ValueError, match="item 41 fails"):
        executor.map(fails_at, items, desc="x")


def test_the_executor_runs_on_after_an_error(executor):
    """Items dropped after an error leave nothing behind that breaks the next map."""
    with pytest.raises(ValueError, match="item 3 fails"):
        executor.map(fails_at, [(i, {3}) for i in range(N_ITEMS)], desc="x")
    assert executor.map(doubled, [(i,) for i in range(10)], desc="x") == list(range(0, 20, 2))


def test_on_error_stands_in_for_failed_tasks_on_a_cluster(client, small_waves, bars):
    executor = Executor(client=client, n_workers=2, quiet=True)
    items = [(i, {7, 50}) for i in range(N_ITEMS)]
    got = executor.map(
        fails_at, items, desc="x", on_error=lambda i, exc: f"{i}: {type(exc).__name__}"
    )
    expected = [i for i in range(N_ITEMS)]
    expected[7], expected[50] = "7: ValueError", "50: ValueError"
    assert got == expected
    assert [(b.total, b.n) for b in bars] == [(N_ITEMS, N_ITEMS)]


def test_on_error_stands_in_for_a_task_whose_worker_died(client, small_waves):
    from distributed import KilledWorker

    executor = Executor(client=client, n_workers=2, quiet=True)
    lost: list[tuple[int, BaseException]] = []

    def on_error(i, exc):
        lost.append((i, exc))
        return -1

    items = [(i, 23) for i in range(N_ITEMS)]
    got = executor.map(kills_its_worker_at, items, desc="x", on_error=on_error)
    # a task queued on the same worker may be lost with it: on_error stands in for it too
    assert 23 in {i for i, _ in lost}
    assert all(isinstance(exc, KilledWorker) for _, exc in lost)
    stood_in = {i for i, _ in lost}
    assert got == [-1 if i in stood_in else i for i in range(N_ITEMS)]
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it, for the tests after


def test_an_object_shared_by_every_item_is_unpickled_once_per_worker(client, tmp_path):
    executor = Executor(client=client, n_workers=2, quiet=True)
    log = tmp_path / "unpickled.txt"
    shared = Counted(log)
    items = [(shared, i, "plain") for i in range(N_ITEMS)]
    assert executor.map(uses_shared, items, desc="x") == list(range(N_ITEMS))
    loads = log.read_text().split()
    # once in each process that needs it (the scheduler, here, and the 2 workers), not once
    # per item as when it rode with each item's task
    assert len(loads) == len(set(loads)) <= 3


def test_elements_that_differ_between_items_are_not_shared():
    class FakeClient:
        def submit(self, func, value, pure):
            return ("future", value)

    a, b = Counted(Path("a")), Counted(Path("b"))
    assert cluster_module._share(FakeClient(), [(a, 1), (b, 1)]).positions == {}
    assert cluster_module._share(FakeClient(), [(a, 1), (a, 2)]).positions == {0: ("future", a)}
    assert cluster_module._share(FakeClient(), [[a], [a]]).positions == {}
    assert cluster_module._share(FakeClient(), [(a,)]).positions == {}
