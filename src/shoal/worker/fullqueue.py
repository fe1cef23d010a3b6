"""How a worker rides out a queue that refuses writes (a full disk: `errors.NoSpace`; a
Redis at maxmemory: `QueueFull`): it says so once, not once per beat, waits with a
growing delay between tries, and says once that writes go through again."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("shoal.worker")

FIRST_S = 0.25  # the first wait after a refused write
MOST_S = 5.0  # the longest wait between tries


class FullQueue:
    """The worker's view of a full queue, shared by its steering loop and its slots."""

    def __init__(self, worker_id: str, quiet_s: float) -> None:
        """`quiet_s`: how long writes must go through before the trouble counts as over
        (a beat may pass while a result still cannot be written)."""
        self.worker_id = worker_id
        self.quiet_s = quiet_s
        self.since: float | None = None  # when the trouble began (monotonic), None if none
        self._last = 0.0  # when a write was last refused
        self._delay = FIRST_S
        self._lock = threading.Lock()

    def refused(self, exc: Exception) -> float:
        """Note a refused write; return how long to wait before trying again."""
        with self._lock:
            now = time.monotonic()
            if self.since is None:
                self.since, self._delay = now, FIRST_S
                log.warning("worker %s: %s; holding on to its jobs and trying again "
                            "until writes go through", self.worker_id, exc)
            else:
                self._delay = min(self._delay * 2, MOST_S)
            self._last = now
            return self._delay

    def went_through(self) -> None:
        """Note a write the queue took: after `quiet_s` of those, the trouble is over."""
        if self.since is None:
            return
        with self._lock:
            now = time.monotonic()
            if self.since is not None and now - self._last >= self.quiet_s:
                log.warning("worker %s: the queue takes writes again (after %.0f s)",
                            self.worker_id, now - self.since)
                self.since = None

    def lasted(self) -> float:
        """Seconds since the trouble began (0 if there is none)."""
        since = self.since
        return 0.0 if since is None else time.monotonic() - since
