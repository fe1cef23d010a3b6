"""Where workers come from: one small interface for every way shoal borrows machines.

A provider starts workers for a queue somewhere (a batch system, SSH hosts, later
Kubernetes or PBS), can stop one it started, and can tell which of them still hold
their place there. Workers themselves talk only to the queue: stopping them gently goes
through the queue (`shoal fire`); a provider's `stop` is the hard way, for what does not
leave in time or never started.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..job import WorkerInfo


@dataclass(frozen=True)
class Handle:
    """One started worker as its provider knows it (a Slurm job id, a host and pid)."""

    provider: str
    id: str


class Provider(Protocol):
    """Starts, stops and checks workers for one queue."""

    name: str

    def start(self, count: int, options: Any) -> list[Handle]:
        """Ask for `count` workers; return a handle for each."""
        ...

    def stop(self, handles: Sequence[Handle]) -> None:
        """Stop these workers now, whatever they are doing (or drop them if not started)."""
        ...

    def alive(self, handles: Iterable[Handle]) -> list[Handle]:
        """Those of `handles` still waiting or running there."""
        ...

    def hired(self) -> list[Handle]:
        """Every worker it holds for the queue now, started or not, found again from
        scratch (a restarted `shoal hire` knows nothing else). Empty where the queue's own
        list of workers is the only record (SSH): see `handle_of`."""
        ...

    def unstarted(self) -> list[Handle]:
        """Those of `hired()` that have not started yet (nothing to drain there)."""
        ...

    def handle_of(self, worker: WorkerInfo) -> Handle | None:
        """The handle of one of the queue's workers if this provider started it."""
        ...


def retire(provider: Provider, running: Sequence[Handle], unstarted: Sequence[Handle],
           wait_s: float, poll_s: float = 1.0) -> list[Handle]:
    """Drop the workers that never started at once; give the running ones (already asked to
    stop through the queue) `wait_s` to leave, then stop those still there. Returns the
    ones stopped that way, late."""
    if unstarted:
        provider.stop(unstarted)
    rest = [h for h in running if h not in unstarted]
    deadline = time.monotonic() + wait_s
    while rest and time.monotonic() < deadline:
        time.sleep(poll_s)
        rest = provider.alive(rest)
    if rest:
        provider.stop(rest)
    return rest
