"""A worker's idle slots share one claim: jobs that arrive together are handed out in one
`claim(worker, n)`, not one claim (one round trip on a network queue) per slot."""

from __future__ import annotations

import threading

from shoal.job import Job, State
from shoal.queue import open_queue
from shoal.worker import Worker
from tests.conftest import wait_for


def test_jobs_arriving_at_idle_slots_are_claimed_together_and_each_run_once():
    queue = open_queue("memory://")
    handed_out: list[int] = []  # leases each claim returned
    claim = queue.claim

    def counted_claim(worker: str, n: int = 1, *, wait_s: float = 0.0, fit=None):
        leases = claim(worker, n, wait_s=wait_s, fit=fit)
        handed_out.append(len(leases))
        return leases

    queue.claim = counted_claim  # type: ignore[method-assign]
    worker = Worker(queue, slots=3, drain=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(handed_out) >= 10, message="the idle slots to claim a few times")
        ids = queue.submit([Job.command_job(["sleep", "0.3"], params={"i": i}) for i in range(3)])
        wait_for(lambda: all(queue.get(i).state is State.DONE for i in ids), timeout_s=60,
                 message="the three jobs to finish")
        assert max(handed_out) >= 2, handed_out  # several slots' jobs in one claim
        assert sorted(r.job_id for r in queue.results()) == sorted(ids)  # each once
        assert all(queue.get(i).attempt == 1 for i in ids)  # none given back and run again
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_a_stop_that_comes_during_a_shared_claim_gives_every_claimed_job_back():
    queue = open_queue("memory://")
    claim = queue.claim
    worker = Worker(queue, slots=3)
    shared: list[int] = []
    handed_out: list[int] = []

    def claim_then_stop(worker_id: str, n: int = 1, *, wait_s: float = 0.0, fit=None):
        # Always as if every slot waited for this claim: leases for the others in hand.
        leases = claim(worker_id, 3, wait_s=wait_s, fit=fit)
        handed_out.append(len(leases))
        if len(leases) >= 2:  # leases for waiting slots in hand: stop before they take them
            shared.append(len(leases))
            worker.stop(now=True)
        return leases

    queue.claim = claim_then_stop  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(handed_out) >= 10, message="the idle slots to claim a few times")
        ids = queue.submit([Job.command_job(["sleep", "30"], params={"i": i}) for i in range(3)])
        wait_for(lambda: sum(handed_out) >= 3, message="the jobs to be claimed")
        assert shared == [3]
        thread.join(timeout=60)
        assert not thread.is_alive()  # stopped with no job started
        statuses = [queue.get(i) for i in ids]
        assert [(s.state, s.attempt) for s in statuses] == [(State.PENDING, 1)] * 3
    finally:
        worker.stop(now=True)
        thread.join(timeout=30)
