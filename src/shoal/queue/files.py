"""Where a job's log, its progress report and the queue's shared config live.

The state machine (base.Queue) records *that* a job ran; `queue.files` (a `JobFiles`)
keeps *what it wrote*. A running attempt always writes to local paths on its worker's
machine (`attempt_log`, `progress_file`); where those end up differs by backend:

* `LocalFiles`: a disk every worker of the queue sees (a folder queue's `.shoal/logs`
  and NAME.EXT.log beside a job file; sqlite's `DB.logs/` beside its file; a temporary
  folder for memory://). `place_log` moves the attempt's log into the job's log path
  at finish, under the lease's fence; readers open the files.

  A job file's log beside it means "done" (an old job folder's NAME.log too, see
  `log_names`), so it is placed only when the job succeeds, and never over a file that
  is there already (a link, which fails if the name exists); otherwise the attempt's
  log stays in the log folder as ID.ATTEMPT.WORKER.log and the result names it.
* `ShippedFiles`: a network store (tcp://, redis://). The worker writes locally;
  each `beat` carries the running jobs' progress and the tail of their logs so far
  (`beat_reports`), `finish` and `release(failed=)` carry the attempt's whole log, cut
  to its last `settings.log_cap_bytes` (`shipped_log`). Readers ask the store.

A job whose stderr is kept apart (`Job.stderr_apart`, set by `shoal run`) writes it to
a sibling of its log, `stderr_file(log)` (`<log>.err`), which follows the log wherever
it goes: placed, kept under the attempt's name, kept by a cancel, forgotten with it;
`read_stderr` reads it. A network store ships one log: the stdout, then the stderr.

The store interface (`FileStore`) a network backend's client implements for
`ShippedFiles`, and the backend's side of the bargain:

    fetch_log(job_id, attempt)  -> bytes | None   the final log (attempt None), a running
                                                  attempt's tail so far, or the log of a
                                                  failed attempt (attempt N)
    fetch_progress()            -> {job_id: (done, total)}  of running jobs
    fetch_config()              -> bytes | None   the shared config's content
    put_config(data)            -> str | None     replace the shared config; its new stamp

    and, in the backend itself:
    beat(info, leases)          sends files.beat_reports(leases): job id -> (progress
                                bytes or None, log tail or None); the store keeps them
                                (the tail replaces the previous one)
    finish(lease, result), release(lease, failed=)
                                send files.shipped_log(lease, result) with the result; the
                                store keeps it as the job's (or that attempt's) log; after
                                a reply, files.forget(lease, that log)
    cancel(ids)                 a running job's tail so far becomes its log
    keep_log(lease, result)     the worker of a cancelled attempt sends shipped_log(...);
                                the store keeps it as the job's log only if the job's
                                result is the cancel of that attempt; then forget(...)
    claim / finish(then_claim)  pass the store's config stamp (anything that changes
                                when the config does) to files.note_config(stamp), so a
                                worker fetches the new config before its next job starts
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import string
import tempfile
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from .. import defaults
from ..errors import UsageError
from ..fsutil import atomic_write, create_exclusive, make_dir
from ..job import Job, JobStatus, Lease, Result, State
from ..jobfiles import named_log
from .settings import QueueSettings

Progress = tuple[float, float | None]
#: (job id, attempt, worker) of each running attempt: what a `LocalFiles` reads progress of.
RunningAttempts = Callable[[], Iterable[tuple[str, int, str]]]
CONFIG_NAME = "config.toml"


# How a log that lost its start begins (its tail kept within the cap); readers skip it.
CUT_MARK = b"[shoal: log cut to its last "


def log_name(pattern: str, file_name: str) -> str:
    """The log of job file `file_name` under `pattern` ({name}, {stem}: see settings)."""
    return pattern.format(name=file_name, stem=os.path.splitext(file_name)[0])


def log_names(pattern: str, file_name: str) -> tuple[str, ...]:
    """Every name beside job file `file_name` that is its log, so means it is done: the
    configured one, shoal's NAME.EXT.log and the old tools' NAME.log (an old folder)."""
    ours, old = f"{file_name}.log", f"{os.path.splitext(file_name)[0]}.log"  # a scan's hot path
    if pattern in (defaults.LOG_NAME, defaults.OLD_LOG_NAME):
        return (ours, old) if ours != old else (ours,)
    return tuple(dict.fromkeys((log_name(pattern, file_name), ours, old)))


def check_log_name(pattern: object, where: str) -> str:
    """A `log_name` setting that names a .log file beside the job file; UsageError naming
    `where` (the config file) otherwise."""
    try:
        fields = list(string.Formatter().parse(pattern)) if isinstance(pattern, str) else []
        # {name[9]} or {stem.x} would fail on some names only (found by the fuzzer)
        if any(field not in (None, "name", "stem") or spec or conversion
               for _, field, spec, conversion in fields):
            raise ValueError("a field other than a plain {name} or {stem}")
        sample = log_name(pattern, "job.py") if isinstance(pattern, str) else ""
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"{where}: log_name {pattern!r}: only {{name}} and {{stem}} may be "
                         f"used ({exc})") from None
    if "{" not in str(pattern) or not sample.endswith(".log") or "/" in sample:
        raise UsageError(f"{where}: log_name {pattern!r} must name a .log file beside the job "
                         "file with {name} or {stem}, e.g. \"{stem}.log\"")
    return str(pattern)


def stderr_file(log: str | Path) -> Path:
    """Where the stderr of a job kept apart (Job.stderr_apart) goes: beside its log,
    `<log>.err`, whatever the log's name (an attempt's, the final one)."""
    return Path(f"{log}.err")


def _publish(source: str, target: Path) -> bool:
    """Give `source` the name `target` unless that name exists (link(2): atomic, never
    over another file); True if it did. Where links are not supported, a copy made
    under a temporary name and linked the same way (fsutil.create_exclusive)."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:  # first log in a new folder (or no source: raise)
        if target.parent.is_dir():
            raise
        make_dir(target.parent)
        return _publish(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
            raise
    with open(source, "rb") as handle:
        return create_exclusive(target, handle.read(), Path(source).parent, fsync=False)


def attempt_name(job_id: str, attempt: int, worker: str) -> str:
    """The stem of a running attempt's files (one per attempt, never shared)."""
    return f"{job_id}.{attempt}.{worker}"


def parse_progress(text: bytes | str) -> Progress | None:
    """`done [total]` as shoal.progress() writes it, or None if it is not that (a job
    writes the file: "nan" or "inf" there would show as such in status)."""
    fields = text.split()
    try:
        done, total = float(fields[0]), float(fields[1]) if len(fields) > 1 else None
    except (ValueError, IndexError):
        return None
    if not math.isfinite(done) or (total is not None and not math.isfinite(total)):
        return None
    return done, total


def read_progress(path: str | Path) -> Progress | None:
    """What a job last reported in its progress file, or None."""
    try:
        with open(path, "rb") as handle:
            return parse_progress(handle.read())
    except OSError:
        return None


def read_tail(path: str | Path, cap: int | None) -> bytes | None:
    """A file's content, or its last `cap` bytes after a line that says it was cut."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if cap is None or size <= cap:
                return handle.read()
            handle.seek(size - cap)
            return CUT_MARK + b"%d bytes]\n" % cap + handle.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def unlink_if_there(path: str | Path) -> None:
    """Remove a file that may not exist (os.unlink: Path.unlink costs more per call)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` so a reader (a running job, `shoal logs`) sees old or new, never half."""
    make_dir(path.parent)
    atomic_write(path, data, path.parent, fsync=False)


class _LocalDir:
    """A folder for a view's local files: a given one, or a temporary one made on first
    use (slot threads ask at once: exactly one) and removed with its owner."""

    def __init__(self, owner: object, path: Path | None) -> None:
        self._owner = weakref.ref(owner)
        self._path = path
        self._lock = threading.Lock()

    def __call__(self) -> Path:
        if self._path is None:
            with self._lock:
                if self._path is None:
                    made = Path(tempfile.mkdtemp(prefix="shoal-logs-"))
                    owner = self._owner()
                    if owner is not None:
                        weakref.finalize(owner, shutil.rmtree, made, ignore_errors=True)
                    self._path = made
        return self._path


class JobFiles(ABC):
    """A queue view's logs, progress reports and shared config; see the module docstring."""

    def __init__(self, settings: QueueSettings, local_dir: Path | None = None) -> None:
        self.settings = settings
        self.local_dir = _LocalDir(self, local_dir)

    # -- the worker's side: local paths on its machine --------------------------------

    def attempt_log(self, lease: Lease) -> Path:
        """Where a running attempt writes its output."""
        return self.local_dir() / f"{attempt_name(lease.job_id, lease.attempt, lease.worker)}" \
                                  ".running"

    def progress_file(self, lease: Lease) -> Path:
        """Where a running attempt reports its progress (shoal.progress writes it)."""
        return self.local_dir() / f"{attempt_name(lease.job_id, lease.attempt, lease.worker)}" \
                                  ".progress"

    @abstractmethod
    def config_file(self) -> Path | None:
        """A local file with the shared config that jobs read (SHOAL_CONFIG), if any."""

    # -- the store's side ---------------------------------------------------------------

    def place_log(self, lease: Lease, result: Result) -> Result:
        """Make the attempt's log the job's log; the backend calls it holding the fence."""
        return result

    def cancelled_log(self, lease: Lease) -> str | None:
        """What a cancel of a running attempt records as its log: where that attempt
        writes (and a network store's beats leave its tail), so `read_log` finds the
        output so far. A store that keeps running tails itself returns None and moves
        the tail in its cancel."""
        return str(self.attempt_log(lease))

    def receive_log(self, lease: Lease, data: bytes) -> str:
        """Keep a log shipped from a worker as this attempt's log (a running attempt's
        tail so far, or its whole log at finish/release); return where it is."""
        path = self.attempt_log(lease)
        write_atomic(path, data)
        return str(path)

    def receive_progress(self, lease: Lease, data: bytes) -> None:
        """Keep a progress report shipped from a worker."""
        write_atomic(self.progress_file(lease), data)

    def forget_logs(self, *records: Iterable[Result]) -> None:  # noqa: B027 - optional hook
        """Remove the logs these results name (`Queue.purge`); a store that keeps logs
        with the queue's records removes them with those instead (the default)."""

    # -- readers ------------------------------------------------------------------------

    @abstractmethod
    def read_log(self, status: JobStatus, attempt: int | None = None) -> bytes | None:
        """A job's log: the final one, or a running attempt's so far; with `attempt`,
        that failed attempt's. None if there is none."""

    def read_stderr(self, status: JobStatus, attempt: int | None = None) -> bytes | None:
        """The stderr of a job kept apart (Job.stderr_apart), as `read_log` picks the
        attempt; None if there is none, or if the store keeps it inside the log (the
        default: a shipped log holds both)."""
        return None

    @abstractmethod
    def progress(self) -> dict[str, Progress]:
        """The last progress each running job reported: job id -> (done, total)."""

    # -- the shared config ----------------------------------------------------------------

    @abstractmethod
    def config(self) -> bytes | None:
        """The shared config (TOML) that shoal.config() reads, if any."""

    @abstractmethod
    def set_config(self, data: bytes) -> None:
        """Replace the shared config; every view of the queue sees it."""

    def set_config_file(self, source: str | Path) -> None:
        """Keep a copy of a TOML file as the queue's shared config."""
        self.set_config(Path(source).read_bytes())

    @abstractmethod
    def config_stamp(self) -> str | None:
        """Something that changes whenever the shared config does (None: no config)."""


class LocalFiles(JobFiles):
    """Files on a disk every worker of the queue sees; see the module docstring."""

    def __init__(self, settings: QueueSettings, *, log_dir: Path | None = None,
                 config_path: Path | None = None, running: RunningAttempts) -> None:
        super().__init__(settings, log_dir)
        self._config_path = config_path
        self._config_name: str | None = None
        self._running = running

    def _config(self) -> Path:
        return self._config_path or self.local_dir() / CONFIG_NAME

    def final_log_path(self, job: Job) -> Path:
        """Where a finished job's log lives: the `logfile` a job file names, else NAME.EXT.log
        (settings.log_name) beside a job file, else the log dir."""
        if job.log:
            return self.settings.root / job.log
        if job.path:
            path = self.settings.root / job.path
            named = named_log(path, self.settings.trust.log_dirs)  # its `logfile`
            return Path(named) if named else path.parent / log_name(self.settings.log_name,
                                                                    path.name)
        return self.local_dir() / f"{job.id}.log"

    def place_log(self, lease: Lease, result: Result) -> Result:
        if not result.log or result.log != str(self.attempt_log(lease)):
            return result  # no log, or not this attempt's
        if lease.job.path and not lease.job.log:
            return self._place_beside(lease, result)
        final = self.final_log_path(lease.job)
        try:
            os.replace(result.log, final)
        except FileNotFoundError:  # first log in a new folder
            try:
                make_dir(final.parent)
                os.replace(result.log, final)
            except OSError:
                return result
        except OSError:
            return result
        self._cap(final)
        if lease.job.stderr_apart:
            self._move_stderr(result.log, final)
        return replace(result, log=str(final))

    def _move_stderr(self, log: str, to: Path) -> None:
        """The stderr file follows its log (renamed to `to`) to `stderr_file(to)`."""
        with contextlib.suppress(OSError):
            os.replace(stderr_file(log), stderr_file(to))
            self._cap(stderr_file(to))

    def _place_beside(self, lease: Lease, result: Result) -> Result:
        """A job file's log: beside it only if it succeeded and no file has that name
        (module docstring); else kept in the log folder under the attempt's own name."""
        attempt = Path(result.log or "")
        self._cap(attempt)
        if result.state is State.DONE:
            final = self.final_log_path(lease.job)
            with contextlib.suppress(OSError):
                if _publish(str(attempt), final):
                    unlink_if_there(attempt)
                    if lease.job.stderr_apart:
                        self._move_stderr(str(attempt), final)
                    return replace(result, log=str(final))
        kept = attempt.with_suffix(".log")
        try:
            os.replace(attempt, kept)
        except OSError:
            return result
        if lease.job.stderr_apart:
            self._move_stderr(str(attempt), kept)
        return replace(result, log=str(kept))

    def forget_logs(self, *records: Iterable[Result]) -> None:
        """Remove the log files these results name: those in our log folder and *.log
        files; any other path a job file named as its log is the user's and stays. A
        log's stderr file goes with it (one listing of the log folder finds them)."""
        local = self.local_dir()
        try:
            errs = {entry.path for entry in os.scandir(local) if entry.name.endswith(".err")}
        except OSError:
            errs = set()
        for results in records:
            for result in results:
                log = result.log
                if log and (log.endswith(".log") or Path(log).parent == local):
                    unlink_if_there(log)
                    if errs and str(stderr_file(log)) in errs:
                        unlink_if_there(stderr_file(log))

    def _cap(self, path: Path) -> None:
        """Keep the last `log_cap_bytes` of a log that grew past them."""
        cap = self.settings.log_cap_bytes
        if cap is None:
            return
        try:
            if path.stat().st_size <= cap:
                return
        except OSError:
            return
        tail = read_tail(path, cap)
        if tail is not None:
            write_atomic(path, tail)

    def read_log(self, status: JobStatus, attempt: int | None = None) -> bytes | None:
        path = self._log_path(status, attempt)
        return read_tail(path, None) if path is not None else None

    def read_stderr(self, status: JobStatus, attempt: int | None = None) -> bytes | None:
        if not status.job.stderr_apart:
            return None
        path = self._log_path(status, attempt)
        return read_tail(stderr_file(path), None) if path is not None else None

    def _log_path(self, status: JobStatus, attempt: int | None) -> Path | None:
        """Which file `read_log` reads (see there)."""
        if attempt is not None:
            return next((Path(r.log) for r in status.attempts
                         if r.attempt == attempt and r.log), None)
        if status.result is not None and status.result.log:
            return Path(status.result.log)
        if status.state is State.RUNNING and status.worker:
            return self.attempt_log(Lease(status.job, status.attempt, status.worker, ""))
        return None

    def progress(self) -> dict[str, Progress]:
        found = {}
        for job_id, attempt, worker in self._running():
            report = read_progress(self.local_dir() / f"{attempt_name(job_id, attempt, worker)}"
                                                      ".progress")
            if report is not None:
                found[job_id] = report
        return found

    def config_file(self) -> Path | None:
        path = self._config()
        return path if path.exists() else None

    def config(self) -> bytes | None:
        try:
            return self._config().read_bytes()
        except FileNotFoundError:
            return None

    def set_config(self, data: bytes) -> None:
        write_atomic(self._config(), data)

    def config_stamp(self) -> str | None:
        # One stat, by a str path: a coordinator asks this for every lease it hands out.
        if self._config_name is None:
            self._config_name = str(self._config())
        try:
            stat = os.stat(self._config_name)
        except FileNotFoundError:
            return None
        return f"{stat.st_mtime_ns}.{stat.st_size}.{stat.st_ino}"


class FileStore(Protocol):
    """What a network backend's client provides to `ShippedFiles` (module docstring)."""

    def fetch_log(self, job_id: str, attempt: int | None) -> bytes | None: ...

    def fetch_progress(self) -> dict[str, Progress]: ...

    def fetch_config(self) -> bytes | None: ...

    def put_config(self, data: bytes) -> str | None: ...


class ShippedFiles(JobFiles):
    """Files that travel to a network store; see the module docstring."""

    def __init__(self, settings: QueueSettings, store: FileStore, *,
                 config: bytes | None = None, config_stamp: str | None = None) -> None:
        super().__init__(settings)
        self._store = store
        self._lock = threading.Lock()
        self._stamp = config_stamp  # the store's, as last heard
        self._copied: str | None = None  # the stamp of our local copy
        self._config_copy: Path | None = None
        self._shipped: dict[tuple[str, int], int] = {}  # attempt -> log size last shipped
        if config is not None:
            self._copy_config(config, config_stamp)

    def _copy_config(self, data: bytes | None, stamp: str | None) -> None:
        path = self.local_dir() / CONFIG_NAME
        if data is None:
            path.unlink(missing_ok=True)
            self._config_copy = None
        else:
            write_atomic(path, data)
            self._config_copy = path
        self._copied = stamp

    # -- the worker's side ------------------------------------------------------------------

    def note_config(self, stamp: str | None) -> None:
        """The store's config stamp, as a reply just told it (see the module docstring)."""
        self._stamp = stamp

    def config_file(self) -> Path | None:
        with self._lock:
            if self._stamp != self._copied:
                stamp = self._stamp
                self._copy_config(self._store.fetch_config(), stamp)
            return self._config_copy

    def beat_reports(self, leases: Iterable[Lease]) -> dict[str, tuple[bytes | None,
                                                                      bytes | None]]:
        """What a beat carries for each running job: its progress report and its log's
        tail so far, the tail only when the log grew since the last beat."""
        reports = {}
        for lease in leases:
            progress = None
            with contextlib.suppress(FileNotFoundError):
                progress = self.progress_file(lease).read_bytes()
            tail = None
            path = self.attempt_log(lease)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = 0
            key = (lease.job_id, lease.attempt)
            if size and self._shipped.get(key) != size:
                tail = read_tail(path, defaults.RUNNING_LOG_TAIL_BYTES)
            self._shipped[key] = size  # also: this attempt beat, forget() tidies it
            if progress is not None or tail is not None:
                reports[lease.job_id] = (progress, tail)
        return reports

    def shipped_log(self, lease: Lease, result: Result) -> bytes | None:
        """The attempt's log to send with its result, cut to the cap (None: none to send);
        a job's stderr kept apart comes after its stdout (the store keeps one log)."""
        path = self.attempt_log(lease)
        if result.log != str(path):
            return None
        cap = self.settings.log_cap_bytes
        log = read_tail(path, cap)
        err = read_tail(stderr_file(path), cap) if lease.job.stderr_apart else None
        if not err:
            return log
        both = (log or b"") + err
        if cap is None or len(both) <= cap:
            return both
        return CUT_MARK + b"%d bytes]\n" % cap + both[-cap:]

    def forget(self, lease: Lease, shipped: bytes | None) -> None:
        """Drop an attempt's local files once the store has its log (`shipped`: what
        `shipped_log` gave; None, no log to drop). A tiny call costs no syscall here."""
        if shipped is not None:
            unlink_if_there(self.attempt_log(lease))
            if lease.job.stderr_apart:
                unlink_if_there(stderr_file(self.attempt_log(lease)))
        if self._shipped.pop((lease.job_id, lease.attempt), None) is not None:
            unlink_if_there(self.progress_file(lease))

    def cancelled_log(self, lease: Lease) -> str | None:
        return None  # the store's cancel keeps the running tail as the job's log

    # -- readers: ask the store ---------------------------------------------------------------

    def read_log(self, status: JobStatus, attempt: int | None = None) -> bytes | None:
        return self._store.fetch_log(status.job.id, attempt)

    def progress(self) -> dict[str, Progress]:
        return self._store.fetch_progress()

    def config(self) -> bytes | None:
        return self._store.fetch_config()

    def set_config(self, data: bytes) -> None:
        stamp = self._store.put_config(data)
        with self._lock:
            self._stamp = stamp
            self._copy_config(data, stamp)

    def config_stamp(self) -> str | None:
        return self._stamp
