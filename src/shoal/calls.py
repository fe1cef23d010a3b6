"""Python calls as jobs: packing a callable with cloudpickle, and its outcome on the way back.

A call job carries `cloudpickle.dumps((fn, args, kwargs))` and the Python and
cloudpickle versions that made it; a worker that cannot load those bytes says so
plainly instead of failing inside the unpickler. The outcome travels back the same
way: the return value, or the exception with the remote traceback attached as its
`__cause__` (as concurrent.futures.process does).
"""

from __future__ import annotations

import functools
import itertools
import platform
import reprlib
import secrets
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import cloudpickle

from .errors import IncompatibleJob, JobFailed
from .job import Job, Kind, Result, State

_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 80


@functools.lru_cache(maxsize=1)
def _runtime() -> tuple[tuple[str, str], ...]:
    return (("python", ".".join(platform.python_version_tuple()[:2])),
            ("cloudpickle", cloudpickle.__version__))


def runtime() -> dict[str, str]:
    """What a pickled call depends on: Python's major.minor and cloudpickle's version."""
    return dict(_runtime())


def describe_call(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]) -> str:
    """A short human name: `f(1, 'a', x=2)`."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    parts = [_short.repr(a) for a in args] + [f"{k}={_short.repr(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"[:120]


def call_job(fn: Callable[..., Any], args: tuple = (), kwargs: Mapping[str, Any] | None = None,
             *, job_id: str | None = None, name: str | None = None,
             meta: Mapping[str, Any] | None = None, **options: Any) -> Job:
    """A job that calls `fn(*args, **kwargs)` in a worker's long-lived interpreter.

    Its id is random (each submit is its own job) unless `job_id` is given.
    """
    kwargs = dict(kwargs or {})
    payload = cloudpickle.dumps((pickle_function(fn), tuple(args), kwargs))
    return Job(
        id=job_id or new_call_id(), name=name or describe_call(fn, args, kwargs),
        kind=Kind.CALL, payload=payload,
        params={"args": _short.repr(tuple(args)), "kwargs": _short.repr(kwargs)},
        meta={**runtime(), **(meta or {})}, **options,
    )


_ID_PREFIX = secrets.token_hex(5)
_ID_COUNTER = itertools.count()
_FUNCTIONS: dict[int, tuple[Callable[..., Any], bytes]] = {}


def new_call_id() -> str:
    """A unique call id without a random draw per call: per-process random + counter."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):06x}"


def pickle_function(fn: Callable[..., Any]) -> bytes:
    """cloudpickle `fn` once per function object: a lambda from __main__ is pickled by
    value, which costs more than a tiny call; the interpreter caches it the same way."""
    cached = _FUNCTIONS.get(id(fn))
    if cached is not None and cached[0] is fn:
        return cached[1]
    blob = cloudpickle.dumps(fn)
    if len(_FUNCTIONS) > 256:
        _FUNCTIONS.clear()
    _FUNCTIONS[id(fn)] = (fn, blob)
    return blob


def check_runtime(job: Job) -> None:
    """Refuse a call pickled by another Python or cloudpickle, with a message that says so."""
    made, here = job.meta, runtime()
    if made.get("python") != here["python"] or (
            made.get("cloudpickle", "").split(".")[0] != here["cloudpickle"].split(".")[0]):
        raise IncompatibleJob(
            f"job {job.id} was pickled with Python {made.get('python', '?')} and cloudpickle "
            f"{made.get('cloudpickle', '?')}; this worker has Python {here['python']} and "
            f"cloudpickle {here['cloudpickle']}, so it cannot load it: run a worker with "
            f"the same versions")


def load_call(job: Job) -> tuple[Callable[..., Any], tuple, dict[str, Any]]:
    check_runtime(job)
    if job.payload is None:
        raise IncompatibleJob(f"job {job.id}: call job without a payload")
    fn_blob, args, kwargs = cloudpickle.loads(job.payload)
    return cloudpickle.loads(fn_blob), args, kwargs


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as `__cause__`."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def pack_value(value: Any) -> tuple[bytes, str]:
    """Pickle a return value; also a short repr for `shoal results`."""
    return cloudpickle.dumps(value), _short.repr(value)


def pack_exception(exc: BaseException) -> tuple[bytes, str]:
    """Pickle an exception with its formatted traceback; fall back to a plain one."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    summary = f"{type(exc).__name__}: {exc}"
    try:
        exc_blob = cloudpickle.dumps(exc)
    except Exception:  # an exception that does not pickle still reaches the caller
        exc_blob = cloudpickle.dumps(JobFailed(summary))
    # Nested, so the traceback and summary survive an exception the caller cannot rebuild.
    return cloudpickle.dumps((exc_blob, tb, summary)), summary


def outcome(result: Result) -> Any:
    """The call's return value, or raise its exception (remote traceback as the cause).

    A job that failed without a Python exception (its interpreter died, a timeout,
    a cancel) raises JobFailed, or TimeoutError for a timeout, with the reason.
    """
    if result.state is State.DONE:
        return cloudpickle.loads(result.payload) if result.payload is not None else None
    if result.payload is not None:
        exc_blob, tb, summary = cloudpickle.loads(result.payload)
        try:
            exc = cloudpickle.loads(exc_blob)
        except Exception:  # e.g. an __init__ that pickle cannot call again
            exc = JobFailed(f"job {result.job_id} raised {summary}")
        exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
        raise exc
    if result.reason.startswith("timed out"):
        raise TimeoutError(f"job {result.job_id}: {result.reason}")
    raise JobFailed(f"job {result.job_id} ({result.name}): {result.reason}")
