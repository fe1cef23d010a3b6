"""`shoal status` and `shoal workers`: a queue at a glance, as text or JSON, once or
watched (`--watch`: redrawn in place on a terminal, plain blocks of lines otherwise).

Two kinds of waiting are told apart from pending: "waiting (dependencies)" is the
queue's WAITING count; "waiting (resources)" are pending jobs whose needs fit no live
worker's totals (`starved`), with what they need. A worker that does not say what it
has (no `resources`) may fit anything, so then no job is counted so.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import click

from ..job import JobStatus, State, WorkerInfo
from ..needs import needs_text
from ..queue.base import Queue
from ..queue.scheduling import Capacity
from .table import UNLIMITED, Column, cut, fit, terminal_width

REASONS_SHOWN = 3  # distinct failure reasons `status` lists (the commonest first)
WATCH_EVERY_S = 1.0


def failure_reasons(queue: Queue) -> list[dict[str, Any]]:
    """Failed jobs grouped by reason, commonest first: reason, count, a few job names."""
    groups: Counter[str] = Counter()
    names: dict[str, list[str]] = {}
    for row in queue.summaries({State.FAILED}):  # the backend filters: failed rows only
        reason = " ".join((row.reason or "no reason recorded").split())
        groups[reason] += 1
        if len(names.setdefault(reason, [])) < 3:
            names[reason].append(row.name or row.id)
    return [{"reason": reason, "count": count, "jobs": names[reason]}
            for reason, count in groups.most_common()]


def starved(pending: Iterable[JobStatus], workers: Iterable[WorkerInfo]) -> list[dict[str, Any]]:
    """Pending jobs whose needs fit no live worker's totals, grouped by what they need
    (most jobs first): needs, labels, text, count, a few job names. Nothing when no
    worker is alive, or one of them does not say what it has."""
    alive = [w for w in workers if not w.lost]
    if not alive or any(not w.resources for w in alive):
        return []
    totals = [Capacity(dict(w.resources), frozenset(w.labels)) for w in alive]
    verdicts: dict[tuple[Any, ...], bool] = {}  # what jobs need -> fits no worker
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for status in pending:
        job = status.job
        key = (tuple(sorted(job.needs.items())), tuple(sorted(job.labels)))
        if key not in verdicts:
            verdicts[key] = not any(total.fits(job) for total in totals)
        if not verdicts[key]:
            continue
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"needs": dict(job.needs), "labels": sorted(job.labels),
                                   "text": needs_text(job.needs, job.labels) or "1 cpu",
                                   "count": 0, "jobs": []}
        group["count"] += 1
        if len(group["jobs"]) < 3:
            group["jobs"].append(job.name or job.id)
    return sorted(groups.values(), key=lambda g: -g["count"])


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
        self._needy: list[dict[str, Any]] = []
        self._needy_seen: object = None
        self._next_needy = 0.0

    def _starved(self, pending: int, alive: list[WorkerInfo]) -> list[dict[str, Any]]:
        """`starved` over the pending jobs: read again only when the pending count or the
        workers' totals changed (a listing of every pending job costs), and then at most
        once per REASONS_PACE x what the last read took."""
        if not pending or not alive or any(not w.resources for w in alive):
            self._needy_seen = None
            return []
        seen = (pending, tuple(sorted((w.id, tuple(sorted(w.resources.items())),
                                       tuple(w.labels)) for w in alive)))
        if seen == self._needy_seen or time.monotonic() < self._next_needy:
            return self._needy
        started = time.monotonic()
        self._needy = starved(self.queue.listing({State.PENDING}), alive)
        self._needy_seen = seen
        self._next_needy = time.monotonic() + self.REASONS_PACE * (time.monotonic() - started)
        return self._needy

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
        needy = self._starved(counts[State.PENDING], alive)
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
            "waiting": {"dependencies": counts[State.WAITING],
                        "resources": sum(group["count"] for group in needy),
                        "needs": needy},
            "workers": {"alive": len(alive), "slots": sum(w.slots for w in alive),
                        "lost": len(workers) - len(alive)},
            "failures": self._reasons,
            "progress": progress,
            "unknown_files": [{"where": where, "names": names}
                              for where, names in sorted(queue.strays().items())],
        }


def status_lines(data: dict[str, Any], width: int) -> list[str]:
    counts, workers, waiting = data["counts"], data["workers"], data["waiting"]
    shown = {s.value: f"{counts[s.value]} {s.value}" for s in State}
    shown["waiting"] = f"{waiting['dependencies']} waiting (dependencies)"
    if waiting["resources"]:
        shown["pending"] = (f"{waiting['resources']} waiting (resources), "
                            f"{counts['pending'] - waiting['resources']} pending")
    lines = [
        f"queue {data['queue']}",
        "jobs: " + ", ".join(shown.values())
        + f" ({data['finished']}/{data['total']} finished)",
        f"workers: {workers['alive']} alive ({workers['slots']} slots), {workers['lost']} lost",
    ]
    if waiting["needs"]:
        lines.append(f"waiting (resources): {waiting['resources']} job(s) need more than any "
                     "live worker has:")
        for group in waiting["needs"][:REASONS_SHOWN]:
            jobs = ", ".join(group["jobs"]) + (", ..." if group["count"] > len(group["jobs"])
                                               else "")
            lines.append(f"  {group['count']} x {group['text']} ({cut(jobs, width // 2)})")
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
    for stray in data["unknown_files"]:
        lines.append(unknown_line(stray["where"], stray["names"], width))
    for report in data["progress"]:
        done, total = report["done"], report["total"]
        share = f" ({done / total:.0%})" if total else ""
        number = f"#{report['seq']} " if report["seq"] else ""
        figure = f": {done:g}{'/' + format(total, 'g') if total else ''}{share}"
        room = width - len(f"  running {number}") - len(figure)
        lines.append(f"  running {number}{cut(report['name'], max(room, 12))}{figure}")
    return lines


def unknown_line(where: str, names: list[str], width: int) -> str:
    """'1 unknown file in .shoal/pending: zzzz.notanumber': files shoal ignores there."""
    count = len(names)
    head = f"{count} unknown file{'' if count == 1 else 's'} in {where}: "
    return head + cut(", ".join(names), max(width - len(head) - 10, 20)) + " (ignored)"


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
    Column("has", keep=6, flex=True, least=10),  # its resources and labels, if it says
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
             "" if info.age_s is None else f"{info.age_s:.1f} s", info.log or "",
             needs_text(info.resources, info.labels)]
            for info in infos]
    click.echo("\n".join(fit(WORKER_TABLE, rows, terminal_width())))
