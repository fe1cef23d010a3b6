"""How a queue is tuned: read once when it is opened, the same for every caller after.

Settings come from where the backend keeps them (a folder's `queue.toml`, a
coordinator's hello, the constructor's keywords) and never change while the queue
object lives, so a worker may read them as often as it likes at no cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import defaults
from ..errors import UsageError
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


def checked_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """`config` (a queue.toml) once the settings read from it have the right types, so a
    typo there is one UsageError naming the file and key, not a crash of every command
    that opens the queue. Keys other than the settings are left to their readers."""
    from .files import check_log_name

    def refuse(key: str, wanted: str) -> UsageError:
        return UsageError(f"{where}: {key} = {config[key]!r}: {wanted}")

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if "lease_s" in config and not (number(config["lease_s"])
                                    and 0 < config["lease_s"] < math.inf):
        raise refuse("lease_s", "give a number of seconds > 0")
    if "seed" in config and not isinstance(config["seed"], (int, str)):
        raise refuse("seed", "give a whole number or a string")
    cap = config.get("log_cap_bytes", 1)
    if not (isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1):
        raise refuse("log_cap_bytes", "give a whole number of bytes > 0")
    if "fsync" in config and not isinstance(config["fsync"], bool):
        raise refuse("fsync", "give true or false")
    interpreters = config.get("interpreters", {})
    if not (isinstance(interpreters, dict) and all(
            isinstance(argv, list) and all(isinstance(word, str) for word in argv)
            for argv in interpreters.values())):
        raise refuse("interpreters", 'give a table of lists of strings (".py" = ["python3"])')
    if "log_name" in config:
        check_log_name(config["log_name"], where)
    return config
