"""Waiting for results on every backend: `wait_results`, and what `subscribe` announces.

These are the reads the Executor's collector is built on (the contract's `watch` to
come): a result must be handed over at once when it is there, the wait must end by its
timeout when none comes, and a result recorded elsewhere must wake a waiter early.
"""

from __future__ import annotations

import threading
import time

from shoal.job import Job, Result, State
from tests.conftest import wait_for

WAIT_S = 30.0  # generous: a correct backend answers in milliseconds


def cmd(i: int, **options: object) -> Job:
    return Job.command_job(["echo", str(i)], **options)


def done(lease) -> Result:
    return Result(lease.job_id, State.DONE, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=0, value=f"value of {lease.job_id}")


def timed(call):
    started = time.monotonic()
    value = call()
    return value, time.monotonic() - started


def test_wait_results_returns_at_once_when_a_result_is_there(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    writer.submit([cmd(1), cmd(2)])
    lease, _ = writer.claim("w1", 2)
    writer.finish(lease, done(lease))
    found, took_s = timed(lambda: waiter.wait_results([cmd(1).id, cmd(2).id], WAIT_S))
    assert [(r.job_id, r.state, r.value) for r in found] == [
        (lease.job_id, State.DONE, f"value of {lease.job_id}")]
    assert took_s < 5


def test_wait_results_ends_by_its_timeout_when_no_result_comes(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    writer.submit([cmd(1)])
    found, took_s = timed(lambda: waiter.wait_results([cmd(1).id, "0123456789abcdef"], 0.3))
    assert found == []
    assert 0.25 <= took_s < 5


def test_wait_results_with_nothing_to_wait_for_returns_empty(queue_factory):
    waiter = queue_factory()
    found, took_s = timed(lambda: waiter.wait_results([], 0.2))
    assert found == [] and took_s < 5


def test_wait_results_wakes_when_another_view_records_a_result(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    writer.submit([cmd(1), cmd(2)])
    (lease,) = writer.claim("w1", 1)
    finisher = threading.Timer(0.3, lambda: writer.finish(lease, done(lease)))
    finisher.start()
    try:
        found, took_s = timed(lambda: waiter.wait_results([cmd(1).id, cmd(2).id], WAIT_S))
    finally:
        finisher.join(WAIT_S)
    assert [r.job_id for r in found] == [lease.job_id]
    assert 0.25 <= took_s < 5, f"woke after {took_s:.2f}s"


def test_wait_results_wakes_for_a_cancellation_from_another_view(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    writer.submit([cmd(1)])
    canceller = threading.Timer(0.3, lambda: writer.cancel([cmd(1).id]))
    canceller.start()
    try:
        found, took_s = timed(lambda: waiter.wait_results([cmd(1).id], WAIT_S))
    finally:
        canceller.join(WAIT_S)
    assert [(r.job_id, r.state) for r in found] == [(cmd(1).id, State.CANCELLED)]
    assert took_s < 5


class Heard:
    """A subscriber: every result announced to it, in order."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self._lock = threading.Lock()

    def __call__(self, result: Result) -> None:
        with self._lock:
            self.results.append(result)

    def of(self, job_id: str) -> list[Result]:
        with self._lock:
            return [r for r in self.results if r.job_id == job_id]


def test_subscribers_hear_of_finished_jobs(queue_factory):
    listener = queue_factory()
    heard = Heard()
    listener.subscribe(heard)
    listener.submit([cmd(1)])
    (lease,) = listener.claim("w1", 1)
    listener.finish(lease, done(lease))
    (result,) = wait_for(lambda: heard.of(cmd(1).id), message="the result to be announced")
    assert result.state is State.DONE and result.value == f"value of {lease.job_id}"


def test_subscribers_hear_of_cancelled_jobs(queue_factory):
    listener = queue_factory()
    heard = Heard()
    listener.subscribe(heard)
    listener.submit([cmd(1), cmd(2)])
    (running,) = listener.claim("w1", 1)
    pending = ({cmd(1).id, cmd(2).id} - {running.job_id}).pop()
    assert sorted(listener.cancel([cmd(1).id, cmd(2).id])) == sorted([cmd(1).id, cmd(2).id])
    for job_id in (pending, running.job_id):
        (result,) = wait_for(lambda job_id=job_id: heard.of(job_id), 5,
                             message=f"the cancellation of {job_id} to be announced")
        assert result.state is State.CANCELLED and result.reason


def test_subscribers_hear_of_jobs_failed_by_a_reap(queue_factory):
    listener, worker_view = queue_factory(), queue_factory()
    heard = Heard()
    listener.subscribe(heard)
    listener.submit([cmd(1, max_attempts=1)])
    worker_view.claim("w-dead", 1)  # and never renewed

    def reaped_and_failed() -> bool:
        listener.reap()
        status = listener.get(cmd(1).id)
        return status is not None and status.state is State.FAILED

    wait_for(reaped_and_failed, message="the lease to be reaped")
    (result,) = wait_for(lambda: heard.of(cmd(1).id), 5,
                         message="the reaped failure to be announced")
    assert result.state is State.FAILED and "max_attempts=1" in result.reason
