"""Group commit for the folder queue: many results made durable by one sync, off the hot path.

An fsync per result costs more than running a `true` job. Instead `finish` writes the
result without fsync, leaves its fence (the `committing/` marker) in place, and hands
the fence here. A background thread syncs the filesystem once for every result handed
in so far, then removes their fences. A result is therefore visible at once and
durable within milliseconds; if the machine crashes in between, the fence is still
there, and the reaper that settles it finds the result missing or unreadable and runs
the job again (at-least-once, never lost).
"""

from __future__ import annotations

import atexit
import logging
import threading
from pathlib import Path

from ... import defaults
from ...fsutil import sync_filesystem, unlink_quiet

log = logging.getLogger("shoal.queue.folder")


class GroupCommit:
    """Unlinks fences only after one syncfs(2) that covers everything written before them."""

    def __init__(self, folder: Path, *, interval_s: float = defaults.GROUP_COMMIT_S) -> None:
        self.folder = folder
        self.interval_s = interval_s
        self._flushing = 0
        self._cond = threading.Condition()
        self._waiting: list[str] = []
        self._added = 0
        self._synced = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, fence: str) -> None:
        with self._cond:
            self._waiting.append(fence)
            self._added += 1
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(target=self._loop, name="shoal-group-commit",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.flush)
            if len(self._waiting) == 1:
                # Only the first fence of a batch wakes the thread: while it gathers, a
                # wake per result would cost the finishing slots a GIL hand-off each.
                self._cond.notify_all()

    def flush(self) -> None:
        """Return once everything added so far is durable and its fence removed."""
        with self._cond:
            target = self._added
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._synced < target and self._thread is not None:
                    self._cond.wait(1.0)
            finally:
                self._flushing -= 1

    def close(self) -> None:
        """Make everything durable, then stop the thread and drop the exit hook (a closed
        queue leaves nothing running; a later `add` starts them again)."""
        self.flush()
        with self._cond:
            thread, self._thread = self._thread, None
            self._closed = True
            self._cond.notify_all()
        if thread is not None:
            thread.join()
            atexit.unregister(self.flush)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed and not self._waiting:
                    return
                # Gather for up to interval_s: each sync is a journal commit that stalls
                # everyone's file operations for a moment, so fewer is faster.
                self._cond.wait_for(lambda: self._flushing > 0, self.interval_s)
                batch, self._waiting = self._waiting, []
            try:
                sync_filesystem(self.folder)
            except OSError as exc:  # fences stay: the reaper re-checks those results
                log.error("group commit: sync of %s failed: %s", self.folder, exc)
            else:
                for fence in batch:
                    unlink_quiet(fence)
            with self._cond:
                self._synced += len(batch)
                self._cond.notify_all()
