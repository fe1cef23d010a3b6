"""`sqlite://`: several worker processes on one file, and refusal on a network filesystem."""

from __future__ import annotations

import pytest

from shoal.errors import UsageError
from shoal.job import Job, State
from shoal.queue.sqlite import SqliteQueue
from tests import machines
from tests.procs import executions, marker_job

pytestmark = pytest.mark.timeout(180)
ssh_keys, sshd, sshfs_mount = machines.ssh_keys, machines.sshd, machines.sshfs_mount


def test_worker_processes_sharing_one_file_run_each_job_once(tmp_path, procs):
    out = tmp_path / "out"
    out.mkdir()
    queue = SqliteQueue(tmp_path / "q.db")
    jobs = [Job.command_job(marker_job(out), params={"i": i}) for i in range(150)]
    queue.submit(jobs)
    workers = [procs.shoal("work", f"sqlite://{queue.path}", "--drain", "--slots", "2")
               for _ in range(3)]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, procs.output(worker)
    runs = executions(out)
    assert sorted(job_id for job_id, _, _ in runs) == sorted(job.id for job in jobs)
    assert queue.counts()[State.DONE] == 150


def test_refuses_a_file_on_a_network_filesystem(tmp_path, sshfs_mount):
    share = tmp_path / "share"
    share.mkdir()
    mount = sshfs_mount(share, "host")
    with pytest.raises(UsageError, match="network filesystem"):
        SqliteQueue(mount / "q.db")
