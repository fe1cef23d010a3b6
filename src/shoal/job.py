"""What a job is, what it produced: small frozen dataclasses, JSON-able, serialised here only.

A job's id comes from its content (kind, command or file, cwd, env, params, and a
command's run options where they differ from the defaults, `stderr_apart` among them),
so submitting the same
work twice is a no-op; this is how `shoal run` resumes, and why a rerun with another
--timeout runs again.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from . import defaults


class State(str, Enum):
    """Where a job is in its life. DONE, FAILED and CANCELLED are final. WAITING: some job
    it comes `after` is not done yet (it is not claimable until they all are)."""

    WAITING = "waiting"
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (State.DONE, State.FAILED, State.CANCELLED)


#: each state by its value: a dict lookup, where `State(value)` is a slow Enum call
STATES: dict[str, State] = {state.value: state for state in State}


class Kind(str, Enum):
    """How a job runs: a command line, a job file (script, .ini, .toml), or a Python call."""

    COMMAND = "command"
    FILE = "file"
    CALL = "call"


_KINDS: dict[str, Kind] = {kind.value: kind for kind in Kind}
_KIND_TEXT: dict[Kind, str] = {kind: kind.value for kind in Kind}  # no Enum property call

# Meta keys of a call job that name a pickled function blob by its sha256 digest.
BLOB_REFS = ("fn", "init")
# Meta key of a command job whose stderr goes to a file of its own beside its log
# (`shoal run`: parallel prints a job's stderr on stderr); see Job.stderr_apart.
STDERR_APART = "stderr_apart"


def blob_digest(blob: bytes) -> str:
    """The name a function blob is stored under: its sha256, in hex."""
    return hashlib.sha256(blob).hexdigest()


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """A dataclass's stored field names, looked up once (fields() is costly on hot paths);
    fields marked `local` live only in this process and are never serialised."""
    return tuple(f.name for f in fields(cls) if not f.metadata.get("local"))


@functools.cache
def _field_set(cls: type) -> frozenset[str]:
    return frozenset(_field_names(cls))


def _known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `data` without keys `cls` does not store (from a newer version): a plain
    copy when there are none, as in nearly every record (listings build 10^5 of these)."""
    if data.keys() <= _field_set(cls):
        return dict(data)
    return {k: data[k] for k in _field_names(cls) if k in data}


def _shallow_dict(obj: Any) -> dict[str, Any]:
    """Like dataclasses.asdict without its deep copies (records are flat)."""
    return {name: getattr(obj, name) for name in _field_names(type(obj))}


def run_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The run options (timeout_s, retries, max_attempts, after, needs, labels) among
    `options` that differ from the defaults: part of a command job's id, so that the same
    command asked to run with another timeout is another job, while a default job's id
    stays what it was. `priority` is not among them: it says when, not what."""
    defaults_of = {"timeout_s": None, "retries": defaults.RETRIES,
                   "max_attempts": defaults.MAX_ATTEMPTS}
    found = {key: options[key] for key, default in defaults_of.items()
             if key in options and options[key] != default}
    for key in ("after", "labels"):
        if options.get(key):
            found[key] = sorted(options[key])
    if options.get("needs"):
        found["needs"] = dict(options["needs"])
    return found


def scheduling_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` with after/labels as tuples and needs as a dict, as a Job stores them
    (callers may pass lists)."""
    found = dict(options)
    for key in ("after", "labels"):
        if key in found:
            found[key] = tuple(found[key] or ())
    if "needs" in found:
        found["needs"] = dict(found["needs"] or {})
    return found


def _no_default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_writer(*, sort_keys: bool = False,
                default: Callable[[Any], Any] = _no_default) -> Callable[[Any], str]:
    """`json.JSONEncoder(sort_keys=..., separators=(",", ":"), default=...).encode` with its
    C encoder made once, not at every call (half of encoding a small record): the same
    text. A self-referencing value goes the ordinary way (its ValueError)."""
    slow = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), default=default).encode
    if c_make_encoder is None:  # an interpreter without json's C speedups
        return slow
    fast = c_make_encoder(None, default, encode_basestring_ascii, None, ":", ",", sort_keys,
                          False, True)

    def write(value: Any) -> str:
        try:
            return "".join(fast(value, 0))
        except RecursionError:
            return slow(value)

    return write


# json.dumps(..., sort_keys=True, separators=(",", ":"), default=str) without making a
# new encoder per call (a third of an id's cost); the text is the same, so ids are too.
_ID_TEXT = json_writer(sort_keys=True, default=str)
_ascii = encode_basestring_ascii


def content_id(*parts: Any) -> str:
    """A short stable id from JSON-able parts (sorted keys, so dict order does not matter)."""
    return hashlib.sha256(_ID_TEXT(parts).encode()).hexdigest()[:16]


def _command_id(cmd: str | tuple[str, ...], cwd: str | None, env: Mapping[str, str],
                params: Mapping[str, Any]) -> str:
    """content_id("command", cmd, cwd, env, params), its JSON text written directly for a
    command of plain strings (10^6 jobs: seconds); the same text, so the same id."""
    if type(cmd) is str:
        cmd_text = _ascii(cmd)
    elif type(cmd) is tuple and all(type(part) is str for part in cmd):
        cmd_text = "[" + ",".join(map(_ascii, cmd)) + "]"
    else:
        return content_id("command", cmd, cwd, env, params)
    cwd_text = "null" if cwd is None else _ascii(cwd) if type(cwd) is str else _ID_TEXT(cwd)
    text = (f'["command",{cmd_text},{cwd_text},{_ID_TEXT(env) if env else "{}"},'
            f'{_ID_TEXT(params) if params else "{}"}]')
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of work: a command, a job file or a Python call. Build with `Job.command_job`,
    `Job.file_job` or `shoal.calls.call_job`."""

    id: str
    name: str
    kind: Kind
    command: str | tuple[str, ...] | None = None  # shell string, or argv run without a shell
    path: str | None = None  # job file, relative to the queue folder or absolute
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    log: str | None = None  # canonical log path; None lets the queue choose
    timeout_s: float | None = None
    retries: int = defaults.RETRIES
    max_attempts: int = defaults.MAX_ATTEMPTS
    payload: bytes | None = None  # cloudpickled (args, kwargs) for CALL jobs
    meta: Mapping[str, Any] = field(default_factory=dict)  # seed, versions, blob digests
    # Pickled functions this job names by digest (meta "fn", "init"), carried from
    # call_job to Queue.submit, which stores each once per queue: never serialised with
    # the job, nor compared.
    blobs: Mapping[str, bytes] = field(default_factory=dict, compare=False, repr=False,
                                       metadata={"local": True})
    # Scheduling (see shoal.queue.scheduling): claimed by `priority` (higher first), only
    # once every job in `after` is done, by a worker whose free resources cover `needs`
    # (cpus, gpus, mem in bytes, or any named resource) and that has every label in `labels`.
    priority: int = 0
    after: tuple[str, ...] = ()
    needs: Mapping[str, float] = field(default_factory=dict)
    labels: tuple[str, ...] = ()

    @property
    def blob_refs(self) -> tuple[str, ...]:
        """Digests of the function blobs this job needs (a call's function, initializer)."""
        return tuple(self.meta[key] for key in BLOB_REFS if self.meta.get(key))

    @property
    def stderr_apart(self) -> bool:
        """Whether the worker writes this job's stderr to its own file (`<log>.err`) rather
        than into its log with stdout: set by `shoal run` (kept in `meta`, so every
        backend stores it as it stores meta)."""
        return bool(self.meta.get(STDERR_APART))

    @classmethod
    def command_job(
        cls,
        command: str | list[str] | tuple[str, ...],
        *,
        name: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        stderr_apart: bool = False,
        **options: Any,
    ) -> Job:
        """A command line: a string runs through the shell, a list runs as argv.
        `stderr_apart`: its stderr kept apart from its stdout (see `stderr_apart`)."""
        cmd: str | tuple[str, ...] = command if isinstance(command, str) else tuple(command)
        display = cmd if isinstance(cmd, str) else " ".join(cmd)
        if not options and not stderr_apart and not env and not params and cls is Job:
            return _make_job(_command_id(cmd, cwd, {}, {}), name or display[:80],
                             Kind.COMMAND, cmd, cwd=cwd)  # most jobs: 10^6 in a submit
        env = dict(env or {})
        params = dict(params or {})
        options = scheduling_options(options)
        extra = run_options(options)
        if stderr_apart:
            extra[STDERR_APART] = True
            options["meta"] = {**options.get("meta", {}), STDERR_APART: True}
        job_id = (content_id("command", cmd, cwd, env, params, extra) if extra
                  else _command_id(cmd, cwd, env, params))
        return cls(
            id=job_id, name=name or display[:80], kind=Kind.COMMAND, command=cmd,
            cwd=cwd, env=env, params=params, **options,
        )

    @classmethod
    def file_job(cls, path: str, *, name: str | None = None, **options: Any) -> Job:
        """A job file (script or .ini/.toml) whose identity is its path in the queue folder
        only: the drop-in scan submits the same file without options, which must stay the
        same job (a file's own options live in the file)."""
        return cls(id=content_id("file", path), name=name or path, kind=Kind.FILE, path=path,
                   **scheduling_options(options))

    def to_dict(self, *, binary: bool = False) -> dict[str, Any]:
        """A JSON-able dict; `binary` keeps the payload as bytes (for msgpack)."""
        data = _shallow_dict(self)
        data["kind"] = self.kind.value
        if isinstance(self.command, tuple):
            data["command"] = list(self.command)
        data["env"] = dict(self.env)
        data["params"] = dict(self.params)
        data["meta"] = dict(self.meta)
        for key, value in (("priority", self.priority), ("after", list(self.after)),
                           ("needs", dict(self.needs)), ("labels", list(self.labels))):
            if value:
                data[key] = value
            else:  # the default: left out, so a plain job's record stays as small as before
                del data[key]
        if self.payload is not None and not binary:
            data["payload"] = base64.b64encode(self.payload).decode()
        return data

    def to_record(self) -> dict[str, Any]:
        """`to_dict(binary=True)` without the fields at their empty defaults (None, {},
        [], priority 0), which `from_dict` gives back: how a job is stored and shipped
        (a pending job costs a queue ~100 bytes less, a submit skips their encoding)."""
        if not _RECORD_FAST or type(self) is not Job:
            return {key: value for key, value in self.to_dict(binary=True).items()
                    if value is not None and value != {} and value != []}
        command = self.command
        record: dict[str, Any] = {
            "id": self.id, "name": self.name, "kind": _KIND_TEXT[self.kind],
            "command": list(command) if type(command) is tuple else command,
            "retries": self.retries, "max_attempts": self.max_attempts}
        if command is None:
            del record["command"]
        for key, value in (("path", self.path), ("cwd", self.cwd), ("log", self.log),
                           ("timeout_s", self.timeout_s), ("payload", self.payload)):
            if value is not None:
                record[key] = value
        for key, value in (("env", self.env), ("params", self.params), ("meta", self.meta),
                           ("needs", self.needs)):
            if value:
                record[key] = dict(value)
        for key, value in (("after", self.after), ("labels", self.labels)):
            if value:
                record[key] = list(value)
        if self.priority:
            record["priority"] = self.priority
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        values = _known_fields(cls, data)
        kind = values["kind"]
        values["kind"] = _KINDS.get(kind) or Kind(kind)
        if isinstance(values.get("command"), list):
            values["command"] = tuple(values["command"])
        if isinstance(values.get("payload"), str):
            values["payload"] = base64.b64decode(values["payload"])
        for key in ("after", "labels"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return _make_job(**values) if cls is Job else cls(**values)


def _job_maker() -> Callable[..., Job]:
    """`Job(...)` that sets each slot directly, in straight-line code written from the
    dataclass's fields (as dataclasses writes __init__): the same arguments and defaults
    at half the cost of the frozen __init__'s checks and calls (10^6 jobs: a second)."""
    scope: dict[str, Any] = {"new": object.__new__, "cls": Job, "UNSET": _UNSET}
    params, lines = [], []
    for f in fields(Job):
        scope[f"set_{f.name}"] = getattr(Job, f.name).__set__
        value = f.name
        if f.default_factory is not MISSING:
            scope[f"make_{f.name}"] = f.default_factory
            params.append(f"{f.name}=UNSET")
            value = f"make_{f.name}() if {f.name} is UNSET else {f.name}"
        elif f.default is not MISSING:
            scope[f"default_{f.name}"] = f.default
            params.append(f"{f.name}=default_{f.name}")
        else:
            params.append(f.name)
        lines.append(f"    set_{f.name}(job, {value})")
    source = (f"def Job({', '.join(params)}):\n    job = new(cls)\n" + "\n".join(lines)
              + "\n    return job\n")  # named Job: a missing field's TypeError says so
    exec(source, scope)  # our own text, from our own field names
    return scope["Job"]


_UNSET = object()
_make_job = _job_maker()


# Job.to_record writes these fields itself; a Job with other fields takes the generic way.
_RECORD_FAST = set(_field_names(Job)) == {
    "id", "name", "kind", "command", "retries", "max_attempts", "path", "cwd", "log",
    "timeout_s", "payload", "env", "params", "meta", "needs", "after", "labels", "priority"}
_RECORD_TEXT = json_writer()


def record_text(job: Job) -> str:
    """`job.to_record()` as compact JSON text without the payload (which backends keep
    apart, as raw bytes): a job's stored form in sqlite and Redis."""
    record = job.to_record()
    record.pop("payload", None)
    return _RECORD_TEXT(record)


@dataclass(frozen=True, slots=True)
class Lease:
    """A claim on a job: valid until its deadline passes without renewal.

    `token` fences stale owners: a finish with a token that is no longer current is refused.
    `seq` is the job's place in submission order (`JobStatus.seq`; 0 where not known),
    set at claim so a worker's line per job can show `#SEQ` without a read.
    """

    job: Job
    attempt: int
    worker: str
    token: str
    seq: int = 0

    @property
    def job_id(self) -> str:
        return self.job.id


@dataclass(frozen=True, slots=True)
class Result:
    """The recorded outcome of a job: exactly one per job id."""

    job_id: str
    state: State
    name: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    reason: str = ""  # empty for success; always set for FAILED and CANCELLED
    attempt: int = 0
    worker: str = ""
    host: str = ""
    started: float | None = None  # epoch seconds on the worker's host clock
    ended: float | None = None
    log: str | None = None
    value: Any = None  # JSON-able summary of a call's return value (repr, shortened)
    payload: bytes | None = None  # cloudpickled return value or exception of a call

    @property
    def duration_s(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.state is State.DONE

    def to_dict(self, *, binary: bool = False) -> dict[str, Any]:
        """A JSON-able dict; `binary` keeps the payload as bytes (for msgpack)."""
        data = _shallow_dict(self)
        data["state"] = self.state.value
        data["params"] = dict(self.params)
        if self.payload is not None and not binary:
            data["payload"] = base64.b64encode(self.payload).decode()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        values = _known_fields(cls, data)
        state = values["state"]
        values["state"] = STATES.get(state) or State(state)
        if isinstance(values.get("payload"), str):
            values["payload"] = base64.b64decode(values["payload"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What `Queue.get` tells about one job."""

    job: Job
    state: State
    attempt: int = 0
    worker: str | None = None
    result: Result | None = None
    #: records of earlier attempts that failed and were tried again, oldest first
    attempts: tuple[Result, ...] = ()
    #: the job's place in the queue's submission order (1, 2, ...; 0 where not known):
    #: `results` lists jobs by it and `#N` names a job by it
    seq: int = 0


class JobSummary(NamedTuple):
    """One job as the `results` table shows it: what a backend can read without building
    the job and its result (`Queue.summaries`), so 10^5 rows cost a plain read."""

    seq: int
    id: str
    name: str
    state: State
    attempt: int
    worker: str | None = None
    exit_code: int | None = None
    reason: str = ""
    started: float | None = None
    ended: float | None = None
    host: str = ""
    log: str | None = None

    @classmethod
    def of(cls, status: JobStatus) -> JobSummary:
        result = status.result
        if result is None:
            return cls(status.seq, status.job.id, status.job.name, status.state,
                       status.attempt, status.worker)
        return cls(status.seq, status.job.id, status.job.name, result.state, result.attempt,
                   result.worker or status.worker, result.exit_code, result.reason,
                   result.started, result.ended, result.host, result.log)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as the registry sees it; `age_s` and `lost` are judged by the observer."""

    id: str
    host: str
    pid: int
    slots: int
    state: str = "idle"  # working, idle, draining, stopped; "lost" is judged by observers
    running: tuple[str, ...] = ()
    done: int = 0
    started: float = 0.0
    log: str | None = None
    age_s: float | None = None
    lost: bool = False
    #: what the worker has in all (cpus, gpus, mem in bytes, named resources) and its
    #: labels: what `status` compares pending jobs' needs with
    resources: Mapping[str, float] = field(default_factory=dict)
    labels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = _shallow_dict(self)
        data["running"] = list(self.running)
        data["resources"] = dict(self.resources)
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerInfo:
        values = {k: data[k] for k in _field_names(cls) if k in data}
        values["running"] = tuple(values.get("running", ()))
        values["labels"] = tuple(values.get("labels", ()))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Beat:
    """What one heartbeat (`Queue.beat`) brings back: the leases that are no longer
    the worker's (expired and taken over, or cancelled), and the control commands that
    were waiting for it (each handed over once); from `Queue.heartbeat`, also what `reap`
    reports (recent reaps by anyone), so a network queue needs one round trip, not two."""

    lost: tuple[Lease, ...] = ()
    commands: tuple[str, ...] = ()
    reaped: tuple[Reaped, ...] = ()


@dataclass(frozen=True, slots=True)
class Reaped:
    """A lease taken back from a worker judged dead: what its host needs to kill the
    attempt it left running (the attempt, so a newer one of the same job is spared)."""

    job_id: str
    worker: str
    attempt: int
    host: str = ""  # the worker's host as it registered; "" if it never did

    def to_dict(self) -> dict[str, Any]:
        return _shallow_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reaped:
        return cls(**{k: data[k] for k in _field_names(cls) if k in data})


def dumps(data: Mapping[str, Any]) -> bytes:
    """The one JSON encoding used for records on disk and on the wire."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def loads(blob: bytes) -> dict[str, Any]:
    """A record; ValueError for anything that is not a JSON object (garbage on disk too)."""
    try:
        value = json.loads(blob)
    except RecursionError:  # json's decoder recurses per nesting level
        raise ValueError("record nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("record is not a JSON object")
    return value


def loads_many(blobs: list[bytes] | list[str]) -> list[dict[str, Any] | None]:
    """Many records in one decode (a third cheaper than a call each, for listings of
    10^5); None for each one that is not a JSON object, found by decoding one by one when
    the batch as a whole is not a list of as many objects."""
    if not blobs:
        return []
    try:
        if isinstance(blobs[0], bytes):
            values = json.loads(b"[" + b",".join(blobs) + b"]")  # type: ignore[arg-type]
        else:
            values = json.loads("[" + ",".join(blobs) + "]")  # type: ignore[arg-type]
    except (ValueError, TypeError, RecursionError):
        values = None
    if (isinstance(values, list) and len(values) == len(blobs)
            and all(type(value) is dict for value in values)):
        return values
    found: list[dict[str, Any] | None] = []
    for blob in blobs:
        try:
            found.append(loads(blob))
        except (ValueError, TypeError):
            found.append(None)
    return found
