"""Reaps seen from a second host's view, on every backend (and behind a coordinator).

When a worker dies, any view may take its expired leases back (`reap`). The jobs it
left running are on its own host, so a worker there must learn of that reap, whoever
did it, to kill them: otherwise they run on as orphans and status shows them running
with no live worker. Queue-level here; with real processes in test_worker_faults.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.job import Job, Reaped, State, WorkerInfo
from shoal.queue.base import Queue
from shoal.queue.folder import FolderQueue
from shoal.queue.memory import MemoryQueue
from shoal.serve.coordinator import Coordinator
from tests.conftest import BACKENDS, TEST_LEASE_S, QueueFactory, wait_for


class ServedFactory(QueueFactory):
    """Views of a coordinator that serves a folder (`shoal serve dir://X`) or memory."""

    def __init__(self, served: str, tmp_path: Path, lease_s: float) -> None:
        super().__init__("tcp", tmp_path, lease_s)
        self.served = served

    def __call__(self) -> Queue:
        if self._coordinator is None:
            served: Queue = (FolderQueue(self.path, lease_s=self.lease_s)
                             if self.served == "tcp_dir" else MemoryQueue(lease_s=self.lease_s))
            self._coordinator = Coordinator(served, status_dir=self.path.with_suffix(
                ".status")).start()
        return super().__call__()


@pytest.fixture(params=[*BACKENDS, "tcp_dir", "tcp_memory"])
def served_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueFactory]:
    """Every backend, and a coordinator over each local backend a user may serve."""
    if request.param in BACKENDS:
        factory = QueueFactory(request.param, tmp_path, TEST_LEASE_S)
    else:
        factory = ServedFactory(request.param, tmp_path, TEST_LEASE_S)
    yield factory
    factory.close()


DEAD_HOST = "host-of-the-dead"


def claimed_by_a_dead_worker(view: Queue, **options: object) -> str:
    """Submit a job and claim it for `w-dead` (registered on DEAD_HOST), which never beats
    again."""
    job = Job.command_job("sleep 100", **options)
    view.submit([job])
    (lease,) = view.claim("w-dead", 1)
    view.beat(WorkerInfo("w-dead", DEAD_HOST, 123, 1, state="working"), [lease])
    return lease.job_id


def reaped(job_id: str, attempt: int = 1) -> Reaped:
    return Reaped(job_id, "w-dead", attempt, DEAD_HOST)


def reap_until_taken_back(view: Queue, job_id: str) -> list[Reaped]:
    """Reap through `view` until the job is no longer running; return what reap reported
    (a coordinator may take it back on its own timer: the next reap still reports it)."""
    seen: list[Reaped] = []

    def taken_back() -> bool:
        seen.extend(view.reap())
        return reaped(job_id) in seen or view.get(job_id).state is not State.RUNNING

    wait_for(taken_back, message="the dead worker's lease to be taken back")
    seen.extend(view.reap())
    return seen


def test_reap_takes_back_an_expired_lease_and_names_its_worker(served_factory):
    reaper, dead = served_factory(), served_factory()
    job_id = claimed_by_a_dead_worker(dead)
    assert dead.get(job_id).state is State.RUNNING
    assert reaped(job_id) in reap_until_taken_back(reaper, job_id)
    status = reaper.get(job_id)
    assert (status.state, status.attempt) == (State.PENDING, 2)
    (again,) = reaper.claim("w-alive", 1)
    assert (again.job_id, again.attempt) == (job_id, 2)


def test_reap_at_the_attempt_cap_fails_the_job_and_names_its_worker(served_factory):
    reaper, dead = served_factory(), served_factory()
    job_id = claimed_by_a_dead_worker(dead, max_attempts=1)
    assert reaped(job_id) in reap_until_taken_back(reaper, job_id)
    result = reaper.get(job_id).result
    assert result.state is State.FAILED and "max_attempts=1" in result.reason
    assert result.worker == "w-dead"


def test_a_reap_by_one_view_reaches_the_dead_workers_host(served_factory):
    reaper, dead_host = served_factory(), served_factory()
    job_id = claimed_by_a_dead_worker(dead_host)
    reap_until_taken_back(reaper, job_id)
    # A worker on the dead worker's host reaps as part of its heartbeat: it must be told.
    heard: list[Reaped] = []
    wait_for(lambda: heard.extend(dead_host.reap()) or reaped(job_id) in heard, 2,
             message="the dead worker's host to hear of the reap")


def test_a_reap_names_the_attempt_it_took_so_a_newer_one_is_told_apart(served_factory):
    reaper, other = served_factory(), served_factory()
    job_id = claimed_by_a_dead_worker(other)
    reap_until_taken_back(reaper, job_id)
    (again,) = reaper.claim("w-dead", 1)  # the same worker, back from a pause, runs it again
    assert again.attempt == 2
    assert reaped(job_id, attempt=1) in other.reap()  # and not the attempt now running


def test_reap_keeps_reporting_a_reap_to_every_caller(served_factory):
    """Each call reports the recent reaps (callers act on each once): a second view, or the
    same one again, still hears it."""
    reaper, first, second = served_factory(), served_factory(), served_factory()
    job_id = claimed_by_a_dead_worker(first)
    reap_until_taken_back(reaper, job_id)
    for view in (reaper, first, second, first):
        assert reaped(job_id) in view.reap()
