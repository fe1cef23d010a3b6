"""The queue contract, run on every backend: what any worker, executor or CLI relies on."""

from __future__ import annotations

import threading
import time

import pytest

from shoal.errors import LeaseLost
from shoal.job import Job, Result, State, WorkerInfo
from shoal.queue import STOP, STOP_NOW
from tests.conftest import wait_for


def cmd(i: int, **options: object) -> Job:
    return Job.command_job(["echo", str(i)], **options)


def done(lease, **fields) -> Result:
    return Result(lease.job_id, State.DONE, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=0, **fields)


def worker_info(worker: str, **fields: object) -> WorkerInfo:
    return WorkerInfo(worker, "host-a", 123, slots=2, **fields)


def claim_eventually(queue, worker: str, timeout_s: float = 10.0):
    """Claim, reaping as workers do, until a lease comes back."""
    def attempt():
        queue.reap()
        return queue.claim(worker, 1)
    return wait_for(attempt, timeout_s, message=f"{worker} to claim a job")[0]


def test_submit_is_idempotent_by_job_id(queue):
    assert queue.submit([cmd(1), cmd(2)]) == [cmd(1).id, cmd(2).id]
    assert queue.submit([cmd(1)]) == []
    assert queue.counts()[State.PENDING] == 2
    assert cmd(1).id == Job.command_job(["echo", "1"]).id  # id comes from content
    # ...and from the run options given, so a rerun with another timeout is another job
    assert cmd(1, timeout_s=1).id not in (cmd(1).id, cmd(1, timeout_s=10).id)
    assert cmd(1, max_attempts=3, retries=0, timeout_s=None).id == cmd(1).id  # defaults


def test_finish_then_claim_records_then_leases_the_same_worker_its_next_job(queue):
    queue.submit([cmd(1), cmd(2)])
    (first,) = queue.claim("w1", 1)
    (next_lease,) = queue.finish(first, done(first), then_claim=1)
    assert next_lease.worker == "w1" and next_lease.job_id != first.job_id
    assert queue.get(first.job_id).state is State.DONE
    assert queue.get(next_lease.job_id).state is State.RUNNING
    assert queue.finish(next_lease, done(next_lease), then_claim=1) == []  # nothing left
    with pytest.raises(LeaseLost):  # a stale lease records nothing and claims nothing
        queue.finish(first, done(first), then_claim=1)
    assert [r.job_id for r in queue.results()].count(first.job_id) == 1
    assert queue.counts()[State.RUNNING] == 0


def test_finish_claims_nothing_unless_asked(queue):
    queue.submit([cmd(1), cmd(2)])
    (first,) = queue.claim("w1", 1)
    assert queue.finish(first, done(first)) == []
    assert queue.counts()[State.PENDING] == 1


def test_claim_hands_each_job_out_once(queue):
    queue.submit([cmd(1)])
    (lease,) = queue.claim("w1", 5)
    assert lease.job == cmd(1) and lease.attempt == 1 and lease.worker == "w1"
    assert queue.claim("w2", 5) == []
    assert queue.get(cmd(1).id).state is State.RUNNING


def test_claim_waits_for_a_job_submitted_later(queue_factory):
    queue, other = queue_factory(), queue_factory()
    submitter = threading.Timer(0.2, lambda: other.submit([cmd(7)]))
    submitter.start()
    started = time.monotonic()
    leases = queue.claim("w1", 1, wait_s=5)
    assert [lease.job_id for lease in leases] == [cmd(7).id]
    assert time.monotonic() - started < 3
    submitter.join(10)  # its submit may still be answering: not past the views' close


def test_finish_records_exactly_one_result(queue):
    queue.submit([cmd(1)])
    (lease,) = queue.claim("w1")
    queue.finish(lease, done(lease))
    status = queue.get(cmd(1).id)
    assert status.state is State.DONE and status.result.exit_code == 0
    assert [r.job_id for r in queue.results()] == [cmd(1).id]
    with pytest.raises(LeaseLost):
        queue.finish(lease, done(lease))
    assert len(list(queue.results())) == 1


def test_expired_lease_goes_back_with_next_attempt_and_stale_finish_is_refused(queue_factory):
    queue, other = queue_factory(), queue_factory()
    queue.submit([cmd(1)])
    (stale,) = queue.claim("w1")
    fresh = claim_eventually(other, "w2")
    assert fresh.job_id == stale.job_id and fresh.attempt == 2 and fresh.token != stale.token
    with pytest.raises(LeaseLost):
        queue.finish(stale, done(stale))
    other.finish(fresh, done(fresh))
    (result,) = list(other.results())
    assert result.attempt == 2 and result.worker == "w2"


BEATEN_LEASE_S = 2.0

def test_beat_keeps_a_lease_alive_past_the_lease_time(queue_factory):
    # A lease of 2 s beaten every 1/3 s: only a stall of over 1.6 s between a beat and the
    # other view's reap and claim could take it (on 0.6 s leases a loaded CI machine did).
    queue_factory.lease_s = BEATEN_LEASE_S
    queue, other = queue_factory(), queue_factory()
    queue.submit([cmd(1)])
    (lease,) = queue.claim("w1")
    end = time.monotonic() + 2 * BEATEN_LEASE_S
    while time.monotonic() < end:
        assert queue.beat(worker_info("w1", state="working"), [lease]).lost == ()
        other.reap()
        assert other.claim("w2") == []
        time.sleep(BEATEN_LEASE_S / 6)
    queue.finish(lease, done(lease))
    assert queue.get(cmd(1).id).state is State.DONE


def test_beat_reports_leases_that_were_taken_over(queue_factory):
    queue, other = queue_factory(), queue_factory()
    queue.submit([cmd(1)])
    (lease,) = queue.claim("w1")
    claim_eventually(other, "w2")
    assert queue.beat(worker_info("w1"), [lease]).lost == (lease,)


def test_lease_expiring_at_the_cap_fails_the_job_with_a_reason(queue_factory):
    queue, other = queue_factory(), queue_factory()
    job = cmd(1, max_attempts=2)
    queue.submit([job])
    queue.claim("w1")
    claim_eventually(other, "w2")  # attempt 2, never renewed either
    wait_for(lambda: (other.reap(), other.get(job.id).state is State.FAILED)[1],
             message="the job to fail at max_attempts")
    result = other.get(job.id).result
    assert "max_attempts=2" in result.reason and result.attempt == 2


def test_release_failed_retries_with_next_attempt(queue):
    queue.submit([cmd(1)])
    (lease,) = queue.claim("w1")
    queue.release(lease, failed=Result(lease.job_id, State.FAILED, exit_code=3, reason="exit 3"))
    (again,) = queue.claim("w1")
    assert again.attempt == 2
    with pytest.raises(LeaseLost):
        queue.release(lease, failed=Result(lease.job_id, State.FAILED, reason="late"))


def test_release_gives_the_job_back_untouched(queue):
    queue.submit([cmd(1)])
    (lease,) = queue.claim("w1")
    queue.release(lease)
    assert queue.get(cmd(1).id).state is State.PENDING
    (again,) = queue.claim("w2")
    assert again.attempt == 1 and again.worker == "w2"


def test_cancel_pending_and_running_jobs(queue):
    queue.submit([cmd(1), cmd(2)])
    (running,) = queue.claim("w1")
    pending_id = ({cmd(1).id, cmd(2).id} - {running.job_id}).pop()
    assert sorted(queue.cancel([pending_id, running.job_id])) == sorted(
        [pending_id, running.job_id])
    assert queue.claim("w2") == []
    assert queue.beat(worker_info("w1"), [running]).lost == (running,)
    with pytest.raises(LeaseLost):
        queue.finish(running, done(running))
    states = {r.job_id: r.state for r in queue.results()}
    assert states == {pending_id: State.CANCELLED, running.job_id: State.CANCELLED}
    assert all(r.reason for r in queue.results())
    assert queue.cancel([pending_id]) == []  # final jobs stay as they are


def test_retry_puts_failed_jobs_back(queue):
    queue.submit([cmd(1)])
    (lease,) = queue.claim("w1")
    queue.finish(lease, Result(lease.job_id, State.FAILED, exit_code=1, reason="exit status 1"))
    assert queue.retry([cmd(1).id]) == [cmd(1).id]
    assert queue.retry([cmd(1).id]) == []
    (again,) = queue.claim("w1")
    queue.finish(again, done(again))
    assert [r.state for r in queue.results()] == [State.DONE]


def test_counts_and_drained(queue):
    assert queue.is_drained()
    queue.submit([cmd(i) for i in range(5)])
    assert not queue.is_drained()
    leases = queue.claim("w1", 2)
    queue.finish(leases[0], done(leases[0]))
    queue.finish(leases[1], Result(leases[1].job_id, State.FAILED, reason="exit status 1"))
    queue.claim("w1", 1)
    counts = queue.counts()
    assert (counts[State.PENDING], counts[State.RUNNING], counts[State.DONE],
            counts[State.FAILED]) == (2, 1, 1, 1)
    assert {s.state for s in queue.jobs()} == {State.PENDING, State.RUNNING, State.DONE,
                                              State.FAILED}


@pytest.mark.parametrize("same_worker", [False, True], ids=["workers", "slots"])
def test_concurrent_claims_never_hand_a_job_out_twice(queue_factory, same_worker):
    jobs = [cmd(i) for i in range(600)]
    queue_factory().submit(jobs)
    claimed: list[str] = []
    lock = threading.Lock()

    shared = queue_factory()

    def drain(name: str) -> None:
        view = shared if same_worker else queue_factory()
        name = "w" if same_worker else name
        while leases := view.claim(name, 1):
            time.sleep(0.001)  # hold the lease a moment, as a running job does
            for lease in leases:
                view.finish(lease, done(lease))
            with lock:
                claimed.extend(lease.job_id for lease in leases)

    threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(claimed) == sorted(job.id for job in jobs)
    assert len(list(queue_factory().results())) == 600


def test_worker_registry_marks_silent_workers_lost(queue_factory):
    queue, other = queue_factory(), queue_factory()
    queue.beat(worker_info("w1", state="working"), [])
    (info,) = other.workers()
    assert (info.id, info.host, info.slots, info.lost) == ("w1", "host-a", 2, False)
    wait_for(lambda: other.workers()[0].lost, message="w1 to be reported lost")
    queue.unregister("w1")
    assert other.workers() == []


def test_control_channel_reaches_one_worker(queue_factory):
    queue, other = queue_factory(), queue_factory()
    other.send_control("w1", STOP)
    other.send_control("w1", STOP_NOW)
    assert queue.beat(worker_info("w2"), []).commands == ()
    assert queue.beat(worker_info("w1"), []).commands == (STOP, STOP_NOW)
    assert queue.beat(worker_info("w1"), []).commands == ()
