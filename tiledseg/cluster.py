"""Where block tasks run: dask's threaded scheduler or a dask.distributed cluster.

Both executors run one Python function per block and return the results in
block order, with a progress bar on stderr. The threaded scheduler is the
default: scipy, numpy and XGBoost release the GIL, and it beat a 2-process
LocalCluster by 17-20% on 2 cores (docs/design-notes.md, "Schedulers and thread
limits").
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any

from tiledseg._openmp import passive_waits
from tiledseg.errors import TiledsegError

__all__ = [
    "Executor",
    "available_cores",
    "capped_workers",
    "check_placement",
    "cluster_threads_per_task",
    "open_executor",
    "planned_workers",
    "wait_futures",
]


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
        """Threads a task may give to XGBoost when ``n_tasks`` tasks share the cores.

        On a cluster: the cores of each worker's host (or SLURM job) over the worker
        threads that share them, at least 1. The number is passed to XGBoost
        explicitly, because dask's worker launcher sets ``OMP_NUM_THREADS=1`` in
        workers and XGBoost's default would then be one thread, silently.
        """
        if self.client is None:
            return max(1, available_cores() // max(1, min(self.n_workers, n_tasks)))
        return cluster_threads_per_task(self.client)

    def map(
        self,
        func: Callable,
        items: Iterable[Any],
        *,
        desc: str,
        on_error: Callable[[int, BaseException], Any] | None = None,
        total: int | None = None,
    ) -> list[Any]:
        """Run ``func(item)`` for every item and return the results in order.

        ``on_error(i, exc)``, when given, stands in for the result of an item whose
        task was lost on a cluster (e.g. its workers kept dying); without it the
        error is raised. Errors inside ``func`` are ``func``'s to handle.

        At most :meth:`in_flight` items (on threads, four per thread) are submitted
        at a time, more as they finish, so that the futures here and the task states
        on the scheduler do not grow with the number of items. On a cluster, an element
        of a tuple item that is the same object in every item (the volume, the model) is
        sent to the workers once, as its own task, rather than pickled again with every
        item. ``items`` may be an iterator (``total``: its length, for the progress bar);
        :meth:`imap` also leaves the results to the caller, one at a time.
        """
        results: list[Any] = []
        stand_in = None if on_error is None else (lambda i, item, exc: on_error(i, exc))
        with contextlib.closing(
            self.imap(func, items, desc=desc, on_error=stand_in, total=total)
        ) as each:
            for i, value in each:
                results.extend([None] * (i + 1 - len(results)))
                results[i] = value
        return results

    def imap(
        self,
        func: Callable,
        items: Iterable[Any],
        *,
        desc: str,
        on_error: Callable[[int, Any, BaseException], Any] | None = None,
        total: int | None = None,
        bar: Any = None,
    ) -> Iterator[tuple[int, Any]]:
        """Run ``func(item)`` for every item; yield ``(i, result)`` as items finish.

        As :meth:`map`, but the results come in the order they finish, and ``items`` is
        drawn from only as earlier items finish: a wave at a time, at most
        :meth:`in_flight` items (on threads, four per thread) ahead of the results
        yielded, so that neither the items nor the results need to be in memory together.

        Parameters
        ----------
        func : callable
            Run on each item.
        items : iterable
            The items; an iterator is consumed lazily.
        desc : str
            Progress bar label.
        on_error : callable, optional
            ``on_error(i, item, exc)`` stands in for the result of item ``i`` (given as
            well: a caller that streams its items does not keep them) whose task a
            cluster lost; without it the error is raised.
        total : int, optional
            Number of items, for the progress bar (default ``len(items)`` where it has one).
        bar : progress bar, optional
            One that :meth:`progress` opened, counting these items and others; by default
            one is opened for these.

        Yields
        ------
        (int, object)
            An item's position in ``items`` and its result.
        """
        if total is None and isinstance(items, Sized):
            total = len(items)
        numbered = enumerate(items)
        first = next(numbered, None)
        if first is None:
            return  # no progress bar for nothing, as before
        numbered = itertools.chain([first], numbered)
        opened = self.progress(total, desc) if bar is None else contextlib.nullcontext(bar)
        with opened as bar:
            if self.client is None:
                yield from self._imap_threads(func, numbered, bar)
            else:
                yield from self._imap_distributed(func, numbered, bar, on_error)

    def map_method(
        self, method: Callable[[Any], Any], items: Iterable[Any], *, desc: str
    ) -> list[Any]:
        """Run a job's bound ``method`` on every item (as :meth:`map`).

        The job is the same in every call, so a cluster receives it once, not once per
        item.
        """
        job, func = method.__self__, method.__func__
        return self.map(_method_call, [(job, func, item) for item in items], desc=desc)

    def blocks(
        self,
        method: Callable[[Any], Any],
        blocks: Iterable[Any],
        *,
        desc: str,
        total: int | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """Run a block job's bound ``method`` on every block; yield ``(i, result)`` as they finish.

        The blocks are run as :meth:`imap` runs items. Each call is guarded once, here: a
        block whose call raises, or whose task the cluster lost, gives a
        :class:`~tiledseg.runs.BlockFailure` as its result, so one bad block never stops the
        others. The job (``method``'s object) is the same in every item, so a cluster
        receives it once.
        """
        return self.blocks_of(((method, block) for block in blocks), desc=desc, total=total)

    def blocks_of(
        self,
        calls: Iterable[tuple[Callable[[Any], Any], Any]],
        *,
        desc: str,
        total: int | None = None,
        bar: Any = None,
    ) -> Iterator[tuple[int, Any]]:
        """Run ``(method, block)`` pairs of any jobs (several images' side by side).

        As :meth:`blocks`: each call is guarded once. ``bar``: as for :meth:`imap`.
        """
        items = ((self._sent(method.__self__), method.__func__, block) for method, block in calls)
        return self.imap(
            _guarded_call, items, desc=desc, on_error=_lost_block, total=total, bar=bar
        )

    def _sent(self, job: Any) -> Any:
        """Return ``job``, or on a cluster the future of it sent once (not with every task)."""
        if self.client is None:
            return job
        sent = self.__dict__.setdefault("_jobs_sent", {})
        if id(job) not in sent:  # (the job is kept too: its id is not reused meanwhile)
            sent[id(job)] = (job, self.client.submit(_shared_object, job, pure=False))
        return sent[id(job)][1]

    def in_flight(self) -> int:
        """Return how many items :meth:`map` submits at once on a cluster.

        A few per task thread, at least :data:`MIN_IN_FLIGHT`: enough that a worker
        finishing a task finds the next one waiting while the results are fetched and more
        are submitted; the floor amortises each submission's and each gather's round trip
        over many items (waves of 8 cost twice the driver's CPU per item of waves of 256).
        """
        return max(MIN_IN_FLIGHT, IN_FLIGHT_PER_THREAD * self.n_workers)

    def _imap_threads(
        self, func: Callable, numbered: Iterator[tuple[int, Any]], bar: Any
    ) -> Iterator[tuple[int, Any]]:
        """Run :meth:`imap` on this process's threads, with a plain thread pool.

        A dask graph of independent tasks adds only its overhead (and dask's scheduler
        lookup imports ``distributed``, 0.2 s of a small run). Items are submitted as
        earlier ones finish, so a million blocks do not make a million pending futures.
        """
        import queue
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        bound = max(2, IN_FLIGHT_PER_THREAD * self.n_workers)
        finished: queue.SimpleQueue = queue.SimpleQueue()
        with threadpool_limits(limits=1):
            pool = ThreadPoolExecutor(max_workers=self.n_workers)
            try:
                running = 0
                for i, item in numbered:
                    future = pool.submit(func, item)
                    # the index rides with the future: completion order is not item order
                    future.add_done_callback(lambda f, i=i: finished.put((i, f)))
                    running += 1
                    if running >= bound:  # draw the next item once one has finished
                        yield self._finished_thread(finished, bar)
                        running -= 1
                for _ in range(running):
                    yield self._finished_thread(finished, bar)
            finally:
                # on an error the blocks not yet started are dropped, as dask would
                pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _finished_thread(finished: Any, bar: Any) -> tuple[int, Any]:
        """Return the next item a thread finished, and its result (or raise its error)."""
        i, future = finished.get()
        value = future.result()  # func's error is raised here, the first seen
        bar.update(1)
        return i, value

    def _imap_distributed(
        self,
        func: Callable,
        numbered: Iterator[tuple[int, Any]],
        bar: Any,
        on_error: Callable[[int, Any, BaseException], Any] | None,
    ) -> Iterator[tuple[int, Any]]:
        """:meth:`imap` on the cluster, in bounded waves of ``client.map`` submissions."""
        from distributed import as_completed

        client = self.client
        bound = self.in_flight()
        wave = list(itertools.islice(numbered, bound))
        put = _share(client, [item for _, item in wave])
        # future -> (index, item): the item only for on_error, and only while in flight
        pending: dict[Any, tuple[int, Any]] = {}
        # not the default client's loop (there is none: see wait_futures): ours
        finished = as_completed(loop=client.loop)

        def submit(wave: list[tuple[int, Any]]) -> None:
            # one client.map per wave: one message to the scheduler for many items
            futures = client.map(func, [put(item) for _, item in wave], pure=False)
            pending.update(zip(futures, wave, strict=True))
            finished.update(futures)

        try:
            submit(wave)
            del wave  # its items are held by pending while in flight, and no longer
            done: list[Any] = []
            while pending:
                batch = finished.next_batch(block=True)
                bar.update(len(batch))
                done += batch
                # once half the items in flight are done, fetch their results together
                # and submit as many again: few round trips, each for many items
                if len(pending) - len(done) <= bound // 2:
                    yield from self._collect(done, pending, on_error)
                    done = []
                    more = list(itertools.islice(numbered, bound - len(pending)))
                    if more:
                        submit(more)
        finally:
            if pending:  # an error is raised: the items not yet done are dropped
                client.cancel(list(pending))
            put.release()

    def _collect(
        self,
        batch: Sequence[Any],
        pending: dict[Any, tuple[int, Any]],
        on_error: Callable[[int, Any, BaseException], Any] | None,
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(i, result)`` of a batch of done futures, releasing the futures."""
        import asyncio

        # one look at the statuses: a future may change state while results are fetched
        ok = [f for f in batch if f.status == "finished"]
        # one gather for the many (a result lost meanwhile is recomputed); the rest one by one
        for future, value in zip(ok, self.client.gather(ok), strict=True):
            yield pending.pop(future)[0], value
        for future in batch:
            if future not in pending:
                continue
            i, item = pending.pop(future)
            try:
                value = future.result()
            except (Exception, asyncio.CancelledError) as exc:  # its error, or its workers' loss
                if on_error is None:
                    raise
                value = on_error(i, item, exc)
            yield i, value

    def compute(
        self,
        tasks: Sequence[Any],
        *,
        desc: str,
        on_error: Callable[[int, BaseException], Any] | None = None,
    ) -> list[Any]:
        """Compute dask delayed objects (and the graph behind them); results in order.

        The progress bar counts ``tasks``, not the intermediate steps they need.
        """
        if not tasks:
            return []
        with self.progress(len(tasks), desc) as bar:
            if self.client is None:
                return self._compute_threads(tasks, bar)
            return self._compute_distributed(tasks, bar, on_error)

    @contextlib.contextmanager
    def progress(self, total: int, desc: str) -> Iterator[Any]:
        """Yield a progress bar (tqdm) over ``total`` items; silent when quiet."""
        bar = _progress(total, desc, disable=self.quiet)
        try:
            yield bar
        finally:
            bar.close()

    def persist(self, tasks: Sequence[Any]) -> list[Any]:
        """Compute dask delayed objects and return them persisted, for later graphs to build on.

        Their results are held in memory here, or on the workers of a cluster.
        """
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
            wait_futures(futures_of(done))
        return list(done)

    def on_workers(
        self, func: Callable[[], Any], *, wait: float = 120.0
    ) -> dict[str, tuple[Any, int]]:
        """Run ``func()`` once in every worker process (here, without a cluster).

        Returns ``{worker: (result, task threads of that worker)}``. On a cluster
        whose workers are still starting (SLURM jobs in the queue), waits up to
        ``wait`` seconds for the first. ``func``'s error is raised.
        """
        if self.client is None:
            return {"local": (func(), self.n_workers)}
        try:
            self.client.wait_for_workers(1, timeout=wait)
        except (TimeoutError, OSError):
            raise TiledsegError(
                f"no dask worker joined the cluster within {wait:.0f} s; check the cluster "
                "(its job queue, its logs) and rerun"
            ) from None
        found = self.client.run(func)
        workers = self.client.scheduler_info().get("workers", {})
        return {
            address: (value, int(workers.get(address, {}).get("nthreads", 1)))
            for address, value in found.items()
        }

    def gather(self, persisted: Sequence[Any]) -> list[Any]:
        """Return the values of objects returned by :meth:`persist`."""
        if not persisted:
            return []
        if self.client is None:
            import dask

            return list(dask.compute(*persisted, scheduler="sync"))
        return self.client.gather(self.client.compute(list(persisted)))

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

    def _compute_distributed(
        self,
        tasks: Sequence[Any],
        bar: Any,
        on_error: Callable[[int, BaseException], Any] | None = None,
    ) -> list[Any]:
        import asyncio

        futures = self.client.compute(list(tasks))
        wait_futures(futures, bar, raise_errors=on_error is None)
        # one look at the statuses: a future may change state while results are fetched
        finished, rest = [], []
        for i, future in enumerate(futures):
            (finished if future.status == "finished" else rest).append(i)
        results: list[Any] = [None] * len(futures)
        # one gather for the many; the rest one by one (a "lost" result is recomputed)
        for i, value in zip(
            finished, self.client.gather([futures[i] for i in finished]), strict=True
        ):
            results[i] = value
        for i in rest:
            try:
                results[i] = futures[i].result()
            except (Exception, asyncio.CancelledError) as exc:  # its error, or its workers' loss
                results[i] = on_error(i, exc)
        return results


#: :meth:`Executor.map` keeps this many items in flight per task thread of the cluster ...
IN_FLIGHT_PER_THREAD = 4
#: ... and at least this many.
MIN_IN_FLIGHT = 512
#: Message batches each of distributed's connections keeps for debugging during a run
#: (see :func:`_quiet_distributed`).
MESSAGE_LOG_LENGTH = 10


class _Shared:
    """Puts an item's shared elements (see :func:`_share`) as futures in its place."""

    def __init__(self, positions: dict[int, Any], originals: dict[int, Any] | None = None):
        self.positions = positions
        #: position -> the object its future stands for: an item holding another object
        #: there keeps its own
        self.originals = originals or {}

    def __call__(self, item: Any) -> Any:
        if not self.positions or type(item) is not tuple:
            return item
        return tuple(
            self.positions[j] if j in self.positions and value is self.originals[j] else value
            for j, value in enumerate(item)
        )

    def release(self) -> None:
        """Let the cluster forget the shared objects (their futures are the only holders)."""
        self.positions, self.originals = {}, {}


def _shared_object(value: Any) -> Any:
    """Return ``value``, as the task whose result is a shared element.

    Its name is the key's, on the dashboard.
    """
    return value


def _share(client: Any, items: Sequence[Any]) -> _Shared:
    """Send once the elements shared by every tuple item of the first wave, ``items``.

    An element is shared when every item holds it (by identity) at the same position.
    Such an element (the volume, the model) would otherwise be pickled by the
    scheduler and unpickled by a worker with every item's task (measured: with a
    1 MB element, 2,000 no-op tasks took 26 s instead of 12 s, 2,000 unpickles
    instead of one per worker), and a volume would reopen its store in every task.
    It becomes a task of its own whose result the items' tasks depend on: a worker
    fetches it once and keeps it while tasks need it, and a lost copy is
    recomputed from the scheduler's, unlike scattered data. Plain values (numbers,
    strings) stay in the items. The later items are not known yet (they are drawn
    as the first finish): one that holds another object there sends its own.
    """
    first = items[0]
    if len(items) < 2 or type(first) is not tuple:
        return _Shared({})
    plain = (str, bytes, int, float, complex, bool, type(None))
    candidates = [j for j, value in enumerate(first) if not isinstance(value, plain)]
    for item in items:
        if type(item) is not tuple or len(item) != len(first):
            return _Shared({})
        candidates = [j for j in candidates if item[j] is first[j]]
        if not candidates:
            return _Shared({})
    return _Shared(
        {j: client.submit(_shared_object, first[j], pure=False) for j in candidates},
        {j: first[j] for j in candidates},
    )


def _cores_here() -> tuple[str, int]:
    """(group, cores) of the calling worker: workers in one group share those cores."""
    cores = available_cores()
    # a SLURM job may hold fewer cores than the node's affinity mask shows
    allocated = os.environ.get("SLURM_CPUS_ON_NODE", "")
    if allocated.isdigit():
        cores = min(cores, int(allocated))
    return f"{socket.gethostname()}/{os.environ.get('SLURM_JOB_ID', '')}", cores


def cluster_threads_per_task(client: Any) -> int:
    """Cores per worker thread on the cluster's most crowded host (at least 1)."""
    try:
        found = client.run(_cores_here)
    except Exception:  # no workers yet (adaptive), or a worker that left meanwhile
        return 1
    workers = client.scheduler_info().get("workers", {})
    groups: dict[str, list[int]] = {}
    for address, (group, cores) in found.items():
        info = workers.get(address)
        if info is not None:
            groups.setdefault(group, [cores, 0])[1] += int(info.get("nthreads", 1))
    if not groups:
        return 1
    return max(1, min(cores // max(1, threads) for cores, threads in groups.values()))


def wait_futures(futures: Sequence[Any], bar: Any = None, *, raise_errors: bool = True) -> None:
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
            # a poll of 100k futures costs ~10 ms: poll many less often
            time.sleep(0.02 if len(pending) < 5000 else 0.25)
    if not raise_errors:
        return
    for future in futures:
        if future.status != "finished":
            future.result()  # raises the task's error (or CancelledError)


def _progress(total: int, desc: str, *, disable: bool) -> Any:
    """Return a progress bar on a terminal, plain lines in a log (a file, a pipe, SLURM's)."""
    if not disable and not _is_terminal(sys.stderr):
        return LogProgress(total, desc, file=sys.stderr)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="block", file=sys.stderr, disable=disable, leave=False)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed, or not a file
        return False


class LogProgress:
    """Progress for a log: a plain line every :attr:`interval` seconds, never a bar.

    A bar's carriage returns leave fragments in a file and glue the next line onto
    them. A step that printed a line ends with one more, at 100%; a short step prints
    nothing.
    """

    #: Seconds between lines.
    interval = 30.0

    def __init__(self, total: int | None, desc: str, *, file: Any):
        self.total, self.desc, self.file = total, desc, file
        self.n, self.lines = 0, 0
        self.started = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done; write a line when the interval has passed."""
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def close(self) -> None:
        """Write the last line, if the step wrote any."""
        if self.lines:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        of = f"/{self.total}" if self.total else ""
        print(
            f"{self.desc}: {self.n}{of} blocks{share}, {now - self.started:.0f} s",
            file=self.file,
            flush=True,
        )
        self.lines += 1


def _method_call(item: tuple[Any, Callable, Any]) -> Any:
    """``job.method(item)``: a task of :meth:`Executor.map_method`."""
    job, func, value = item
    return func(job, value)


def _guarded_call(item: tuple[Any, Callable, Any]) -> Any:
    """``job.method(block)``, or the block's :class:`~tiledseg.runs.BlockFailure`."""
    from tiledseg.runs import guarded

    job, func, block = item
    return guarded(func, block.name, block.index, job, block)


def _lost_block(i: int, item: tuple[Any, Callable, Any], exc: BaseException) -> Any:
    """Return a block whose task the cluster lost (its workers kept dying), as a failure."""
    from tiledseg.runs import BlockFailure

    block = item[2]
    return BlockFailure(block.name, block.index, f"{type(exc).__name__}: {exc}")


def check_placement(workers: Any, scheduler: Any, cluster: Any) -> bool:
    """Refuse two places to run at once, or a non-positive ``workers``.

    Returns
    -------
    bool
        Whether a cluster (``workers``, ``scheduler`` or ``cluster``) is asked for.
    """
    given = [
        name
        for name, value in (
            (f"--workers {workers}", workers),
            (f"--scheduler {scheduler}", scheduler),
            (f"--cluster {cluster}", cluster),
        )
        if value is not None
    ]
    if workers is not None and int(workers) <= 0:
        raise TiledsegError(f"--workers {workers}: give a positive number of worker processes")
    if len(given) > 1:
        raise TiledsegError(
            f"{' and '.join(given)}: give one (local worker processes, the workers of a "
            "running scheduler, or a cluster config)"
        )
    return bool(given)


@contextlib.contextmanager
def open_executor(
    workers: int | None = None,
    *,
    quiet: bool = False,
    scheduler: str | os.PathLike | None = None,
    cluster: Any = None,
) -> Iterator[Executor]:
    """Open an executor: threads by default, local processes, a scheduler or a cluster.

    Parameters
    ----------
    workers : int, optional
        Start a dask LocalCluster with this many single-threaded worker processes.
    quiet : bool
        No progress bar and no dashboard line.
    scheduler : str or path, optional
        Address of a running dask scheduler, or the path of its scheduler file
        (``dask scheduler --scheduler-file FILE``), to use instead.
    cluster : path or ClusterConfig, optional
        A cluster configuration file (:mod:`tiledseg.cluster_config`) to start a
        cluster from: local processes, SLURM jobs or one worker per GPU.
    """
    passive_waits()
    if not check_placement(workers, scheduler, cluster):
        yield Executor(n_workers=available_cores(), quiet=quiet)
        return
    from distributed import Client

    with _quiet_distributed():
        if scheduler is not None:
            client = _connect(scheduler)
            with client:
                _announce(client, quiet)
                yield Executor(client=client, n_workers=_threads(client), quiet=quiet)
            return
        config = cluster_config(workers=workers, cluster=cluster)
        with config.start() as running, Client(running, set_as_default=False) as client:
            _announce(client, quiet)
            yield Executor(client=client, n_workers=config.planned_threads(), quiet=quiet)


@contextlib.contextmanager
def one_cluster(
    workers: int | None = None,
    *,
    scheduler: str | os.PathLike | None = None,
    cluster: Any = None,
    quiet: bool = False,
) -> Iterator[tuple[Executor, str | os.PathLike | None]]:
    """Share one executor between several steps of a run.

    The steps are ``segment``'s training and prediction, or ``cluster``'s sampling and
    labelling: a cluster of ``workers`` or ``cluster`` is started once and serves them
    all. Yields the executor and the ``scheduler`` the
    later steps pass on (with ``workers=None, cluster=None``): the started cluster's
    address, else the given ``scheduler`` (``None``: threads).
    """
    with open_executor(workers, quiet=quiet, scheduler=scheduler, cluster=cluster) as executor:
        started_here = workers is not None or cluster is not None
        yield executor, executor.client.scheduler.address if started_here else scheduler


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Quiet distributed's INFO and WARNING lines and shorten its logs of recent messages.

    Distributed's INFO and WARNING lines (worker start, GC) would bury the progress bar,
    and its debugging logs of recent messages would grow the driver with the blocks.

    Each of distributed's batched connections keeps its last
    ``distributed.admin.low-level-log-length`` message batches (default 1000), and the
    client's holds every wave's submitted tasks: with a LocalCluster, whose scheduler runs
    in this process, that made the driver grow by about 0.9 kB a block up to 10^5 blocks
    (benchmarks/RESULTS.md, sections 14 and 15). While tiledseg's run lasts, the connections it
    opens keep :data:`MESSAGE_LOG_LENGTH` instead, unless the setting was changed from
    distributed's default (someone debugging wants their own).
    """
    import dask

    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.ERROR)
    key = "distributed.admin.low-level-log-length"
    short = {key: MESSAGE_LOG_LENGTH} if dask.config.get(key, None) == 1000 else {}
    try:
        with dask.config.set(short):
            yield
    finally:
        logger.setLevel(level)


def cluster_config(*, workers: int | None = None, cluster: Any = None) -> Any:
    """Return the cluster configuration of ``--workers`` or ``--cluster``.

    It is a :class:`~tiledseg.cluster_config.ClusterConfig`.
    """
    from tiledseg.cluster_config import ClusterConfig, load_cluster_config

    if isinstance(cluster, ClusterConfig):
        return cluster
    if cluster is not None:
        return load_cluster_config(cluster)
    return ClusterConfig.local_workers(capped_workers(workers, say=True))


#: Memory a local worker process needs at least (its blocks' features, the model, dask's
#: own): more workers than the free memory holds at this much each are not started.
MIN_WORKER_BYTES = 1 << 30


def capped_workers(workers: int | None, *, say: bool = False) -> int:
    """Return ``workers`` local processes, or fewer where the cores or memory cannot hold them.

    Each process has a core and :data:`MIN_WORKER_BYTES` of free memory; ``say``: print
    one line on stderr when the count is capped, saying by what.
    """
    import psutil

    wanted = max(1, int(workers or 1))
    cores = available_cores()
    by_memory = max(1, psutil.virtual_memory().available // MIN_WORKER_BYTES)
    cap = min(cores, by_memory)
    if wanted <= cap:
        return wanted
    if say:
        which = (
            f"{cores} cores"
            if cap == cores
            else f"free memory ({by_memory} GiB, at {MIN_WORKER_BYTES >> 30} GiB a worker)"
        )
        print(
            f"tiledseg: --workers {wanted} is more than this machine's {which} can run: "
            f"starting {cap} worker processes",
            file=sys.stderr,
        )
    return cap


def planned_workers(
    workers: int | None = None, *, scheduler: Any = None, cluster: Any = None
) -> int:
    """Tasks that will run at once, known before the executor opens (for block planning).

    With ``scheduler``, its workers' threads (asked of the scheduler): the local cores
    say nothing about a remote cluster.
    """
    if workers is not None:
        # (the cores only: the free memory of the moment must not change the blocks)
        return max(1, min(int(workers), available_cores()))
    if cluster is not None:
        return cluster_config(cluster=cluster).planned_threads()
    if scheduler is not None:
        with _quiet_distributed(), _connect(scheduler) as client:
            return _threads(client)
    return available_cores()


def _threads(client: Any) -> int:
    """Task threads of the workers a client's scheduler knows now (at least 1)."""
    workers = client.scheduler_info()["workers"].values()
    return max(1, sum(w["nthreads"] for w in workers))


def _connect(scheduler: str | os.PathLike) -> Any:
    from distributed import Client

    where = str(scheduler)
    if not os.path.isfile(where) and not re.fullmatch(r"\w+://\S+|[\w.\-\[\]:]+:\d+", where):
        # checked first: a Client given a bad address hangs ~40 s in its finaliser
        raise TiledsegError(
            f"--scheduler {where}: neither a scheduler address (tcp://host:8786) nor an "
            "existing scheduler file; if a job is to write that file, wait until it exists"
        )
    # not the default client: two runs in two threads must not swap dask's config
    try:
        if os.path.isfile(where):
            return Client(scheduler_file=where, set_as_default=False, timeout="20s")
        return Client(where, set_as_default=False, timeout="20s")
    except (OSError, TimeoutError, ValueError, KeyError) as exc:
        raise TiledsegError(
            f"--scheduler {where}: cannot reach a dask scheduler there ({exc}); start one "
            "('dask scheduler' and 'dask worker ADDRESS'), give its scheduler file, or leave "
            "--scheduler out"
        ) from None


def _announce(client: Any, quiet: bool) -> None:
    if not quiet:
        link = client.dashboard_link
        if link:
            print(f"dask dashboard: {link}", file=sys.stderr)
