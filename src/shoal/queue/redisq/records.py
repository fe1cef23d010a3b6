"""Jobs and results as the Redis queue stores them: compact JSON, payloads apart.

A record written inside a script (a cancellation, a failure by reap) holds only what
the script knows; `result_of` fills in the rest from the job, so no user data is ever
re-encoded by Lua.
"""

from __future__ import annotations

import json
from typing import Any

from ...job import Job, Result, dumps
from ..base import lost_reason


def spec_of(job: Job) -> bytes:
    """The job without its payload, None fields and empty mappings left out (Job.from_dict
    gives them back), so a pending job costs Redis little memory."""
    data = job.to_dict(binary=True)
    data.pop("payload", None)
    return dumps({k: v for k, v in data.items() if v is not None and v != {}})


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
    data: dict[str, Any] = json.loads(record)
    if data.pop("lost", False):
        data["reason"] = lost_reason(int(data.get("attempt", 0)), str(data.get("worker", "")))
    if job is not None and "name" not in data:
        data["name"], data["params"] = job.name, dict(job.params)
    return Result.from_dict(data)


def needs_job(record: bytes) -> bool:
    """Whether `result_of` needs the job (a record a script wrote)."""
    return b'"name"' not in record
