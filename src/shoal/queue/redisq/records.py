"""Jobs and results as the Redis queue stores them: compact JSON, payloads apart.

A record written inside a script (a cancellation, a failure by reap, an end because a
dependency failed) holds only what the script knows; `result_of` fills in the rest from
the job and writes the reasons, so no user data is ever re-encoded by Lua.
"""

from __future__ import annotations

import json
from typing import Any

from ...job import Job, Result, State, dumps
from ..base import lost_reason
from ..scheduling import dependency_reason


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
