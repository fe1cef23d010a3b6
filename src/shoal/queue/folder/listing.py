"""A folder queue's `listing`: every job's state from one listing of each state folder,
then one read of each listed job's spec (and of each final job's result), instead of a
`get` per job (which looks in each folder in turn, a stat or a listing each).

Jobs move while we list (pending -> claimed -> final), so the folders are listed in that
order and a later sighting wins: a job that moved forward meanwhile is seen where it went.
A job seen nowhere (it moved back, a release, between two listings) or whose result
cannot be read (a crash before its group commit) is looked up alone, as `get` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from typing import TYPE_CHECKING

from ...errors import MalformedJob
from ...fsutil import list_names, read_bytes
from ...job import JobStatus, Result, State, loads
from ..base import chosen
from .layout import FINAL_DIRS, parse_marker, parse_pending

if TYPE_CHECKING:
    from .queue import FolderQueue

Where = tuple[State, int, "str | None"]  # state, attempt, worker


def where_jobs_are(queue: FolderQueue) -> dict[str, Where]:
    """Job id -> where its marker or result was seen (the latest folder in a job's life)."""
    found: dict[str, Where] = {}
    for name in queue._pending_names():
        parsed = parse_pending(name)
        if parsed is not None:
            found[parsed[0]] = (State.PENDING, parsed[1], None)
    for kind in ("claimed", "committing"):
        for name in queue._fresh_names(kind):
            job_id, attempt, worker = parse_marker(kind, name)
            with contextlib.suppress(ValueError):
                found[job_id] = (State.RUNNING, int(attempt), worker)
    for state, folder in FINAL_DIRS.items():
        for name in queue._fresh_names(folder):
            if name.endswith(".json"):
                found[name[:-5]] = (state, 0, None)
    return found


def read_listing(queue: FolderQueue, states: Collection[State] | None,
                 limit: int | None) -> list[JobStatus]:
    """`Queue.listing` for a folder queue (see the module docstring)."""
    wanted = None if states is None else frozenset(states)
    seen = where_jobs_are(queue)
    statuses = []
    for name in list_names(queue.dirs["jobs"]):
        if not name.endswith(".json"):
            continue
        job_id = name[:-5]
        where = seen.get(job_id)
        if where is not None and wanted is not None and where[0] not in wanted:
            continue
        status = _status(queue, job_id, where)
        if status is not None and (wanted is None or status.state in wanted):
            statuses.append(status)
    return chosen(statuses, None, limit)


def _status(queue: FolderQueue, job_id: str, where: Where | None) -> JobStatus | None:
    try:
        job, seq = queue._read_spec(job_id)
    except MalformedJob:
        return None  # as get(): a job without a readable spec is not listed
    if where is not None:
        state, attempt, worker = where
        if not state.final:
            return JobStatus(job, state, attempt, worker, None, (), seq)
        result = _result(queue.path(FINAL_DIRS[state], f"{job_id}.json"))
        if result is not None:
            return JobStatus(job, result.state, result.attempt, result.worker or None,
                             result, (), seq)
    return queue._state_of(job_id, job, seq)  # moved back, or a result not readable


def _result(path: str) -> Result | None:
    blob = read_bytes(path)
    if blob is None:
        return None
    try:
        return Result.from_dict(loads(blob))
    except (ValueError, KeyError, TypeError):
        return None
