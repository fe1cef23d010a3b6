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

    def counted_claim(worker: str, n: int = 1, *, wait_s: float = 0.0):
        leases = claim(worker, n, wait_s=wait_s)
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
