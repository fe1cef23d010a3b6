"""`shoal hire`, `workers` and `fire`: detached workers here and on a loopback SSH host."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.job import Job, State
from shoal.queue.folder import FolderQueue
from tests import machines
from tests.conftest import wait_for
from tests.procs import alive, run_shoal

pytestmark = pytest.mark.timeout(180)
ssh_keys, sshd = machines.ssh_keys, machines.sshd


def shoal(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    return run_shoal(*args, check=check, timeout=120)


# Short enough for a quick takeover, long enough that a loaded machine's slow beat is not
# taken for a death (a false reap would move the job to another attempt before the kill).
LEASE_S = 5


@pytest.fixture
def queue(tmp_path):
    """A folder queue; every worker it ever saw is killed by pid at the end."""
    q = FolderQueue(tmp_path / "q", lease_s=LEASE_S)
    (q.base / "queue.toml").write_text(f"lease_s = {LEASE_S}\n")
    seen: set[int] = set()
    q.seen_pids = seen  # type: ignore[attr-defined]
    yield q
    seen.update(w.pid for w in q.workers())
    for pid in seen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remember(queue: FolderQueue) -> list:
    workers = queue.workers()
    queue.seen_pids.update(w.pid for w in workers)  # type: ignore[attr-defined]
    return workers


@pytest.fixture
def remote_python(tmp_path) -> str:
    """This Python as the remote hosts' one: sshd passes no environment, so a PYTHONPATH
    (a worktree's src ahead of the installed shoal) is set again by a wrapper script."""
    path = os.environ.get("PYTHONPATH")
    if not path:
        return sys.executable
    wrapper = tmp_path / "remote-python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(path)} exec "
                       f"{shlex.quote(sys.executable)} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def ssh_command(server) -> str:
    return shlex.join(["ssh", "-F", "/dev/null", "-p", str(server.port), "-i",
                       str(server.keys.client_key), "-o", "BatchMode=yes",
                       "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                       "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"])


def test_hire_here_and_over_ssh_run_a_sweep_then_fire(queue, sshd, remote_python):
    remote = f"{sshd.user}@{sshd.host}"
    out = shoal("hire", str(queue.root), "2", "--host", f"{remote}:1", "--host", "localhost:1",
                "--ssh", ssh_command(sshd), "--remote-python", remote_python)
    assert f"hired 2 worker(s) on {remote}" in out.stdout
    assert "hired 2 worker(s) on localhost" in out.stdout
    wait_for(lambda: len(remember(queue)) == 4, 60, message="four workers to register")
    jobs = [Job.command_job(["sh", "-c", "sleep 0.1"], params={"i": i}) for i in range(20)]
    queue.submit(jobs)
    wait_for(lambda: queue.counts()[State.DONE] == 20, 60, message="the sweep to finish")
    pids = [w.pid for w in remember(queue)]
    assert all(w.log and Path(w.log).exists() for w in queue.workers())
    shoal("fire", str(queue.root), "--all")
    wait_for(lambda: queue.workers() == [], 30, message="the workers to leave")
    wait_for(lambda: not any(alive(pid) for pid in pids), 30, message="worker processes to exit")


def test_a_host_failing_the_check_gets_a_clear_line_and_the_others_start(queue, sshd,
                                                                        remote_python):
    refused = f"{sshd.user}@127.0.0.2"  # nothing listens there: like a wrong port
    out = shoal("hire", str(queue.root), "--host", refused,
                "--host", f"{sshd.user}@{sshd.host}:1", "--ssh", ssh_command(sshd),
                "--remote-python", remote_python, check=1)
    assert f"{refused}: not hired: ssh failed" in out.stderr
    assert f"hired 1 worker(s) on {sshd.user}@{sshd.host}" in out.stdout
    wait_for(lambda: len(remember(queue)) == 1, 60, message="the good host's worker")
    out = shoal("hire", str(queue.root), "--host", f"{sshd.user}@{sshd.host}",
                "--ssh", ssh_command(sshd), "--remote-python", "/nonexistent/python", check=1)
    assert "not hired" in out.stderr


def test_a_killed_worker_is_shown_lost_and_its_job_taken_over(queue):
    shoal("hire", str(queue.root), "2", "--slots", "1")
    wait_for(lambda: len(remember(queue)) == 2, 60, message="two workers to register")
    job = Job.command_job('if [ -z "$TAKEN" ]; then export TAKEN=1; sleep 60; fi',
                          max_attempts=3)
    queue.submit([job])
    wait_for(lambda: queue.get(job.id).state is State.RUNNING, 60, message="the job to start")
    victim = queue.get(job.id).worker
    (info,) = [w for w in queue.workers() if w.id == victim]
    os.kill(info.pid, signal.SIGKILL)
    wait_for(lambda: any(w.lost for w in queue.workers() if w.id == victim), 60,
             message="the killed worker to be shown lost")
    table = shoal("workers", str(queue.root)).stdout
    assert "lost" in table
    wait_for(lambda: queue.get(job.id).attempt == 2, 90, message="the job to be taken over")


def test_hire_over_ssh_onto_a_coordinator_copies_its_status_file_and_works(tmp_path, sshd,
                                                                           remote_python):
    from shoal.queue import open_queue
    from shoal.queue.sqlite import SqliteQueue
    from shoal.serve.coordinator import Coordinator

    status = tmp_path / "status"
    coordinator = Coordinator(SqliteQueue(tmp_path / "q.sqlite", lease_s=2),
                              status_dir=status).start()
    client = open_queue(str(status))
    pids: list[int] = []
    try:
        remote = f"{sshd.user}@{sshd.host}"
        out = shoal("hire", str(status), "1", "--host", f"{remote}:2", "--ssh",
                    ssh_command(sshd), "--remote-python", remote_python)
        assert f"hired 1 worker(s) on {remote}" in out.stdout, out.stdout + out.stderr
        wait_for(lambda: len(client.workers()) == 1, 60, message="the worker to register")
        pids = [w.pid for w in client.workers()]
        jobs = [Job.command_job(["sh", "-c", "echo $SHOAL_WORKER"], params={"i": i})
                for i in range(10)]
        client.submit(jobs)
        wait_for(lambda: client.counts()[State.DONE] == 10, 60, message="the jobs to finish")
        assert oct((status / "status.json").stat().st_mode & 0o777) == "0o600"
        assert oct(status.stat().st_mode & 0o777) == "0o700"
        shoal("fire", str(status), "--all")
        wait_for(lambda: client.workers() == [], 30, message="the worker to leave")
        wait_for(lambda: not any(alive(pid) for pid in pids), 30, message="it to exit")
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        client.close()
        coordinator.stop()


def test_fire_wait_stops_a_worker_that_does_not_leave_and_gives_its_job_back(
        queue, sshd, remote_python, tmp_path):
    remote = f"{sshd.user}@{sshd.host}"
    # The host calls itself by a name that is no ssh target (as a machine behind an ssh
    # alias does): the hard stop must reach it by the target it was hired through.
    named = tmp_path / "named-python"
    named.write_text(f"#!/bin/sh\nSHOAL_HOST=node-behind-an-alias exec "
                     f"{shlex.quote(remote_python)} \"$@\"\n")
    named.chmod(0o755)
    out = shoal("hire", str(queue.root), "1", "--host", f"{remote}:1", "--ssh",
                ssh_command(sshd), "--remote-python", str(named)).stdout
    pid = int(out.split("(pids ")[1].split(")")[0])  # the handle is host:pid
    wait_for(lambda: [w.pid for w in remember(queue)] == [pid], 60,
             message="the hired worker to register with the pid hire printed")
    job = Job.command_job(["sleep", "300"])
    queue.submit([job])
    wait_for(lambda: queue.get(job.id).state is State.RUNNING, 60, message="the job to start")
    (worker,) = queue.workers()
    assert worker.host == "node-behind-an-alias"
    done = shoal("fire", str(queue.root), "--host", worker.host, "--wait", "2",
                 "--ssh", ssh_command(sshd))
    assert "asked 1 worker(s) to stop" in done.stdout
    assert "stopped 1 that had not left after 2 s" in done.stdout
    wait_for(lambda: not alive(pid), 30, message="the worker process to be gone")
    status = queue.get(job.id)  # released by the second SIGTERM: no attempt burned
    assert status.state is State.PENDING and status.attempt == 1, status


def test_the_ssh_provider_tells_and_stops_its_workers_over_ssh(queue, sshd, remote_python):
    from shoal.hire import default_log_dir
    from shoal.providers.ssh import Host, SshProvider

    remote = f"{sshd.user}@{sshd.host}"
    provider = SshProvider(str(queue.root), default_log_dir(str(queue.root)),
                           ssh=shlex.split(ssh_command(sshd)), python=remote_python)
    handles = provider.start(2, Host(remote, 1))
    assert [h.id.rpartition(":")[0] for h in handles] == [remote, remote]
    wait_for(lambda: len(remember(queue)) == 2, 60, message="two workers over ssh")
    assert set(provider.alive(handles)) == set(handles)  # asked over ssh
    job = Job.command_job(["sleep", "300"])
    queue.submit([job])
    wait_for(lambda: queue.get(job.id).state is State.RUNNING, 60, message="the job to start")
    provider.stop(handles)  # over ssh: SIGTERM twice (its job goes back), then SIGKILL
    assert provider.alive(handles) == []
    wait_for(lambda: not any(alive(int(h.id.rpartition(":")[2])) for h in handles), 30,
             message="the worker processes to be gone")
    status = queue.get(job.id)
    assert status.state is State.PENDING and status.attempt == 1, status
