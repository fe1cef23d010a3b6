"""What the dashboard shows, as JSON-able dicts read from a `Queue`.

Cheap to watch: an update reads `counts()` and `workers()` only, never every job; the
jobs table reads one page of `summaries` (in input order); one job is one `get`.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Collection, Iterable
from typing import Any

from ..job import JobStatus, JobSummary, Result, State, WorkerInfo
from ..queue.base import Queue

LOG_TAIL_BYTES = 16 * 1024  # of a job's log, shown on its page
RATE_WINDOW_S = 60.0  # throughput is jobs ended per second over this long
MAX_PAGE = 500  # rows a jobs page may ask for
TIMELINE_MOST = 10_000  # jobs a timeline draws (the latest started)


class Overview:
    """Counts by state, throughput, ETA and workers, sampled at most every `every_s` for
    all viewers together (ten open tabs cost the queue what one does)."""

    def __init__(self, queue: Queue, every_s: float = 1.0) -> None:
        self.queue = queue
        self.every_s = every_s
        self._samples: deque[tuple[float, int]] = deque()  # (time, jobs final)
        self._last: dict[str, Any] | None = None
        self._at = 0.0

    def get(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._last is None or now - self._at >= self.every_s * 0.5:
            self._last, self._at = self._read(now), now
        return self._last

    def forget(self) -> None:
        """The next `get` reads the queue again (an action changed it)."""
        self._last = None

    def _read(self, now: float) -> dict[str, Any]:
        counts = self.queue.counts()
        finals = sum(n for state, n in counts.items() if state.final)
        self._samples.append((now, finals))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        rate = _rate(self._samples)
        left = sum(n for state, n in counts.items() if not state.final)
        workers = self.queue.workers()
        return {
            "queue": self.queue.url,
            "counts": {state.value: counts.get(state, 0) for state in State},
            "total": sum(counts.values()),
            "rate": rate,
            "eta_s": left / rate if rate > 0 and left else None,
            "workers_alive": sum(1 for w in workers if not w.lost),
            "workers": [worker_row(w) for w in workers],
        }


def _rate(samples: deque[tuple[float, int]]) -> float:
    """Jobs ended per second between the first and the last sample (0 with one sample)."""
    (t0, n0), (t1, n1) = samples[0], samples[-1]
    return max(0, n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def worker_row(info: WorkerInfo) -> dict[str, Any]:
    return {"id": info.id, "host": info.host, "pid": info.pid, "slots": info.slots,
            "state": "lost" if info.lost else info.state, "running": len(info.running),
            "done": info.done, "age_s": info.age_s}


def summary_row(row: JobSummary) -> dict[str, Any]:
    return {"seq": row.seq, "id": row.id, "name": row.name, "state": row.state.value,
            "attempt": row.attempt, "worker": row.worker, "exit_code": row.exit_code,
            "reason": row.reason, "started": row.started, "ended": row.ended,
            "host": row.host}


def jobs_page(queue: Queue, states: Collection[State] | None, page: int, size: int,
              search: str = "") -> dict[str, Any]:
    """Rows `page * size` to `(page + 1) * size` in input order (one `summaries` page: a
    deep page reads what it shows), and how many match (from `counts`). With `search` (a
    part of the name, the id or a parameter's `name=value`, any case: `Queue.search`)
    every match is read: on demand only."""
    size = max(1, min(size, MAX_PAGE))
    page = max(0, page)
    if search:
        found = list(queue.search(search, states))
        return {"page": page, "size": size, "total": len(found),
                "rows": [summary_row(row) for row in found[page * size:(page + 1) * size]]}
    rows = queue.summaries(states, size, page * size)
    counts = queue.counts()
    matching = sum(n for state, n in counts.items() if states is None or state in states)
    return {"page": page, "size": size, "total": matching,
            "rows": [summary_row(row) for row in rows]}


def attempt_row(result: Result) -> dict[str, Any]:
    return {"attempt": result.attempt, "state": result.state.value, "reason": result.reason,
            "exit_code": result.exit_code, "worker": result.worker, "host": result.host,
            "started": result.started, "ended": result.ended}


def job_detail(queue: Queue, status: JobStatus) -> dict[str, Any]:
    """One job: what it runs, its state, each attempt, the reason and its log's tail."""
    job, result = status.job, status.result
    command = job.command if isinstance(job.command, str) else " ".join(job.command or ())
    attempts = [attempt_row(r) for r in status.attempts]
    if result is not None:
        attempts.append(attempt_row(result))
    return {
        "id": job.id, "seq": status.seq, "name": job.name, "state": status.state.value,
        "attempt": status.attempt, "worker": status.worker, "kind": job.kind.value,
        "command": command or job.path or "", "params": {k: str(v) for k, v in job.params.items()},
        "reason": result.reason if result is not None else "",
        "exit_code": result.exit_code if result is not None else None,
        "attempts": attempts, "log": log_tail(queue, status),
        "final": status.state.final,
    }


def log_tail(queue: Queue, status: JobStatus, most: int = LOG_TAIL_BYTES) -> str:
    """The end of the job's log (a running one's so far), as text."""
    data = queue.files.read_log(status)
    if not data:
        return ""
    return data[-most:].decode("utf-8", errors="replace")


def timeline(queue: Queue, most: int = TIMELINE_MOST) -> dict[str, Any]:
    """`timeline_of` every job's summary: reads them all, so asked for on demand, never
    per update."""
    return timeline_of(queue.summaries(), most)


def timeline_of(rows: Iterable[JobSummary], most: int = TIMELINE_MOST) -> dict[str, Any]:
    """Jobs that started, as bars on lanes: each worker's jobs packed onto as few lanes as
    overlap (its slots, as far as the times tell), the `most` latest started. Bars:
    [lane, start, end, state, seq, id], times from `t0`; a running job ends now."""
    now = time.time()
    ran = [r for r in rows if r.started is not None]
    ran = sorted(ran, key=lambda r: r.started or 0.0)[-most:]
    if not ran:
        return {"t0": None, "span": 0.0, "lanes": [], "bars": []}
    t0 = ran[0].started or 0.0
    lanes: list[str] = []
    bars: list[list[Any]] = []
    free: dict[str, list[tuple[float, int]]] = {}  # worker -> heap of (lane free at, lane)
    for row in ran:
        start, end = row.started or t0, row.ended if row.ended is not None else now
        heap = free.setdefault(row.worker or "?", [])
        if heap and heap[0][0] <= start:
            _, lane = heapq.heappop(heap)
        else:
            lane = len(lanes)
            lanes.append(row.worker or "?")
        heapq.heappush(heap, (end, lane))
        bars.append([lane, round(start - t0, 3), round(end - t0, 3), row.state.value,
                     row.seq, row.id])
    span = max(bar[2] for bar in bars)
    return {"t0": t0, "span": span, "lanes": lanes, "bars": bars}
