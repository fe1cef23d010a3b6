"""A worker's heartbeat reports the leases it holds; what the queue says back about an old
attempt must never touch the job's newer attempt running on the same worker."""

from __future__ import annotations

import threading
from pathlib import Path

from shoal.job import Job, State
from shoal.queue import open_queue
from shoal.worker import Worker
from tests.conftest import wait_for


def test_a_late_beat_about_a_failed_attempt_leaves_the_retry_running(tmp_path: Path):
    """The beat that carried attempt 1 is answered after that attempt failed, was released
    and attempt 2 was claimed by the same worker: the answer says attempt 1's lease is lost,
    and attempt 2 (same job id) runs on to its result (a CI failure on sqlite, now forced)."""
    queue = open_queue("memory://", lease_s=30)
    beat_seen, gate = tmp_path / "beat-seen", tmp_path / "gate"
    job = Job.command_job(
        f'if [ "$SHOAL_ATTEMPT" = 1 ]; then while [ ! -e {beat_seen} ]; do sleep 0.02; done; '
        f"exit 3; fi; while [ ! -e {gate} ]; do sleep 0.02; done; echo second try",
        retries=1)
    held = threading.Event()
    beats_after_held: list[int] = []
    beat = queue.beat

    def beat_answered_late(info, leases):
        if held.is_set():
            beats_after_held.append(1)  # the heartbeat thread finished with the held answer
        elif any(lease.attempt == 1 for lease in leases):
            held.set()
            beat_seen.touch()  # attempt 1 fails now; this beat waits for attempt 2 to run
            wait_for(lambda: queue.get(job.id).attempt == 2
                     and queue.get(job.id).state is State.RUNNING, timeout_s=60,
                     message="the retry to be claimed")
        return beat(info, leases)

    queue.beat = beat_answered_late  # type: ignore[method-assign]
    queue.submit([job])
    worker = Worker(queue, slots=1, drain=True, heartbeat_s=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(beats_after_held) >= 2, timeout_s=60,
                 message="the late answer to be acted on")
        gate.touch()
        thread.join(timeout=60)
        assert not thread.is_alive()
        status = queue.get(job.id)
        assert status.state is State.DONE and status.attempt == 2
        assert queue.files.read_log(status) == b"second try\n"
    finally:
        gate.touch()
        worker.stop(now=True)
        thread.join(timeout=30)
