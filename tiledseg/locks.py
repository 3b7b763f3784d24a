"""One run per output: an exclusive lock file beside the output, taken over when stale.

Two commands writing one output at once would each mark the other's blocks and delete
the markers at the end; the second is refused up front instead, in one line naming the
run that holds the output. The lock is a file beside the output (``.NAME.tiledseg-lock``),
not inside it: ``--overwrite`` replaces the output while the lock is held.

A run that holds a lock touches it every :data:`HEARTBEAT` seconds. A lock is stale, and
taken over, when its process is gone on this host, or when it has not been touched for
:data:`STALE_AFTER` seconds on any host: a run killed by SLURM's walltime or a preemption
(SIGKILL, no ``finally``) leaves its lock, and the same command resubmitted on another
node must continue the run, not be refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tiledseg.errors import OutputExistsError

__all__ = ["HEARTBEAT", "STALE_AFTER", "lock_path", "output_lock"]

#: Seconds between the touches of a held lock.
HEARTBEAT = 30.0
#: A lock not touched for this many seconds belongs to a run that is gone.
STALE_AFTER = 5 * HEARTBEAT
#: A lock file without its content yet (being written) is live for this many seconds.
_WRITING_GRACE = 10.0

# the locks this process holds (path -> count): a nested hold (segment's prediction) reuses it
_HELD: dict[Path, int] = {}
_HELD_GUARD = threading.Lock()


def lock_path(output: str | Path) -> Path:
    """Return the lock file of ``output``."""
    output = Path(output)
    return output.with_name(f".{output.name}.tiledseg-lock")


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[Path]:
    """Hold ``output`` for this run; refuse it when another live run holds it.

    Yields
    ------
    Path
        The lock file, removed when the run ends (whatever the outcome).
    """
    lock = lock_path(output).absolute()
    with _HELD_GUARD:
        nested = _HELD.get(lock, 0) > 0
        if not nested:
            _take(lock, output)
        _HELD[lock] = _HELD.get(lock, 0) + 1
    stop = threading.Event()
    beat = None
    if not nested:
        beat = threading.Thread(target=_heartbeat, args=(lock, stop), daemon=True)
        beat.start()
    try:
        yield lock
    finally:
        with _HELD_GUARD:
            _HELD[lock] -= 1
            last = _HELD[lock] == 0
            if last:
                del _HELD[lock]
        if beat is not None:
            stop.set()
            beat.join()
        if last:
            lock.unlink(missing_ok=True)


def _heartbeat(lock: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT):
        with contextlib.suppress(OSError):
            os.utime(lock)


def _take(lock: Path, output: str | Path) -> None:
    """Create the lock, or take over a stale one; raise if a live run holds it."""
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
    for _ in range(3):
        if _create(lock, mine):
            return
        held = _holder(lock)
        if not _stale(lock, held):
            raise OutputExistsError(_in_use(output, lock, held))
        # only one of several runs renames the stale file away; the others find it gone
        with contextlib.suppress(FileNotFoundError):
            os.rename(lock, lock.with_name(f"{lock.name}.stale-{uuid.uuid4().hex[:8]}"))
            for old in lock.parent.glob(f"{lock.name}.stale-*"):
                old.unlink(missing_ok=True)
    raise OutputExistsError(f"output {str(output)!r} was just taken by another run; wait for it")


def _create(lock: Path, mine: dict[str, Any]) -> bool:
    """Create the lock with its content in one step (a link), or say it exists."""
    partial = lock.with_name(f"{lock.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(json.dumps(mine))
    try:
        os.link(partial, lock)
    except FileExistsError:
        return False
    finally:
        partial.unlink(missing_ok=True)
    return True


def _in_use(output: str | Path, lock: Path, held: dict[str, Any] | None) -> str:
    who = (
        f"pid {held['pid']} on host {held['host']}, since {held['since']}"
        if held
        else "its lock is being written"
    )
    return (
        f"output {str(output)!r} is in use by another run ({who}); wait for it to end, or "
        f"remove {str(lock)!r} if that run is dead (a lock left by a run that died is taken "
        f"over on this host at once, on any host after {STALE_AFTER:.0f} s)"
    )


def _holder(lock: Path) -> dict[str, Any] | None:
    try:
        held = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) and {"pid", "host", "since"} <= held.keys() else None


def _stale(lock: Path, held: dict[str, Any] | None) -> bool:
    """Whether the run that holds a lock is gone."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return True
    if held is None:
        return age > _WRITING_GRACE  # (unreadable for long: damaged)
    if age > STALE_AFTER:
        return True  # not touched: its run is gone, wherever it ran
    if held["host"] != socket.gethostname():
        return False
    try:
        os.kill(int(held["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError):
        return False  # alive as another user, or unreadable: not taken
    return False


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
