"""What one slot is running now, and the protocol of the runners that run it.

The loop owns a `Slot` for each lease in flight and marks it (`lost`, `releasing`,
`settling`) from the steering thread; a `Runner` runs the lease in the slot's thread
and publishes the process it started in `slot.process`, so a stop or a lost lease
can kill it whichever runner started it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..fsutil import HOST
from ..job import Lease, Result, State
from .kill import Deadlines
from .launch import JobProcess, pin_process
from .ledger import Share


@dataclass
class Slot:
    """One lease in flight in slot `index` of a worker."""

    lease: Lease
    index: int = 0
    process: JobProcess | None = None  # what a stop or a lost lease kills
    lost: bool = False  # the queue took the lease back: the result will be refused
    releasing: bool = False  # a stop gives the job back to the queue untouched
    settling: bool = False  # finish/release under way: the fence decides now
    retries: int = 0  # failed runs are tried again while attempt <= retries
    started: float = field(default_factory=time.time)
    share: Share | None = None  # what it holds of the worker's resources (GPUs, cores)
    overused: str = ""  # why the memory watch killed it, if it did
    ended: bool = False  # its call returned: the interpreter lives on, for other calls
    _kills: list[int] = field(default_factory=list)  # Deadlines tickets of kill_now
    _kill_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def env(self) -> dict[str, str]:
        """What its process is told of its share (SHOAL_CPUS, CUDA_VISIBLE_DEVICES...)."""
        return self.share.env or {} if self.share is not None else {}

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """While the job's process starts: this thread on the job's cores, so the process
        has them from its first instruction (pinning it after the start would miss what
        it forks at once). The thread's own cores come back after."""
        cores = self.share.cores if self.share is not None else ()
        if not cores:
            yield
            return
        before = os.sched_getaffinity(0)
        with contextlib.suppress(OSError):  # cores another cpuset refuses: left as is
            os.sched_setaffinity(0, cores)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, before)

    def pin(self, pid: int) -> None:
        """Keep the process (every thread of it) on the job's cores, when it has some."""
        if self.share is not None and self.share.cores:
            pin_process(pid, self.share.cores)

    def result(self, state: State, reason: str = "", *, exit_code: int | None = None,
               log: str | None = None, **extra: Any) -> Result:
        """The attempt's result, stamped with who ran it, where, and when."""
        lease = self.lease
        return Result(
            lease.job_id, state, name=lease.job.name, params=lease.job.params,
            exit_code=exit_code, reason=reason, attempt=lease.attempt, worker=lease.worker,
            host=HOST, started=self.started, ended=time.time(), log=log, **extra,
        )

    def kill_now(self, deadlines: Deadlines) -> None:
        """Kill what the slot runs at once (SIGTERM, SIGKILL after the grace)."""
        with self._kill_lock:
            if self.process is not None and not self.ended:
                self._kills.append(deadlines.kill_now(self.process.pid))

    @contextlib.contextmanager
    def guarded(self, deadlines: Deadlines, timeout_s: float | None, *,
                lives_on: bool = False) -> Iterator[None]:
        """While `self.process` runs: killed at once if a stop or a loss came while it
        started, and at its deadline; the deadline is forgotten once it returns.

        `lives_on`: the process outlives this attempt (a call interpreter runs the slot's
        next calls), so once the attempt is over no kill reaches it any more, not even
        the SIGKILL of a kill whose SIGTERM it outlived (a function that ignores
        SIGTERM): that would kill a newer call."""
        assert self.process is not None
        pid = self.process.pid
        if self.releasing or self.lost:
            self.kill_now(deadlines)
        ticket = None
        if timeout_s is not None:
            ticket = deadlines.kill_at(pid, time.monotonic() + timeout_s)
        try:
            yield
        finally:
            if ticket is not None:
                deadlines.forget(ticket)
            if lives_on:
                with self._kill_lock:
                    self.ended = True
                    for kill in self._kills:
                        deadlines.forget(kill)

    def timed_out(self, timeout_s: float | None) -> bool:
        """Whether the run lasted its whole deadline (so a kill was the deadline's)."""
        return timeout_s is not None and time.time() - self.started >= timeout_s


class Runner(Protocol):
    """Runs one kind of job (processes, or calls): one lease in one slot at a time,
    from that slot's thread."""

    def run(self, slot: Slot) -> Result:
        """Run the slot's lease to its end and say how it went (never raises for the
        job's own failures: they are a FAILED result with a reason)."""

    def kill(self, slot: Slot) -> None:
        """Kill what the slot runs now, at once (a stop that releases, a lost lease)."""

    def close(self) -> None:
        """Stop what the runner keeps between jobs (interpreters); jobs have ended."""
