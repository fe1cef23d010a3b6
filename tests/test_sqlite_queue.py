"""`sqlite://`: several worker processes on one file, refusal on a network filesystem, and
a file of an older schema."""

from __future__ import annotations

import sqlite3

import pytest

from shoal.errors import UsageError
from shoal.job import Job, Result, State, dumps
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


# The jobs table as files made before issue 15 have it (no lane, no rank), with a done
# job, a failed one and two pending ones as that code wrote them.
OLD_JOBS = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, spec TEXT NOT NULL,
    state TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 1, worker TEXT, token TEXT,
    deadline REAL, result TEXT, payload BLOB, final_seq INTEGER);
CREATE INDEX jobs_state ON jobs(state, seq);
"""


def _old_file(path, jobs: dict[str, State]) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_JOBS)
    for job, state in ((Job.command_job(["echo", name], name=name), state)
                       for name, state in jobs.items()):
        result = (dumps(Result(job.id, state, name=job.name, attempt=1).to_dict()).decode()
                  if state.final else None)
        db.execute("INSERT INTO jobs(id, spec, state, result) VALUES (?, ?, ?, ?)",
                   (job.id, dumps(job.to_dict()).decode(), state.value, result))
    db.commit()
    db.close()


def test_a_file_of_the_schema_before_priorities_opens_and_schedules(tmp_path):
    path = tmp_path / "old.db"
    _old_file(path, {"done": State.DONE, "failed": State.FAILED, "a": State.PENDING,
                     "b": State.PENDING})
    named = {name: Job.command_job(["echo", name], name=name)
             for name in ("done", "failed", "a", "b")}
    looking = SqliteQueue(path, create=False)  # a CLI command's view: migrates to retry
    assert looking.retry([named["failed"].id], first=True) == [named["failed"].id]
    queue = SqliteQueue(path)
    after_done = Job.command_job(["echo", "after-done"], name="after-done",
                                 after=[named["done"].id])
    after_b = Job.command_job(["echo", "after-b"], name="after-b", after=[named["b"].id])
    queue.submit([after_done, after_b, Job.command_job(["echo", "urgent"], name="urgent",
                                                       priority=3)])
    assert queue.get(after_b.id).state is State.WAITING
    order = []
    while leases := queue.claim("w", 1):
        order.append(leases[0].job.name)
        queue.finish(leases[0], Result(leases[0].job_id, State.DONE, attempt=1, exit_code=0))
    assert order == ["urgent", "failed", "a", "b", "after-done", "after-b"]
    assert [s.seq for s in queue.listing()] == [1, 2, 3, 4, 5, 6, 7]
