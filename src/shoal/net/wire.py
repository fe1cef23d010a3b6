"""The network protocol's messages: msgpack frames, and records converted to and from them.

A request is `[req_id, client_id, method, args]` (with a fifth element `true` when
the client sends it again after getting no answer); the coordinator answers
`[OK, req_id, value, boot]` or `[ERR, req_id, {"type", "message"}, boot]`, and
pushes `[PUSH, 0, result, boot]` for results a client watches. `boot` names the
coordinator's run, so a client sees a restart and re-registers what it watches.

Payloads (pickled calls and values) travel as opaque bytes: the coordinator
never unpickles anything, and clients only unpickle what an authenticated
coordinator sent them.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .. import errors
from ..job import Job, JobStatus, JobSummary, Lease, Result, State, WorkerInfo

PROTOCOL = 2  # 2: beat replaced renew, heartbeat and take_control
OK, ERR, PUSH = "ok", "err", "push"


def pack(message: Any) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def unpack(frame: bytes) -> Any:
    return msgpack.unpackb(frame, raw=False, strict_map_key=False)


def job_in(record: dict[str, Any]) -> Job:
    return Job.from_dict(record)


def lease_out(lease: Lease) -> dict[str, Any]:
    return {"job": lease.job.to_dict(binary=True), "attempt": lease.attempt,
            "worker": lease.worker, "token": lease.token, "seq": lease.seq}


def lease_in(record: dict[str, Any]) -> Lease:
    return Lease(Job.from_dict(record["job"]), record["attempt"], record["worker"],
                 record["token"], record.get("seq", 0))


def fence_out(lease: Lease) -> dict[str, Any]:
    """What identifies a lease without its job (a beat sends only this)."""
    return {"id": lease.job_id, "attempt": lease.attempt, "worker": lease.worker,
            "token": lease.token}


def result_out(result: Result) -> dict[str, Any]:
    return result.to_dict(binary=True)


def result_in(record: dict[str, Any]) -> Result:
    return Result.from_dict(record)


def status_out(status: JobStatus) -> dict[str, Any]:
    return {"job": status.job.to_dict(binary=True), "state": status.state.value,
            "attempt": status.attempt, "worker": status.worker,
            "result": result_out(status.result) if status.result is not None else None,
            "attempts": [result_out(record) for record in status.attempts], "seq": status.seq}


def status_in(record: dict[str, Any]) -> JobStatus:
    result = record.get("result")
    return JobStatus(Job.from_dict(record["job"]), State(record["state"]), record["attempt"],
                     record["worker"], result_in(result) if result is not None else None,
                     tuple(result_in(r) for r in record.get("attempts", ())),
                     record.get("seq", 0))


def summary_out(row: JobSummary) -> list[Any]:
    """A summary row as a list of plain values (10^5 of them in one reply: no keys)."""
    return [*row[:3], row.state.value, *row[4:]]


def summary_in(values: list[Any]) -> JobSummary:
    return JobSummary(*values[:3], State(values[3]), *values[4:])


def worker_out(info: WorkerInfo) -> dict[str, Any]:
    return info.to_dict()


def worker_in(record: dict[str, Any]) -> WorkerInfo:
    return WorkerInfo.from_dict(record)


def error_out(exc: BaseException) -> dict[str, str]:
    """An error as the coordinator sends it; a full disk (however it surfaced: SQLite,
    a log or progress file written) as `NoSpace`, which a worker waits out."""
    exc = errors.no_space(exc, "the coordinator's disk") or exc
    return {"type": type(exc).__name__, "message": str(exc)}


def error_in(record: dict[str, str]) -> errors.ShoalError:
    """The coordinator's error as the same shoal exception class, when it is one (those
    of errors.py, or a subclass defined beside the code that raises it, such as
    scheduling.DependencyError)."""
    name = str(record.get("type"))
    message = str(record.get("message", ""))
    kind = getattr(errors, name, None)
    if not (isinstance(kind, type) and issubclass(kind, errors.ShoalError)):
        kind = _shoal_error_named(name)
    if kind is not None:
        return kind(message)
    return errors.ShoalError(f"coordinator error: {name}: {message}")


def _shoal_error_named(name: str) -> type[errors.ShoalError] | None:
    """The ShoalError subclass of that name among those imported here, if any."""
    todo: list[type[errors.ShoalError]] = [errors.ShoalError]
    while todo:
        kind = todo.pop()
        if kind.__name__ == name:
            return kind
        todo.extend(kind.__subclasses__())
    return None
