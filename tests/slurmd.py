"""A real single-node Slurm (munged, slurmctld, slurmd) for tests, in a temp folder.

The recipe is ../shared/ENGINES.md's "Slurm single-node cluster": a slurm.conf of our own
on free ports, munge on a socket of our own, the node line from `slurmd -C`, and
`batch_sched_delay=0` so jobs start within a second. Every daemon is started with Popen
by this process and stopped by its PID (never by name). Without the binaries a test
skips with the reason, except in CI (`CI=true`), where that is a failure. Client
commands reach this cluster through `SLURM_CONF` in the environment (`cluster.env`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import redisd

START_TIMEOUT_S = 60.0  # generous: the machine is shared and loaded
STOP_TIMEOUT_S = 20.0
PROGRAMS = ("munged", "munge", "unmunge", "setpriv", "slurmctld", "slurmd", "sbatch", "squeue",
            "scancel", "sinfo", "scontrol")
PACKAGES = "apt-get install slurmctld slurmd slurm-client munge"

# Our daemons go into redisd's table of session servers: its exit sweep kills what a test
# forgot (by PID), and conftest's no-leftover-children check spares them.
_LIVE = redisd._LIVE


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _require_programs() -> None:
    absent = [p for p in PROGRAMS if shutil.which(p) is None]
    if absent:
        _missing(f"Slurm is not installed ({', '.join(absent)} missing; {PACKAGES})")
    if os.geteuid() != 0:
        _missing("a test Slurm runs its daemons as root (SlurmUser=root): not root here")


def _wait(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    from tests.conftest import wait_for  # at call time: conftest imports this module

    return wait_for(condition, timeout_s=timeout_s, interval_s=0.1, message=what)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SlurmCluster:
    """One controller and one node on this machine; `env` points clients at it."""

    dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """This process's environment with SLURM_CONF set: for sbatch, squeue, shoal hire."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def munge_socket(self) -> Path:
        return self.dir / "munge" / "munge.socket"

    def run(self, *args: str, check: bool = True, timeout: float = 60.0
            ) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster (sbatch, squeue, scancel, ...)."""
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
        return done

    def jobs(self) -> dict[str, str]:
        """Job id (array tasks as JOB_TASK) -> state, for every job squeue still lists."""
        out = self.run("squeue", "-h", "-r", "-o", "%i %T").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def job_state(self, job_id: str) -> str:
        """A job's state as the controller remembers it (finished jobs too, MinJobAge)."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return ""

    def node_idle(self) -> bool:
        done = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=20)
        return done.returncode == 0 and done.stdout.split() == ["idle"]

    def logs(self) -> str:
        """The daemons' own logs (for a failure message)."""
        parts = []
        for path in sorted((self.dir / "log").glob("*")):
            text = path.read_text(errors="replace").strip()
            if text:
                parts.append(f"== {path.name}\n{text[-1500:]}")
        return "\n".join(parts)

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.dir / "log" / f"{name}.out", "ab")  # noqa: SIM115
        proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs[name] = proc
        _LIVE[proc.pid] = proc
        return proc

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) while starting:\n"
                                   f"{self.logs()}")

    def start(self) -> SlurmCluster:
        """Start munged, then slurmctld and slurmd; return when the node is idle."""
        _require_programs()
        try:
            self._start_munge()
            self._start("slurmctld", ["slurmctld", "-D", "-i"])
            self._start("slurmd", ["slurmd", "-D"])

            def ready() -> bool:
                self._check_alive()
                return self.node_idle()

            _wait(ready, START_TIMEOUT_S, f"the Slurm node to be idle ({self.dir})")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        munge_dir = self.dir / "munge"
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        shutil.chown(munge_dir, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        self._start("munged", [
            "setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "munged",
            "--foreground", f"--key-file={key}", f"--socket={self.munge_socket}",
            f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}"])

        def answers() -> bool:
            self._check_alive()
            sock = f"--socket={self.munge_socket}"
            made = subprocess.run(["munge", "-n", sock], capture_output=True)
            return made.returncode == 0 and subprocess.run(
                ["unmunge", sock], input=made.stdout, capture_output=True).returncode == 0

        _wait(answers, START_TIMEOUT_S, "munged to answer")

    def cancel_all(self) -> None:
        """scancel every job of this cluster; wait until squeue lists none."""
        if not self.procs.get("slurmctld") or self.procs["slurmctld"].poll() is not None:
            return
        ids = list(self.jobs())
        if ids:
            self.run("scancel", *ids, check=False)
        with contextlib.suppress(BaseException):
            _wait(lambda: not self.jobs(), STOP_TIMEOUT_S, "cancelled Slurm jobs to leave")

    def stop(self) -> None:
        """Cancel what runs, then SIGTERM slurmctld and slurmd, then munged; by PID."""
        with contextlib.suppress(Exception):
            self.cancel_all()
        for name in ("slurmctld", "slurmd", "munged"):
            proc = self.procs.get(name)
            if proc is not None:
                _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
    _LIVE.pop(proc.pid, None)


def _node_line() -> str:
    """This machine as `slurmd -C` describes it (sockets, cores, memory: no warnings)."""
    done = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30)
    line = done.stdout.splitlines()[0] if done.stdout else ""
    if done.returncode != 0 or not line.startswith("NodeName="):
        raise RuntimeError(f"slurmd -C failed: {(done.stderr or done.stdout).strip()}")
    return line


def write_conf(folder: Path) -> None:
    """slurm.conf (ENGINES.md's) for one node on this host, on free ports, state in folder."""
    sock = folder / "munge" / "munge.socket"
    lines = [
        "ClusterName=shoaltest",
        f"SlurmctldHost={socket.gethostname().split('.')[0]}",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
        "MailProg=/bin/true",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/linux",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={folder / 'log' / 'jobcomp.txt'}",
        "SwitchType=switch/none", "MpiDefault=none",
        "SchedulerType=sched/backfill", "SchedulerParameters=batch_sched_delay=0",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "ReturnToService=2", "MinJobAge=300", "KillWait=5",
        f"{_node_line()} NodeAddr=127.0.0.1 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    (folder / "slurm.conf").write_text("\n".join(lines) + "\n")


def start_slurm() -> SlurmCluster:
    """A new cluster in a new temp folder (0755: munged wants o+x up to its socket)."""
    _require_programs()
    folder = Path(tempfile.mkdtemp(prefix="shoal-slurm-"))
    folder.chmod(0o755)
    for sub in ("munge", "state", "spool", "log"):
        (folder / sub).mkdir()
    (folder / "munge").chmod(0o755)
    write_conf(folder)
    return SlurmCluster(folder).start()


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """One Slurm cluster for the whole session (started in about a second)."""
    cluster = start_slurm()
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.dir, ignore_errors=True)


@pytest.fixture
def slurm_cluster(slurm: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster, with every job a test left cancelled after it."""
    yield slurm
    slurm.cancel_all()
