"""Workers SIGKILLed at random moments under load on one folder: the heavy variant of the
fault suite's row 1 (tests/faults), checked by the same Jepsen-style checker.

Every execution leaves its own marker file (the jobs' own history), every recorded
result is read back, and the checker counts lost, duplicated and unexpected jobs.
The seed is printed so a failing run can be replayed with SHOAL_CHAOS_SEED.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from shoal.job import Job, State
from shoal.queue.folder import FolderQueue
from tests.faults.history import check
from tests.procs import marker_job

pytestmark = pytest.mark.timeout(240)


def test_random_worker_kills_lose_nothing_and_record_once(tmp_path, procs):
    seed = int(os.environ.get("SHOAL_CHAOS_SEED", random.randrange(1 << 30)))
    print(f"chaos seed {seed} (replay with SHOAL_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    out = tmp_path / "out"
    out.mkdir()
    queue = FolderQueue(tmp_path / "queue")
    jobs = [Job.command_job(marker_job(out, "sleep 0.05;"), params={"i": i}, max_attempts=10)
            for i in range(150)]
    queue.submit(jobs)

    def start():
        return procs.shoal("work", str(queue.root), "--slots", "2", "--lease", "1")

    workers = [start() for _ in range(3)]
    kills = 0
    deadline = time.monotonic() + 150
    while queue.counts()[State.DONE] < len(jobs) and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 1.0))
        if kills < 5:
            victim = workers.pop(rng.randrange(len(workers)))
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            kills += 1
            workers.append(start())
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        # -SIGTERM: stopped while still starting, before it could claim anything.
        assert worker.wait(timeout=30) in (0, -signal.SIGTERM)
    report = check({job.id for job in jobs}, queue.results(), out)
    print(f"chaos report (seed {seed}, {kills} kills): {report.as_dict()}")
    assert report.problems() == []
    assert report.executions_mean >= 1 and report.executions_max <= 1 + kills
