"""What a running job can ask for: its id, a seeded random generator, shared config, progress.

The same API works in a Python call (the worker sets the context before the call)
and in a script (the worker passes it in SHOAL_* environment variables), so a
helper module can use `shoal.random()` without knowing how it was started.
Outside any job it still works: seed 0, no config, progress goes nowhere.
"""

from __future__ import annotations

import hashlib
import os
import random as _random
import sys
import time
from dataclasses import dataclass
from typing import Any

PROGRESS_EVERY_S = 0.2  # progress() writes at most this often (and always at the end)


def job_seed(run_seed: int | str, key: str) -> int:
    """A job's seed from the run's seed and a stable key: same on every machine and retry."""
    digest = hashlib.sha256(f"{run_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True)
class JobContext:
    """The running job as it sees itself."""

    job_id: str = ""
    attempt: int = 0
    queue: str = ""
    worker: str = ""
    seed: int = 0
    progress_file: str | None = None
    config_file: str | None = None

    def environment(self) -> dict[str, str]:
        """The SHOAL_* variables that carry this context into a script."""
        env = {"SHOAL_SEED": str(self.seed)}
        if self.progress_file:
            env["SHOAL_PROGRESS_FILE"] = self.progress_file
        if self.config_file:
            env["SHOAL_CONFIG"] = self.config_file
        return env

    @classmethod
    def from_environment(cls, env: dict[str, str] | os._Environ[str] = os.environ) -> JobContext:
        return cls(
            job_id=env.get("SHOAL_JOB_ID", ""), attempt=int(env.get("SHOAL_ATTEMPT", "0") or 0),
            queue=env.get("SHOAL_QUEUE", ""), worker=env.get("SHOAL_WORKER", ""),
            seed=int(env.get("SHOAL_SEED", "0") or 0),
            progress_file=env.get("SHOAL_PROGRESS_FILE") or None,
            config_file=env.get("SHOAL_CONFIG") or None,
        )


_current: JobContext | None = None
_last_progress_write = 0.0
_config_cache: tuple[str, dict[str, Any]] | None = None


def set_current(context: JobContext | None) -> None:
    """Called by the worker's interpreter around each call."""
    global _current, _last_progress_write
    _current = context
    _last_progress_write = 0.0


def current() -> JobContext:
    """The running job's context (from the worker, or from SHOAL_* variables)."""
    return _current if _current is not None else JobContext.from_environment()


def job_id() -> str:
    return current().job_id


def random() -> _random.Random:
    """A random.Random seeded for this job: the same numbers on any machine and any retry."""
    return _random.Random(current().seed)


def config() -> dict[str, Any]:
    """The queue's shared configuration (a TOML file kept with the queue); {} if none."""
    global _config_cache
    path = current().config_file
    if not path:
        return {}
    if _config_cache is None or _config_cache[0] != path:
        if sys.version_info >= (3, 11):  # here, not on top: few calls read a config
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        with open(path, "rb") as handle:
            _config_cache = (path, tomllib.load(handle))
    return dict(_config_cache[1])


def progress(done: float, total: float | None = None) -> None:
    """Report how far the job is; `shoal status` and the Executor's bar show it.

    Cheap to call in a tight loop: it writes at most every 0.2 s, and always when
    done reaches total.
    """
    global _last_progress_write
    path = current().progress_file
    if not path:
        return
    now = time.monotonic()
    if now - _last_progress_write < PROGRESS_EVERY_S and (total is None or done < total):
        return
    _last_progress_write = now
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        handle.write(f"{done} {'' if total is None else total}\n")
    os.replace(tmp, path)

