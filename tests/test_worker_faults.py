"""Real worker processes on one folder: races, SIGKILL, SIGSTOP, poison pills, stops, timeouts."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from shoal.job import Job, State
from shoal.queue.base import Queue
from shoal.queue.folder import FolderQueue
from tests.conftest import wait_for
from tests.procs import executions, marker_job

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[FolderQueue, Path]:
    out = tmp_path / "out"
    out.mkdir()
    return FolderQueue(tmp_path / "queue"), out


def shoal_processes(worker: str | None = None, job: str | None = None) -> list[int]:
    """Live processes carrying a shoal job's environment (by worker and/or job id)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if worker and f"SHOAL_WORKER={worker}".encode() not in env:
            continue
        if job and f"SHOAL_JOB_ID={job}".encode() not in env:
            continue
        if worker or job:
            found.append(int(entry.name))
    return found


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


def sigkill_of_a_worker_mid_job_loses_nothing(queue, target: str, out: Path, procs,
                                               *lease: str) -> None:
    """A worker killed with its jobs running: another takes them over, kills the orphans.
    Shared by the folder queue (here) and the network queue (test_net_faults.py)."""
    slow_on_victim = 'if [ -n "$VICTIM" ]; then sleep 60; fi;'
    jobs = [Job.command_job(marker_job(out, slow_on_victim), params={"i": i}) for i in range(6)]
    queue.submit(jobs)
    victim = procs.shoal("work", target, "--slots", "2", *lease, env={"VICTIM": "1"})
    wait_for(lambda: queue.counts()[State.RUNNING] == 2, 20, message="victim to run 2 jobs")
    (victim_id,) = worker_ids(queue)
    wait_for(lambda: len(shoal_processes(worker=victim_id)) >= 2, message="jobs to start")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    rescuer = procs.shoal("work", target, "--slots", "2", *lease, "--drain")
    assert rescuer.wait(timeout=60) == 0, procs.output(rescuer)
    results = {r.job_id: r for r in queue.results()}
    assert set(results) == {job.id for job in jobs}
    assert {r.state for r in results.values()} == {State.DONE}
    assert sorted(r.attempt for r in results.values()) == [1, 1, 1, 1, 2, 2]
    assert shoal_processes(worker=victim_id) == [], "the dead worker's jobs were left running"
    assert "took back 2 lease(s)" in procs.output(rescuer)


def stopped_worker_has_its_late_result_refused(queue, target: str, out: Path, procs,
                                               *lease: str) -> None:
    """A SIGSTOPped worker (as good as a network cut) loses its lease; after SIGCONT its
    late result is refused and it keeps working."""
    job = Job.command_job(marker_job(out, 'if [ "$SHOAL_ATTEMPT" = 1 ]; then sleep 2; fi;'))
    queue.submit([job])
    sleeper = procs.shoal("work", target, "--slots", "1", *lease)
    wait_for(lambda: queue.counts()[State.RUNNING] == 1, 20, message="the job to start")
    (sleeper_id,) = worker_ids(queue)
    os.kill(sleeper.pid, signal.SIGSTOP)
    rescuer = procs.shoal("work", target, "--slots", "1", *lease, "--drain")
    assert rescuer.wait(timeout=60) == 0, procs.output(rescuer)
    os.kill(sleeper.pid, signal.SIGCONT)
    wait_for(lambda: "not recorded" in procs.output(sleeper) or "lost lease" in
             procs.output(sleeper), 20, message="the woken worker to notice its lost lease")
    (result,) = list(queue.results())
    assert (result.state, result.attempt) == (State.DONE, 2)
    assert result.worker != sleeper_id
    assert 2 in [attempt for _, attempt, _ in executions(out)]
    assert shoal_processes(job=job.id) == []
    assert sleeper.poll() is None, "the woken worker should keep working"


def test_sigkill_of_a_worker_mid_job_loses_nothing(setup, procs):
    queue, out = setup
    sigkill_of_a_worker_mid_job_loses_nothing(queue, str(queue.root), out, procs,
                                              "--lease", "1")


def test_stopped_worker_past_its_lease_has_its_late_result_refused(setup, procs):
    queue, out = setup
    stopped_worker_has_its_late_result_refused(queue, str(queue.root), out, procs,
                                               "--lease", "1")


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
