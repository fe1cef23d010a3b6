"""`shoal logs`: a job's log (the final one, a running attempt's so far, or an earlier
attempt's with --attempt N), and --follow, which keeps printing a running job's log as it
grows until the job ends, like `tail -f`.

A job whose stderr was kept apart (`shoal run`'s jobs: Job.stderr_apart) shows as `shoal
run` showed it: its log (stdout) on stdout, then its stderr on stderr (with --follow,
once the job ended); `shoal output` does the same for every job.

Following goes through `queue.files.read_log` only, so it works wherever logs can be read:
a local folder's files (the whole log each time) or a network store's shipped tail (the
last part so far, refreshed at each beat); `LogFollower` prints only what is new.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

from ..errors import JobNotFound
from ..job import JobStatus, State
from ..queue.base import Queue
from ..queue.files import CUT_MARK
from .lookup import resolve_jobs

FOLLOW_EVERY_S = 0.3
ANCHOR_BYTES = 256  # how much of what was printed is looked for again in a shipped tail


def _earlier(status: JobStatus, attempt: int) -> int | None:
    """`attempt` as read_log takes it: None for the current/final one; JobNotFound when
    the job had no such attempt."""
    known = sorted({r.attempt for r in status.attempts} | {status.attempt})
    if attempt not in known:
        raise JobNotFound(f"job {status.job.name!r} has no attempt {attempt} "
                          f"(its attempts: {', '.join(map(str, known))})")
    current = attempt == status.attempt or (
        status.result is not None and status.result.attempt == attempt)
    return None if current else attempt


def no_log(status: JobStatus) -> JobNotFound:
    reason = status.result.reason if status.result is not None else ""
    why = f": {reason}" if reason else ""
    later = " yet" if not status.state.final else ""
    return JobNotFound(f"job {status.job.name!r} ({status.state.value}{why}) has no log{later}")


def show_log(queue: Queue, ref: str, *, attempt: int | None = None,
             follow: bool = False) -> None:
    (status,) = resolve_jobs(queue, [ref])
    if follow:
        status = follow_log(queue, status, write_out)
        write_err(queue.files.read_stderr(status) or b"")
        return
    which = _earlier(status, attempt) if attempt is not None else None
    text = queue.files.read_log(status, which)
    err = queue.files.read_stderr(status, which)
    if text is None and err is None:
        if attempt is not None:
            raise JobNotFound(f"attempt {attempt} of job {status.job.name!r} left no log")
        raise no_log(status)
    write_out(text or b"")
    write_err(err or b"")


def show_outputs(queue: Queue, states: set[State] | None = None) -> int:
    """Every finished job's log in submission order, as `shoal run -k` printed them (the
    jobs of every run and submit into QUEUE: stdout, then a stderr kept apart on stderr);
    returns how many were printed."""
    wanted = states or {s for s in State if s.final}
    printed = 0
    for status in queue.listing(wanted):
        text = queue.files.read_log(status)
        err = queue.files.read_stderr(status)
        if text or err:
            write_out(text or b"")
            write_err(err or b"")
            printed += 1
    return printed


def write_out(data: bytes) -> None:
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def write_err(data: bytes) -> None:
    """A job's stderr kept apart, on our stderr (after its stdout, flushed first)."""
    if data:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stderr.buffer.write(data)
        sys.stderr.flush()


class LogFollower:
    """Turns successive reads of one attempt's log into the bytes not printed yet."""

    def __init__(self) -> None:
        self.printed = 0  # bytes of the log printed so far
        self.tail = b""  # the last ANCHOR_BYTES of them

    def new_part(self, text: bytes) -> bytes:
        if text.startswith(CUT_MARK):  # a tail: drop the line that says it was cut
            text = text[text.find(b"\n") + 1:]
            start = self._after_anchor(text)
        elif len(text) >= self.printed and text[self.printed - len(self.tail):
                                                self.printed] == self.tail:
            start = self.printed  # the whole log, grown
        else:
            start = self._after_anchor(text)
        fresh = text[start:]
        if fresh:
            self.printed += len(fresh)
            self.tail = (self.tail + fresh)[-ANCHOR_BYTES:]
        return fresh

    def _after_anchor(self, text: bytes) -> int:
        if not self.tail:
            return 0
        where = text.rfind(self.tail)
        return where + len(self.tail) if where >= 0 else 0


def follow_log(queue: Queue, status: JobStatus, out: Callable[[bytes], None], *,
               every_s: float = FOLLOW_EVERY_S) -> JobStatus:
    """Print the log so far, then what it gains, until the job is final; return it then."""
    follower, attempt = LogFollower(), status.attempt
    if status.state is State.PENDING:
        click.echo(f"shoal: job {status.job.name!r} is pending; waiting for it to start",
                   err=True)
    while True:
        if status.attempt != attempt and status.state is State.RUNNING:
            click.echo(f"shoal: attempt {status.attempt} of {status.job.name!r} started",
                       err=True)
            follower, attempt = LogFollower(), status.attempt
        text = queue.files.read_log(status)
        if text is not None:
            out(follower.new_part(text))
        if status.state.final:
            if text is None and follower.printed == 0:
                raise no_log(status)
            return status
        time.sleep(every_s)
        fresh = queue.get(status.job.id)
        if fresh is None:
            raise JobNotFound(f"job {status.job.name!r} is no longer in {queue.url}")
        status = fresh
