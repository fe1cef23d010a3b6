"""`shoal hire --slurm` on a real single-node Slurm (tests/slurmd.py starts it)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.job import Job, State
from shoal.providers.slurm import WARNING_SIGNAL, SlurmOptions
from shoal.providers.slurm_work import work_options
from tests import slurmd, test_hire
from tests.conftest import redis_queue_url, shoal_processes, wait_for
from tests.procs import alive

pytestmark = pytest.mark.timeout(300)
slurm, slurm_cluster = slurmd.slurm, slurmd.slurm_cluster
# a folder queue whose workers are killed by PID at the end (if Slurm did not)
queue, remember, LEASE_S = test_hire.queue, test_hire.remember, test_hire.LEASE_S


def test_the_test_cluster_runs_a_batch_job_to_completion(slurm_cluster, tmp_path):
    out = tmp_path / "out.txt"
    job = slurm_cluster.run("sbatch", "--parsable", "-o", str(out), "--wrap",
                            "echo ran on $SLURM_JOB_NODELIST").stdout.strip()
    wait_for(lambda: slurm_cluster.job_state(job) == "COMPLETED", 60,
             message=f"Slurm job {job} to complete")
    assert out.read_text().startswith("ran on ")


def shoal(slurm_cluster, *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    """`shoal ARGS` as a user on the login node runs it (SLURM_CONF names our cluster)."""
    done = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                          text=True, timeout=180, env=slurm_cluster.env,
                          stdin=subprocess.DEVNULL)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


def test_slurm_workers_drain_a_sweep_and_fire_leaves_no_job_and_no_process(
        slurm_cluster, queue):
    out = shoal(slurm_cluster, "hire", "--slurm", str(queue.root), "2", "--time", "10").stdout
    assert "submitted 2 Slurm worker(s)" in out
    array = out.split("job array ")[1].split()[0]
    wait_for(lambda: len(remember(queue)) == 2, 90, message="two Slurm workers to register")
    ids = {f"{array}_0", f"{array}_1"}
    assert set(slurm_cluster.jobs()) == ids
    # each is sized to its allocation (1 cpu of the node), and says which Slurm job it is
    assert {f"slurm-{i}" for i in ids} == {label for w in queue.workers() for label in w.labels}
    assert all(w.slots == 1 for w in queue.workers())
    table = shoal(slurm_cluster, "workers", str(queue.root)).stdout
    assert all(f"slurm-{i}" in table for i in ids), table

    queue.submit([Job.command_job(["sh", "-c", "sleep 0.1"], params={"i": i}) for i in range(30)])
    wait_for(lambda: queue.counts()[State.DONE] == 30, 120, message="the sweep to finish")
    hired = remember(queue)
    assert {r.worker for r in queue.results()} <= {w.id for w in hired}  # all ran in Slurm

    pids = [w.pid for w in hired]
    out = shoal(slurm_cluster, "fire", "--slurm", str(queue.root), "--wait", "60").stdout
    assert "asked 2 worker(s) to stop" in out
    assert "scancelled 0" in out
    wait_for(lambda: not slurm_cluster.jobs(), 60, message="no Slurm job left (squeue)")
    wait_for(lambda: not any(alive(pid) for pid in pids), 60,
             message="worker processes to exit")
    assert {slurm_cluster.job_state(i) for i in ids} == {"COMPLETED"}


def test_workers_not_started_yet_are_cancelled_by_fire(slurm_cluster, queue):
    out = shoal(slurm_cluster, "hire", "--slurm", str(queue.root), "3",
                "--sbatch-arg=--hold").stdout
    array = out.split("job array ")[1].split()[0]
    wait_for(lambda: len(slurm_cluster.jobs()) == 3, 30, message="three held array tasks")
    assert set(slurm_cluster.jobs().values()) == {"PENDING"}
    out = shoal(slurm_cluster, "fire", "--slurm", str(queue.root), "--wait", "5").stdout
    assert "cancelled 3 Slurm worker(s) not started yet" in out
    wait_for(lambda: not slurm_cluster.jobs(), 30, message="no Slurm job left (squeue)")
    assert slurm_cluster.job_state(array) == "CANCELLED"  # never split: one record
    assert queue.workers() == []


def test_a_worker_that_does_not_leave_in_time_is_scancelled_with_its_job(
        slurm_cluster, queue):
    shoal(slurm_cluster, "hire", "--slurm", str(queue.root), "1", "--cpus-per-task", "2")
    wait_for(lambda: len(remember(queue)) == 1, 90, message="the Slurm worker to register")
    (worker,) = queue.workers()
    assert worker.slots == 2 and worker.resources.get("cpus") == 2  # its allocation's cpus
    job = Job.command_job(["sleep", "300"])
    queue.submit([job])
    wait_for(lambda: shoal_processes(job=job.id), 60, message="the long job to start")
    job_pids = shoal_processes(job=job.id)
    out = shoal(slurm_cluster, "fire", "--slurm", str(queue.root), "--wait", "3").stdout
    assert "scancelled 1 that had not left after 3 s" in out
    wait_for(lambda: not slurm_cluster.jobs(), 60, message="no Slurm job left (squeue)")
    watched = {worker.pid: "the worker", **{pid: "its job" for pid in job_pids}}

    def survivors() -> str:
        return "; ".join(f"{what} {pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()!r}"
                         for pid, what in watched.items() if alive(pid))

    try:
        wait_for(lambda: not survivors(), 60, message="the worker and its job to be gone")
    except pytest.fail.Exception:  # say who is left, and what the worker's Slurm log says
        logs = "".join(path.read_text() for path in queue.root.glob(".shoal/worker-logs/*"))
        pytest.fail(f"still alive 60 s after squeue emptied: {survivors()}\n{logs[-3000:]}")
    status = queue.get(job.id)  # given back before the scancel: no attempt burned
    assert status.state is State.PENDING and status.attempt == 1, status


def test_slurm_options_need_slurm_and_slurm_refusals_are_one_line(slurm_cluster, queue):
    done = shoal(slurm_cluster, "hire", str(queue.root), "--partition", "debug", check=2)
    assert "--partition is a Slurm option: add --slurm" in done.stderr
    done = shoal(slurm_cluster, "hire", "--slurm", str(queue.root), "--host", "elsewhere", check=2)
    assert "drop --host" in done.stderr
    done = shoal(slurm_cluster, "hire", "--slurm", str(queue.root), "--partition", "nosuch",
                 check=None)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "sbatch failed" in line and "partition" in line.lower()
    assert not slurm_cluster.jobs()


def test_without_sbatch_hire_says_so_in_one_line(queue, tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no Slurm commands there
    done = subprocess.run([sys.executable, "-m", "shoal", "hire", "--slurm",
                           str(queue.root)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert "sbatch not found on PATH" in line


def test_a_worker_is_sized_from_its_allocation():
    env = {"SLURM_CPUS_ON_NODE": "4", "SLURM_MEM_PER_CPU": "1000",
           "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "80"}
    assert work_options(env) == ["--cpus", "4", "--mem", "4000M", "--gpus", "0",
                                 "--label", "slurm-77_3"]
    env = {"SLURM_CPUS_PER_TASK": "2", "SLURM_CPUS_ON_NODE": "8", "SLURM_MEM_PER_NODE": "512",
           "SLURM_JOB_ID": "5", "CUDA_VISIBLE_DEVICES": "1,3"}
    assert work_options(env) == ["--cpus", "2", "--mem", "512M", "--label", "slurm-5"]
    assert work_options({"SLURM_JOB_CPUS_PER_NODE": "6(x2)", "SLURM_GPUS_ON_NODE": "2"}) == [
        "--cpus", "6", "--gpus", "2"]


def test_a_walltime_ends_a_worker_without_failing_or_burning_its_job(slurm_cluster,
                                                                      queue):
    job = Job.command_job(["sleep", "300"], max_attempts=1)
    queue.submit([job])  # before the hire: the worker takes it as soon as it starts
    # warned 90 s before a 2 min limit: at Slurm's first check after 30 s (it checks every
    # 30 s), so the worker has long started and taken the job
    out = shoal(slurm_cluster, "hire", "--slurm", str(queue.root), "1", "--time", "2",
                "--sbatch-arg=--signal=B:USR1@90").stdout
    array = out.split("job array ")[1].split()[0]
    wait_for(lambda: queue.get(job.id).state is State.RUNNING, 90, message="the job to start")
    worker_pid = remember(queue)[0].pid
    wait_for(lambda: not slurm_cluster.jobs(), 150, message="the worker to leave Slurm")
    status = queue.get(job.id)
    assert status.state is State.PENDING and status.attempt == 1, status
    assert slurm_cluster.job_state(f"{array}_0") == "COMPLETED"  # left, not killed
    wait_for(lambda: not alive(worker_pid), 30, message="the worker process to exit")
    logs = "".join(p.read_text() for p in (queue.root / ".shoal" / "worker-logs").glob("*.log"))
    assert "time-limit warning" in logs


def test_workers_ask_for_the_time_limit_warning_unless_told_otherwise():
    assert SlurmOptions(time="1:00:00").sbatch_flags() == ["--time=1:00:00", WARNING_SIGNAL]
    assert SlurmOptions(extra=("--signal=B:USR1@300",)).sbatch_flags() == [
        "--signal=B:USR1@300"]


def test_a_worker_whose_slurm_job_is_scancelled_has_its_job_taken_over(
        slurm_cluster, queue, tmp_path):
    mark = tmp_path / "first-run"
    # a plain scancel SIGTERMs the job's processes with the worker: the run may fail
    # (exit 143) before the worker gives it back, so the job allows one retry
    job = Job.command_job(["sh", "-c", f'[ -e {mark} ] && exit 0; touch {mark}; sleep 300'],
                          retries=1)
    queue.submit([job])
    out = shoal(slurm_cluster, "hire", "--slurm", str(queue.root), "1").stdout
    first = out.split("(tasks ")[1].split()[0]
    wait_for(lambda: queue.get(job.id).state is State.RUNNING, 90, message="the job to start")
    (victim,) = remember(queue)
    shoal(slurm_cluster, "hire", "--slurm", str(queue.root), "1")
    wait_for(lambda: len(remember(queue)) == 2, 90, message="a second Slurm worker")
    hired = {w.id for w in queue.workers()}
    slurm_cluster.run("scancel", first)
    wait_for(lambda: queue.get(job.id).state is State.DONE, 120,
             message="the job to be taken over and done")
    # usually the other worker ran it; the victim may have re-run it itself if its slot
    # saw the run fail before its main thread took Slurm's SIGTERM (STATUS-slurm.md)
    assert queue.get(job.id).worker in hired
    wait_for(lambda: not alive(victim.pid), 60, message="the scancelled worker to be gone")


@pytest.fixture(params=["tcp", "redis"])
def reachable_queue(request, tmp_path):
    """A queue a cluster reaches over the network: a `shoal serve` coordinator's contact
    file (tcp://), or a Redis URL; the URL to hire on and a client of it."""
    from shoal.queue import open_queue

    if request.param == "redis":
        url = redis_queue_url()
        client = open_queue(url, lease_s=LEASE_S)
        yield url, client
        client.close()
        return
    from shoal.queue.sqlite import SqliteQueue
    from shoal.serve.coordinator import Coordinator

    status = tmp_path / "status"
    coordinator = Coordinator(SqliteQueue(tmp_path / "queue.sqlite", lease_s=LEASE_S),
                              status_dir=status).start()
    client = open_queue(str(status))
    yield str(status), client
    client.close()
    coordinator.stop()


def test_slurm_workers_serve_a_coordinator_or_redis_queue(slurm_cluster, reachable_queue):
    url, client = reachable_queue
    shoal(slurm_cluster, "hire", "--slurm", url, "2")
    pids: list[int] = []
    try:
        wait_for(lambda: len(client.workers()) == 2, 90, message="two Slurm workers")
        pids = [w.pid for w in client.workers()]
        client.submit([Job.command_job(["true"], params={"i": i}) for i in range(20)])
        wait_for(lambda: client.counts()[State.DONE] == 20, 120, message="the sweep to end")
        out = shoal(slurm_cluster, "fire", "--slurm", url).stdout
        assert "asked 2 worker(s) to stop" in out and "scancelled 0" in out
        wait_for(lambda: not slurm_cluster.jobs(), 60, message="no Slurm job left (squeue)")
        wait_for(lambda: not any(alive(pid) for pid in pids), 60, message="workers to exit")
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
