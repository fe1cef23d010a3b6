"""Autoscaling: between `least` and `most` workers of one provider, as jobs wait.

Each look reads the queue's counts and workers and the provider's own list of the
workers it holds for the queue, nothing remembered: a restarted scaler finds the
workers it asked for before, and counts those not working yet (waiting in the batch
system, or starting) as coming, so it never asks twice for the same waiting jobs. It
only adds workers. Workers above `least` are started with an idle timeout and leave by
themselves when there is nothing left for them (`shoal work --idle-timeout`), so no
running job is ever cut by a scale-down; the `least` ones stay until fired.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ShoalError
from ..job import State
from ..queue.base import Queue
from . import Provider

# Worker states (WorkerInfo.state) in which a worker still claims jobs.
CLAIMING = ("idle", "working")


@dataclass(frozen=True)
class Policy:
    """How many workers, and how many jobs one worker takes at once (its slots)."""

    most: int
    least: int = 0
    per_worker: int = 1


@dataclass(frozen=True)
class Look:
    """What one look saw: jobs waiting (pending, whether for a worker or for resources;
    not those waiting on dependencies), the provider's workers, how many of them are not
    working yet, and the free slots of those that are."""

    waiting: int
    hired: int
    coming: int
    free: int
    ended: int = 0  # jobs done, failed or cancelled: whether the queue moved

    def more(self, policy: Policy) -> int:
        """How many workers to ask for now: enough for the jobs that neither the coming
        workers nor the free slots will take, at least up to `least`, at most to `most`."""
        uncovered = self.waiting - self.free - self.coming * policy.per_worker
        wanted = max(math.ceil(max(uncovered, 0) / policy.per_worker),
                     policy.least - self.hired)
        return max(0, min(wanted, policy.most - self.hired))

    def line(self) -> str:
        return (f"{self.waiting} job(s) waiting; {self.hired} worker(s), "
                f"{self.coming} not working yet")


class Scaler:
    """Looks at `queue` every `interval_s` and asks `provider` for the workers missing:
    with `steady` options while fewer than `least`, else with `elastic` ones (which carry
    the idle timeout)."""

    def __init__(self, queue: Queue, provider: Provider, policy: Policy, *, elastic: Any,
                 steady: Any, say: Callable[[str], None] = print) -> None:
        self.queue = queue
        self.provider = provider
        self.policy = policy
        self.elastic = elastic
        self.steady = steady
        self.say = say
        self._last = ""
        self._asked: Look | None = None  # what the last look that asked for workers saw

    def _untaken(self, seen: Look) -> bool:
        """Whether the workers asked for came and left without taking the waiting jobs
        (they need more than a worker has, or more time than its allocation): the same
        jobs wait, none ended since, and fewer workers are there. Then asking again
        would only start workers that leave; we wait for the queue to change."""
        asked = self._asked
        if asked is None or (seen.waiting, seen.ended) != (asked.waiting, asked.ended):
            return False
        if seen.hired > asked.hired:
            return False  # those asked for are still there (working or coming)
        line = (f"{seen.waiting} job(s) waiting that the workers asked for left untaken; "
                "asking again once the queue changes")
        if line != self._last:
            self.say(line)
            self._last = line
        return True

    def look(self) -> Look:
        hired = self.provider.hired()
        working = {}
        for worker in self.queue.workers():
            handle = self.provider.handle_of(worker)
            if handle is not None and not worker.lost:
                working[handle] = worker
        free = sum(max(w.slots - len(w.running), 0) for w in working.values()
                   if w.state in CLAIMING)
        counts = self.queue.counts()
        coming = sum(1 for h in hired if h not in working)
        ended = sum(counts.get(state, 0) for state in State if state.final)
        return Look(waiting=counts.get(State.PENDING, 0), hired=len(hired), coming=coming,
                    free=free, ended=ended)

    def step(self) -> int:
        """One look, and the workers it asks for; returns how many."""
        seen = self.look()
        more = seen.more(self.policy)
        if more and self._untaken(seen):
            more = max(0, min(more, self.policy.least - seen.hired))
        line = seen.line() + (f": asking for {more} more" if more else "")
        if line != self._last:
            self.say(line)
            self._last = line
        if more:
            self._asked = seen
        steady = min(more, max(self.policy.least - seen.hired, 0))
        if steady:
            self.provider.start(steady, self.steady)
        if more - steady:
            self.provider.start(more - steady, self.elastic)
        return more

    def run(self, interval_s: float, stop: threading.Event) -> None:
        """Look and scale every `interval_s` until `stop` is set. A failing first look is
        a setup error (raised); a later one (squeue or the queue's server down for a
        while) is told and tried again at the next look."""
        started = False
        while not stop.is_set():
            try:
                self.step()
                started = True
            except ShoalError as exc:
                if not started:
                    raise
                self.say(f"this look failed, next in {interval_s:g} s: {exc}")
                self._last = ""
            stop.wait(interval_s)
