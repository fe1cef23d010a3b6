"""Waiting for results on every backend: `watch(ids, timeout_s)`.

The Executor's collector is one loop over `watch`: a result must be handed over at once
when it is there, the wait must end by its timeout when none comes, and a final state
must wake a waiter however it came: a finish by another view or another process, a
cancel, a reap at the attempt cap. A `WatchSet` watched across calls reports each
result once, sees ids added meanwhile, and a retried job's new end once its id is
added again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shoal.job import Job, Result, State
from shoal.queue.base import WatchSet
from tests.conftest import wait_for

WAIT_S = 30.0  # generous: a correct backend answers in milliseconds
UNKNOWN = "0123456789abcdef"


def cmd(i: int, **options: object) -> Job:
    return Job.command_job(["echo", str(i)], **options)


def done(lease) -> Result:
    return Result(lease.job_id, State.DONE, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=0, value=f"value of {lease.job_id}")


def timed(call):
    started = time.monotonic()
    value = call()
    return value, time.monotonic() - started


def later(delay_s: float, action) -> threading.Timer:
    timer = threading.Timer(delay_s, action)
    timer.start()
    return timer


def test_watch_returns_at_once_when_a_result_is_there(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    writer.submit([cmd(1), cmd(2)])
    lease, _ = writer.claim("w1", 2)
    writer.finish(lease, done(lease))
    found, took_s = timed(lambda: waiter.watch([cmd(1).id, cmd(2).id], WAIT_S))
    assert [(r.job_id, r.state, r.value) for r in found] == [
        (lease.job_id, State.DONE, f"value of {lease.job_id}")]
    assert took_s < 5


def test_watch_ends_by_its_timeout_when_no_result_comes(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    writer.submit([cmd(1)])
    found, took_s = timed(lambda: waiter.watch({cmd(1).id, UNKNOWN}, 0.3))
    assert found == []
    assert 0.25 <= took_s < 5


def test_watch_with_nothing_to_watch_returns_empty(queue_factory):
    waiter = queue_factory()
    found, took_s = timed(lambda: waiter.watch([], 0.2))
    assert found == [] and took_s < 5


def test_watch_wakes_when_another_view_records_a_result(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    writer.submit([cmd(1), cmd(2)])
    (lease,) = writer.claim("w1", 1)
    finisher = later(0.3, lambda: writer.finish(lease, done(lease)))
    try:
        found, took_s = timed(lambda: waiter.watch({cmd(1).id, cmd(2).id}, WAIT_S))
    finally:
        finisher.join(WAIT_S)
    assert [r.job_id for r in found] == [lease.job_id]
    assert 0.25 <= took_s < 5, f"woke after {took_s:.2f}s"


def test_watch_wakes_for_a_cancellation_from_another_view(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    writer.submit([cmd(1)])
    canceller = later(0.3, lambda: writer.cancel([cmd(1).id]))
    try:
        found, took_s = timed(lambda: waiter.watch([cmd(1).id], WAIT_S))
    finally:
        canceller.join(WAIT_S)
    assert [(r.job_id, r.state) for r in found] == [(cmd(1).id, State.CANCELLED)]
    assert found[0].reason and took_s < 5


def test_watch_sees_a_running_job_cancelled(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    writer.submit([cmd(1)])
    writer.claim("w1", 1)
    canceller = later(0.2, lambda: writer.cancel([cmd(1).id]))
    try:
        found, _ = timed(lambda: waiter.watch([cmd(1).id], WAIT_S))
    finally:
        canceller.join(WAIT_S)
    assert [(r.job_id, r.state) for r in found] == [(cmd(1).id, State.CANCELLED)]


def test_watch_sees_a_job_failed_by_another_views_reap(queue_factory):
    waiter, worker_view, reaper = queue_factory(), queue_factory(), queue_factory()
    job = cmd(1, max_attempts=1)
    waiter.submit([job])
    worker_view.claim("w-dead", 1)  # and never beats
    stop = threading.Event()

    def reap_until_stopped() -> None:
        while not stop.is_set():
            reaper.reap()
            stop.wait(0.1)

    thread = threading.Thread(target=reap_until_stopped, daemon=True)
    thread.start()
    try:
        found, _ = timed(lambda: waiter.watch([job.id], WAIT_S))
    finally:
        stop.set()
        thread.join(WAIT_S)
    assert [(r.job_id, r.state) for r in found] == [(job.id, State.FAILED)]
    assert "max_attempts=1" in found[0].reason


FINISH_IN_CHILD = """
import sys
from shoal.job import Result, State
from shoal.queue import open_queue
queue = open_queue(sys.argv[1])
(lease,) = queue.claim("w-child", 1, wait_s=30)
queue.finish(lease, Result(lease.job_id, State.DONE, attempt=lease.attempt,
                           worker=lease.worker, exit_code=0, value="from the child"))
queue.flush()
queue.close()
"""


def test_watch_sees_a_finish_by_another_process(queue_factory, tmp_path):
    waiter = queue_factory()
    if waiter.in_process:
        pytest.skip(f"{waiter.url}: no other process can reach it (in_process)")
    where = (str(queue_factory.path.with_suffix(".status")) if queue_factory.backend == "tcp"
             else waiter.url)
    waiter.submit([cmd(1)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", FINISH_IN_CHILD, where], env=env,
                             cwd=tmp_path)
    try:
        found = wait_for(lambda: waiter.watch([cmd(1).id], 1.0), WAIT_S,
                         message="the child's result")
    finally:
        assert child.wait(WAIT_S) == 0
    assert [(r.job_id, r.state, r.value) for r in found] == [
        (cmd(1).id, State.DONE, "from the child")]


def test_a_watch_set_reports_each_result_once_and_sees_ids_added_meanwhile(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    jobs = [cmd(i) for i in range(5)]
    writer.submit(jobs)
    watched = WatchSet(job.id for job in jobs[:3])
    leases = {lease.job_id: lease for lease in writer.claim("w1", 5)}
    writer.finish(leases[jobs[0].id], done(leases[jobs[0].id]))
    assert [r.job_id for r in waiter.watch(watched, WAIT_S)] == [jobs[0].id]
    watched.discard(jobs[0].id)
    assert waiter.watch(watched, 0.2) == []  # nothing new: nothing again

    writer.finish(leases[jobs[3].id], done(leases[jobs[3].id]))  # before it is watched
    watched.add(jobs[3].id)
    assert [r.job_id for r in waiter.watch(watched, WAIT_S)] == [jobs[3].id]
    watched.discard(jobs[3].id)

    # An id added while a watch already waits, whose result lands during that wait: that
    # watch or the next one reports it (tcp learns of ids at its next call, or at submit).
    answer: list[list[Result]] = []
    waiting = threading.Thread(target=lambda: answer.append(waiter.watch(watched, 2.0)))
    waiting.start()
    time.sleep(0.2)
    watched.add(jobs[4].id)
    writer.finish(leases[jobs[4].id], done(leases[jobs[4].id]))
    waiting.join(WAIT_S)
    got = {r.job_id for r in answer[0]}
    got |= {r.job_id for r in waiter.watch(watched, WAIT_S)} if not got else set()
    assert got == {jobs[4].id}


def test_a_watch_set_sees_a_retried_job_end_again_once_added_again(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    writer.submit([cmd(1)])
    watched = WatchSet([cmd(1).id])
    (lease,) = writer.claim("w1", 1)
    writer.finish(lease, Result(cmd(1).id, State.FAILED, attempt=lease.attempt,
                                worker=lease.worker, exit_code=1))
    assert [r.state for r in waiter.watch(watched, WAIT_S)] == [State.FAILED]
    watched.discard(cmd(1).id)
    assert writer.retry([cmd(1).id]) == [cmd(1).id]
    watched.add(cmd(1).id)  # to hear of its end again
    assert waiter.watch(watched, 0.2) == []  # pending again: nothing to report
    (again,) = writer.claim("w1", 1)
    writer.finish(again, done(again))
    found = waiter.watch(watched, WAIT_S)
    assert [(r.job_id, r.state) for r in found] == [(cmd(1).id, State.DONE)]


def test_watch_of_many_ids_finds_exactly_the_final_ones(queue_factory):
    writer, waiter = queue_factory(), queue_factory()
    jobs = [cmd(i) for i in range(300)]  # past the folder's few-ids fast path
    writer.submit(jobs)
    leases = writer.claim("w1", 30)
    for lease in leases[:20]:
        writer.finish(lease, done(lease))
    writer.cancel([jobs[-1].id])
    wanted = {job.id for job in jobs} | {UNKNOWN}
    expected = {lease.job_id for lease in leases[:20]} | {jobs[-1].id}
    assert {r.job_id for r in waiter.watch(wanted, WAIT_S)} == expected
    assert {r.job_id for r in waiter.watch(WatchSet(wanted), WAIT_S)} == expected
