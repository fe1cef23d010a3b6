"""Queues: the contract (`base.Queue`) and one module per backend, chosen by URL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NoSuchQueue, UnknownQueue
from ..lazy import exports

if TYPE_CHECKING:
    from .base import CONTROL_COMMANDS, STOP, STOP_NOW, Queue

__all__ = ["CONTROL_COMMANDS", "STOP", "STOP_NOW", "Queue", "open_queue"]

_MEMORY: dict[str, Queue] = {}
# the contract's names, imported on first use: the CLI imports this package to open a
# queue, and `shoal --version` opens none
__getattr__, __dir__ = exports(globals(), dict.fromkeys(
    ["CONTROL_COMMANDS", "STOP", "STOP_NOW", "Queue"], ".base"))


def open_queue(url: str | Path | Queue, *, create: bool = True, **options: Any) -> Queue:
    """Open the queue a URL names: `memory://[NAME]`, `dir://PATH`, `sqlite://PATH`,
    `tcp://HOST:PORT`, `redis://HOST:PORT/DB?queue=NAME` (also `rediss://`,
    `redis+sentinel://`, and a Cluster with `cluster=1`), a coordinator's status file
    (or its directory), or a plain PATH.

    `memory://NAME` returns the same in-process queue for the same NAME, so an
    executor and its workers (threads of one process) can meet on it; a bare
    `memory://` is a new queue each time.

    `create=False` opens only a queue that exists (else NoSuchQueue, naming the URL as
    given) and writes nothing while opening, for commands that only read: a typo must not
    make an empty queue, and a colleague with read access only must be able to look.
    A Redis queue exists while the server holds any of its keys (redisq/queue.py); a
    tcp coordinator is opened as usual.
    """
    from .base import Queue

    if isinstance(url, Queue):
        return url
    text = str(url)
    try:
        return _open(text, create, options)
    except NoSuchQueue as exc:
        raise NoSuchQueue(f"{text}: no such queue ({exc})") from None


def _open(text: str, create: bool, options: dict[str, Any]) -> Queue:
    """The backend for `text`'s scheme (see open_queue)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        from ..net.contact import is_contact_file

        if is_contact_file(text):
            from .remote import CoordinatorQueue

            return CoordinatorQueue(text, **options)
        from .folder import FolderQueue

        return FolderQueue(text, create=create, **options)
    if scheme == "memory":
        from .memory import MemoryQueue

        if not rest:
            return MemoryQueue(text, **options)
        if rest not in _MEMORY:
            if not create:
                raise NoSuchQueue("nothing in this process made it")
            _MEMORY[rest] = MemoryQueue(text, **options)
        return _MEMORY[rest]
    if scheme == "sqlite":
        from .sqlite import SqliteQueue

        return SqliteQueue(rest, create=create, **options)
    if scheme == "tcp":
        from .remote import CoordinatorQueue

        return CoordinatorQueue(text, **options)
    if scheme in ("redis", "rediss", "redis+sentinel"):
        from .redisq import RedisQueue

        return RedisQueue(text, create=create, **options)
    if scheme in ("dir", "file"):
        from .folder import FolderQueue

        return FolderQueue(rest, create=create, **options)
    known = ("memory://, dir://PATH, sqlite://PATH, tcp://HOST:PORT, redis://HOST:PORT"
             " or a folder path")
    raise UnknownQueue(f"{text}: unknown queue scheme {scheme!r} (use {known})")
