"""One error tree for shoal: catch ``ShoalError`` to catch everything shoal raises."""

from __future__ import annotations

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
    """No queue server answered at the address (not started, dead, or the network is cut)."""


class QueueFull(ShoalError):
    """The queue server is out of memory (Redis at maxmemory): new jobs are refused, none lost."""


class NotDurable(ShoalError):
    """A `durable=strict` write could not be confirmed on disk or on a replica."""


class DurabilityWarning(UserWarning):
    """The queue server may lose acknowledged submissions on a restart (e.g. Redis without AOF)."""


def os_error_line(exc: OSError) -> str:
    """`PATH: problem` for an OSError, so a user sees which file and why on one line."""
    problem = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    paths = [os.fsdecode(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {problem}" if paths else problem
