"""The Lua scripts, one per state change, each with prelude.lua's shared steps in front."""

from __future__ import annotations

from importlib import resources
from typing import Any

NAMES = ("submit", "claim", "beat", "finish", "release", "reap", "heartbeat", "cancel", "retry",
         "status", "workers", "unregister", "finals", "config", "purge", "keeplog", "listing")


def _text(name: str) -> str:
    return (resources.files(__package__) / f"{name}.lua").read_text()


class Scripts:
    """The scripts registered with a client (redis-py runs them by SHA, loading on a miss)."""

    def __init__(self, client: Any) -> None:
        prelude = _text("prelude")
        for name in NAMES:
            setattr(self, name, client.register_script(prelude + "\n" + _text(name)))

    # typed attributes for readers and linters
    submit: Any
    claim: Any
    beat: Any
    finish: Any
    release: Any
    reap: Any
    heartbeat: Any
    cancel: Any
    retry: Any
    status: Any
    workers: Any
    unregister: Any
    finals: Any
    config: Any
    purge: Any
    keeplog: Any
    listing: Any
