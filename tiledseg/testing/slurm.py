"""A private single-node SLURM (munged, slurmctld, slurmd) for the test suite.

Everything lives under one base directory and is reached only through
``SLURM_CONF=<base>/slurm.conf``: a SLURM already configured on the machine
(``/etc/slurm``, its ports, its munge socket) is neither read nor touched. The
recipe, and the pitfalls it avoids, are in
docs/slurm.md ("Testing against a real SLURM").

Shipped for the tests and the benchmarks (importable as ``tiledseg.testing.slurm`` by
both, with no ``sys.path`` edits): ``tests/conftest.py`` starts one controller per
session, ``benchmarks/cluster_scaling.py --slurm`` its own.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SlurmController", "SlurmUnavailable", "runuser", "which"]

#: Debian packages that give the daemons, the client commands and munge.
PACKAGES = ("slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge")

#: Programs the controller runs; all must be installed.
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")

#: Longest path a unix socket may have (108 bytes on Linux, with its final NUL).
_SOCKET_PATH_MAX = 107

# Daemons (and runuser) live in sbin, which a non-login shell's PATH may leave out.
_SYSTEM_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


#: Job states after which a job does nothing more.
_ENDED = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)


class SlurmUnavailable(RuntimeError):
    """SLURM is not installed here and cannot be installed (a reason to skip, not a failure)."""


def which(program: str) -> str | None:
    """Return the absolute path of ``program``, looking in sbin directories too.

    ``PATH`` is read at each call, then the system's sbin and bin directories, so a
    PATH without ``/usr/sbin`` (a non-login root shell) still finds the daemons.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SYSTEM_DIRS])
    found = shutil.which(program, path=search)
    return os.path.abspath(found) if found else None


def runuser(user: str, *command: str | os.PathLike) -> list[str]:
    """Return the argv that runs ``command`` as ``user``, with runuser found by absolute path.

    Raises
    ------
    SlurmUnavailable
        When runuser (util-linux) is not installed: munged cannot be started as its user.
    """
    program = which("runuser")
    if program is None:
        raise SlurmUnavailable("runuser (util-linux) is not installed: munged cannot run as munge")
    return [program, "-u", user, "--", *(str(c) for c in command)]


def install(timeout: float = 900.0) -> float:
    """Install SLURM and munge from Debian's packages unless they are present.

    Parameters
    ----------
    timeout : float
        Seconds each ``apt-get`` run may take.

    Returns
    -------
    float
        Seconds spent installing (0 when everything was already installed).

    Raises
    ------
    SlurmUnavailable
        Not root, no ``apt-get``, or the install failed.
    """
    missing = [p for p in PROGRAMS if which(p) is None]
    if not missing:
        return 0.0
    what = f"SLURM is not installed ({', '.join(missing)} not found)"
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"{what} and installing it needs root")
    apt_get = which("apt-get")
    if apt_get is None:
        raise SlurmUnavailable(f"{what} and there is no apt-get to install it with")
    start = time.perf_counter()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = [apt_get, "install", "-y", "--no-install-recommends", *PACKAGES]
    done = _run_quietly(install_cmd, env, timeout)
    if done.returncode != 0:
        # stale package lists are the usual cause; refresh them only when needed (slow)
        update = _run_quietly([apt_get, "update"], env, timeout)
        done = _run_quietly(install_cmd, env, timeout) if update.returncode == 0 else update
    if done.returncode != 0:
        raise SlurmUnavailable(
            f"{what}; '{' '.join(done.args)}' exited {done.returncode}:\n{_tail(done.stdout)}"
        )
    still = [p for p in PROGRAMS if which(p) is None]
    if still:
        raise SlurmUnavailable(f"installed {' '.join(PACKAGES)} but {', '.join(still)} not found")
    return time.perf_counter() - start


def _run_quietly(cmd: list[str], env: Mapping[str, str], timeout: float):
    try:
        return subprocess.run(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return subprocess.CompletedProcess(cmd, 124, stdout=f"{out}\n(timed out after {timeout} s)")


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _free_port() -> int:
    """Return a TCP port nobody listens on now (so a machine's own SLURM ports are left alone)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _running(pid: int) -> bool:
    """Whether ``pid`` runs; an exited daemon that nobody reaped (a zombie) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # the state follows the parenthesised command name, which may itself hold spaces
    return stat[stat.rindex(")") + 2] not in "ZX"


class SlurmController:
    """Start and stop munged, slurmctld and slurmd for one node, all state under ``base``.

    Parameters
    ----------
    base : Path
        An empty or missing directory for the configuration, state, logs and pid files.
    cpus : int
        CPUs the node advertises (at least the real count): more than the real cores
        lets several one-core jobs (dask workers that mostly wait) run at once.
    partition : str
        The one partition's name.
    timeout : float
        Seconds to wait for the daemons to come up, and for each to exit on stop.

    Examples
    --------
    >>> with SlurmController(tmp / "slurm") as slurm:        # doctest: +SKIP
    ...     subprocess.run(["sbatch", "--wrap", "hostname"], env={**os.environ, **slurm.env})
    """

    def __init__(
        self, base: Path, *, cpus: int = 4, partition: str = "debug", timeout: float = 60.0
    ):
        self.base = Path(base).absolute()
        self.cpus = int(cpus)
        self.partition = partition
        self.timeout = float(timeout)
        self.conf = self.base / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.munge_dir = self.base / "munge"
        self.spool_dir = self.base / "state" / "d"
        self.install_seconds = 0.0
        self.start_seconds = 0.0
        self._pids: dict[str, int] = {}
        self._private_dirs: list[Path] = []
        self._saved_env: dict[str, str | None] = {}
        self._started = False

    # -- what clients need ------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Environment variables a SLURM client (sbatch, srun, dask-jobqueue) needs."""
        return {"SLURM_CONF": str(self.conf)}

    def command(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``sbatch``, ``squeue``...) against this controller.

        Parameters
        ----------
        *args : str
            The command and its arguments.
        env : mapping, optional
            The environment (default: this process's); ``self.env`` is added to it.
        timeout : float
            Seconds it may take.
        check : bool
            Raise :class:`subprocess.CalledProcessError` when it fails.
        """
        program = which(args[0]) or args[0]
        return subprocess.run(
            [program, *args[1:]],
            env={**(os.environ if env is None else env), **self.env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def submit(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        """``sbatch --parsable ARGS``: the new job's id."""
        done = self.command("sbatch", "--parsable", *args, env=env)
        return done.stdout.strip().split(";")[0]

    def wait(self, job_id: str, timeout: float = 120.0) -> tuple[str, str]:
        """Wait for a job to end; its final state and exit code (``"COMPLETED", "0:0"``).

        ``sbatch --wait`` polls after 2, 8, 32... seconds; this polls every 0.1 s.
        """
        deadline = time.monotonic() + timeout
        while True:
            shown = self.command("scontrol", "-o", "show", "job", job_id).stdout
            fields = dict(re.findall(r"(\w+)=(\S*)", shown))
            if fields.get("JobState") in _ENDED:
                return fields["JobState"], fields.get("ExitCode", "")
            if time.monotonic() > deadline:
                self.command("scancel", job_id, check=False)
                raise TimeoutError(f"job {job_id} still {fields.get('JobState')} after {timeout} s")
            time.sleep(0.1)

    # -- start ------------------------------------------------------------------------------

    def start(self) -> SlurmController:
        """Install SLURM if needed, write the configuration, start the daemons, wait for them.

        Raises
        ------
        SlurmUnavailable
            SLURM cannot be installed here.
        RuntimeError
            A daemon did not come up in time (with the tail of its log); whatever
            did start has been stopped again.
        """
        if self._started:
            return self
        self.install_seconds = install()
        begin = time.perf_counter()
        self._started = True
        # a crashed test session must not leave daemons behind
        atexit.register(self.stop)
        try:
            self._write_munge_key()
            self._write_conf()
            self._saved_env = {k: os.environ.get(k) for k in self.env}
            os.environ.update(self.env)
            self._start_munged()
            self._start_daemon("slurmctld", [which("slurmctld"), "-f", str(self.conf)])
            self._start_daemon("slurmd", [which("slurmd"), "-f", str(self.conf), "-N", self.node])
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - begin
        return self

    def __enter__(self) -> SlurmController:
        """Start the controller and return it."""
        return self.start()

    def __exit__(self, *exc) -> None:
        """Stop the controller."""
        self.stop()

    def _private_dir(self, prefix: str) -> Path:
        """Make a short-named directory in the system's temporary directory, removed on stop."""
        path = Path(tempfile.mkdtemp(prefix=prefix))
        self._private_dirs.append(path)
        return path

    def _write_munge_key(self) -> None:
        """Write a fresh key for a munged of our own, in a directory the munge user can reach.

        munged runs as user ``munge`` and refuses key and socket paths it cannot reach
        or that others may write. pytest's temporary directories are private to root
        (0700), so when ``base`` is not reachable (or too long a path for a socket) the
        munge files go to a private directory in the system's temporary directory.
        """
        self.base.mkdir(parents=True, exist_ok=True)
        reachable = (
            subprocess.run(runuser("munge", "test", "-x", self.base), check=False).returncode == 0
        )
        if reachable and len(str(self.munge_dir / "munge.socket")) < _SOCKET_PATH_MAX:
            self.munge_dir.mkdir(exist_ok=True)
        else:
            self.munge_dir = self._private_dir("tiledseg-munge-")
        # clients (root, the jobs) need to reach the socket: 0755 on its directory
        shutil.chown(self.munge_dir, "munge", "munge")
        self.munge_dir.chmod(0o755)
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o600)

    def _write_conf(self) -> None:
        for sub in ("state/ctld", "run", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        # slurmd puts a socket per job step in its spool directory, named
        # NODE_JOBID.STEPID: a long base path would overflow a socket path
        if len(f"{self.spool_dir}/{self.node}_4294967294.4294967294") < _SOCKET_PATH_MAX:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.spool_dir = self._private_dir("tiledseg-slurmd-")
        b = self.base
        lines = [
            "# written by tiledseg/testing/slurm.py; used only through SLURM_CONF",
            "ClusterName=tiledsegtest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_dir / 'munge.socket'}",
            f"StateSaveLocation={b / 'state/ctld'}",
            f"SlurmdSpoolDir={self.spool_dir}",
            f"SlurmctldPidFile={b / 'run/slurmctld.pid'}",
            f"SlurmdPidFile={b / 'run/slurmd.pid'}",
            f"SlurmctldLogFile={b / 'log/slurmctld.log'}",
            f"SlurmdLogFile={b / 'log/slurmd.log'}",
            "MailProg=/bin/true",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            # start jobs as soon as they are submitted, not at the next scheduling pass
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
            # cons_tres + CR_Core: jobs share the node by cores (select/linear gives each
            # job the whole node, so one worker at a time)
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            # slurmd reports the configured CPUs, not the real ones (see self.cpus)
            "SlurmdParameters=config_overrides",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            # a cancelled or finished job's processes are gone quickly
            "KillWait=2",
            f"NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.node} "
            f"{self._hardware()} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _hardware(self) -> str:
        """Return the node's hardware as ``slurmd -C`` sees it, with at least ``self.cpus`` CPUs.

        RealMemory above the real value would put the node in INVAL, so it is copied;
        more CPUs are advertised as more cores on one socket (CR_Core counts cores).
        """
        done = subprocess.run(
            [which("slurmd"), "-C"], capture_output=True, text=True, timeout=60, check=True
        )
        first = done.stdout.splitlines()[0]
        fields = dict(re.findall(r"(\w+)=(\S+)", first))
        fields.pop("NodeName", None)
        if int(fields.get("CPUs", 1)) < self.cpus:
            fields.update(
                CPUs=str(self.cpus),
                Boards="1",
                SocketsPerBoard="1",
                CoresPerSocket=str(self.cpus),
                ThreadsPerCore="1",
            )
        return " ".join(f"{k}={v}" for k, v in fields.items())

    def _start_munged(self) -> None:
        d = self.munge_dir
        cmd = runuser(
            "munge",
            which("munged"),
            f"--socket={d / 'munge.socket'}",
            f"--key-file={d / 'munge.key'}",
            f"--pid-file={d / 'munged.pid'}",
            f"--log-file={d / 'munged.log'}",
            f"--seed-file={d / 'munged.seed'}",
        )
        self._start_daemon("munged", cmd, pid_file=d / "munged.pid")

    def _start_daemon(self, name: str, cmd: list, *, pid_file: Path | None = None) -> None:
        """Run a daemon that forks into the background; remember the PID it writes."""
        pid_file = pid_file or self.base / "run" / f"{name}.pid"
        done = subprocess.run(
            [str(c) for c in cmd],
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{name} exited {done.returncode} at start:\n{done.stdout}{done.stderr}"
                + self._logs()
            )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().split()[0])
            except (FileNotFoundError, IndexError, ValueError):
                time.sleep(0.02)
                continue
            self._pids[name] = pid
            return
        raise RuntimeError(
            f"{name} wrote no pid file {pid_file} in {self.timeout} s" + self._logs()
        )

    def _wait_until_ready(self) -> None:
        """Wait for ``scontrol ping`` to say UP and ``sinfo`` to show the node idle."""
        deadline = time.monotonic() + self.timeout
        ping = state = ""
        while time.monotonic() < deadline:
            for name, pid in self._pids.items():
                if not _running(pid):
                    raise RuntimeError(f"{name} (pid {pid}) exited during start" + self._logs())
            ping = self.command("scontrol", "ping", check=False).stdout
            if " UP" in ping:
                state = self.command("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.strip()
                if state == "idle":
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"SLURM not ready after {self.timeout} s: scontrol ping said {ping.strip()!r}, "
            f"sinfo said the node is {state!r}" + self._logs()
        )

    def _logs(self) -> str:
        logs = [
            self.munge_dir / "munged.log",
            self.base / "log/slurmctld.log",
            self.base / "log/slurmd.log",
        ]
        parts = [
            f"\n--- {p} ---\n{_tail(p.read_text(errors='replace'))}" for p in logs if p.is_file()
        ]
        return "".join(parts)

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel every job, stop the daemons this controller started and restore ``SLURM_CONF``.

        The daemons are stopped by their pid files' PIDs, never by name, and waited for until
        they exit.
        """
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        try:
            if "slurmctld" in self._pids and "slurmd" in self._pids:
                self._cancel_jobs()
        finally:
            # slurmd first: stopping it leaves running jobs alone, hence the scancel above
            for name in ("slurmd", "slurmctld", "munged"):
                pid = self._pids.pop(name, None)
                if pid is not None:
                    self._terminate(name, pid)
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_env = {}
            for path in self._private_dirs:
                shutil.rmtree(path, ignore_errors=True)
            self._private_dirs = []

    def _cancel_jobs(self) -> None:
        """Run scancel on every job squeue shows and wait until none is left (or time runs out)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            listed = self.command("squeue", "-h", "-o", "%A", check=False)
            if listed.returncode != 0:
                return  # the controller is gone: nothing more can be cancelled
            jobs = listed.stdout.split()
            if not jobs:
                return
            self.command("scancel", *jobs, check=False)
            time.sleep(0.2)

    def _terminate(self, name: str, pid: int) -> None:
        """SIGTERM ``pid`` if it is still ``name``; SIGKILL it if it does not exit in time."""
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except FileNotFoundError:
            return
        if comm != name:
            return  # exited, and the PID now belongs to someone else
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                if not _running(pid):
                    return
                time.sleep(0.05)
        raise RuntimeError(f"{name} (pid {pid}) did not exit after SIGKILL")
