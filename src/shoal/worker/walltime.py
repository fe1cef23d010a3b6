"""A worker whose machine is lent until a known time (a Slurm allocation's end): it claims
only jobs expected to end before then, so no job is cut off and run again elsewhere.

A job's expected duration is its timeout if it has one, else the median of the recent
durations of the jobs of the same shape this worker ran (`shape_of`), else unknown (the
job is claimed: a guess would leave work undone). The queue's contract has no way to
claim by duration (claims choose by lane, and a lane's jobs differ in timeout), so the
worker filters what it claimed and gives back the rest untouched (`Queue.release`
without `failed`: no attempt counted). A job that does not fit is claimed again by the
next claim, so a claim that finds only such jobs looks a few leases further
(`LOOKAHEAD`) while holding them; when nothing fits, the worker claims no more.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import datetime

from ..errors import UsageError
from ..job import Job, Kind, Lease, Result, State
from ..queue.scheduling import lane_of

MARGIN_S = 5.0  # time kept after a job's expected end: record it, leave before the end
LOOKAHEAD = 8  # unfit leases held while a claim looks for one that fits behind them
RECENT = 20  # durations kept per job shape for the median


def parse_until(text: str) -> float:
    """`--until`: seconds since the epoch (SLURM_JOB_END_TIME) or an ISO date and time
    (`squeue -o %e`, local time unless it names a zone) -> seconds since the epoch."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(f"--until {text!r}: not a time (seconds since the epoch, or "
                         "an ISO date and time such as 2026-12-03T18:30:00)") from None


def shape_of(job: Job) -> tuple[str, str, str]:
    """Jobs expected to take alike: the same lane (priority, needs, labels), kind and
    program (a command's first word, a job file, a call's function)."""
    if job.kind is Kind.CALL:
        what = str(job.meta.get("fn", ""))
    elif job.kind is Kind.FILE:
        what = job.path or ""
    elif isinstance(job.command, str):
        what = job.command.split(maxsplit=1)[0] if job.command.strip() else ""
    else:
        what = job.command[0] if job.command else ""
    return lane_of(job), job.kind.value, what


class Walltime:
    """The end of the worker's allocation, and which jobs are expected to end before it."""

    def __init__(self, end: float, *, margin_s: float = MARGIN_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.end = end  # seconds since the epoch
        self.margin_s = margin_s
        self.clock = clock
        self._took: dict[tuple[str, str, str], deque[float]] = defaultdict(
            lambda: deque(maxlen=RECENT))

    def left_s(self) -> float:
        """Seconds until the end, minus the margin (negative once past)."""
        return self.end - self.margin_s - self.clock()

    def over(self) -> bool:
        return self.left_s() <= 0

    def expected_s(self, job: Job) -> float | None:
        """How long `job` should take: its timeout, else the median of this worker's
        recent runs of its shape, else None (unknown)."""
        if job.timeout_s is not None:
            return job.timeout_s
        took = self._took.get(shape_of(job))
        return statistics.median(took) if took else None

    def fits(self, job: Job) -> bool:
        expected = self.expected_s(job)
        return self.left_s() > (expected or 0.0)

    def learn(self, job: Job, result: Result) -> None:
        """Remember how long a job that ended DONE took (failures say little of that)."""
        took = result.duration_s
        if result.state is State.DONE and took is not None:
            self._took[shape_of(job)].append(took)

    def claim(self, claim: Callable[[int], list[Lease]], n: int,
              give_back: Callable[[Lease], None]) -> tuple[list[Lease], bool]:
        """Claim up to `n` leases that fit (`claim(k)` leases up to k jobs); the others
        go back. Returns them and whether the queue had nothing that fits (True: only
        jobs that would not end in time were pending, or the end has come)."""
        held: list[Lease] = []
        try:
            while True:
                if self.over():
                    return [], True
                got = claim(n)
                fitting = self.keep(got, held.append)  # the others go back at the end
                if fitting or not got:
                    return fitting, not fitting and bool(held)
                if len(held) >= LOOKAHEAD:
                    return [], True
        finally:
            for lease in held:
                give_back(lease)

    def keep(self, leases: list[Lease], give_back: Callable[[Lease], None]) -> list[Lease]:
        """Those of `leases` that fit; the others go back."""
        fitting = [lease for lease in leases if self.fits(lease.job)]
        for lease in leases:
            if lease not in fitting:
                give_back(lease)
        return fitting
