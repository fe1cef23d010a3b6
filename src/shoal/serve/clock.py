"""The coordinator's clock: leases and worker liveness measured on `time.monotonic`.

The served queue stamps lease deadlines and worker beats with `LeaseClock.now`: the
wall-clock time when the coordinator started plus the monotonic time since, so a jump
of the wall clock (NTP stepping it, an admin's `date -s`) moves no deadline, while the
stamps still read as times of day.

A pause of the coordinator itself (SIGSTOP, a frozen VM, a request that took long) is
no sign that its workers died: their beats were waiting unread. `check` says when one
happened since the last look (a gap between two looks longer than a lease, or wall and
monotonic time drifting apart by more than a lease, which is also what a suspended
machine looks like), and the service then takes no lease back for one lease, as after
a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class LeaseClock:
    """See the module docstring; `wall` and `mono` are the clocks read (tests pass theirs)."""

    def __init__(self, lease_s: float, *, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.lease_s = lease_s
        self._wall = wall
        self._mono = mono
        self._last = mono()
        self._base = wall() - self._last  # now() = this + monotonic time
        self._skew = self._base  # wall minus monotonic time at the last look

    def now(self) -> float:
        """Seconds since the epoch as of our start, advanced by monotonic time only."""
        return self._base + self._mono()

    def check(self) -> str:
        """Why leases need a grace now: "" if nothing happened since the last look, else
        the pause or the wall-clock jump in a person's words."""
        mono, wall = self._mono(), self._wall()
        gap, self._last = mono - self._last, mono
        skew = wall - mono
        jump, self._skew = skew - self._skew, skew
        if gap > self.lease_s:
            return f"paused for {gap:.1f} s"
        if abs(jump) > self.lease_s:
            return f"wall clock jumped by {jump:+.1f} s"
        return ""
