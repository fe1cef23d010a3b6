"""Giving a job back, on every backend: `release(lease, failed=result)` after a failed
attempt, `release(lease)` on a stop.

A failed attempt that is tried again must leave its record (exit status, reason, log)
for the user to see why the job needed a second run (`JobStatus.attempts`); a release
(a worker stopping) is no failure and must not cost the job an attempt.
"""

from __future__ import annotations

import pytest

from shoal.errors import LeaseLost
from shoal.job import Job, Result, State
from shoal.queue.base import Queue
from tests.conftest import wait_for


def failed_attempts(queue: Queue, job_id: str) -> list[Result]:
    """The records kept of a job's failed attempts, oldest first."""
    return list(queue.get(job_id).attempts)


def failure(lease, code: int) -> Result:
    return Result(lease.job_id, State.FAILED, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=code, reason=f"exit status {code}")


def done(lease) -> Result:
    return Result(lease.job_id, State.DONE, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=0)


def first_attempt_failed(queue_factory, command: str, retries: int, code: int):
    """Two views of one queue, and a job whose first attempt (by w1) failed with `code`."""
    worker, reader = queue_factory(), queue_factory()
    job = Job.command_job(command, retries=retries)
    worker.submit([job])
    (first,) = worker.claim("w1", 1)
    worker.release(first, failed=failure(first, code))
    return worker, reader, job, first


def test_release_failed_keeps_the_failed_attempts_record(queue_factory):
    worker, reader, job, _ = first_attempt_failed(queue_factory, "exit 3", 1, 3)
    status = reader.get(job.id)
    assert (status.state, status.attempt) == (State.PENDING, 2)
    (second,) = worker.claim("w2", 1)
    assert second.attempt == 2
    worker.finish(second, failure(second, 4))
    records = failed_attempts(reader, job.id)
    assert [(r.attempt, r.worker, r.exit_code, r.reason) for r in records] == [
        (1, "w1", 3, "exit status 3")]
    final = reader.get(job.id).result
    assert (final.state, final.attempt, final.exit_code) == (State.FAILED, 2, 4)


def test_release_failed_moves_to_the_next_attempt_and_is_fenced(queue_factory):
    worker, reader, _, first = first_attempt_failed(queue_factory, "exit 3", 2, 3)
    (second,) = reader.claim("w2", 1)
    assert (second.attempt, second.worker) == (2, "w2")
    with pytest.raises(LeaseLost):  # a stale lease gives nothing back
        worker.release(first, failed=failure(first, 3))
    reader.finish(second, done(second))
    assert [(r.state, r.attempt) for r in reader.results()] == [(State.DONE, 2)]


def test_release_keeps_the_attempt_number_and_records_no_failure(queue_factory):
    worker, reader, job, _ = first_attempt_failed(queue_factory, "sleep 1", 2, 1)
    kept = failed_attempts(reader, job.id)
    (second,) = worker.claim("w1", 1)
    worker.release(second)  # a worker stopping: no failure, no attempt spent
    status = reader.get(job.id)
    assert (status.state, status.attempt, status.result) == (State.PENDING, 2, None)
    assert failed_attempts(reader, job.id) == kept
    (again,) = reader.claim("w2", 1)
    assert (again.attempt, again.worker) == (2, "w2")
    with pytest.raises(LeaseLost):  # the old holder can no longer give it back
        worker.release(second)
    assert reader.get(job.id).state is State.RUNNING


def test_a_retried_job_shows_no_failed_attempt_from_before_the_retry(queue_factory):
    worker, reader, job, _ = first_attempt_failed(queue_factory, "exit 3", 2, 3)
    (second,) = worker.claim("w1", 1)
    worker.release(second, failed=failure(second, 4))  # old run: records for attempts 1, 2
    (third,) = worker.claim("w1", 1)
    worker.finish(third, failure(third, 3))  # failed for good
    assert reader.retry([job.id]) == [job.id]
    (fresh,) = worker.claim("w2", 1)
    worker.release(fresh, failed=failure(fresh, 5))  # the new run's own first failure
    (lost,) = worker.claim("w3", 1)  # attempt 2, never beaten: reaped, no record written
    assert lost.attempt == 2
    wait_for(lambda: reader.reap() and reader.get(job.id).attempt == 3, 30,
             message="attempt 2 to be reaped")
    status = reader.get(job.id)
    assert [(r.attempt, r.worker, r.exit_code) for r in status.attempts] == [(1, "w2", 5)]
