"""The external history of a fault run and its Jepsen-style checker (RELIABILITY.md 5.1).

The framework's own records are not trusted alone: every real execution leaves a marker
file (tests.procs.marker_job), a submitter logs what it tried and what was acknowledged,
and the checker compares those with the results the queue reports.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shoal.job import Result, State
from tests.procs import executions


@dataclass
class Report:
    """What one run did to its jobs; `problems()` lists what a user would call a bug."""

    jobs: int
    lost: int  # acknowledged, yet no final result
    duplicated: int  # more than one result for one job
    unexpected: int  # a result or an execution of a job nobody tried to submit
    recovered: int = 0  # a result for a submit whose acknowledgement never came (allowed)
    failed_without_reason: int = 0
    wrongly_failed: int = 0  # failed or cancelled, but not a job expected to fail
    orphans: int = 0  # jobs still running as processes after every worker stopped
    executions_mean: float = 0.0
    executions_max: int = 0
    recovery_s: list[float] = field(default_factory=list)  # fault -> its jobs final again
    reasons: list[str] = field(default_factory=list)  # why the wrongly failed ones failed
    row_problems: list[str] = field(default_factory=list)  # a row's own check that failed

    def problems(self) -> list[str]:
        bad = ("lost", "duplicated", "unexpected", "failed_without_reason", "wrongly_failed",
               "orphans")
        found = [f"{name}={getattr(self, name)}" for name in bad if getattr(self, name)]
        return (found + [f"reason: {reason}" for reason in self.reasons[:3]]
                + self.row_problems)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check(acknowledged: set[str], results: Iterable[Result], out: Path, *,
          attempted: set[str] | None = None, may_fail: set[str] = frozenset()) -> Report:
    """Count lost, duplicated and unexpected jobs, and executions per job.

    `acknowledged`: submits that returned; `attempted`: every id a submitter tried (a
    superset: an unacknowledged one may or may not exist); `may_fail`: jobs meant to fail.
    """
    attempted = acknowledged | (attempted or set())
    results = list(results)
    per_job = Counter(r.job_id for r in results)
    runs = Counter(job_id for job_id, _, _ in executions(out))
    wrong = [r for r in results if r.state is not State.DONE and r.job_id not in may_fail]
    return Report(
        jobs=len(acknowledged),
        lost=len(acknowledged - set(per_job)),
        duplicated=sum(1 for n in per_job.values() if n > 1),
        unexpected=len((set(per_job) | set(runs)) - attempted),
        recovered=len(set(per_job) & (attempted - acknowledged)),
        failed_without_reason=sum(1 for r in results if not r.ok and not r.reason),
        wrongly_failed=len(wrong),
        executions_mean=round(sum(runs.values()) / max(len(runs), 1), 3),
        executions_max=max(runs.values(), default=0),
        reasons=sorted({r.reason for r in wrong}),
    )


def summary(reports: list[Report]) -> dict[str, object]:
    """One table row from the runs of one row on one backend."""
    recovery = [s for r in reports for s in r.recovery_s]
    return {
        "iterations": len(reports),
        "jobs": sum(r.jobs for r in reports),
        "lost": sum(r.lost for r in reports),
        "duplicated": sum(r.duplicated for r in reports),
        "unexpected": sum(r.unexpected for r in reports),
        "executions_mean": round(statistics.fmean([r.executions_mean for r in reports]), 2)
        if reports else 0.0,
        "executions_max": max((r.executions_max for r in reports), default=0),
        "recovery_median_s": round(statistics.median(recovery), 2) if recovery else None,
        "recovery_max_s": round(max(recovery), 2) if recovery else None,
    }
