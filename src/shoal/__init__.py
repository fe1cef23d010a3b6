"""shoal: run many jobs in parallel over many machines with almost nothing to set up."""

from __future__ import annotations

from .errors import LeaseLost, MalformedJob, ShoalError, UsageError
from .job import Job, Result, State
from .queue import open_queue

__version__ = "0.1.0"

__all__ = [
    "Job",
    "LeaseLost",
    "MalformedJob",
    "Result",
    "ShoalError",
    "State",
    "UsageError",
    "__version__",
    "open_queue",
]
