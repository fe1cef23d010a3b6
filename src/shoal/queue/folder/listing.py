"""A folder queue's `listing`: every job's state from one listing of each state folder,
then one read of each listed job's spec (and of each final job's result), decoded in
batches, instead of a `get` per job (which looks in each folder in turn).

Jobs move while we list (waiting -> pending -> claimed -> final), so the folders are listed in that
order and a later sighting wins: a job that moved forward meanwhile is seen where it went.
A job seen nowhere (it moved back, a release, between two listings) or whose result
cannot be read (a crash before its group commit) is looked up alone, as `get` does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import MalformedJob
from ...fsutil import list_names, read_bytes
from ...job import STATES, Job, JobStatus, JobSummary, Result, State, loads, loads_many
from ..base import chosen, page_of
from .layout import FINAL_DIRS, parse_marker, parse_pending, spec_rank

if TYPE_CHECKING:
    from .queue import FolderQueue

Where = tuple[State, int, "str | None"]  # state, attempt, worker
BATCH = 5000  # records decoded in one call
READ_SIZE = 1 << 16  # one read gets a whole record (a longer one is read again, whole)


def where_jobs_are(queue: FolderQueue) -> dict[str, Where]:
    """Job id -> where its marker or result was seen (the latest folder in a job's life)."""
    found: dict[str, Where] = {}
    for name in queue._fresh_names("waiting"):
        found[name] = (State.WAITING, 1, None)
    for name in queue._pending_names():
        parsed = parse_pending(name)
        if parsed is not None:
            found[parsed[0]] = (State.PENDING, parsed[1], None)
    for kind in ("claimed", "committing"):
        for name in queue._fresh_names(kind):
            job_id, attempt, worker = parse_marker(kind, name) or ("", 0, None)
            found[job_id] = (State.RUNNING, attempt, worker)
    for state, folder in FINAL_DIRS.items():
        for name in queue._fresh_names(folder):
            if name.endswith(".json"):
                found[name[:-5]] = (state, 0, None)
    return found


def read_listing(queue: FolderQueue, states: Collection[State] | None,
                 limit: int | None) -> list[JobStatus]:
    """`Queue.listing` for a folder queue (see the module docstring)."""
    statuses = _read(queue, states, _status)
    return chosen(statuses, None, limit)


def read_summaries(queue: FolderQueue, states: Collection[State] | None,
                   limit: int | None, offset: int = 0) -> list[JobSummary]:
    """`Queue.summaries` for a folder queue: the same reads as `read_listing`, but rows
    taken from the decoded records as they are (no Job or Result built). Only the
    listing tells the order, so a page past `offset` costs the reads of every job."""
    rows = sorted(_read(queue, states, _summary), key=lambda row: (row.seq, row.name))
    return page_of(rows, limit, offset)


T = TypeVar("T", JobStatus, JobSummary)


def _read(queue: FolderQueue, states: Collection[State] | None,
          build: Callable[[FolderQueue, str, dict[str, Any] | None, Where | None,
                           dict[str, Any] | None], T | None]) -> list[T]:
    """What `build` makes of each job in `states` (all if None) from its spec, where it
    was seen and its result record."""
    wanted = None if states is None else frozenset(states)
    seen = where_jobs_are(queue)
    ids = []
    for name in list_names(queue.dirs["jobs"]):
        if name.endswith(".json"):
            where = seen.get(name[:-5])
            if where is None or wanted is None or where[0] in wanted:
                ids.append(name[:-5])
    specs = records([queue.path("jobs", f"{i}.json") for i in ids])
    final = [i for i in ids if i in seen and seen[i][0].final]
    results = dict(zip(final, records([queue.path(FINAL_DIRS[seen[i][0]], f"{i}.json")
                                       for i in final]), strict=True))
    built = []
    for job_id, spec in zip(ids, specs, strict=True):
        item = build(queue, job_id, spec, seen.get(job_id), results.get(job_id))
        if item is not None and (wanted is None or item.state in wanted):
            built.append(item)
    return built


def records(paths: list[str]) -> list[dict[str, Any] | None]:
    """The JSON record in each file, decoded in batches; None where it is missing or
    not a record."""
    found: list[dict[str, Any] | None] = []
    for first in range(0, len(paths), BATCH):
        chunk = paths[first:first + BATCH]
        blobs = [_read_once(path) for path in chunk]
        decoded = iter(loads_many([blob for blob in blobs if blob is not None]))
        for path, blob in zip(chunk, blobs, strict=True):
            record = next(decoded) if blob is not None else None
            if record is None and blob is not None:  # cut short by the one read?
                whole = read_bytes(path)
                with contextlib.suppress(ValueError, TypeError):
                    record = loads(whole) if whole is not None else None
            found.append(record)
    return found


def _read_once(path: str) -> bytes | None:
    """The file's bytes by one read (None if there is no file): a record longer than
    READ_SIZE, or cut short, does not decode and is read again whole by `records`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, READ_SIZE)
    finally:
        os.close(fd)


def _status(queue: FolderQueue, job_id: str, spec: dict[str, Any] | None,
            where: Where | None, record: dict[str, Any] | None) -> JobStatus | None:
    if spec is None:
        return None  # as get(): a job without a readable spec is not listed
    try:
        rank = spec_rank(spec)
        seq = int(spec.pop("seq", 0))
        job = Job.from_dict(spec)
    except (ValueError, TypeError, KeyError):
        return None
    if where is not None:
        state, attempt, worker = where
        if not state.final:
            return JobStatus(job, state, attempt, worker, None, (), seq)
        with contextlib.suppress(ValueError, TypeError, KeyError):
            result = Result.from_dict(record) if record is not None else None
            if result is not None:
                return JobStatus(job, result.state, result.attempt, result.worker or None,
                                 result, (), seq)
    try:
        return queue._state_of(job_id, job, rank)  # moved back, or a result not readable
    except MalformedJob:
        return None


def _summary(queue: FolderQueue, job_id: str, spec: dict[str, Any] | None,
             where: Where | None, record: dict[str, Any] | None) -> JobSummary | None:
    if spec is None or not isinstance(spec.get("name", ""), str):
        return None
    seq = spec.get("seq", 0)
    if where is not None:
        state, attempt, worker = where
        if not state.final:
            return JobSummary(seq, job_id, spec.get("name", ""), state, attempt, worker)
        result_state = STATES.get(record.get("state", "")) if record is not None else None
        if record is not None and result_state is not None:
            get = record.get
            return JobSummary(seq, job_id, spec.get("name", ""), result_state,
                              get("attempt", 0), get("worker") or None, get("exit_code"),
                              get("reason", ""), get("started"), get("ended"),
                              get("host", ""), get("log"))
    status = _status(queue, job_id, spec, where, record)  # the slow path, as listing's
    return JobSummary.of(status) if status is not None else None
