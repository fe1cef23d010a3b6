"""Workers lent until a known time (`shoal work --until`), and jobs stopped with their worker.

A worker starts only jobs expected to end before its machine goes back (their timeout,
else how long their like took) and leaves when none does; a job killed by the very
signal that stopped its worker (Slurm signals both at once) goes back to the queue with
its attempt unspent, never "failed".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.calls import call_job
from shoal.job import Job, State
from shoal.providers.slurm_work import WARNING_ENV, until_options
from shoal.queue.base import Queue
from shoal.queue.folder import FolderQueue
from shoal.worker.resources import Resources
from shoal.worker.walltime import MARGIN_S
from tests import callfns
from tests.conftest import QueueFactory, shoal_processes, wait_for
from tests.test_worker_resources import run_drained

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=["memory", "folder", "sqlite", "tcp", "redis"])
def local_queue(request, tmp_path):
    """A queue of each kind of claim: polled (folder, sqlite) or blocking (memory, tcp,
    redis); 5 s leases, so a loaded machine loses none."""
    factory = QueueFactory(request.param, tmp_path, 5.0)
    queue = factory()
    yield queue
    queue.close()
    factory.close()


def work_until(queue: Queue, end: float) -> str:
    """Run a one-slot worker lent until `end` to its way out; return it."""
    return run_drained(queue, Resources.detect(slots=1), until=end).exit_reason


def untouched(queue: Queue, job: Job) -> None:
    """Still pending, first attempt unspent, no failed attempt recorded."""
    status = queue.get(job.id)
    assert status.state is State.PENDING and status.attempt == 1 and not status.attempts, status


def test_a_job_whose_timeout_would_not_fit_is_not_started_and_one_behind_it_runs(
        local_queue, tmp_path):
    started = tmp_path / "long-started"
    long = Job.command_job(f"touch {started}; sleep 120", timeout_s=120, name="long")
    short = Job.command_job(["true"], timeout_s=20, name="short")
    local_queue.submit([long, short])  # the long one is first in line
    assert work_until(local_queue, time.time() + 60 + MARGIN_S) == "walltime"
    assert local_queue.get(short.id).state is State.DONE
    untouched(local_queue, long)
    assert not started.exists()


def test_a_job_without_timeout_is_judged_by_how_long_its_like_took(local_queue):
    # 6 s left: the first `sleep 3` runs (nothing known of its like), the second would end
    # after the end once the first took 3 s; a job of another shape (`true`) still runs
    first, second = (Job.command_job(["sleep", "3"], params={"i": i}) for i in range(2))
    other = Job.command_job(["true"], name="other")
    local_queue.submit([first, second, other])
    assert work_until(local_queue, time.time() + 6 + MARGIN_S) == "walltime"
    assert local_queue.get(first.id).state is State.DONE
    assert local_queue.get(other.id).state is State.DONE
    untouched(local_queue, second)


def test_a_worker_whose_end_has_come_leaves_at_once_and_claims_nothing(local_queue):
    job = Job.command_job(["true"])
    local_queue.submit([job])
    assert work_until(local_queue, time.time() - 1) == "walltime"
    untouched(local_queue, job)


# -- real processes: a worker and its job stopped by the same signal --------------------


def held_job(mark: Path, trap: bool) -> Job:
    """Runs once for 300 s (marking its first run), then at once: which worker reran it
    shows in its result. With `trap`, a shell that exits 143 on SIGTERM (as most do)."""
    body = f"[ -e {mark} ] && exit 0; touch {mark}; "
    body += "trap 'exit 143' TERM; sleep 300 & wait" if trap else "exec sleep 300"
    return Job.command_job(["sh", "-c", body], max_attempts=1)


def given_back_then_run_elsewhere(procs, queue: FolderQueue, worker, job: Job) -> None:
    """The stopped worker left cleanly with the job back unspent; another runs it once."""
    assert worker.wait(timeout=60) == 0, procs.output(worker)
    untouched(queue, job)  # max_attempts=1: a burned attempt would have failed it
    other = procs.shoal("work", str(queue.root), "--drain")
    assert other.wait(timeout=60) == 0, procs.output(other)
    status = queue.get(job.id)
    assert status.state is State.DONE and status.attempt == 1, status


@pytest.mark.parametrize("job_first", [True, False], ids=["job-first", "worker-first"])
@pytest.mark.parametrize("trap", [False, True], ids=["killed", "exit-143"])
def test_a_job_stopped_with_its_worker_goes_back_unspent_and_another_worker_runs_it(
        procs, tmp_path, job_first, trap):
    queue = FolderQueue(tmp_path / "q")
    job = held_job(tmp_path / "ran", trap)
    queue.submit([job])
    worker = procs.shoal("work", str(queue.root), "--slots", "1")
    wait_for(lambda: (tmp_path / "ran").exists() and shoal_processes(job=job.id), 60,
             message="the job to start")
    group = os.getpgid(shoal_processes(job=job.id)[0])
    # as Slurm at scancel or the time limit: every process of the allocation at once
    targets = [lambda: os.killpg(group, signal.SIGTERM),
               lambda: os.kill(worker.pid, signal.SIGTERM)]
    for send in targets if job_first else reversed(targets):
        send()
    given_back_then_run_elsewhere(procs, queue, worker, job)
    out = procs.output(worker)
    assert "failed" not in out and "retry" not in out, out
    assert "stopped with the worker" in out


def test_a_call_stopped_with_its_worker_goes_back_unspent(procs, tmp_path):
    queue = FolderQueue(tmp_path / "q")
    gate, started = tmp_path / "gate", tmp_path / "started"
    job = call_job(callfns.wait_gate, (str(gate), "ran", str(started)), max_attempts=1)
    queue.submit([job])
    worker = procs.shoal("work", str(queue.root), "--slots", "1")
    wait_for(lambda: started.exists() and started.read_text(), 60, message="the call to start")
    host = int(started.read_text())  # the interpreter running it: its own process group
    os.killpg(os.getpgid(host), signal.SIGTERM)
    os.kill(worker.pid, signal.SIGTERM)
    gate.touch()  # the second run goes straight through
    given_back_then_run_elsewhere(procs, queue, worker, job)


def test_a_job_killed_alone_by_sigterm_still_fails(procs, tmp_path):
    queue = FolderQueue(tmp_path / "q")
    job = Job.command_job(["sleep", "300"], max_attempts=1, retries=0)
    queue.submit([job])
    worker = procs.shoal("work", str(queue.root), "--slots", "1", "--drain")
    wait_for(lambda: shoal_processes(job=job.id), 60, message="the job to start")
    os.killpg(os.getpgid(shoal_processes(job=job.id)[0]), signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, procs.output(worker)
    status = queue.get(job.id)
    assert status.state is State.FAILED and "SIGTERM" in status.result.reason, status


def test_until_takes_epoch_seconds_or_an_iso_time_and_refuses_the_rest_in_one_line(tmp_path):
    queue = FolderQueue(tmp_path / "q")
    job = Job.command_job(["true"])
    queue.submit([job])

    def work(until: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shoal", "work", str(queue.root),
                               "--until", until], capture_output=True, text=True, timeout=60)

    done = work("tomorrow")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "--until" in line and "tomorrow" in line
    for past in [str(int(time.time()) - 10), "2001-01-01T00:00:00"]:
        done = work(past)  # already over: leaves at once, runs nothing
        assert done.returncode == 0, done.stderr
        assert "walltime" in done.stderr
        untouched(queue, job)


def test_a_slurm_worker_takes_its_end_from_slurm_job_end_time_less_the_warning():
    env = {"SLURM_JOB_END_TIME": "1790000000", "SLURM_JOB_ID": "5"}
    assert until_options(env) == ["--until", "1790000000"]
    assert until_options({**env, WARNING_ENV: "60"}) == ["--until", "1789999940"]
    assert until_options({}) == []  # not in an allocation: no end
