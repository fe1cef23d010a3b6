"""Autoscaling (`shoal hire --slurm --max N`) on a real Slurm, and the idle exit it uses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from shoal.job import Job, State
from shoal.providers.scaler import Look, Policy
from tests import slurmd, test_hire
from tests.conftest import wait_for
from tests.procs import alive

pytestmark = pytest.mark.timeout(300)
slurm, slurm_cluster = slurmd.slurm, slurmd.slurm_cluster
queue, remember = test_hire.queue, test_hire.remember


class Scaler:
    """A `shoal hire --slurm --max ...` in the foreground, as a user runs it; its lines
    (stderr) collected as they come; stopped by PID with SIGINT (Ctrl-C)."""

    def __init__(self, cluster: slurmd.SlurmCluster, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shoal", "hire", "--slurm", *args], env=cluster.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def interrupt(self) -> int:
        """Ctrl-C; its exit status."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def test_autoscaling_goes_from_zero_to_max_while_jobs_wait_and_back_to_zero(
        slurm_cluster, queue):
    queue.submit([Job.command_job(["sleep", "0.2"], params={"i": i}) for i in range(40)])
    scaler = Scaler(slurm_cluster, str(queue.root), "--max", "2", "--idle-timeout", "3s",
                    "--every", "1")
    seen: set[str] = set()  # every Slurm job the scaler ever had

    def slurm_jobs() -> dict[str, str]:
        jobs = slurm_cluster.jobs()
        seen.update(jobs)
        return jobs

    try:
        wait_for(lambda: len(slurm_jobs()) == 2, 60, message="two Slurm workers (--max)")
        wait_for(lambda: len(slurm_jobs()) <= 2 and queue.counts()[State.DONE] == 40, 120,
                 message="the 40 jobs to be done")
        hired = remember(queue)
        assert {r.worker for r in queue.results()} <= {w.id for w in hired}  # all in Slurm
        assert {label[len("slurm-"):] for w in hired for label in w.labels} <= seen
        # nothing waits: the idle workers leave after 3 s, and none is asked for again
        wait_for(lambda: not slurm_jobs(), 60, message="no Slurm worker left (idle exits)")
        assert len(seen) == 2, seen  # never more than --max, and no worker replaced
        assert {slurm_cluster.job_state(job) for job in seen} == {"COMPLETED"}
        wait_for(lambda: not any(alive(w.pid) for w in hired), 30, message="workers to exit")
        assert scaler.process.poll() is None  # still watching the queue
        assert scaler.said("40 job(s) waiting; 0 worker(s), 0 not working yet: asking for 2")
        assert scaler.interrupt() == 0
        assert scaler.said("stopped autoscaling")
        assert not any("Traceback" in line for line in scaler.lines), scaler.lines
    finally:
        scaler.kill()


def test_a_restarted_scaler_counts_the_workers_it_asked_for_and_does_not_ask_again(
        slurm_cluster, queue):
    queue.submit([Job.command_job(["true"], params={"i": i}) for i in range(3)])
    # held: they stay PENDING in Slurm, workers that are coming but not working yet
    args = [str(queue.root), "--max", "5", "--every", "1", "--sbatch-arg=--hold"]
    first = Scaler(slurm_cluster, *args)
    try:
        wait_for(lambda: len(slurm_cluster.jobs()) == 3, 60, message="three held workers")
        assert first.said("asking for 3 more")
        assert first.interrupt() == 0
    finally:
        first.kill()
    before = slurm_cluster.jobs()
    second = Scaler(slurm_cluster, *args)
    try:
        wait_for(lambda: second.said("3 job(s) waiting; 3 worker(s), 3 not working yet"), 60,
                 message="the restarted scaler's first look")
        assert not second.said("asking for")
        assert slurm_cluster.jobs() == before  # no second submission
        queue.submit([Job.command_job(["true"], params={"i": i}) for i in range(3, 5)])
        wait_for(lambda: len(slurm_cluster.jobs()) == 5, 60,
                 message="two more workers for two more jobs (up to --max 5)")
        assert second.said("5 job(s) waiting; 3 worker(s), 3 not working yet: asking for 2")
    finally:
        second.interrupt()
        second.kill()


def test_jobs_no_worker_takes_are_not_asked_for_again_and_again(slurm_cluster, queue):
    """A job needing a GPU the workers are not given: the workers asked for come, find
    nothing they can run and leave; the scaler says so once and waits for the queue to
    change instead of submitting workers every look."""
    queue.submit([Job.command_job(["true"], needs={"gpus": 1})])
    scaler = Scaler(slurm_cluster, str(queue.root), "--max", "2", "--idle-timeout", "2s",
                    "--every", "1")
    seen: set[str] = set()
    try:
        wait_for(lambda: seen.update(slurm_cluster.jobs()) or scaler.said("left untaken"), 90,
                 message="the scaler to see its workers leave the job untaken")
        asked = len(seen)
        assert asked == 1, seen  # one worker for one job, once
        # the next looks (every 1 s) must ask for none
        wait_for(lambda: len([line for line in scaler.lines if "waiting" in line]) >= 2, 30,
                 message="another look")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # five more looks
            seen.update(slurm_cluster.jobs())
            time.sleep(0.5)
        assert len(seen) == asked, seen
        queue.submit([Job.command_job(["true"])])  # the queue changes: a worker again
        wait_for(lambda: queue.counts()[State.DONE] == 1, 90, message="the runnable job done")
        assert queue.counts()[State.PENDING] == 1  # the GPU job still waits, not failed
    finally:
        scaler.interrupt()
        scaler.kill()


def test_min_workers_stay_when_the_others_leave_idle(slurm_cluster, queue):
    queue.submit([Job.command_job(["sleep", "1"], params={"i": i}) for i in range(4)])
    scaler = Scaler(slurm_cluster, str(queue.root), "--max", "2", "--min", "1",
                    "--idle-timeout", "2", "--every", "1")
    try:
        wait_for(lambda: len(slurm_cluster.jobs()) == 2, 60, message="two Slurm workers")
        steady, elastic = sorted(slurm_cluster.jobs(), key=lambda job: int(job.split("_")[0]))
        wait_for(lambda: queue.counts()[State.DONE] == 4, 120, message="the jobs to be done")
        wait_for(lambda: list(slurm_cluster.jobs()) == [steady], 60,
                 message="the worker above --min to leave when idle")
        assert slurm_cluster.job_state(elastic) == "COMPLETED"
        (worker,) = remember(queue)  # the --min one is still there, and was not replaced
        assert worker.labels == (f"slurm-{steady}",) and alive(worker.pid)
        wait_for(lambda: scaler.said("0 job(s) waiting; 1 worker(s), 0 not working yet"), 30,
                 message="the scaler to see one worker left")
        assert not scaler.said("0 job(s) waiting; 1 worker(s), 0 not working yet: asking")
    finally:
        scaler.interrupt()
        scaler.kill()


def test_the_scaler_asks_for_what_neither_free_slots_nor_coming_workers_cover():
    policy = Policy(most=10, least=0, per_worker=2)
    assert Look(waiting=40, hired=0, coming=0, free=0).more(policy) == 10  # capped at most
    assert Look(waiting=5, hired=0, coming=0, free=0).more(policy) == 3  # 2 jobs a worker
    assert Look(waiting=5, hired=2, coming=2, free=0).more(policy) == 1
    assert Look(waiting=5, hired=3, coming=0, free=6).more(policy) == 0  # idle slots take them
    assert Look(waiting=0, hired=0, coming=0, free=0).more(Policy(most=4, least=2)) == 2
    assert Look(waiting=0, hired=3, coming=0, free=3).more(Policy(most=4, least=2)) == 0


def test_an_idle_worker_leaves_after_its_idle_timeout_but_not_while_a_job_runs(queue):
    queue.submit([Job.command_job(["sleep", "3"])])
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "shoal", "work", str(queue.root),
                           "--idle-timeout", "3s", "--slots", "1"],
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert queue.counts()[State.DONE] == 1  # the 3 s job was not cut by the 3 s timeout
    assert took >= 6, took  # 3 s of job, then 3 s idle (3 s: a loaded first claim fits in it)
    assert queue.workers() == []


def test_autoscaling_options_are_checked_in_one_line(queue):
    def refused(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "shoal", "hire", str(queue.root), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        (line,) = done.stderr.strip().splitlines()
        return line

    assert "--idle-timeout is an autoscaling option: add --max N" in refused(
        "--slurm", "--idle-timeout", "60s")
    assert "--max: autoscaling works with --slurm only" in refused("--max", "3")
    assert "COUNT (4) and --max: give one" in refused("4", "--slurm", "--max", "3")
    assert "--min 5 is more than --max 3" in refused("--slurm", "--max", "3", "--min", "5")
    done = subprocess.run([sys.executable, "-m", "shoal", "hire", str(queue.root), "--slurm",
                           "--max", "3", "--idle-timeout", "0s"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'--idle-timeout': '0s': give a finite number of seconds > 0" in done.stderr
