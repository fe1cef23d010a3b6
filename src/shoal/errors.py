"""One error tree for shoal: catch ``ShoalError`` to catch everything shoal raises."""

from __future__ import annotations

import errno
import os


class ShoalError(Exception):
    """Base of every error shoal raises on purpose."""


class UsageError(ShoalError):
    """The user asked for something that cannot work (bad URL, bad option, bad template)."""


class MalformedJob(ShoalError):
    """A job file or job record cannot be read; the message names the file and the problem."""

    #: how the reason of a job failed with this error starts
    reason_prefix = "malformed: "


class JobRefused(MalformedJob):
    """A job file the queue does not trust (another user's, writable by others, a link
    out of the queue folder, a log outside it): its job fails, the others run."""

    reason_prefix = "refused: "


class UnknownQueue(UsageError):
    """A queue URL names a scheme or a place shoal does not know."""


class NoSuchQueue(UnknownQueue):
    """A command that only reads was pointed at a queue that does not exist (a typo)."""


class LeaseLost(ShoalError):
    """A lease expired and was taken over (or the job was cancelled); its result is refused."""


class JobNotFound(ShoalError):
    """No job with this id (or name) exists in the queue."""


class IncompatibleJob(MalformedJob):
    """A call job pickled by a Python or cloudpickle this worker cannot load."""


class JobFailed(ShoalError):
    """A job ended without a value: its process died, it was cancelled, or it failed."""


class AuthenticationFailed(UsageError):
    """The coordinator refused our key, or the encrypted handshake could not complete."""


class CoordinatorUnreachable(ShoalError):
    """No coordinator answered at the address (not started, dead, or the network is cut)."""


class MessageTooBig(UsageError):
    """A request is larger than the coordinator accepts (its `max_message_bytes`)."""


class LargeCallWarning(UserWarning):
    """A call's pickled function or arguments are large (see defaults.LARGE_CALL_BYTES)."""


class QueueUnavailable(ShoalError):
    """The queue cannot be reached: no queue server answered at the address (not started,
    dead, or the network is cut), or its folder is gone (moved or deleted)."""


class QueueFull(ShoalError):
    """The queue server is out of memory (Redis at maxmemory): new jobs are refused, none lost."""


class NoSpace(QueueFull):
    """The disk holding the queue is full: nothing was half-written, and the same call
    succeeds once space returns (a worker backs off and tries again; on the wire too)."""


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
SQLITE_FULL, SQLITE_IOERR = 13, 10  # sqlite3's result codes (an extended one's low byte)


def no_space(exc: BaseException, where: str | os.PathLike[str]) -> NoSpace | None:
    """`exc` as a NoSpace naming the path (the file it names, else `where`), if it is a
    full disk or quota: an OSError ENOSPC/EDQUOT, SQLite's SQLITE_FULL, or its "disk I/O
    error" (growing its -shm or -wal) where the filesystem of `where` has no block free."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        path = os.fsdecode(exc.filename) if exc.filename is not None else os.fspath(where)
    elif code == SQLITE_FULL or (code is not None and code & 0xFF == SQLITE_IOERR
                                 and _full(where)):
        path = os.fspath(where)
    else:
        return None
    return NoSpace(f"{path}: {os.strerror(errno.ENOSPC)}")


def _full(path: str | os.PathLike[str]) -> bool:
    """Whether the filesystem holding `path` (or its folder) has no block left for us."""
    for place in (path, os.path.dirname(os.fspath(path))):
        try:
            return os.statvfs(place).f_bavail == 0
        except OSError:
            continue
    return False


class NotDurable(ShoalError):
    """A `durable=strict` write could not be confirmed on disk or on a replica."""


class DurabilityWarning(UserWarning):
    """The queue server may lose acknowledged submissions on a restart (e.g. Redis without AOF)."""


def os_error_line(exc: OSError) -> str:
    """`PATH: problem` for an OSError, so a user sees which file and why on one line."""
    problem = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    paths = [os.fsdecode(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {problem}" if paths else problem
