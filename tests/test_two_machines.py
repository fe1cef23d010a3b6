"""Two "machines" sharing one queue folder over sshfs: real sshd, real FUSE mounts, real
`shoal work` processes. Each mount of the same server folder is one host: the workers only
meet on the server's disk, through their own sshfs caches (see tests/machines.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from shoal.job import Job, State
from shoal.queue.folder import FolderQueue
from tests import machines
from tests.conftest import wait_for
from tests.machines import SshfsMounts

# The fixtures of tests/machines.py (not needed once conftest.py has
# `pytest_plugins = ["tests.machines"]`).
ssh_keys, sshd, sshfs_mount = machines.ssh_keys, machines.sshd, machines.sshfs_mount

N_JOBS = 200
DRAIN_TIMEOUT_S = 90.0  # a stale sshfs listing may add 20 s; pytest-timeout allows 120 s

# One execution record per run of a job, written by the job itself into a local folder:
# OUT/JOB_ID.ATTEMPT.WORKER holds the job's pid (its process group: jobs lead a session),
# written under a hidden name first so it is never seen empty.
RECORD = ('name="$SHOAL_JOB_ID.$SHOAL_ATTEMPT.$SHOAL_WORKER"\n'
          'printf "%s\\n" "$$" > "{out}/.$name" && mv "{out}/.$name" "{out}/$name"\n')
SHORT_JOB = "#!/bin/sh\n" + RECORD + "sleep 0.02\n"  # ~20 ms: both workers get a share
TAKEOVER_JOB = "#!/bin/sh\n" + RECORD + 'if [ "$SHOAL_ATTEMPT" = 1 ]; then sleep 60; fi\n'


def shoal(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal.cli", *args]


def write_script(folder: Path, name: str, body: str, out: Path) -> Path:
    script = folder / name
    script.write_text(body.replace("{out}", str(out)))
    return script


def submit(mount: Path, script: Path, inputs: Sequence[str]) -> None:
    """Submit `sh SCRIPT INPUT` for each input through `mount`: with `shoal submit ... :::`
    once shoal.templates exists, from Python until then."""
    if importlib.util.find_spec("shoal.templates") is not None:
        done = subprocess.run(shoal("submit", str(mount), "sh", str(script), "{}", ":::",
                                    *inputs),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=60)
        assert done.returncode == 0, f"shoal submit failed:\n{done.stdout}{done.stderr}"
        return
    queue = FolderQueue(mount)
    queue.submit([Job.command_job(f"sh {script} {word}") for word in inputs])
    queue.close()


class Workers:
    """`shoal work` processes, each in its own session so it can be killed as a group."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, mount: Path, *options: str) -> subprocess.Popen[bytes]:
        log = self.folder / f"worker{len(self.procs) + 1}.log"
        home = self.folder / f"worker{len(self.procs) + 1}.cwd"
        home.mkdir()
        with open(log, "wb") as sink:
            proc = subprocess.Popen(shoal("-v", "work", str(mount), *options), cwd=home,
                                    stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                    start_new_session=True)
        self.procs.append((proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- worker pid {proc.pid} (exit {proc.poll()}):\n"
                         + log.read_text(errors="replace")[-4000:]
                         for proc, log in self.procs)

    def wait(self, proc: subprocess.Popen[bytes], timeout_s: float) -> int:
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker pid {proc.pid} still running after {timeout_s:g} s\n"
                        + self.logs())

    def kill_all(self) -> None:
        for proc, _log in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def workers(sshfs_mount: SshfsMounts, tmp_path: Path) -> Iterator[Workers]:
    """Depends on the mounts so that it is torn down first: a worker killed at teardown
    must no longer hold files open on a mount being unmounted."""
    folder = tmp_path / "workers"
    folder.mkdir()
    group = Workers(folder)
    yield group
    group.kill_all()  # before the mounts they use are unmounted


def records(out: Path) -> list[tuple[str, int, str]]:
    """(job id, attempt, worker) of every execution record."""
    found = []
    for name in os.listdir(out):
        if name.startswith("."):
            continue
        job_id, attempt, worker = name.split(".", 2)
        found.append((job_id, int(attempt), worker))
    return found


def group_alive(pgid: int) -> bool:
    """True while some process is in process group `pgid`."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z" and int(fields[2]) == pgid:
                    return True
    return False


def worker_of(pid: int, worker_ids: set[str]) -> str:
    """The worker id (host-PID-random) of the process `pid`."""
    mine = [w for w in worker_ids if w.rsplit("-", 2)[-2] == str(pid)]
    assert len(mine) <= 1, mine
    return mine[0] if mine else ""


@pytest.mark.slow  # 3 s, or ~25 s when a worker's sshfs directory cache is stale: a
# worker whose cached listing still shows jobs the other host took notices "drained" only
# when sshfs's dcache_timeout (20 s) expires. Slow, not wrong.
def test_two_hosts_drain_one_queue_each_job_once(
        sshfs_mount: SshfsMounts, workers: Workers, tmp_path: Path) -> None:
    share, out = tmp_path / "share", tmp_path / "out"
    share.mkdir()
    out.mkdir()
    mount_a = sshfs_mount(share, "hostA")
    mount_b = sshfs_mount(share, "hostB")
    script = write_script(tmp_path, "short.sh", SHORT_JOB, out)

    submit(mount_a, script, [str(i) for i in range(N_JOBS)])
    real = FolderQueue(share, create=False)
    submitted = {status.job.id for status in real.jobs()}
    assert len(submitted) == N_JOBS

    started = time.monotonic()
    worker_a = workers.start(mount_a, "--drain", "--slots", "2")
    worker_b = workers.start(mount_b, "--drain", "--slots", "2")
    code_a = workers.wait(worker_a, DRAIN_TIMEOUT_S)
    code_b = workers.wait(worker_b, max(1.0, DRAIN_TIMEOUT_S - (time.monotonic() - started)))
    assert (code_a, code_b) == (0, 0), workers.logs()

    # Every job has exactly one final result, and it is "done" (read on the server's disk).
    results = list(real.results())
    per_job = Counter(r.job_id for r in results)
    assert set(per_job) == submitted, workers.logs()
    assert max(per_job.values()) == 1, [j for j, n in per_job.items() if n > 1]
    assert all(r.state is State.DONE for r in results), \
        [r for r in results if r.state is not State.DONE][:5]
    assert real.is_drained()

    # No job ran twice: exactly one execution record per job, first attempt each.
    runs = records(out)
    assert len(runs) == N_JOBS, Counter(job for job, _, _ in runs).most_common(3)
    assert {job for job, _, _ in runs} == submitted
    assert {attempt for _, attempt, _ in runs} == {1}, workers.logs()
    ran_by = {job: worker for job, _, worker in runs}
    assert all(ran_by[r.job_id] == r.worker for r in results)

    # Both "machines" took part.
    per_worker = Counter(ran_by.values())
    id_a = worker_of(worker_a.pid, set(per_worker))
    id_b = worker_of(worker_b.pid, set(per_worker))
    assert id_a and id_b, f"one worker ran every job: {per_worker}"
    assert per_worker[id_a] + per_worker[id_b] == N_JOBS
    real.close()


def test_takeover_across_mounts_after_sigkill(
        sshfs_mount: SshfsMounts, workers: Workers, tmp_path: Path) -> None:
    share, out = tmp_path / "share", tmp_path / "out"
    share.mkdir()
    out.mkdir()
    mount_a = sshfs_mount(share, "hostA")
    mount_b = sshfs_mount(share, "hostB")
    script = write_script(tmp_path, "takeover.sh", TAKEOVER_JOB, out)
    submit(mount_a, script, ["1"])
    real = FolderQueue(share, create=False)
    (job_id,) = [status.job.id for status in real.jobs()]

    try:
        worker_a = workers.start(mount_a, "--lease", "2", "--slots", "1")
        wait_for(lambda: [run for run in records(out) if run[1] == 1], timeout_s=30,
                 message="host A to start attempt 1")
        assert worker_a.poll() is None, workers.logs()

        os.killpg(worker_a.pid, signal.SIGKILL)  # host A dies; its job keeps running
        worker_a.wait(timeout=10)

        worker_b = workers.start(mount_b, "--lease", "2", "--drain", "--slots", "1")
        assert workers.wait(worker_b, 60) == 0, workers.logs()
    finally:
        # The dead host's attempt 1 (`sleep 60`) leads a session of its own: kill it, and
        # wait, since its log stays open on mount A until it is gone.
        for group in [int((out / f"{j}.1.{w}").read_text()) for j, a, w in records(out)
                      if a == 1]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            wait_for(lambda g=group: not group_alive(g), timeout_s=10,
                     message=f"process group {group} to die")

    results = list(real.results())
    assert len(results) == 1, results
    (result,) = results
    assert (result.job_id, result.state, result.attempt) == (job_id, State.DONE, 2), \
        workers.logs()
    # Attempt 1 ran on host A (and was abandoned), attempt 2 on host B, nothing else.
    runs = sorted(records(out))
    seen = {worker for _, _, worker in runs}
    id_a, id_b = worker_of(worker_a.pid, seen), worker_of(worker_b.pid, seen)
    assert [(attempt, worker) for _, attempt, worker in runs] == [(1, id_a), (2, id_b)], runs
    assert result.worker == id_b
    assert real.is_drained()
    real.close()


def test_drained_worker_sees_jobs_submitted_through_another_mount(
        sshfs_mount: SshfsMounts, workers: Workers, tmp_path: Path) -> None:
    share, out = tmp_path / "share", tmp_path / "out"
    share.mkdir()
    out.mkdir()
    mount_a = sshfs_mount(share, "hostA")
    mount_b = sshfs_mount(share, "hostB")
    slow = write_script(tmp_path, "slow.sh", "#!/bin/sh\n" + RECORD + "sleep 3\n", out)
    short = write_script(tmp_path, "short.sh", SHORT_JOB, out)
    submit(mount_a, slow, ["first"])
    real = FolderQueue(share, create=False)

    worker_b = workers.start(mount_b, "--drain", "--slots", "2")
    wait_for(lambda: os.listdir(share / ".shoal" / "claimed"), timeout_s=30,
             message="host B to claim the first job")
    # Someone on host B looks at the queue (`ls`, `shoal status`): the listing of
    # pending/ is now in host B's sshfs cache. (B's own idle slot caches one too, but
    # only sometimes; this makes the case certain.)
    os.listdir(mount_b / ".shoal" / "pending")
    submit(mount_a, short, [str(i) for i in range(5)])  # host A adds work meanwhile

    assert workers.wait(worker_b, 60) == 0, workers.logs()
    counts = {state.value: n for state, n in real.counts().items() if n}
    assert counts == {"done": 6}, f"host B exited 'drained' leaving {counts}\n{workers.logs()}"
    real.close()
