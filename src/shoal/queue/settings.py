"""How a queue is tuned: read once when it is opened, the same for every caller after.

Settings come from where the backend keeps them (a folder's `queue.toml`, a
coordinator's hello, the constructor's keywords) and never change while the queue
object lives, so a worker may read them as often as it likes at no cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import defaults
from ..trust import Trust


def _default_interpreters() -> dict[str, list[str]]:
    return {ext: list(argv) for ext, argv in defaults.INTERPRETERS.items()}


@dataclass(frozen=True)
class QueueSettings:
    """A queue's settings; see the module docstring."""

    #: a claim's lease lasts this long unless a beat extends it.
    lease_s: float = defaults.LEASE_S
    #: the run seed jobs' random generators derive from (shoal.random()).
    seed: int | str = 0
    #: interpreters for script jobs, by file extension.
    interpreters: dict[str, list[str]] = field(default_factory=_default_interpreters)
    #: where relative job file paths (and their NAME.log) are found: the drop-in folder.
    root: Path = field(default_factory=Path.cwd)
    #: a finished job's log keeps at most its last this many bytes (None: no cap).
    log_cap_bytes: int | None = None
    #: the name of a job file's log beside it ({name}: the file's name, {stem}: without
    #: its extension); files.log_names says which names mean "done" (old folders' too).
    log_name: str = defaults.LOG_NAME
    #: whose job files a worker runs and where their logs may go (trust.py): a folder's
    #: `trust`, `group` and `log_dirs`; elsewhere the default (your own files only).
    trust: Trust = field(default_factory=Trust)
