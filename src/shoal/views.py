"""What `shoal status`, `results`, `logs` and `workers` show: rows built here, printed by rich."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import click

from .errors import JobNotFound
from .job import JobStatus, Result, State
from .queue.base import Queue

RESULT_COLUMNS = ("id", "name", "params", "state", "exit_code", "attempts", "host", "worker",
                  "start", "end", "duration_s", "log", "reason", "value")


def resolve_jobs(queue: Queue, refs: Iterable[str]) -> list[JobStatus]:
    """Jobs by exact id, unique id prefix, or exact name; JobNotFound names what is missing."""
    refs = list(refs)
    found: list[JobStatus] = []
    wanted = []
    for ref in refs:
        status = queue.get(ref)
        if status is not None:
            found.append(status)
        else:
            wanted.append(ref)
    if wanted:
        everything = list(queue.jobs())
        for ref in wanted:
            matches = [s for s in everything if s.job.name == ref] or [
                s for s in everything if s.job.id.startswith(ref)]
            if len(matches) != 1:
                problem = "no job" if not matches else f"{len(matches)} jobs"
                raise JobNotFound(f"{problem} matching {ref!r} in {queue.url}")
            found.extend(matches)
    return found


def _time(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")


def result_row(result: Result, status: JobStatus | None = None) -> dict[str, Any]:
    """One row of `shoal results` for a recorded result."""
    duration = result.duration_s
    return {
        "id": result.job_id, "name": result.name, "params": dict(result.params),
        "state": result.state.value, "exit_code": result.exit_code, "attempts": result.attempt,
        "host": result.host, "worker": result.worker, "start": _time(result.started),
        "end": _time(result.ended),
        "duration_s": round(duration, 3) if duration is not None else None,
        "log": result.log or "", "reason": result.reason, "value": result.value,
    }


def result_rows(queue: Queue) -> Iterator[dict[str, Any]]:
    """One row per job with the timing columns job-splitter users know."""
    for status in sorted(queue.jobs(), key=lambda s: s.job.name):
        if status.result is not None:
            yield {**result_row(status.result), "name": status.job.name,
                   "params": dict(status.job.params)}
            continue
        yield {
            "id": status.job.id, "name": status.job.name, "params": dict(status.job.params),
            "state": status.state.value, "exit_code": None, "attempts": status.attempt,
            "host": "", "worker": status.worker or "", "start": "", "end": "",
            "duration_s": None, "log": "", "reason": "", "value": None,
        }


def show_results(queue: Queue, fmt: str) -> None:
    rows = list(result_rows(queue))
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(row))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "params": json.dumps(row["params"])})
    else:
        _table(["id", "name", "state", "exit", "attempts", "host", "start", "duration_s",
                "log"],
               [[r["id"][:10], r["name"], r["state"], _blank(r["exit_code"]),
                 str(r["attempts"]), r["host"], r["start"], _blank(r["duration_s"]),
                 r["log"]] for r in rows])


def _blank(value: object) -> str:
    return "" if value is None else str(value)


def _table(headers: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    Console(width=max(160, Console().width)).print(table)


def show_status(queue: Queue) -> None:
    counts = queue.counts()
    total = sum(counts.values())
    final = sum(counts[s] for s in State if s.final)
    workers = queue.workers()
    alive = [w for w in workers if not w.lost]
    click.echo(f"queue {queue.url}")
    click.echo("jobs: " + ", ".join(f"{counts[s]} {s.value}" for s in State)
               + f" ({final}/{total} finished)")
    if counts[State.FAILED]:  # why job files failed before they ran (jobfiles.py)
        from .jobfiles import malformed_lines

        for line in malformed_lines(queue.results()):
            click.echo(line)
    click.echo(f"workers: {len(alive)} alive ({sum(w.slots for w in alive)} slots), "
               f"{len(workers) - len(alive)} lost")
    reports = queue.files.progress()
    for job_id, (done, total) in sorted(reports.items()):
        status = queue.get(job_id)
        name = status.job.name if status is not None else job_id
        share = f" ({done / total:.0%})" if total else ""
        click.echo(f"  running {name}: {done:g}{'/' + format(total, 'g') if total else ''}{share}")


def show_workers(queue: Queue) -> None:
    rows = []
    for info in sorted(queue.workers(), key=lambda w: (w.host, w.id)):
        state = "lost" if info.lost else info.state
        age = "" if info.age_s is None else f"{info.age_s:.1f} s"
        rows.append([info.id, info.host, str(info.pid), str(info.slots), state,
                     str(len(info.running)), str(info.done), age, info.log or ""])
    if not rows:
        click.echo(f"no workers on {queue.url}")
        return
    _table(["worker", "host", "pid", "slots", "state", "running", "done", "heartbeat", "log"],
           rows)


def show_log(queue: Queue, ref: str) -> None:
    (status,) = resolve_jobs(queue, [ref])
    text = queue.files.read_log(status)
    if text is None:
        raise JobNotFound(f"job {status.job.name!r} ({status.state.value}) has no log yet")
    sys.stdout.buffer.write(text)
    sys.stdout.flush()
