"""Waiting for final results on the `finals` stream, with what one queue object
remembers between waits, so a waiter that asks again and again (the Executor's
collector) reads only the stream, not the states of everything it waits for.

`pending` holds ids seen not final as of `cursor` (a stream entry id, when the stream
had `added` entries in all): their results, when they come, are in the stream after
the cursor. Only other ids (new ones) are read
from the states, in the same script that notes the stream's newest entry, so nothing
lands between the two reads. An entry read past for an id not wanted by this call is
dropped from `pending`, so a later call reads that id's state again. When entries
after the cursor were trimmed away (the stream keeps its newest ~100,000: more were
added since the cursor than it holds, all of them after it), or after a reconnect,
every state is read again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ...job import State

PENDING_MAX = 1_000_000  # ids remembered at most; past it, start afresh


def _order(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class FinalsWatch:
    """The cursor and the ids known pending of one queue object (thread-safe)."""

    def __init__(self, catchup: Callable[[list[str]], list[Any]],
                 read: Callable[[bytes, int], list[Any]]) -> None:
        self._catchup = catchup  # ids -> [newest, newest trimmed, states]
        self._read = read  # (cursor, block_ms) -> XREAD reply
        self._lock = threading.Lock()
        self._cursor: bytes | None = None
        self._added = 0  # entries the stream had ever been given, as of the cursor
        self._pending: set[str] = set()

    def reset(self) -> None:
        with self._lock:
            self._cursor, self._added, self._pending = None, 0, set()

    def wait(self, wanted: list[str], deadline: float) -> list[str]:
        """Ids among `wanted` that are final, waiting until `deadline` for one."""
        with self._lock:
            cursor, added = self._cursor, self._added
            fresh = wanted if cursor is None else [i for i in wanted if i not in self._pending]
        newest, added_now, oldest, length, states = self._catchup(fresh)
        if cursor is not None and _order(oldest) > _order(cursor) and \
                int(added_now) - added > int(length):
            self.reset()  # entries after our cursor were trimmed away: read every state
            return self.wait(wanted, deadline)
        ready = [i for i, s in zip(fresh, states, strict=True) if s and State(s.decode()).final]
        with self._lock:
            if len(self._pending) > PENDING_MAX:
                self._pending.clear()
                self._cursor = None
            self._pending.update(i for i, s in zip(fresh, states, strict=True)
                                 if s and not State(s.decode()).final)
            if self._cursor is None:
                self._cursor, self._added = newest, int(added_now)
        if ready:
            return ready
        if cursor is None:
            cursor, added = newest, int(added_now)
        return self._follow(set(wanted), cursor, added, deadline)

    def _follow(self, wanted: set[str], cursor: bytes, added: int, deadline: float
                ) -> list[str]:
        """Read the stream from `cursor` until a wanted id lands or the deadline passes."""
        while (remaining := deadline - time.monotonic()) > 0:
            landed, passed = [], []
            for _stream, entries in self._read(cursor, max(1, round(remaining * 1000))) or []:
                for entry_id, fields in entries:
                    cursor, added = entry_id, added + 1
                    job_id = (fields.get(b"id") or b"").decode()
                    (landed if job_id in wanted else passed).append(job_id)
            with self._lock:
                self._pending.difference_update(landed)
                self._pending.difference_update(passed)
                if self._cursor is not None and _order(cursor) > _order(self._cursor):
                    self._cursor, self._added = cursor, added
            if landed:
                return landed
        return []
