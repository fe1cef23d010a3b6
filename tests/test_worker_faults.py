"""Real worker processes on one folder: races, poison pills, stops, timeouts.

SIGKILL and SIGSTOP of a worker mid-job, on every backend: tests/conformance/test_worker_faults.py.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from shoal.job import Job, State
from shoal.queue.base import Queue
from shoal.queue.folder import FolderQueue
from tests.conftest import shoal_processes, wait_for
from tests.procs import executions, marker_job

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[FolderQueue, Path]:
    out = tmp_path / "out"
    out.mkdir()
    return FolderQueue(tmp_path / "queue"), out


def worker_ids(queue: Queue) -> list[str]:
    return [w.id for w in queue.workers()]


def test_racing_workers_run_each_job_exactly_once(setup, procs):
    queue, out = setup
    jobs = [Job.command_job(marker_job(out), params={"i": i}) for i in range(400)]
    queue.submit(jobs)
    workers = [procs.shoal("work", str(queue.root), "--drain", "--slots", "2")
               for _ in range(4)]
    for proc in workers:
        assert proc.wait(timeout=120) == 0, procs.output(proc)
    runs = executions(out)
    assert sorted(job_id for job_id, _, _ in runs) == sorted(job.id for job in jobs)
    assert {attempt for _, attempt, _ in runs} == {1}
    assert len({worker for _, _, worker in runs}) >= 2, "only one worker did any work"
    results = list(queue.results())
    assert len(results) == 400 and {r.state for r in results} == {State.DONE}


def test_poison_pill_fails_after_max_attempts_and_others_run(setup, procs):
    queue, out = setup
    pill = Job.command_job("kill -9 $PPID; sleep 5", max_attempts=2, name="pill")
    good = [Job.command_job(marker_job(out), params={"i": i}) for i in range(5)]
    queue.submit([pill])

    def pill_state() -> State:
        return queue.get(pill.id).state

    starts = 0
    while pill_state() is not State.FAILED and starts < 5:
        starts += 1
        worker = procs.shoal("work", str(queue.root), "--slots", "1", "--lease", "0.5")
        wait_for(lambda w=worker: w.poll() is not None or pill_state() is State.FAILED, 30,
                 message="the pill to kill its worker or fail")
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=10)
    assert pill_state() is State.FAILED
    assert "2 time(s)" in queue.get(pill.id).result.reason
    queue.submit(good)
    last = procs.shoal("work", str(queue.root), "--drain", "--lease", "0.5")
    assert last.wait(timeout=60) == 0
    assert len(executions(out)) == 5


def test_only_the_job_dies_worker_goes_on(setup, procs):
    queue, out = setup
    suicide = Job.command_job("kill -9 $$")
    queue.submit([suicide, Job.command_job(marker_job(out))])
    worker = procs.shoal("work", str(queue.root), "--drain", "--slots", "1")
    assert worker.wait(timeout=60) == 0
    result = queue.get(suicide.id).result
    assert (result.state, result.reason) == (State.FAILED, "killed by SIGKILL")
    assert len(executions(out)) == 1


def test_timeout_kills_the_whole_job_tree(setup, procs):
    queue, _ = setup
    job = Job.command_job("sleep 60 & sleep 60; wait", timeout_s=0.5)
    queue.submit([job])
    worker = procs.shoal("work", str(queue.root), "--drain")
    assert worker.wait(timeout=60) == 0
    result = queue.get(job.id).result
    assert result.state is State.FAILED and result.reason.startswith("timed out after 0.5 s")
    wait_for(lambda: shoal_processes(job=job.id) == [], 10, message="the job tree to be gone")


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(setup, procs):
    queue, out = setup
    job = Job.command_job(f"trap '' TERM; sleep 30; {marker_job(out)}", timeout_s=0.5)
    queue.submit([job])
    worker = procs.shoal("work", str(queue.root), "--drain", "--grace", "0.5")
    assert worker.wait(timeout=30) == 0
    result = queue.get(job.id).result
    assert result.state is State.FAILED and "SIGKILL" in result.reason
    assert 0.9 <= result.duration_s < 10 and executions(out) == []


@pytest.mark.parametrize("on_stop", ["finish", "release"])
def test_sigterm_stops_gracefully(setup, procs, on_stop):
    queue, out = setup
    job = Job.command_job(marker_job(out, "sleep 1.5;"))
    queue.submit([job])
    worker = procs.shoal("work", str(queue.root), "--slots", "1", "--on-stop", on_stop)
    wait_for(lambda: queue.counts()[State.RUNNING] == 1, 20, message="the job to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    status = queue.get(job.id)
    if on_stop == "finish":
        assert status.state is State.DONE and len(executions(out)) == 1
    else:
        assert (status.state, status.attempt) == (State.PENDING, 1)
        assert executions(out) == []


def test_fire_stops_a_worker_through_the_queue(setup, procs):
    queue, _ = setup
    worker = procs.shoal("work", str(queue.root), "--slots", "1", "--lease", "2")
    wait_for(lambda: worker_ids(queue), 20, message="the worker to register")
    fire = procs.shoal("fire", str(queue.root), "--all")
    assert fire.wait(timeout=30) == 0
    assert worker.wait(timeout=30) == 0
    assert worker_ids(queue) == []


def test_broken_records_are_failed_with_a_reason_and_others_run(setup, procs):
    queue, out = setup
    good = Job.command_job(marker_job(out))
    queue.submit([good])
    (queue.base / "jobs" / "deadbeefdeadbeef.json").write_text('{"id": "dead", "ki')
    (queue.base / "pending" / "deadbeefdeadbeef.1").touch()
    (queue.root / ".half.py.tmp").write_text("print(")  # a drop-in still being written
    worker = procs.shoal("work", str(queue.root), "--drain")
    assert worker.wait(timeout=60) == 0
    assert len(executions(out)) == 1
    states = {r.job_id: r for r in queue.results()}
    assert states[good.id].state is State.DONE
    broken = states["deadbeefdeadbeef"]
    assert broken.state is State.FAILED and "malformed" in broken.reason
    assert "deadbeefdeadbeef.json" in broken.reason
    assert len(states) == 2
