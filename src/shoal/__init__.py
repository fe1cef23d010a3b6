"""shoal: run many jobs in parallel over many machines with almost nothing to set up.

The public names are imported on first use (lazy.py), not here: `shoal --version`,
`shoal status` and every call interpreter import this package, and most of them need
none of the Executor's machinery (tests/test_startup.py keeps it so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import exports

if TYPE_CHECKING:  # for type checkers and readers; at run time _PUBLIC says where
    from .context import config, job_id, progress, random
    from .errors import JobFailed, LeaseLost, MalformedJob, ShoalError, UsageError
    from .executor import Executor
    from .job import Job, Result, State
    from .queue import open_queue
    from .sessions import session
    from .splitrun import split_map

__version__ = "0.1.0"

# Each public name and the module that defines it.
_PUBLIC = {
    "Executor": ".executor",
    "Job": ".job",
    "JobFailed": ".errors",
    "LeaseLost": ".errors",
    "MalformedJob": ".errors",
    "Result": ".job",
    "ShoalError": ".errors",
    "State": ".job",
    "UsageError": ".errors",
    "config": ".context",
    "job_id": ".context",
    "open_queue": ".queue",
    "progress": ".context",
    "random": ".context",
    "session": ".sessions",
    "split_map": ".splitrun",
}

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

__getattr__, __dir__ = exports(globals(), _PUBLIC)
