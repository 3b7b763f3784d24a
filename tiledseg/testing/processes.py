"""A real ``tiledseg`` process killed with SIGKILL mid-run, for the resume tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

__all__ = ["kill_when"]


def kill_when(args: Sequence[str], ready: Callable[[], bool]) -> None:
    """Start ``tiledseg ARGS`` and SIGKILL it (and its children) once ``ready()`` is true.

    It runs on two cores at most, whatever the machine: on many cores every block would
    start at once and the run could end before ``ready``. Raises ``AssertionError`` when
    the run ended before it could be killed.
    """
    cores = sorted(os.sched_getaffinity(0))[:2]
    with subprocess.Popen(
        [sys.executable, "-m", "tiledseg.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    ) as proc:
        try:
            while proc.poll() is None:
                if ready():
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.002)
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(
            f"the run ended before it could be killed (exit {proc.returncode}): "
            f"{stderr.decode()[-2000:]}"
        )
