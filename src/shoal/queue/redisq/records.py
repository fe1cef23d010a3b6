"""Jobs and results as the Redis queue stores them: compact JSON, payloads apart.

A record written inside a script (a cancellation, a failure by reap, an end because a
dependency failed) holds only what the script knows; `result_of` fills in the rest from
the job and writes the reasons, so no user data is ever re-encoded by Lua.
"""

from __future__ import annotations

import json
from typing import Any

from ...job import Job, Result, State, _field_names, dumps
from ..base import lost_reason
from ..scheduling import dependency_reason

# spec_of writes these fields itself (to_dict's generic walk is most of submit's time);
# a Job with other fields, or a subclass, takes the generic way.
_KNOWN = {"id", "name", "kind", "command", "path", "cwd", "env", "params", "log", "timeout_s",
          "retries", "max_attempts", "payload", "meta", "priority", "after", "needs", "labels"}
_FAST = set(_field_names(Job)) == _KNOWN
_OPTIONAL = ("path", "cwd", "log", "timeout_s")
_MAPPINGS = ("env", "params", "meta", "needs")
_LISTS = ("after", "labels")
_encode = json.JSONEncoder(separators=(",", ":")).encode


def spec_of(job: Job) -> str:
    """The job without its payload, None fields and empty mappings left out (Job.from_dict
    gives them back), so a pending job costs Redis little memory."""
    if not _FAST or type(job) is not Job:
        data = job.to_dict(binary=True)
        data.pop("payload", None)
        return dumps({k: v for k, v in data.items() if v is not None and v != {}}).decode()
    command = job.command
    spec: dict[str, Any] = {"id": job.id, "name": job.name, "kind": job.kind.value,
                            "retries": job.retries, "max_attempts": job.max_attempts}
    if command is not None:
        spec["command"] = list(command) if type(command) is tuple else command
    for key in _OPTIONAL:
        value = getattr(job, key)
        if value is not None:
            spec[key] = value
    for key in _MAPPINGS:
        value = getattr(job, key)
        if value:
            spec[key] = dict(value)
    for key in _LISTS:
        value = getattr(job, key)
        if value:
            spec[key] = list(value)
    if job.priority:
        spec["priority"] = job.priority
    return _encode(spec)


def job_of(spec: bytes, payload: bytes | None) -> Job:
    data = json.loads(spec)
    if payload:
        data["payload"] = payload
    return Job.from_dict(data)


def record_of(result: Result) -> bytes:
    return dumps(result.to_dict())


def result_of(record: bytes, job: Job | None) -> Result:
    """A stored result; a script's short record gets the job's name and params, and a
    failure by reap its reason."""
    return result_from(json.loads(record), job)


def result_from(data: dict[str, Any], job: Job | None) -> Result:
    """`result_of` for a record already decoded (`data` is changed)."""
    with_reason(data)
    if job is not None and "name" not in data:
        data["name"], data["params"] = job.name, dict(job.params)
    return Result.from_dict(data)


def with_reason(data: dict[str, Any]) -> dict[str, Any]:
    """A decoded record with the reason a script's short record stands for (a reap at the
    attempt cap, an end because a dependency failed or was cancelled) written out;
    `data` is changed. Every reader of records goes through it."""
    if "dep" in data:
        data["reason"] = dependency_reason(data.pop("dep"), data.pop("dep_name", ""),
                                           State(data["state"]))
    if data.pop("lost", False):
        data["reason"] = lost_reason(int(data.get("attempt", 0)), str(data.get("worker", "")))
    return data


def needs_job(record: bytes) -> bool:
    """Whether `result_of` needs the job (a record a script wrote)."""
    return b'"name"' not in record
