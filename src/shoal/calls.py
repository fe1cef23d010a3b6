"""Python calls as jobs: packing a callable with cloudpickle, and its outcome on the way back.

A call job carries `cloudpickle.dumps((args, kwargs))` as its payload and names its
function by the sha256 of `cloudpickle.dumps(fn)` (meta "fn"; an initializer with
its arguments, meta "init"). The function blobs ride along in `job.blobs` to
`Queue.submit`, which stores each once per queue; workers fetch a blob only for an
interpreter that has not loaded it yet. So a function and what it captures travel
once, however many calls name it.

A call may take the value of another call of the same executor: the caller puts a
`DependencyValue(job_id)` where the future was (an argument, or an item one level
inside a list, tuple or dict argument), the job comes `after` that one, and the
worker passes the dependency's pickled return value along with the call, which the
interpreter puts back in the placeholder's place (`resolve_dependencies`).

The job also records the Python and cloudpickle versions that made it; a worker
that cannot load those bytes says so plainly instead of failing inside the
unpickler. The outcome travels back the same way: the return value, or the
exception with the remote traceback attached as its `__cause__` (as
concurrent.futures.process does).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import pickle
import platform
import reprlib
import secrets
import sys
import traceback
import types
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle

from . import defaults
from .errors import IncompatibleJob, JobFailed, LargeCallWarning
from .job import Job, Kind, Result, State, blob_digest

log = logging.getLogger("shoal.calls")

_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 80

# Modules registered with cloudpickle.register_pickle_by_value (a live set; where this
# cloudpickle keeps none we know of, every call goes through cloudpickle).
_BY_VALUE = getattr(getattr(cloudpickle, "cloudpickle", None), "_PICKLE_BY_VALUE_MODULES",
                    {"?"})


@functools.lru_cache(maxsize=1)
def _runtime() -> tuple[tuple[str, str], ...]:
    return (("python", ".".join(platform.python_version_tuple()[:2])),
            ("cloudpickle", cloudpickle.__version__))


def runtime() -> dict[str, str]:
    """What a pickled call depends on: Python's major.minor and cloudpickle's version."""
    return dict(_runtime())


def describe_call(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]) -> str:
    """A short human name: `f(1, 'a', x=2)`."""
    parts = [_short.repr(a) for a in args] + [f"{k}={_short.repr(v)}" for k, v in kwargs.items()]
    return _call_name(fn, parts)


def _call_name(fn: Callable[..., Any], parts: list[str]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{name}({', '.join(parts)})"[:120]


# Argument types whose reprlib repr is builtins.repr at any depth (a str: while short
# enough that reprlib would not cut it), so one repr of each serves both the call's
# name and its "args" parameter (reprlib costs ~10 us a call otherwise).
_PLAIN_REPR = (int, float, bool, type(None))
_PLAIN_STR = 19  # characters: even all escaped (\xNN), the repr stays under maxstring


def _plain_reprs(args: tuple, kwargs: Mapping[str, Any]) -> list[str] | None:
    """repr() of each argument when every one is plain and `_short` would not shorten
    the tuple (None otherwise: the caller asks reprlib)."""
    if kwargs or len(args) > _short.maxtuple:
        return None
    parts = []
    for arg in args:
        kind = type(arg)
        if kind is str:
            if len(arg) > _PLAIN_STR:
                return None
        elif kind not in _PLAIN_REPR or (kind is int and not -10**38 < arg < 10**38):
            return None
        parts.append(repr(arg))
    return parts


def _names(fn: Callable[..., Any], args: tuple,
           kwargs: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The call's name (`describe_call`) and its params, each as reprlib writes it."""
    parts = _plain_reprs(args, kwargs)
    if parts is None:
        return describe_call(fn, args, kwargs), {"args": _short.repr(args),
                                                 "kwargs": _short.repr(kwargs)}
    shown = f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"
    return _call_name(fn, parts), {"args": shown, "kwargs": "{}"}


def pickle_arguments(args: tuple, kwargs: dict[str, Any]) -> bytes:
    """`cloudpickle.dumps((args, kwargs))`, or the same bytes' equivalent from the C
    pickler where that is safe: nothing in them names __main__ (which cloudpickle sends
    by value) and no module is registered to go by value. Plain pickle costs a tenth."""
    if not _BY_VALUE:
        try:
            blob = pickle.dumps((args, kwargs), protocol=cloudpickle.DEFAULT_PROTOCOL)
        except Exception:  # a lambda, a local class...: cloudpickle's job
            pass
        else:
            if b"__main__" not in blob:
                return blob
    return cloudpickle.dumps((args, kwargs))


def call_job(fn: Callable[..., Any], args: tuple = (), kwargs: Mapping[str, Any] | None = None,
             *, job_id: str | None = None, name: str | None = None,
             meta: Mapping[str, Any] | None = None,
             initializer: Callable[..., Any] | None = None, initargs: tuple = (),
             max_tasks_per_child: int | None = None, **options: Any) -> Job:
    """A job that calls `fn(*args, **kwargs)` in a worker's long-lived interpreter.

    Its id is random (each submit is its own job) unless `job_id` is given.
    `initializer(*initargs)` runs once in each interpreter before the first call that
    names it; `max_tasks_per_child` has the worker start a fresh interpreter after that
    many such calls (both as in ProcessPoolExecutor). A pickling error keeps its type,
    with a note naming the call. Functions are pickled once per live object, so a caller
    that submits many calls passes the same `fn` and `initializer` objects each time.
    """
    check_call_setup(initializer, max_tasks_per_child)
    args, kwargs = tuple(args), dict(kwargs or {})
    shown, params = _names(fn, args, kwargs)
    name = name or shown
    try:
        fn_blob, fn_digest = pickle_function(fn)
        payload = pickle_arguments(args, kwargs)
        blobs = {fn_digest: fn_blob}
        refs: dict[str, Any] = {"fn": fn_digest}
        if initializer is not None:
            # Pickled once while the same object is passed again: a caller with initargs
            # passes functools.partial(initializer, *initargs), made once, and initargs=().
            setup = functools.partial(initializer, *initargs) if initargs else initializer
            init_blob, refs["init"] = pickle_function(setup)
            blobs[refs["init"]] = init_blob
    except Exception as exc:
        exc.add_note(f"shoal: while pickling the call {name}")
        raise
    if max_tasks_per_child is not None:
        refs["max_tasks_per_child"] = max_tasks_per_child
    _warn_if_large(fn_digest, name, len(fn_blob), len(payload))
    return Job(
        id=job_id or new_call_id(), name=name, kind=Kind.CALL, payload=payload,
        params=params, meta={**runtime(), **refs, **(meta or {})}, blobs=blobs, **options,
    )


@dataclass(frozen=True, slots=True)
class DependencyValue:
    """In a call's pickled arguments, where the return value of job `job_id` goes."""

    job_id: str

    def __repr__(self) -> str:  # what the call's name shows in `shoal status`
        return f"<result of {self.job_id}>"


def swap_arguments(args: tuple, kwargs: Mapping[str, Any],
                   swap: Callable[[Any], Any]) -> tuple[tuple, dict[str, Any]]:
    """The arguments with `swap` applied to each one and to each item one level inside a
    list, tuple or dict argument (its values; exact types only, as dask looks). A
    container in which nothing changes is kept as is, not copied."""
    return (tuple(_swap_one(arg, swap) for arg in args),
            {key: _swap_one(value, swap) for key, value in kwargs.items()})


def _swap_one(value: Any, swap: Callable[[Any], Any]) -> Any:
    kind = type(value)
    if kind is list or kind is tuple:
        swapped = [swap(item) for item in value]
        if any(new is not old for new, old in zip(swapped, value, strict=True)):
            return swapped if kind is list else tuple(swapped)
        return value
    if kind is dict:
        changed = {key: new for key, item in value.items() if (new := swap(item)) is not item}
        return {**value, **changed} if changed else value
    return swap(value)


def resolve_dependencies(args: tuple, kwargs: Mapping[str, Any],
                         values: Mapping[str, bytes]) -> tuple[tuple, dict[str, Any]]:
    """Put each dependency's return value (`values`: job id -> its pickled value) where
    its placeholder is; each value is unpickled once, however often it is passed."""
    loaded: dict[str, Any] = {}

    def swap(item: Any) -> Any:
        if type(item) is not DependencyValue:
            return item
        if item.job_id not in loaded:
            if item.job_id not in values:  # the worker sends every dependency's value
                raise LookupError(f"shoal: the value of dependency {item.job_id} was not sent")
            loaded[item.job_id] = cloudpickle.loads(values[item.job_id])
        return loaded[item.job_id]

    return swap_arguments(args, kwargs, swap)


def check_call_setup(initializer: Callable[..., Any] | None,
                     max_tasks_per_child: int | None) -> None:
    """Refuse what ProcessPoolExecutor refuses: a non-callable initializer, a limit < 1."""
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    if max_tasks_per_child is not None and (
            not isinstance(max_tasks_per_child, int) or max_tasks_per_child < 1):
        raise ValueError("max_tasks_per_child must be >= 1")


_ID_PREFIX = secrets.token_hex(5)
_ID_COUNTER = itertools.count()
# id(fn) -> (weak reference to fn, its pickle, the pickle's digest): gone with fn.
_FUNCTIONS: dict[int, tuple[weakref.ref, bytes, str]] = {}
_WARNED: set[tuple[str, str]] = set()  # (function digest, "function"/"arguments")
_WARNED_KEPT = 1000
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def new_call_id() -> str:
    """A unique call id without a random draw per call: per-process random + counter."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):06x}"


def pickle_function(fn: Callable[..., Any]) -> tuple[bytes, str]:
    """`cloudpickle.dumps(fn)` and its digest, made once per live function object.

    A lambda from __main__ is pickled by value, which costs more than a tiny call, so
    the pickle is kept while `fn` lives, through a weak reference: the cache never
    keeps a function (nor a partial's arguments) alive. A bound method is a new object
    at each attribute access, and a few callables take no weak reference: those are
    pickled every time.
    """
    key = id(fn)
    cached = _FUNCTIONS.get(key)
    if cached is not None and cached[0]() is fn:
        return cached[1], cached[2]
    blob = cloudpickle.dumps(fn)
    digest = blob_digest(blob)
    if not isinstance(fn, types.MethodType):
        try:
            ref = weakref.ref(fn, functools.partial(_forget, key))
        except TypeError:
            return blob, digest
        _FUNCTIONS[key] = (ref, blob, digest)
    return blob, digest


def _forget(key: int, ref: weakref.ref) -> None:
    cached = _FUNCTIONS.get(key)
    if cached is not None and cached[0] is ref:
        _FUNCTIONS.pop(key, None)


def _warn_if_large(digest: str, name: str, fn_bytes: int, args_bytes: int) -> None:
    """Warn once per function (like dask's "large object in task graph")."""
    for what, size, advice in (
            ("function", fn_bytes, "it is stored once per queue, but is it meant to capture "
             "that much? Load the data inside the function (from a file path) instead"),
            ("arguments", args_bytes, "they travel with every call: pass a file path and "
             "load the data inside the function instead")):
        if size < defaults.LARGE_CALL_BYTES or (digest, what) in _WARNED:
            continue
        if len(_WARNED) >= _WARNED_KEPT:
            _WARNED.clear()
        _WARNED.add((digest, what))
        message = (f"shoal: the call {name} has a {what} pickled to {size / 2**20:.1f} MiB; "
                   f"{advice}")
        log.warning("%s", message)
        warnings.warn(message, LargeCallWarning, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """The stacklevel of the first caller outside shoal, so the warning points there."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR + os.sep):
        frame, level = frame.f_back, level + 1
    return level


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
