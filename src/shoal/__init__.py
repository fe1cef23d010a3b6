"""shoal: run many jobs in parallel over many machines with almost nothing to set up."""

from __future__ import annotations

from .context import config, job_id, progress, random
from .errors import JobFailed, LeaseLost, MalformedJob, ShoalError, UsageError
from .executor import Executor
from .job import Job, Result, State
from .queue import open_queue
from .sessions import session
from .splitrun import split_map

__version__ = "0.1.0"

__all__ = [
    "Executor",
    "Job",
    "JobFailed",
    "LeaseLost",
    "MalformedJob",
    "Result",
    "ShoalError",
    "State",
    "UsageError",
    "__version__",
    "config",
    "job_id",
    "open_queue",
    "progress",
    "random",
    "session",
    "split_map",
]
