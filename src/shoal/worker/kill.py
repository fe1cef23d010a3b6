"""Killing job process groups: at a deadline (TERM, then KILL after a grace), at once
(a stop or a lost lease), and the orphans a dead worker left running on this host.

A job leads its own session, so signalling its group reaches everything it started.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from .. import defaults
from ..job import Reaped


def kill_group(pid: int, sig: int) -> None:
    """Signal a job's whole process group (the job leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Deadlines:
    """Kills process groups whose deadline passed: SIGTERM, then SIGKILL after a grace.

    One thread serves every slot of a worker, so a job without a deadline pays nothing.
    Entries are keyed by ticket, not pid, so a reused pid is never signalled.
    """

    def __init__(self, grace_s: float = defaults.KILL_GRACE_S) -> None:
        self.grace_s = grace_s
        self._heap: list[tuple[float, int, int, int]] = []  # when, ticket, pid, signal
        self._live: set[int] = set()
        self._tickets = 0
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="shoal-deadlines", daemon=True)
        self._thread.start()

    def kill_at(self, pid: int, when: float) -> int:
        """SIGTERM the group at monotonic time `when`, SIGKILL it `grace_s` later."""
        with self._cond:
            self._tickets += 1
            ticket = self._tickets
            self._live.add(ticket)
            heapq.heappush(self._heap, (when, ticket, pid, signal.SIGTERM))
            heapq.heappush(self._heap, (when + self.grace_s, ticket, pid, signal.SIGKILL))
            self._cond.notify()
            return ticket

    def kill_now(self, pid: int) -> int:
        return self.kill_at(pid, time.monotonic())

    def close(self) -> None:
        """Stop the thread: signals already due still fire, later ones are dropped (a
        worker closes this once its jobs' processes have ended), so nothing lingers."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def forget(self, ticket: int) -> None:
        """The process exited: its pending signals must not fire."""
        with self._cond:
            self._live.discard(ticket)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._closing:
                    now = time.monotonic()
                    self._heap = [entry for entry in self._heap if entry[0] <= now]
                    heapq.heapify(self._heap)
                while not self._heap:
                    if self._closing:
                        return
                    self._cond.wait()
                when, ticket, pid, sig = self._heap[0]
                delay = when - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                if ticket not in self._live:
                    continue
            kill_group(pid, sig)


def _environ_of(pid: str) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs
            if k.startswith(b"SHOAL_")}


def _parent_of(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _orphaned_callhost(pid: str, env: dict[str, str], workers: set[str]) -> bool:
    """A call interpreter of one of `workers` whose worker is gone.

    Its /proc environ keeps the job id of its first call only, and it runs one call after
    another, so the attempt it runs now cannot be told from outside: it is killed only
    once its worker died (it no longer is the interpreter's parent: SHOAL_WORKER_PID).
    A live worker, back from a pause, kills the attempt it lost itself (by its token),
    never the newer call its interpreter may be running by then.
    """
    if env.get("SHOAL_CALLHOST") != "1" or env.get("SHOAL_WORKER") not in workers:
        return False
    started_by = env.get("SHOAL_WORKER_PID", "")
    return not started_by.isdigit() or _parent_of(pid) != int(started_by)


def kill_orphans(reaped: Iterable[Reaped]) -> int:
    """Kill job processes on this host left running by dead workers; return how many groups.

    A job is recognised by its SHOAL_JOB_ID, SHOAL_WORKER and SHOAL_ATTEMPT environment,
    never by pid alone, so a reused pid, or a newer attempt of the same job, is never hit;
    a call interpreter, only once its worker is gone (`_orphaned_callhost`).
    Linux only (/proc); elsewhere nothing happens.
    """
    wanted = {(r.job_id, r.worker, str(r.attempt)) for r in reaped}
    reaped_workers = {worker for _, worker, _ in wanted}
    if not wanted or not Path("/proc/self/environ").exists():
        return 0
    groups = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        env = _environ_of(entry)
        job = (env.get("SHOAL_JOB_ID"), env.get("SHOAL_WORKER"), env.get("SHOAL_ATTEMPT"))
        if job in wanted or _orphaned_callhost(entry, env, reaped_workers):
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(int(entry)))
    groups.discard(os.getpgid(0))
    for group in groups:
        kill_group(group, signal.SIGKILL)
    return len(groups)
