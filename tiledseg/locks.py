"""One run per output: an exclusive lock file beside the output, taken over when stale.

Two commands writing one output at once would each mark the other's blocks and delete
the markers at the end; the second is refused up front instead, in one line naming the
run that holds the output. A lock left by a run that died (the process is gone on this
host) is taken over. The lock is a file beside the output (``.NAME.tiledseg-lock``), not
inside it: ``--overwrite`` replaces the output while the lock is held.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tiledseg.errors import OutputExistsError

__all__ = ["lock_path", "output_lock"]


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
    lock = lock_path(output)
    held = _holder(lock)
    if held is not None and _ours(held):
        yield lock  # this process holds it already (segment, around its prediction)
        return
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
    _take(lock, mine, output)
    try:
        yield lock
    finally:
        if _holder(lock) == mine:
            lock.unlink(missing_ok=True)


def _take(lock: Path, mine: dict[str, Any], output: str | Path) -> None:
    """Create the lock, or take over a stale one; raise if a live run holds it."""
    text = json.dumps(mine)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        held = _holder(lock)
        if held is not None and not _stale(held):
            raise OutputExistsError(
                f"output {str(output)!r} is in use by another run (pid {held['pid']} on host "
                f"{held['host']}, since {held['since']}); wait for it to end, or remove "
                f"{str(lock)!r} if that run is dead"
            ) from None
        # stale (or unreadable): replace it atomically, then check that this run won
        partial = lock.with_name(f"{lock.name}.{os.getpid()}")
        partial.write_text(text)
        os.replace(partial, lock)
        if _holder(lock) != mine:
            raise OutputExistsError(
                f"output {str(output)!r} was just taken by another run; wait for it to end"
            ) from None
        return
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _holder(lock: Path) -> dict[str, Any] | None:
    try:
        held = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) and {"pid", "host", "since"} <= held.keys() else None


def _stale(held: dict[str, Any]) -> bool:
    """Whether the run that holds a lock is gone (known only on this host)."""
    if held["host"] != socket.gethostname():
        return False
    try:
        os.kill(int(held["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError):
        return False  # alive as another user, or unreadable: not taken
    return False


def _ours(held: dict[str, Any]) -> bool:
    return held["host"] == socket.gethostname() and held["pid"] == os.getpid()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
