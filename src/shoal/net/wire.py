"""The network protocol's messages: msgpack frames, and records converted to and from them.

A request is `[req_id, client_id, method, args]` (with a fifth element `true` when
the client sends it again after getting no answer); the coordinator answers
`[OK, req_id, value, boot]` or `[ERR, req_id, {"type", "message"}, boot]`, and
pushes `[PUSH, 0, result, boot]` for results a client watches. `boot` names the
coordinator's run, so a client sees a restart and re-registers what it watches.

Payloads (pickled calls and values) travel as opaque bytes: the coordinator
never unpickles anything, and clients only unpickle what an authenticated
coordinator sent them.

Every decoder here (`unpack`, `request_in`, `reply_in`, the `*_in` records) raises
`MalformedMessage` for a frame or record that is not what this protocol sends:
garbage, a truncated frame, a length past its end, a field missing. What the
coordinator takes from clients (`job_in`, `result_in`, `worker_in`, `fence_in`,
`fit_in`; a request's own arguments: serve/schema.py) is also checked field by field
for its types, before anything of it is stored; a client trusts the types of what an
authenticated coordinator stored (`status_in`, `lease_in`: listings of 10^5 records).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgpack

from .. import errors
from ..job import Job, JobStatus, JobSummary, Lease, Result, State, WorkerInfo
from ..queue.scheduling import Capacity

PROTOCOL = 2  # 2: beat replaced renew, heartbeat and take_control
OK, ERR, PUSH = "ok", "err", "push"
T = TypeVar("T")


class MalformedMessage(errors.ShoalError):
    """A frame or record that does not follow this protocol (module docstring)."""


def pack(message: Any) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def unpack(frame: bytes) -> Any:
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedMessage(f"not a msgpack message ({type(exc).__name__}: {exc})") from None


def request_in(frame: bytes) -> tuple[int, bytes, str, dict[str, Any], bool]:
    """(req_id, client, method, args, repeat) of a request frame (module docstring)."""
    message = unpack(frame)
    if not (isinstance(message, list) and len(message) in (4, 5)):
        raise MalformedMessage("a request is an array of 4 or 5 elements")
    req_id, client, method, args, *repeat = message
    if not (isinstance(req_id, int) and isinstance(client, bytes) and isinstance(method, str)
            and isinstance(args, dict) and all(isinstance(key, str) for key in args)):
        raise MalformedMessage("bad request shape (want int, bytes, str, map of str keys)")
    return req_id, client, method, args, bool(repeat)


def reply_in(frame: bytes) -> tuple[str, int, Any, str]:
    """(kind, req_id, value, boot) of a reply or push frame (module docstring)."""
    message = unpack(frame)
    if not (isinstance(message, list) and len(message) == 4):
        raise MalformedMessage("a reply is an array of 4 elements")
    kind, req_id, value, boot = message
    if kind not in (OK, ERR, PUSH) or not isinstance(req_id, int) or not isinstance(boot, str):
        raise MalformedMessage("bad reply shape (want ok/err/push, int, value, str)")
    return kind, req_id, value, boot


# What each field of a record may be (its exact types), where its decoder would take
# anything: a job with an id of 5, or needs of "x", would be stored, then break every
# listing or claim. Checked by type identity, one pass over the record: listings decode
# 10^5 of these.
_NONE, _NUMBER = type(None), (int, float)
_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    "job": {"id": (str,), "name": (str,), "command": (str, list, _NONE), "path": (str, _NONE),
            "cwd": (str, _NONE), "env": (dict,), "params": (dict,), "log": (str, _NONE),
            "timeout_s": (*_NUMBER, _NONE), "retries": (int,), "max_attempts": (int,),
            "payload": (bytes, str, _NONE), "meta": (dict,), "priority": (int,),
            "after": (list,), "needs": (dict,), "labels": (list,)},
    "result": {"job_id": (str,), "name": (str,), "params": (dict,),
               "exit_code": (int, _NONE), "reason": (str,), "attempt": (int,),
               "worker": (str,), "host": (str,), "started": (*_NUMBER, _NONE),
               "ended": (*_NUMBER, _NONE), "log": (str, _NONE), "payload": (bytes, str, _NONE)},
    "lease": {"attempt": (int,), "worker": (str,), "token": (str,), "seq": (int,)},
    "fence": {"id": (str,), "attempt": (int,), "worker": (str,), "token": (str,)},
    "fit": {"free": (dict,), "labels": (list,)},
    "status": {"attempt": (int,), "worker": (str, _NONE), "attempts": (list,), "seq": (int,)},
    "worker": {"id": (str,), "host": (str,), "pid": (int,), "slots": (int,), "state": (str,),
               "running": (list,), "done": (int,), "started": _NUMBER, "log": (str, _NONE),
               "age_s": (*_NUMBER, _NONE), "lost": (bool,), "resources": (dict,),
               "labels": (list,)},
}
_SETS = {what: {key: frozenset(kinds) for key, kinds in types.items()}
         for what, types in _TYPES.items()}
# what the items (list) or values (map) of these fields must be
_ITEMS = {"command": frozenset({str}), "after": frozenset({str}), "labels": frozenset({str}),
          "running": frozenset({str}), "env": frozenset({str}),
          "needs": frozenset(_NUMBER), "resources": frozenset(_NUMBER),
          "free": frozenset(_NUMBER)}


def _check_types(record: dict[str, Any], what: str) -> None:
    check_fields(record, _SETS[what], _ITEMS, f"bad {what} record:")


def check_fields(record: Mapping[str, Any], types: Mapping[str, frozenset[type]],
                 items: Mapping[str, frozenset[type]], where: str) -> None:
    """MalformedMessage ("`where` KEY is int") unless each field named in `types` is of
    one of its types and, a list or map named in `items`, holds only those; a record's
    fields here, a request's arguments in serve/schema.py."""
    for key, value in record.items():
        kinds = types.get(key)
        if kinds is None:
            continue
        if type(value) not in kinds:
            raise MalformedMessage(f"{where} {key} is {type(value).__name__}")
        allowed = items.get(key)
        if allowed is None or not value:
            continue
        for item in value.values() if type(value) is dict else value:
            if type(item) not in allowed:
                raise MalformedMessage(f"{where} {key} holds a {type(item).__name__}")


def _decoded(decode: Callable[[Any], T], record: Any, what: str) -> T:
    """`decode(record)`, with any complaint about the record's shape as MalformedMessage."""
    if not isinstance(record, dict):
        raise MalformedMessage(f"a {what} record is a map, not {type(record).__name__}")
    _check_types(record, what)
    try:
        return decode(record)
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise MalformedMessage(f"bad {what} record ({type(exc).__name__}: {exc})") from None


def job_in(record: dict[str, Any]) -> Job:
    return _decoded(Job.from_dict, record, "job")


def lease_out(lease: Lease) -> dict[str, Any]:
    return {"job": lease.job.to_dict(binary=True), "attempt": lease.attempt,
            "worker": lease.worker, "token": lease.token, "seq": lease.seq}


def lease_in(record: dict[str, Any]) -> Lease:
    return _decoded(lambda r: Lease(Job.from_dict(r["job"]), r["attempt"], r["worker"],
                                    r["token"], r.get("seq", 0)), record, "lease")


def fence_out(lease: Lease) -> dict[str, Any]:
    """What identifies a lease without its job (a beat sends only this)."""
    return {"id": lease.job_id, "attempt": lease.attempt, "worker": lease.worker,
            "token": lease.token}


def fence_in(record: dict[str, Any]) -> tuple[str, int, str, str]:
    """(job id, attempt, worker, token) of a fence (`fence_out`)."""
    return _decoded(lambda r: (r["id"], r["attempt"], r["worker"], r["token"]), record,
                    "fence")


def fit_in(record: dict[str, Any] | None) -> Capacity | None:
    """A claim's `fit` (`Capacity.to_dict`); None: any job fits."""
    return None if record is None else _decoded(Capacity.from_dict, record, "fit")


def result_out(result: Result) -> dict[str, Any]:
    return result.to_dict(binary=True)


def result_in(record: dict[str, Any]) -> Result:
    return _decoded(Result.from_dict, record, "result")


def status_out(status: JobStatus) -> dict[str, Any]:
    return {"job": status.job.to_dict(binary=True), "state": status.state.value,
            "attempt": status.attempt, "worker": status.worker,
            "result": result_out(status.result) if status.result is not None else None,
            "attempts": [result_out(record) for record in status.attempts], "seq": status.seq}


def status_in(record: dict[str, Any]) -> JobStatus:
    return _decoded(_status, record, "status")


def _status(record: dict[str, Any]) -> JobStatus:
    result = record.get("result")
    return JobStatus(Job.from_dict(record["job"]), State(record["state"]), record["attempt"],
                     record["worker"], Result.from_dict(result) if result is not None else None,
                     tuple(Result.from_dict(r) for r in record.get("attempts", ())),
                     record.get("seq", 0))


def summary_out(row: JobSummary) -> list[Any]:
    """A summary row as a list of plain values (10^5 of them in one reply: no keys)."""
    return [*row[:3], row.state.value, *row[4:]]


def summary_in(values: list[Any]) -> JobSummary:
    return JobSummary(*values[:3], State(values[3]), *values[4:])


def worker_out(info: WorkerInfo) -> dict[str, Any]:
    return info.to_dict()


def worker_in(record: dict[str, Any]) -> WorkerInfo:
    return _decoded(WorkerInfo.from_dict, record, "worker")


def error_out(exc: BaseException) -> dict[str, str]:
    """An error as the coordinator sends it; a full disk (however it surfaced: SQLite,
    a log or progress file written) as `NoSpace`, which a worker waits out."""
    exc = errors.no_space(exc, "the coordinator's disk") or exc
    return {"type": type(exc).__name__, "message": str(exc)}


def error_in(record: Any) -> errors.ShoalError:
    """The coordinator's error as the same shoal exception class, when it is one (those
    of errors.py, or a subclass defined beside the code that raises it, such as
    scheduling.DependencyError); any record at all gives some ShoalError."""
    if not isinstance(record, dict):
        record = {"type": "MalformedMessage", "message": f"error record {record!r}"}
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
