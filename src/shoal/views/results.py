"""`shoal results`: one row per job in submission order, as a table that fits the terminal,
CSV (one column per parameter) or JSON lines.

The table's rows come from one `queue.summaries()` (in order, filtered and cut by the
backend, the few fields a row shows read without building jobs and results); CSV and JSON
need every field and read `queue.listing()`. Everything after the read is linear and
cheap (no per-row rich rendering: see table.py), so the read is what 10^5 jobs cost.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gc
import json
import sys
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any

import click

from ..errors import UsageError
from ..job import JobStatus, JobSummary, Result, State
from ..queue.base import Queue
from .table import Column, fit, terminal_width

RESULT_COLUMNS = ("seq", "id", "name", "params", "state", "exit_code", "attempts", "host",
                  "worker", "start", "end", "duration_s", "log", "reason", "value")
TABLE = (
    Column("#", keep=0, right=True), Column("name", keep=0, flex=True, least=12),
    Column("state", keep=0), Column("exit", keep=1, right=True),
    Column("reason", keep=1, flex=True, least=10), Column("time", keep=2, right=True),
    Column("id", keep=3), Column("tries", keep=4, right=True), Column("host", keep=5),
    Column("start", keep=6), Column("log", keep=7, flex=True, least=10),
)


def parse_states(text: str | None) -> set[State] | None:
    """`--state failed,running` as a set of states (None: every state)."""
    if not text:
        return None
    wanted = set()
    for word in (w.strip().lower() for w in text.split(",")):
        try:
            wanted.add(State(word))
        except ValueError:
            raise UsageError(f"--state: {word!r} is not a state (choose from "
                             f"{', '.join(s.value for s in State)})") from None
    return wanted


def _time(stamp: float | None) -> str:
    return "" if stamp is None else _second(int(stamp))


@functools.lru_cache(maxsize=4096)
def _second(stamp: int) -> str:
    """Local time of an epoch second; cached, as thousands of jobs share each second."""
    return datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")


def result_row(result: Result, status: JobStatus | None = None) -> dict[str, Any]:
    """One row of `shoal results` for a recorded result."""
    duration = result.duration_s
    return {
        "seq": status.seq if status is not None else 0,
        "id": result.job_id, "name": result.name, "params": dict(result.params),
        "state": result.state.value, "exit_code": result.exit_code, "attempts": result.attempt,
        "host": result.host, "worker": result.worker, "start": _time(result.started),
        "end": _time(result.ended),
        "duration_s": round(duration, 3) if duration is not None else None,
        "log": result.log or "", "reason": result.reason, "value": result.value,
    }


def status_row(status: JobStatus) -> dict[str, Any]:
    """One row of `shoal results` for any job: its result, or where it is now."""
    if status.result is not None:
        return {**result_row(status.result, status), "name": status.job.name,
                "params": dict(status.job.params)}
    return {
        "seq": status.seq, "id": status.job.id, "name": status.job.name,
        "params": dict(status.job.params), "state": status.state.value, "exit_code": None,
        "attempts": status.attempt, "host": "", "worker": status.worker or "", "start": "",
        "end": "", "duration_s": None, "log": "", "reason": "", "value": None,
    }


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while 10^5 records are built (they hold no cycles):
    the collector's passes over them cost a third of the listing."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def listed(queue: Queue, states: Collection[State] | None = None,
           limit: int | None = None) -> list[JobStatus]:
    """Jobs in submission order, only those in `states` if given, at most `limit`."""
    with gc_paused():
        return list(queue.listing(states, limit))


def result_rows(queue: Queue, states: Collection[State] | None = None,
                limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Rows in submission order, only jobs in `states` if given, at most `limit`."""
    return map(status_row, listed(queue, states, limit))


def duration_text(seconds: float | None) -> str:
    """3.2s, 4m05s, 2h03m: short enough for a narrow column."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def param_columns(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Parameter name -> its CSV column: the bare name, or `param.NAME` where the bare
    name is one of shoal's own columns."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row["params"]))
    return {name: f"param.{name}" if name in RESULT_COLUMNS else str(name) for name in names}


def write_csv(rows: list[dict[str, Any]]) -> None:
    columns = param_columns(rows)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([*RESULT_COLUMNS, *columns.values()])
    for row in rows:
        params = row["params"]
        writer.writerow([json.dumps(params) if key == "params" else _cell(row[key])
                         for key in RESULT_COLUMNS]
                        + [_cell(params.get(name)) for name in columns])


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def table_cells(row: JobSummary) -> list[str]:
    """The table's cells of one job (in TABLE's order)."""
    reason = row.reason
    if "\n" in reason or "  " in reason:
        reason = " ".join(reason.split())
    started, ended = row.started, row.ended
    return [str(row.seq) if row.seq else "", row.name, row.state.value,
            "" if row.exit_code is None else str(row.exit_code), reason,
            duration_text(ended - started if started is not None and ended is not None
                          else None),
            row.id, str(row.attempt), row.host, _time(started), row.log or ""]


def show_results(queue: Queue, fmt: str, *, states: Collection[State] | None = None,
                 limit: int | None = None) -> None:
    """The table reads `summaries` (the narrow read); CSV and JSON need every field."""
    filtered = states is not None
    with gc_paused():
        if fmt == "table":
            _table(list(queue.summaries(states, limit)), queue.url, filtered)
        else:
            _records(listed(queue, states, limit), fmt)


def _table(rows: list[JobSummary], url: str, filtered: bool) -> None:
    if not rows:
        click.echo(f"no jobs{' in that state' if filtered else ''} in {url}", err=True)
        return
    lines = fit(TABLE, [table_cells(row) for row in rows], terminal_width())
    sys.stdout.writelines(line + "\n" for line in lines)
    sys.stdout.flush()


def _records(statuses: list[JobStatus], fmt: str) -> None:
    if fmt == "json":
        sys.stdout.writelines(json.dumps(status_row(s)) + "\n" for s in statuses)
    else:
        write_csv([status_row(s) for s in statuses])
    sys.stdout.flush()
