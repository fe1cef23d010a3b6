"""`beat(info, leases) -> Beat(lost, commands)`, on every backend: a worker's heartbeat in one
step registers it, extends its current leases, reports the lost ones and hands over its
control commands, each once."""

from __future__ import annotations

import threading

from shoal.job import Beat, Result, State, WorkerInfo
from shoal.queue import STOP, STOP_NOW
from tests.conformance.test_contract import claim_eventually, cmd, done


def worker_info(worker: str, **fields: object) -> WorkerInfo:
    return WorkerInfo(worker, "host-a", 123, slots=2, **fields)


# -- lost leases ----------------------------------------------------------------------------


def test_a_beat_without_leases_loses_nothing_and_brings_nothing(queue):
    assert queue.beat(worker_info("w1"), []) == Beat((), ())


def test_a_beat_returns_only_the_leases_that_are_no_longer_current(queue_factory):
    queue, other = queue_factory(), queue_factory()
    queue.submit([cmd(1), cmd(2), cmd(3)])
    kept, cancelled, finished = queue.claim("w1", 3)
    other.cancel([cancelled.job_id])
    queue.finish(finished, done(finished))  # a finished job's lease is over as well
    beat = queue.beat(worker_info("w1", state="working"), [kept, cancelled, finished])
    assert sorted(lease.job_id for lease in beat.lost) == sorted(
        [cancelled.job_id, finished.job_id])
    assert all(lease in (cancelled, finished) for lease in beat.lost)  # the caller's objects
    queue.finish(kept, done(kept))  # the kept lease is still good
    assert queue.get(kept.job_id).state is State.DONE


def test_a_lease_taken_over_is_lost_and_a_stale_beat_does_not_win_it_back(queue_factory):
    queue, other = queue_factory(), queue_factory()
    queue.submit([cmd(1)])
    (stale,) = queue.claim("w1")
    fresh = claim_eventually(other, "w2")
    assert queue.beat(worker_info("w1"), [stale]).lost == (stale,)
    assert other.beat(worker_info("w2"), [fresh]).lost == ()
    other.finish(fresh, done(fresh))
    (result,) = list(other.results())
    assert (result.worker, result.attempt) == ("w2", 2)


def test_a_lease_released_elsewhere_is_lost(queue):
    queue.submit([cmd(1)])
    (lease,) = queue.claim("w1")
    queue.release(lease)
    assert queue.beat(worker_info("w1"), [lease]).lost == (lease,)
    (again,) = queue.claim("w2")
    assert queue.beat(worker_info("w1"), [lease]).lost == (lease,)  # another worker has it
    assert queue.beat(worker_info("w2"), [again]).lost == ()


# -- control commands -----------------------------------------------------------------------


def test_commands_come_in_order_once_and_only_to_their_worker(queue_factory):
    queue, other = queue_factory(), queue_factory()
    other.send_control("w1", STOP)
    other.send_control("w2", STOP_NOW)
    assert queue.beat(worker_info("w1"), []).commands == (STOP,)
    assert queue.beat(worker_info("w1"), []).commands == ()
    other.send_control("w1", STOP_NOW)  # sent after a beat: the next beat brings it
    assert queue.beat(worker_info("w1"), []).commands == (STOP_NOW,)
    assert other.beat(worker_info("w2"), []).commands == (STOP_NOW,)


def test_a_command_is_handed_over_once_when_views_beat_at_once(queue_factory):
    views = [queue_factory() for _ in range(4)]
    for _ in range(10):
        views[0].send_control("w1", STOP)
    taken: list[str] = []
    lock = threading.Lock()

    def beat_often(view) -> None:
        for _ in range(20):
            commands = view.beat(worker_info("w1"), []).commands
            with lock:
                taken.extend(commands)

    threads = [threading.Thread(target=beat_often, args=(view,)) for view in views]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert taken == [STOP] * 10


# -- the registry ---------------------------------------------------------------------------


def test_a_beat_lists_the_worker_with_its_state(queue_factory):
    queue, other = queue_factory(), queue_factory()
    queue.submit([cmd(1)])
    (lease,) = queue.claim("w1")
    queue.beat(worker_info("w1", state="working", running=(lease.job_id,), done=4), [lease])
    (seen,) = other.workers()
    assert (seen.id, seen.host, seen.pid, seen.slots) == ("w1", "host-a", 123, 2)
    assert (seen.state, seen.running, seen.done, seen.lost) == (
        "working", (lease.job_id,), 4, False)
    queue.finish(lease, done(lease))
    queue.beat(worker_info("w1", state="draining", done=5), [])  # the latest beat wins
    (seen,) = other.workers()
    assert (seen.state, seen.running, seen.done) == ("draining", (), 5)


def test_workers_are_listed_each_once(queue_factory):
    queue, other = queue_factory(), queue_factory()
    for _ in range(3):
        queue.beat(worker_info("w1"), [])
        other.beat(worker_info("w2", state="idle"), [])
    assert sorted(info.id for info in queue.workers()) == ["w1", "w2"]


def test_a_beat_for_a_failed_job_reports_it_lost(queue):
    queue.submit([cmd(1)])
    (lease,) = queue.claim("w1")
    queue.finish(lease, Result(lease.job_id, State.FAILED, reason="exit status 1"))
    assert queue.beat(worker_info("w1"), [lease]).lost == (lease,)
