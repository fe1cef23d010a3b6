"""Issue 15 over TCP: a claim the coordinator parks gets the first job that fits it, a
parked claim no pending job fits does not hold back a worker that one fits, and a
submission split in two messages sends the jobs others wait for first."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shoal.job import Job, Result, State
from shoal.queue.remote import CoordinatorQueue
from shoal.queue.scheduling import Capacity
from shoal.queue.sqlite import SqliteQueue
from shoal.serve.coordinator import Coordinator
from shoal.serve.locate import serve
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)

CPU_BOX = Capacity({"cpus": 4})
GPU_BOX = Capacity({"cpus": 4, "gpus": 1})


@pytest.fixture
def coordinator(tmp_path: Path):
    running = serve(SqliteQueue(tmp_path / "q.sqlite", lease_s=30), tmp_path / "status").start()
    yield running, str(tmp_path / "status")
    running.stop()


def gpu_job(name: str) -> Job:
    return Job.command_job(["echo", name], name=name, needs={"gpus": 1})


class WaitingClaim(threading.Thread):
    """A worker's claim that waits at the coordinator (its own connection)."""

    def __init__(self, status: str, fit: Capacity, wait_s: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.queue = CoordinatorQueue(status)
        self.fit, self.wait_s = fit, wait_s
        self.names: list[str] | None = None

    def run(self) -> None:
        leases = self.queue.claim(f"w{id(self)}", 1, wait_s=self.wait_s, fit=self.fit)
        self.names = [lease.job.name for lease in leases]
        self.queue.close()


def park(running, claim: WaitingClaim) -> None:
    """Start `claim`; return once the coordinator holds it parked."""
    before = len(running._parking.claims)
    claim.start()
    wait_for(lambda: len(running._parking.claims) > before, 30, message="the claim parked")


def test_a_parked_claim_gets_the_first_job_that_fits_it_behind_one_that_fits_none(
        coordinator):
    running, status = coordinator
    submitter = CoordinatorQueue(status)
    cpu_only, gpu = WaitingClaim(status, CPU_BOX), WaitingClaim(status, GPU_BOX)
    park(running, cpu_only)
    park(running, gpu)
    # A GPU job arrives: the first claim cannot take it, the second gets it at once.
    submitter.submit([gpu_job("train")])
    wait_for(lambda: gpu.names is not None, 30, message="the GPU claim's answer")
    assert gpu.names == ["train"]
    assert cpu_only.names is None  # still waiting for a job that fits it
    submitter.submit([Job.command_job(["echo", "small"], name="small")])
    wait_for(lambda: cpu_only.names is not None, 30, message="the CPU claim's answer")
    assert cpu_only.names == ["small"]
    submitter.close()


def test_a_worker_a_pending_job_fits_is_not_held_behind_a_parked_claim(coordinator):
    running, status = coordinator
    submitter = CoordinatorQueue(status)
    submitter.submit([gpu_job("train")])
    waiting = WaitingClaim(status, CPU_BOX)
    park(running, waiting)  # the GPU job does not fit it
    gpu_worker = CoordinatorQueue(status)
    assert [lease.job.name for lease in gpu_worker.claim("g", 1, fit=GPU_BOX)] == ["train"]
    assert waiting.names is None
    submitter.submit([Job.command_job(["echo", "small"], name="small")])
    wait_for(lambda: waiting.names is not None, 30, message="the CPU claim's answer")
    assert waiting.names == ["small"]
    gpu_worker.close()
    submitter.close()


def test_a_submission_too_big_for_one_message_is_split_with_dependencies_first(tmp_path):
    running = Coordinator(SqliteQueue(tmp_path / "q.db"), status_dir=tmp_path / "status",
                          max_message_bytes=64 * 1024).start()
    try:
        client = CoordinatorQueue(str(tmp_path / "status"))
        sims = [Job.command_job(["echo", str(i)], name=f"sim{i}", env={"PAD": "x" * 20_000})
                for i in range(9)]  # together over the limit, each far under it
        reduce = Job.command_job(["echo", "reduce"], name="reduce", after=[s.id for s in sims])
        assert sorted(client.submit([reduce, *sims])) == sorted(j.id for j in [reduce, *sims])
        assert client.get(reduce.id).state is State.WAITING
        assert client.counts()[State.PENDING] == 9
        client.close()
    finally:
        running.stop()


def test_a_parked_claim_gets_the_job_a_finish_releases(coordinator):
    running, status = coordinator
    client = CoordinatorQueue(status)
    first = Job.command_job(["echo", "first"], name="first")
    then = Job.command_job(["echo", "then"], name="then", after=[first.id])
    client.submit([first, then])
    (lease,) = client.claim("a", 1)
    waiting = WaitingClaim(status, CPU_BOX)
    park(running, waiting)  # `then` waits for `first`: nothing to claim
    client.finish(lease, Result(lease.job_id, State.DONE, attempt=1, exit_code=0))
    wait_for(lambda: waiting.names is not None, 30, message="the parked claim's answer")
    assert waiting.names == ["then"]
    client.close()


def test_a_watcher_hears_of_the_jobs_a_failure_ends(coordinator):
    _, status = coordinator
    client = CoordinatorQueue(status)
    first = Job.command_job(["echo", "first"], name="first")
    then = Job.command_job(["echo", "then"], name="then", after=[first.id])
    last = Job.command_job(["echo", "last"], name="last", after=[then.id])
    client.submit([first, then, last])
    assert client.watch({then.id, last.id}, 0.2) == []  # both watched, neither ended
    (lease,) = client.claim("a", 1)
    client.finish(lease, Result(lease.job_id, State.FAILED, attempt=1, exit_code=1,
                                reason="exit status 1"))
    heard: dict[str, Result] = {}
    wait_for(lambda: heard.update({r.job_id: r for r in client.watch({then.id, last.id}, 1)})
             or len(heard) == 2, 30, message="both dependants' results")
    assert heard[then.id].state is State.FAILED and first.id in heard[then.id].reason
    assert heard[last.id].state is State.FAILED and then.id in heard[last.id].reason
    # A job submitted after a failed one ends at once: its watcher hears of it too.
    late = Job.command_job(["echo", "late"], name="late", after=[first.id])
    client.submit([late])
    assert [r.job_id for r in client.watch({late.id}, 30)] == [late.id]
    client.close()
