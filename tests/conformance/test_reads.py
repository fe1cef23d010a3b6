"""Derived reads on every backend: `states`, `is_drained`, seen from another view.

Another view is another process or host on the same queue (see QueueFactory), so each
test writes through one view and reads through a second.
"""

from __future__ import annotations

from shoal.job import Job, Result, State
from tests.conftest import wait_for

UNKNOWN = "0123456789abcdef"


def cmd(i: int) -> Job:
    return Job.command_job(["echo", str(i)])


def done(lease) -> Result:
    return Result(lease.job_id, State.DONE, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=0)


def failed(lease) -> Result:
    return Result(lease.job_id, State.FAILED, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=1, reason="exit status 1")


def one_job_in_each_state(queue) -> dict[str, State]:
    """Five jobs: pending, running, done, failed, cancelled; returns id -> its state."""
    jobs = [cmd(i) for i in range(5)]
    queue.submit(jobs)
    first, second, third = queue.claim("w1", 3)
    queue.finish(first, done(first))
    queue.finish(second, failed(second))
    pending = [job.id for job in jobs if job.id not in {x.job_id for x in (first, second,
                                                                            third)}]
    queue.cancel([pending[0]])
    return {third.job_id: State.RUNNING, first.job_id: State.DONE,
            second.job_id: State.FAILED, pending[0]: State.CANCELLED,
            pending[1]: State.PENDING}


def test_states_gives_each_known_job_its_state_and_leaves_unknown_ids_out(queue_factory):
    writer, reader = queue_factory(), queue_factory()
    expected = one_job_in_each_state(writer)
    assert reader.states([*expected, UNKNOWN]) == expected
    assert reader.states([]) == {}
    assert reader.states([UNKNOWN]) == {}


def test_states_of_many_jobs_at_once(queue_factory):
    writer, reader = queue_factory(), queue_factory()
    jobs = [cmd(i) for i in range(150)]
    writer.submit(jobs)
    leases = writer.claim("w1", 100)
    for lease in leases[:50]:
        writer.finish(lease, done(lease))
    found = reader.states([job.id for job in jobs] + [UNKNOWN])
    assert len(found) == 150
    assert sorted(found.values()).count(State.DONE) == 50
    assert list(found.values()).count(State.RUNNING) == 50
    assert list(found.values()).count(State.PENDING) == 50


def test_is_drained_only_when_nothing_is_pending_or_running(queue_factory):
    writer, reader = queue_factory(), queue_factory()
    assert reader.is_drained()
    writer.submit([cmd(1), cmd(2)])
    assert not reader.is_drained()
    first, second = writer.claim("w1", 2)
    assert not reader.is_drained()  # running, nothing pending
    writer.finish(first, done(first))
    assert not reader.is_drained()
    writer.finish(second, failed(second))
    # final, whether done or failed (a folder's fence outlives its result by milliseconds)
    wait_for(reader.is_drained, message="the queue to be drained")
    writer.retry([second.job_id])
    assert not reader.is_drained()
    writer.cancel([second.job_id])
    wait_for(reader.is_drained, message="the queue to be drained after a cancel")
