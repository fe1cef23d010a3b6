"""The runner of process jobs (command lines and job files): launch, wait, kill, log.

Each attempt is a fresh process group whose output goes to the attempt's log; its
exit status becomes the result, and a deadline or a kill becomes its reason.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import MalformedJob
from ..fsutil import write_file
from ..job import Result, State
from ..queue import Queue
from .kill import Deadlines
from .launch import describe_exit, job_context, prepare, start
from .slot import Slot


class ProcessRunner:
    """Runs command and job-file jobs as processes; see the module docstring."""

    def __init__(self, queue: Queue, deadlines: Deadlines, worker_dir: Path) -> None:
        self.queue = queue
        self.deadlines = deadlines
        self.worker_dir = worker_dir

    def run(self, slot: Slot) -> Result:
        lease = slot.lease
        attempt_log = self.queue.files.attempt_log(lease)
        try:
            launch = prepare(lease, queue_url=self.queue.url, root=self.queue.settings.root,
                             interpreters=self.queue.settings.interpreters,
                             worker_dir=self.worker_dir, attempt_log=attempt_log,
                             extra_env={**job_context(self.queue, lease).environment(),
                                        **slot.env},
                             slot=slot.index + 1, trust=self.queue.settings.trust)
        except MalformedJob as exc:  # its log says why, for `shoal logs`
            reason = f"{exc.reason_prefix}{exc}"
            try:
                write_file(attempt_log, f"shoal: {reason}\n".encode())
            except OSError:
                return slot.result(State.FAILED, reason)
            return slot.result(State.FAILED, reason, log=str(attempt_log))
        slot.started = time.time()
        try:
            with slot.pinned():
                slot.process = start(launch)
        except OSError as exc:
            launch.log.write_text(f"shoal: cannot start {launch.argv!r}: {exc}\n")
            return slot.result(State.FAILED, f"cannot start: {exc}", log=str(launch.log))
        with slot.guarded(self.deadlines, launch.timeout_s):
            returncode = slot.process.wait()
        slot.retries = launch.retries  # a job that could not even start is not tried again
        reason = describe_exit(returncode)
        if returncode != 0 and slot.timed_out(launch.timeout_s):
            reason = f"timed out after {launch.timeout_s:g} s ({reason})"
        state = State.DONE if returncode == 0 else State.FAILED
        return slot.result(state, reason, exit_code=returncode, log=str(launch.log))

    def kill(self, slot: Slot) -> None:
        slot.kill_now(self.deadlines)

    def close(self) -> None:
        """Nothing outlives a process job."""
