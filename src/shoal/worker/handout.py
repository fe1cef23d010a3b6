"""Leases for idle slots, claimed for all of them in one `claim(worker, n)`.

One idle slot claims at a time, for itself and every slot waiting beside it; the
others wait for what it brings back instead of each asking the queue (one round trip,
one directory listing, or one parked claim instead of n). Leases brought back for a
slot that has not taken them yet are the worker's all the same: its beat renews them
and a stop releases them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..job import Lease

WAKE_S = 0.05  # a waiting slot looks at its stop event this often


class Handout:
    """Shares one claim among the idle slots of a worker; see the module docstring."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._spare: list[Lease] = []  # claimed for a slot, not taken yet
        self._waiting = 0  # idle slots inside `next`, the claimer included
        self._claiming = False

    def next(self, claim: Callable[[int], list[Lease]], most: int,
             stopping: threading.Event) -> Lease | None:
        """A lease for the calling slot: a spare one, or one from a claim made for up to
        `most` waiting slots (`claim(n)`); None if the queue had nothing or on a stop."""
        with self._cond:
            self._waiting += 1
            try:
                while not self._spare and self._claiming and not stopping.is_set():
                    self._cond.wait(WAKE_S)
                if self._spare:
                    return self._spare.pop()
                if stopping.is_set():
                    return None
                self._claiming = True
                wanted = max(1, min(self._waiting, most))
            finally:
                self._waiting -= 1
        leases: list[Lease] = []
        try:
            leases = claim(wanted)
        finally:
            with self._cond:
                self._claiming = False
                self._spare.extend(leases[1:])
                self._cond.notify_all()
        return leases[0] if leases else None

    def spare(self) -> list[Lease]:
        """The leases claimed and not taken yet (a beat renews them)."""
        with self._cond:
            return list(self._spare)

    def forget(self, lease: Lease) -> bool:
        """A spare lease the queue took back: no slot may run it. False if a slot took it
        already (the slot gives its share back when it ends)."""
        with self._cond:
            if lease in self._spare:
                self._spare.remove(lease)
                return True
            return False

    def take_all(self) -> list[Lease]:
        """Every spare lease, to give back to the queue (the worker is stopping)."""
        with self._cond:
            spare, self._spare = self._spare, []
            return spare
