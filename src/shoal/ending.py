"""How a `shoal run` ends, as GNU parallel's does: --halt conditions and the exit status.

Exit status: 0 when every job succeeded; else the number of failed jobs, 101 for more
than 100. As in parallel, with --halt ...,fail=1 it is the failing job's own exit status
(128+N for a job killed by signal N), with fail=P% the percentage of jobs that failed,
and 0 once --halt ...,success=N was reached. Jobs that --halt now killed are not counted
(parallel neither prints nor logs them). `shoal run` adds 130 for an interrupted run
(Ctrl-C, q) and, like every shoal command, 2 for a usage error.
"""

from __future__ import annotations

from .job import Result, State
from .runplan import Halt

MOST_FAILED = 101  # parallel's cap: "more than 100 jobs failed"
INTERRUPTED = 130


class HaltWatch:
    """Counts final results against a --halt condition; `reached` once it is met."""

    def __init__(self, halt: Halt, total: int) -> None:
        self.halt = halt
        self.total = total
        self.failed = 0
        self.succeeded = 0
        self.reached = False
        self.first_failure: Result | None = None  # what fail=1 takes its exit status from

    def observe(self, result: Result) -> bool:
        """Count one final result; True when this one makes the condition met (once)."""
        if result.state is State.DONE:
            self.succeeded += 1
        else:
            self.failed += 1
            self.first_failure = self.first_failure or result
        if self.reached or self.halt.when == "never" or not self._met():
            return False
        self.reached = True
        return True

    def _met(self) -> bool:
        halt = self.halt
        if halt.fail is not None and self.failed >= halt.fail:
            return True
        if halt.fail_pct is not None and self.total and \
                self.failed * 100 >= halt.fail_pct * self.total:
            return True
        return halt.success is not None and self.succeeded >= halt.success

    def describe(self) -> str:
        """The condition as the user wrote it: `now,fail=1`."""
        halt = self.halt
        why = (f"fail={halt.fail}" if halt.fail is not None else
               f"fail={halt.fail_pct:g}%" if halt.fail_pct is not None else
               f"success={halt.success}")
        return f"{halt.when},{why}"

    def exit_status(self) -> int:
        """The run's exit status as parallel's (module docstring)."""
        halt = self.halt
        if self.reached and halt.success is not None and self.succeeded >= halt.success:
            return 0
        if halt.fail_pct is not None and self.total:
            return min(int(self.failed * 100 / self.total), MOST_FAILED)
        if self.reached and halt.fail == 1 and self.first_failure is not None:
            return job_exit_status(self.first_failure)
        return min(self.failed, MOST_FAILED)


def job_exit_status(result: Result) -> int:
    """A failed job's exit status as a shell would give it (128+N for signal N)."""
    code = result.exit_code
    if code is None or code == 0:
        return 1
    return 128 - code if code < 0 else min(code, 255)
