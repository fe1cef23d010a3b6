"""The `FileStore` (queue/files.py) of a Redis queue: logs, progress and the shared
config kept beside the jobs, under the queue's hash tag.

A finished job's log is a field of the `logs` hash (a failed attempt's is `ID.N`), cut
to the queue's log cap by the worker before it travels; a running attempt's tail and
progress are fields of `tails` and `progress`, replaced by each beat and dropped when
the lease ends, so only running jobs cost anything there. The config and its stamp
are two fields of `config`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..files import Progress, parse_progress
from ..redis_link import RedisAddress, translated_errors
from .keys import QueueKeys


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStore:
    """What `ShippedFiles` asks a Redis queue for; see the module docstring."""

    def __init__(self, client: Any, keys: QueueKeys, put: Callable[[bytes], Any],
                 address: RedisAddress) -> None:
        self._client = client
        self._address = address  # errors become one-line shoal errors naming it
        self._keys = keys
        self._put = put  # runs config.lua: replace the config, return the new stamp

    def fetch_log(self, job_id: str, attempt: int | None) -> bytes | None:
        with translated_errors(self._address):
            if attempt is not None:
                return self._client.hget(self._keys.logs, f"{job_id}.{attempt}")
            # A running attempt's tail first (a retried job's old log went at retry).
            tail = self._client.hget(self._keys.tails, job_id)
            return tail if tail is not None else self._client.hget(self._keys.logs, job_id)

    def fetch_progress(self) -> dict[str, Progress]:
        with translated_errors(self._address):
            reports = self._client.hgetall(self._keys.progress)
        found = {}
        for job_id, text in reports.items():
            report = parse_progress(text)
            if report is not None:
                found[_text(job_id)] = report
        return found

    def fetch_config(self) -> bytes | None:
        with translated_errors(self._address):
            return self._client.hget(self._keys.config, "data")

    def put_config(self, data: bytes) -> str | None:
        with translated_errors(self._address):
            return _text(self._put(data))

    def stamp(self) -> str | None:
        """The config's stamp now (None: no config yet)."""
        with translated_errors(self._address):
            stamp = self._client.hget(self._keys.config, "stamp")
        return None if stamp is None else _text(stamp)
