"""Slurm workers and their allocation's end, on a real Slurm (tests/slurmd.py starts it):
no job is started that cannot end in time, and a scancel burns no attempt."""

from __future__ import annotations

import pytest

from shoal.job import Job, State
from tests import slurmd, test_hire
from tests.conftest import shoal_processes, wait_for
from tests.procs import alive
from tests.test_slurm import shoal

pytestmark = pytest.mark.timeout(300)
slurm, slurm_cluster = slurmd.slurm, slurmd.slurm_cluster
queue, remember = test_hire.queue, test_hire.remember


def worker_logs(queue) -> str:
    return "".join(p.read_text() for p in (queue.root / ".shoal" / "worker-logs").glob("*.log"))


def test_a_one_minute_worker_runs_what_fits_and_leaves_without_starting_what_does_not(
        slurm_cluster, queue, tmp_path):
    started = tmp_path / "long-started"
    long = Job.command_job(f"touch {started}; sleep 120", timeout_s=120, name="long")
    short = Job.command_job(["sleep", "1"], timeout_s=20, name="short")
    queue.submit([long, short])  # the one that cannot fit is first in line
    # warned only 5 s before the end: the worker leaves by itself long before
    out = shoal(slurm_cluster, "hire", "--slurm", str(queue.root), "1", "--time", "1",
                "--sbatch-arg=--signal=B:USR1@5").stdout
    array = out.split("job array ")[1].split()[0]
    wait_for(lambda: queue.get(short.id).state is State.DONE, 90, message="the short job")
    wait_for(lambda: not slurm_cluster.jobs(), 50, message="the worker to leave Slurm")
    assert slurm_cluster.job_state(f"{array}_0") == "COMPLETED"  # left, not killed
    status = queue.get(long.id)
    assert status.state is State.PENDING and status.attempt == 1 and not status.attempts
    assert not started.exists()
    assert "walltime: claiming no more" in worker_logs(queue)


def test_a_scancelled_worker_gives_its_running_job_back_unspent(slurm_cluster, queue):
    job = Job.command_job(["sleep", "300"], max_attempts=1)
    queue.submit([job])
    out = shoal(slurm_cluster, "hire", "--slurm", str(queue.root), "1").stdout
    task = out.split("(tasks ")[1].split()[0]
    wait_for(lambda: shoal_processes(job=job.id), 90, message="the job to start")
    job_pids = shoal_processes(job=job.id)
    (worker,) = remember(queue)
    slurm_cluster.run("scancel", task)  # SIGTERM to the worker and its job together
    wait_for(lambda: not any(alive(pid) for pid in [worker.pid, *job_pids]), 60,
             message="the worker and its job to be gone")
    status = queue.get(job.id)  # max_attempts=1: a burned attempt would have failed it
    assert status.state is State.PENDING and status.attempt == 1 and not status.attempts
    assert "stopped with the worker" in worker_logs(queue)
