"""The finals this process recorded in a folder queue, so a watcher in the same process
(`shoal run`, an Executor with its local worker) hears of them without listing the final
folders.

A folder queue keeps no journal of finals on disk: without this, every `watch` look
lists done/, failed/ and cancelled/ (all 10^4 names of a big run) to find the few that
landed. A process's own finishes go through its FolderQueue object, so it can note them
here as it writes them; finals written by other processes (`shoal work` elsewhere, a
reaper) are still found by a full scan, which runs at the usual pace while such finals
turn up and once a second while only this process's own do.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

KEEP = 100_000  # ids kept; a watcher that fell further behind scans instead
QUIET_SCAN_S = 1.0  # full scans this far apart while every final is our own
FOREIGN_S = 5.0  # ... unless another process's final turned up this recently


class WatchMark(NamedTuple):
    """Where one WatchSet's watch of a folder queue stands (kept in `WatchSet.mark`)."""

    end: int  # the LocalFinals position read up to
    next_scan: float  # monotonic time the next full scan is due


class LocalFinals:
    """An append-only list of job ids whose final record this process wrote."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._start = 0  # the position of _ids[0] (older ones were dropped)
        self._lock = threading.Lock()
        self.last_added = 0.0  # monotonic time of the last add
        self.last_foreign = 0.0  # monotonic time a scan last found a final not noted here

    def add(self, job_id: str) -> None:
        """Note a final record once it is written (readers then find it on disk)."""
        with self._lock:
            self._ids.append(job_id)
            if len(self._ids) > KEEP:
                drop = len(self._ids) // 2
                del self._ids[:drop]
                self._start += drop
            self.last_added = time.monotonic()

    def end(self) -> int:
        """The position after the last id noted."""
        with self._lock:
            return self._start + len(self._ids)

    def since(self, position: int) -> tuple[list[str], int] | None:
        """The ids noted from `position` on and the new end; None if they were dropped."""
        with self._lock:
            if position < self._start:
                return None
            end = self._start + len(self._ids)
            return self._ids[position - self._start:], end

    def scan_pause(self, took_s: float) -> float:
        """How long until the next full scan, after one that took `took_s`: 4x its cost
        (a fifth of the time at most), stretched to QUIET_SCAN_S while our own finals
        keep coming and no other process's turned up for FOREIGN_S."""
        now = time.monotonic()
        pause = 4 * took_s
        if now - self.last_added < QUIET_SCAN_S and now - self.last_foreign > FOREIGN_S:
            pause = max(pause, QUIET_SCAN_S)
        return pause
