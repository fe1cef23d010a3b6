"""What `shoal run` was asked to do, parsed from GNU parallel-style words: the jobs in input
order and how to show and end them. Built by the command line, carried out by `progress`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .job import Job


@dataclass(frozen=True)
class Halt:
    """GNU parallel's --halt: stop when `fail` jobs (or `fail_pct` percent) have failed
    (or `success` have succeeded); `now` kills running jobs, `soon` lets them finish."""

    when: str = "never"  # "never", "now", "soon"
    fail: int | None = None
    fail_pct: float | None = None
    success: int | None = None


@dataclass(frozen=True)
class RunPlan:
    """One `shoal run`: jobs in input order plus GNU parallel's output and ending options."""

    jobs: list[Job]
    slots: int | None = None  # local slots; 0 = only other workers
    show_progress: bool = True  # the live bar on stderr (when it is a terminal)
    keep_order: bool = False  # -k: print outputs in input order
    line_buffer: bool = False  # --line-buffer: print lines as they come
    # --tag/--tagstring: job id -> tag, printed before a TAB on each output line (the TAB is
    # not part of the tag); empty when neither option was given
    tags: dict[str, str] = field(default_factory=dict)
    halt: Halt = field(default_factory=Halt)
    joblog: str | None = None  # --joblog FILE in GNU parallel's columns
    resume: bool = False  # --resume: skip jobs the joblog shows as run
    resume_failed: bool = False  # --resume-failed: also run again those that failed
    fresh: bool = False  # --fresh: run every job again, done ones too
