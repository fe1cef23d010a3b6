"""`shoal status` and `shoal workers`: a queue at a glance, as text or JSON, once or
watched (`--watch`: redrawn in place on a terminal, plain blocks of lines otherwise)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from ..job import State, WorkerInfo
from ..queue.base import Queue
from .table import UNLIMITED, Column, cut, fit, terminal_width

REASONS_SHOWN = 3  # distinct failure reasons `status` lists (the commonest first)
WATCH_EVERY_S = 1.0


def failure_reasons(queue: Queue) -> list[dict[str, Any]]:
    """Failed jobs grouped by reason, commonest first: reason, count, a few job names."""
    groups: Counter[str] = Counter()
    names: dict[str, list[str]] = {}
    for row in queue.summaries({State.FAILED}):
        if row.state is State.FAILED:
            reason = " ".join((row.reason or "no reason recorded").split())
            groups[reason] += 1
            if len(names.setdefault(reason, [])) < 3:
                names[reason].append(row.name or row.id)
    return [{"reason": reason, "count": count, "jobs": names[reason]}
            for reason, count in groups.most_common()]


class StatusReader:
    """Reads what `status` shows. The failure reasons cost a read of every result on some
    backends (a folder: one file each), so a watcher reads them again only when the number
    of failed jobs changed, and then at most once per REASONS_PACE x what the last read
    took (at least every REASONS_EVERY_S)."""

    REASONS_PACE = 5.0
    REASONS_EVERY_S = 2.0

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._failed_seen = -1
        self._reasons: list[dict[str, Any]] = []
        self._next_read = 0.0

    def read(self) -> dict[str, Any]:
        queue = self.queue
        counts = queue.counts()
        failed = counts[State.FAILED]
        if failed != self._failed_seen and (time.monotonic() >= self._next_read
                                            or not failed or self._failed_seen <= 0):
            started = time.monotonic()
            self._reasons = failure_reasons(queue) if failed else []
            self._failed_seen = failed
            took = time.monotonic() - started
            self._next_read = time.monotonic() + max(self.REASONS_EVERY_S,
                                                     self.REASONS_PACE * took)
        workers = queue.workers()
        alive = [w for w in workers if not w.lost]
        progress = []
        for job_id, (done, total) in sorted(queue.files.progress().items()):
            status = queue.get(job_id)
            progress.append({"id": job_id, "name": status.job.name if status else job_id,
                             "seq": status.seq if status else 0, "done": done, "total": total})
        total = sum(counts.values())
        return {
            "queue": queue.url,
            "counts": {state.value: counts[state] for state in State},
            "total": total,
            "finished": sum(counts[s] for s in State if s.final),
            "workers": {"alive": len(alive), "slots": sum(w.slots for w in alive),
                        "lost": len(workers) - len(alive)},
            "failures": self._reasons,
            "progress": progress,
        }


def status_lines(data: dict[str, Any], width: int) -> list[str]:
    counts, workers = data["counts"], data["workers"]
    lines = [
        f"queue {data['queue']}",
        "jobs: " + ", ".join(f"{counts[s.value]} {s.value}" for s in State)
        + f" ({data['finished']}/{data['total']} finished)",
        f"workers: {workers['alive']} alive ({workers['slots']} slots), {workers['lost']} lost",
    ]
    failures = data["failures"]
    if failures:
        lines.append(f"failed: {counts['failed']} job(s); reasons, commonest first:")
        for group in failures[:REASONS_SHOWN]:
            jobs = ", ".join(group["jobs"]) + (", ..." if group["count"] > len(group["jobs"])
                                               else "")
            lines.append(f"  {group['count']} x {group['reason']} ({cut(jobs, width // 2)})")
        if len(failures) > REASONS_SHOWN:
            lines.append(f"  ... {len(failures) - REASONS_SHOWN} other reason(s); "
                         "see: shoal results QUEUE --state failed")
    for report in data["progress"]:
        done, total = report["done"], report["total"]
        share = f" ({done / total:.0%})" if total else ""
        number = f"#{report['seq']} " if report["seq"] else ""
        figure = f": {done:g}{'/' + format(total, 'g') if total else ''}{share}"
        room = width - len(f"  running {number}") - len(figure)
        lines.append(f"  running {number}{cut(report['name'], max(room, 12))}{figure}")
    return lines


def show_status(queue: Queue, fmt: str = "text") -> None:
    data = StatusReader(queue).read()
    if fmt == "json":
        click.echo(json.dumps(data))
    else:
        click.echo("\n".join(status_lines(data, terminal_width())))


def watch_status(queue: Queue, fmt: str = "text", *, every_s: float = WATCH_EVERY_S,
                 stop: Callable[[], bool] = lambda: False) -> None:
    """Show the status every `every_s` until Ctrl-C: redrawn in place on a terminal; else
    a block (or a JSON line) each time it changed, after a line with the time."""
    reader = StatusReader(queue)
    on_terminal = sys.stdout.isatty() and fmt == "text"
    drawn = 0
    last: Any = None
    try:
        while not stop():
            data = reader.read()
            if on_terminal:
                width = terminal_width()
                lines = status_lines(data, width)
                lines.append(f"(every {every_s:g} s; Ctrl-C to stop) "
                             f"{datetime.now().strftime('%H:%M:%S')}")
                lines = [cut(line, width - 1) for line in lines]  # a wrapped line spoils "up N"
                up = f"\x1b[{drawn}F" if drawn else ""
                sys.stdout.write(up + "\x1b[J" + "\n".join(lines) + "\n")
                sys.stdout.flush()
                drawn = len(lines)
            elif data != last:
                stamp = datetime.now().strftime("%H:%M:%S")
                if fmt == "json":
                    click.echo(json.dumps({"time": stamp, **data}))
                else:
                    click.echo("\n".join([f"-- {stamp}", *status_lines(data, UNLIMITED)]))
                last = data
            time.sleep(every_s)
    except KeyboardInterrupt:
        return


WORKER_TABLE = (
    Column("worker", keep=0), Column("host", keep=1, flex=True, least=8),  # ids whole: fire
    Column("pid", keep=4, right=True), Column("slots", keep=2, right=True),
    Column("state", keep=0), Column("running", keep=1, right=True),
    Column("done", keep=2, right=True), Column("heartbeat", keep=3, right=True),
    Column("log", keep=5, flex=True, least=10),
)


def worker_row(info: WorkerInfo) -> dict[str, Any]:
    return {**info.to_dict(), "state": "lost" if info.lost else info.state}


def show_workers(queue: Queue, fmt: str = "text") -> None:
    infos = sorted(queue.workers(), key=lambda w: (w.host, w.id))
    if fmt == "json":
        click.echo(json.dumps([worker_row(info) for info in infos]))
        return
    if not infos:
        click.echo(f"no workers on {queue.url}")
        return
    rows = [[info.id, info.host, str(info.pid), str(info.slots),
             "lost" if info.lost else info.state, str(len(info.running)), str(info.done),
             "" if info.age_s is None else f"{info.age_s:.1f} s", info.log or ""]
            for info in infos]
    click.echo("\n".join(fit(WORKER_TABLE, rows, terminal_width())))
