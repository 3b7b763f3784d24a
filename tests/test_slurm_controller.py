"""The test SLURM's helpers that need no SLURM: finding runuser outside PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiledseg.testing import slurm as slurm_controller
from tiledseg.testing.slurm import SlurmController

#: Where util-linux installs runuser.
SBIN_RUNUSER = [p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)]

needs_sbin_runuser = pytest.mark.skipif(
    not SBIN_RUNUSER, reason="runuser is not installed in /usr/sbin or /sbin here"
)


@needs_sbin_runuser
def test_runuser_is_found_in_sbin_without_sbin_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin")
    argv = slurm_controller.runuser("munge", "test", "-x", Path("/"))
    assert os.path.isabs(argv[0])
    assert os.path.samefile(argv[0], SBIN_RUNUSER[0])
    assert argv[1:] == ["-u", "munge", "--", "test", "-x", "/"]


@needs_sbin_runuser
def test_munged_is_started_through_runuser_by_absolute_path(monkeypatch, tmp_path):
    """With a PATH without sbin, the controller's argv does not rely on PATH lookup."""
    monkeypatch.setenv("PATH", "/usr/bin")
    started = {}
    monkeypatch.setattr(
        SlurmController, "_start_daemon", lambda self, name, cmd, **kw: started.update({name: cmd})
    )
    SlurmController(tmp_path)._start_munged()
    program = str(started["munged"][0])
    assert os.path.isabs(program)
    assert os.path.samefile(program, SBIN_RUNUSER[0])


def test_a_missing_runuser_is_a_reason_to_skip(monkeypatch):
    monkeypatch.setattr(slurm_controller, "which", lambda program: None)
    with pytest.raises(slurm_controller.SlurmUnavailable, match="runuser"):
        slurm_controller.runuser("munge", "true")
