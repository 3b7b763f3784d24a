"""Where block tasks run: dask's threaded scheduler or a dask.distributed cluster.

Both executors run one Python function per block and return the results in
block order, with a progress bar on stderr. The threaded scheduler is the
default: scipy, numpy and XGBoost release the GIL, and it beat a 2-process
LocalCluster by 17-20% on 2 cores (../shared/reference/performance-notes.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tiledseg.errors import TiledsegError

__all__ = ["Executor", "available_cores", "open_executor"]


def available_cores() -> int:
    """Return the number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Executor:
    """Runs a function over items on dask and reports progress.

    Parameters
    ----------
    client : distributed.Client or None
        ``None`` runs on dask's threaded scheduler with ``n_workers`` threads.
    n_workers : int
        Tasks that run at the same time.
    quiet : bool
        No progress bar.
    """

    def __init__(self, *, client: Any = None, n_workers: int, quiet: bool = False):
        self.client = client
        self.n_workers = max(1, int(n_workers))
        self.quiet = quiet

    def threads_per_task(self, n_tasks: int) -> int:
        """Threads a task may give to XGBoost when ``n_tasks`` tasks share the cores."""
        if self.client is not None:
            return 1
        return max(1, available_cores() // max(1, min(self.n_workers, n_tasks)))

    def map(self, func: Callable, items: Sequence[Any], *, desc: str) -> list[Any]:
        """Run ``func(item)`` for every item and return the results in order."""
        import dask

        tasks = [dask.delayed(func, pure=False)(item) for item in items]
        return self.compute(tasks, desc=desc)

    def compute(self, tasks: Sequence[Any], *, desc: str) -> list[Any]:
        """Compute dask delayed objects (and the graph behind them); results in order.

        The progress bar counts ``tasks``, not the intermediate steps they need.
        """
        if not tasks:
            return []
        with self.progress(len(tasks), desc) as bar:
            if self.client is None:
                return self._compute_threads(tasks, bar)
            return self._compute_distributed(tasks, bar)

    @contextlib.contextmanager
    def progress(self, total: int, desc: str) -> Iterator[Any]:
        """A progress bar (tqdm) over ``total`` items; silent when quiet."""
        bar = _progress(total, desc, disable=self.quiet)
        try:
            yield bar
        finally:
            bar.close()

    def persist(self, tasks: Sequence[Any]) -> list[Any]:
        """Compute dask delayed objects and return them persisted (results held in memory
        here, or on the workers of a cluster), for later graphs to build on."""
        if not tasks:
            return []
        if self.client is None:
            import dask
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1):
                done = dask.persist(*tasks, scheduler="threads", num_workers=self.n_workers)
        else:
            from distributed import futures_of

            done = self.client.persist(list(tasks))
            _wait(futures_of(done))
        return list(done)

    def _compute_threads(self, tasks, bar) -> list[Any]:
        import dask
        from dask.callbacks import Callback
        from threadpoolctl import threadpool_limits

        names = {task.key for task in tasks}

        class _Tick(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if key in names:
                    bar.update(1)

        # Blocks are the parallelism: keep BLAS/OpenMP pools from oversubscribing the cores.
        with threadpool_limits(limits=1), _Tick():
            return list(dask.compute(*tasks, scheduler="threads", num_workers=self.n_workers))

    def _compute_distributed(self, tasks, bar) -> list[Any]:
        futures = self.client.compute(list(tasks))
        _wait(futures, bar)
        return self.client.gather(futures)


def _wait(futures: Sequence[Any], bar: Any = None) -> None:
    """Wait for futures, ticking ``bar``; raise the first failed one's error.

    distributed's ``wait`` and ``as_completed`` look for the default client, and
    making ours the default (or current) sets dask's global scheduler config, which
    two runs in two threads would restore out of order: the futures are polled instead.
    """
    pending = list(futures)
    while pending:
        still = [f for f in pending if f.status == "pending"]
        if bar is not None and len(still) < len(pending):
            bar.update(len(pending) - len(still))
        pending = still
        if pending:
            time.sleep(0.02)
    for future in futures:
        if future.status != "finished":
            future.result()  # raises the task's error (or CancelledError)


def _progress(total: int, desc: str, *, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="block", file=sys.stderr, disable=disable, leave=False)


@contextlib.contextmanager
def open_executor(
    workers: int | None = None, *, quiet: bool = False, scheduler: str | None = None
) -> Iterator[Executor]:
    """Open an executor: threads by default, ``workers`` local processes, or a scheduler.

    Parameters
    ----------
    workers : int, optional
        Start a dask LocalCluster with this many single-threaded worker processes.
    quiet : bool
        No progress bar and no dashboard line.
    scheduler : str, optional
        Address of a running dask scheduler to use instead.
    """
    if workers is not None and int(workers) <= 0:
        raise TiledsegError(f"--workers {workers}: give a positive number of worker processes")
    if workers is not None and scheduler is not None:
        raise TiledsegError(
            f"--workers {workers} and --scheduler {scheduler}: give one (local worker "
            "processes, or the workers of a running scheduler)"
        )
    if workers is None and scheduler is None:
        yield Executor(n_workers=available_cores(), quiet=quiet)
        return
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler is not None:
        try:
            # not the default client: two runs in two threads must not swap dask's config
            client = Client(scheduler, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise TiledsegError(
                f"--scheduler {scheduler}: cannot reach a dask scheduler there ({exc}); start "
                "one ('dask scheduler' and 'dask worker ADDRESS') or leave --scheduler out"
            ) from None
        with client:
            n = max(1, sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()))
            yield Executor(client=client, n_workers=n, quiet=quiet)
        return
    with (
        LocalCluster(
            n_workers=int(workers),
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        if not quiet:
            print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
        yield Executor(client=client, n_workers=int(workers), quiet=quiet)
