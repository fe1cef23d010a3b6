"""`shoal hire --slurm` on a real single-node Slurm (tests/slurmd.py starts it)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from shoal.job import Job, State
from shoal.queue.folder import FolderQueue
from tests import slurmd
from tests.conftest import wait_for
from tests.procs import alive

pytestmark = pytest.mark.timeout(300)
slurm, slurm_cluster = slurmd.slurm, slurmd.slurm_cluster


def test_the_test_cluster_runs_a_batch_job_to_completion(slurm_cluster, tmp_path):
    out = tmp_path / "out.txt"
    job = slurm_cluster.run("sbatch", "--parsable", "-o", str(out), "--wrap",
                            "echo ran on $SLURM_JOB_NODELIST").stdout.strip()
    wait_for(lambda: slurm_cluster.job_state(job) == "COMPLETED", 60,
             message=f"Slurm job {job} to complete")
    assert out.read_text().startswith("ran on ")


LEASE_S = 5  # a quick takeover, yet no false reap of a slow beat on a loaded machine


def shoal(slurm_cluster, *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    """`shoal ARGS` as a user on the login node runs it (SLURM_CONF names our cluster)."""
    done = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                          text=True, timeout=180, env=slurm_cluster.env,
                          stdin=subprocess.DEVNULL)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


@pytest.fixture
def folder_queue(tmp_path):
    """A folder queue; every worker it saw is killed by PID at the end (if Slurm did not)."""
    q = FolderQueue(tmp_path / "q", lease_s=LEASE_S)
    (q.base / "queue.toml").write_text(f"lease_s = {LEASE_S}\n")
    seen: set[int] = set()
    q.seen_pids = seen  # type: ignore[attr-defined]
    yield q
    seen.update(w.pid for w in q.workers())
    for pid in seen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remember(queue: FolderQueue) -> list:
    workers = queue.workers()
    queue.seen_pids.update(w.pid for w in workers)  # type: ignore[attr-defined]
    return workers


def test_slurm_workers_drain_a_sweep_and_fire_leaves_no_job_and_no_process(
        slurm_cluster, folder_queue):
    q = folder_queue
    out = shoal(slurm_cluster, "hire", "--slurm", str(q.root), "2", "--time", "10").stdout
    assert "submitted 2 Slurm worker(s)" in out
    array = out.split("job array ")[1].split()[0]
    wait_for(lambda: len(remember(q)) == 2, 90, message="two Slurm workers to register")
    ids = {f"{array}_0", f"{array}_1"}
    assert set(slurm_cluster.jobs()) == ids
    # each is sized to its allocation (1 cpu of the node), and says which Slurm job it is
    assert {f"slurm-{i}" for i in ids} == {label for w in q.workers() for label in w.labels}
    assert all(w.slots == 1 for w in q.workers())
    table = shoal(slurm_cluster, "workers", str(q.root)).stdout
    assert all(f"slurm-{i}" in table for i in ids), table

    q.submit([Job.command_job(["sh", "-c", "sleep 0.1"], params={"i": i}) for i in range(30)])
    wait_for(lambda: q.counts()[State.DONE] == 30, 120, message="the sweep to finish")
    hired = remember(q)
    assert {r.worker for r in q.results()} <= {w.id for w in hired}  # all ran in Slurm

    pids = [w.pid for w in hired]
    out = shoal(slurm_cluster, "fire", "--slurm", str(q.root), "--wait", "60").stdout
    assert "asked 2 worker(s) to stop" in out
    assert "scancelled 0" in out
    wait_for(lambda: not slurm_cluster.jobs(), 60, message="no Slurm job left (squeue)")
    wait_for(lambda: not any(alive(pid) for pid in pids), 60,
             message="worker processes to exit")
    assert {slurm_cluster.job_state(i) for i in ids} == {"COMPLETED"}
