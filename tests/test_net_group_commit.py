"""The coordinator commits the requests of one loop turn together (`Queue.group`), and
answers none of them before that commit: a kill -9 between the two loses nothing any
client saw acknowledged."""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from shoal.errors import LeaseLost, QueueFull, ShoalError
from shoal.job import Job, Lease, Result, State
from shoal.queue.remote import CoordinatorQueue
from shoal.queue.sqlite import SqliteQueue
from tests.conftest import wait_for
from tests.test_disk_full import NO_SPACE, disk  # noqa: F401 - the fixture
from tests.test_net_durability import start_coordinator

CLIENTS = 100
WORKERS = 20  # of the clients: those that claim and finish; the others submit


def test_a_group_undoes_a_failed_call_alone_and_commits_the_rest_at_its_end(tmp_path):
    queue = SqliteQueue(tmp_path / "q.sqlite")
    other = SqliteQueue(tmp_path / "q.sqlite")  # another connection: what a reader sees
    try:
        first, second = Job.command_job(["true"]), Job.command_job(["false"])
        with queue.group():
            queue.submit([first])
            stale = Lease(first, 1, "w", "no-such-token")
            with pytest.raises(LeaseLost):
                queue.finish(stale, Result(first.id, State.DONE))
            queue.submit([second])
            assert other.get(first.id) is None  # nothing is committed inside
        assert other.get(first.id).state is State.PENDING
        assert other.get(second.id).state is State.PENDING
    finally:
        queue.close()
        other.close()


class Client(threading.Thread):
    """One client of the coordinator: submits jobs one by one, or claims and finishes
    them; notes each request the coordinator acknowledged, until it is gone."""

    def __init__(self, status: Path, index: int) -> None:
        super().__init__(daemon=True)
        self.status, self.index = status, index
        self.submitted: list[str] = []  # acknowledged
        self.finished: list[Result] = []  # acknowledged
        self.queue: CoordinatorQueue | None = None
        self.failed: BaseException | None = None

    def run(self) -> None:
        try:
            self.queue = CoordinatorQueue(str(self.status), patience_s=5)
        except ShoalError as exc:  # killed before we got in
            self.failed = exc
            return
        try:
            while True:
                if self.index < WORKERS:
                    self._work()
                else:
                    job = Job.command_job(["true", str(self.index)])
                    self.queue.submit([job])
                    self.submitted.append(job.id)
        except ShoalError:
            return  # the coordinator is gone

    def _work(self) -> None:
        worker = f"w{self.index}"
        for lease in self.queue.claim(worker, 1, wait_s=0.5):
            result = Result(lease.job_id, State.DONE, exit_code=0, attempt=lease.attempt,
                            worker=worker, reason=f"by {worker}")
            self.queue.finish(lease, result)
            self.finished.append(result)


def test_a_coordinator_killed_between_a_group_and_its_commit_loses_nothing_acknowledged(
        procs, tmp_path):
    db, status = tmp_path / "q.sqlite", tmp_path / "status"
    coordinator = start_coordinator(procs, db, status)
    clients = [Client(status, i) for i in range(CLIENTS)]
    for client in clients:
        client.start()
    # every client connected and busy, then a kill -9 at a random moment of the load
    wait_for(lambda: all(c.queue is not None or c.failed for c in clients)
             and sum(len(c.finished) for c in clients) >= 50, timeout_s=120,
             message="100 clients submitting and 20 finishing")
    threading.Event().wait(random.uniform(0.05, 1.0))
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    for client in clients:
        client.join(timeout=60)
        if client.queue is not None:
            client.queue.close()
    assert not any(client.is_alive() for client in clients)

    submitted = [job_id for client in clients for job_id in client.submitted]
    finished = [result for client in clients for result in client.finished]
    assert len(submitted) > 100 and len(finished) >= 50
    queue = SqliteQueue(db)
    try:
        states = queue.states(submitted)
        assert not set(submitted) - set(states), "acknowledged submits lost"
        for result in finished:
            status_ = queue.get(result.job_id)
            assert status_.state is State.DONE, f"acknowledged finish of {result.job_id} lost"
            assert (status_.result.worker, status_.result.reason, status_.result.attempt) == (
                result.worker, result.reason, result.attempt)
        assert len({r.job_id for r in finished}) == len(finished)  # each recorded once
        assert len(list(queue.results())) >= len(finished)
    finally:
        queue.close()


@pytest.mark.parametrize("disk", ["sqlite"], indirect=True)
def test_clients_of_a_coordinator_on_a_full_disk_each_hear_it_then_get_through(
        disk, procs, tmp_path):  # noqa: F811 - the fixture imported above
    """Submits that arrive together share a commit; on a full disk that commit fails, and
    the coordinator serves them again one by one: each client hears "no space" (nothing
    acknowledged, nothing half-written), and gets through once space is back."""
    db, status = disk.mount / "q.db", tmp_path / "status"
    coordinator = start_coordinator(procs, db, status)
    queues = [CoordinatorQueue(str(status), patience_s=60) for _ in range(20)]
    try:
        queues[0].submit([Job.command_job(["true", "first"])])
        with sqlite3.connect(db) as raw:  # an empty WAL: its next page needs a block
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        disk.fill()
        jobs = [Job.command_job(["true", str(i)], params={"pad": "x" * 20_000})
                for i in range(len(queues))]
        heard: list[BaseException | None] = [None] * len(queues)
        go = threading.Barrier(len(queues))

        def submit(i: int) -> None:
            go.wait()
            try:
                queues[i].submit([jobs[i]])
            except ShoalError as exc:
                heard[i] = exc

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(queues))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        refused = [exc for exc in heard if exc is not None]
        assert refused, "a full disk refused nothing"
        assert all(isinstance(exc, QueueFull) and NO_SPACE in str(exc).lower()
                   for exc in refused), refused
        if "one by one" not in procs.output(coordinator):
            pytest.skip("the submits came one at a time: no group met the full disk")
        disk.free()
        for queue, job, exc in zip(queues, jobs, heard, strict=True):
            if exc is not None:
                queue.submit([job])
        assert set(queues[0].states([job.id for job in jobs])) == {job.id for job in jobs}
    finally:
        for queue in queues:
            queue.close()
