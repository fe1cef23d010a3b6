"""Where a folder queue keeps what: the names under ROOT/.shoal, made and read here only.

Every state change is one atomic rename or exclusive create (see docs/architecture.md)::

    ROOT/                       drop-in job files (scripts, .ini, .toml) and their NAME.log
    ROOT/.shoal/jobs/ID.json    job spec, created once by link(2): submit is idempotent
    .../blobs/SHA256            a pickled function that call jobs name by digest (raw bytes)
    .../pending/LANE/BLOCK/RANK.ID.ATT  marker: waiting for attempt ATT. LANE =
                                scheduling.lane_of(job): the jobs that schedule alike;
                                RANK is the seq (12 digits) or, for a job a retry put
                                first, "-" and the seq; BLOCK = its first digits (SEQ //
                                SEQ_BLOCK, "-" kept), so names sort by rank. A claimer reads
                                each lane's lowest blocks only. (Before lanes: pending/BLOCK/
                                SEQ.ID.ATT and pending/ID.ATT, still read as one lane.)
    .../lanes/LANE.json         what every job of LANE needs (priority, needs, labels)
    .../waiting/ID              marker: the job waits for the jobs in its `after`
    .../after/DEP/ID            empty: ID waits for DEP (who to look at when DEP ends)
    .../seq/START               numbers START.. taken by one submit (the file holds how
                                many): how jobs get their seq without a lock
    .../claimed/ID.ATT.WORKER   lease: pending marker renamed by the worker that won it
    .../committing/ID.ATT.WHO   fence held while a final result is written
    .../done|failed|cancelled/ID.json   the one final result
    .../workers/WORKER.json     registry entry; its "beat" counter is the heartbeat
    .../control/WORKER.*.cmd    control commands (stop, stop-now)
    .../attempts/ID.ATT.json    the record of a failed attempt that was tried again
    .../reaped/ID.ATT.WORKER    a reap, for every host to hear (pruned by the server's clock)
    .../logs/                   logs of command jobs and of running attempts
    .../tmp/                    temporary names; nobody else reads here
    .../queue.toml              the queue's settings (lease_s, seed, interpreters, fsync)
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from ...errors import NoSuchQueue, UsageError
from ...fsutil import (
    HOST,
    atomic_write,
    make_dir,
    read_bytes,
    touch_exclusive,
    unique_token,
    unlink_quiet,
)
from ...job import State
from ..scheduling import FIRST, retry_rank

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FINAL_DIRS = {State.DONE: "done", State.FAILED: "failed", State.CANCELLED: "cancelled"}
FINAL_KINDS = frozenset(FINAL_DIRS.values())
SUBDIRS = ("jobs", "pending", "claimed", "committing", "done", "failed", "cancelled",
           "attempts", "workers", "control", "logs", "tmp", "blobs", "reaped", "seq",
           "waiting", "after", "lanes")
SEQ_BLOCK = 1000  # pending markers per block folder (by seq)
HIDDEN = ".shoal"
# What writing in a queue folder raises for someone who may only read it.
READER_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
CONFIG = "queue.toml"


def parse_marker(kind: str, name: str) -> tuple[str, int, str] | None:
    """(job id, attempt, worker) from claimed/ID.ATT.WORKER or committing/ID.ATT.OWNER.NONCE;
    None for a name shoal does not make there (a stray file)."""
    parts = name.split(".", 2)
    if len(parts) != 3 or not parts[0] or not _digits(parts[1]) or not parts[2]:
        return None
    worker = parts[2].rsplit(".", 1)[0] if kind == "committing" else parts[2]
    return parts[0], int(parts[1]), worker


def is_record(kind: str, name: str) -> bool:
    """Whether `name` in the state folder `kind` is one shoal makes there; the others are
    stray files (a user's `touch`, an editor's backup), which every reader ignores and
    `status` names (strays.py). Job ids hold no dot: marker names split on them."""
    if kind in ("claimed", "committing"):
        return parse_marker(kind, name) is not None
    if kind == "waiting":
        return "." not in name
    if kind in FINAL_KINDS:
        return final_id(name) is not None
    return True


def final_id(name: str) -> str | None:
    """The job id of a final record's name (ID.json); None if it is no such name."""
    job_id = name[:-5] if name.endswith(".json") else ""
    return job_id if job_id and "." not in job_id else None


class Marker(NamedTuple):
    """What a pending marker's name says."""

    job_id: str
    attempt: int
    rank: int  # seq; seq - FIRST for a job a retry put first; 0 for a job without seq


def pending_name(job_id: str, attempt: int, rank: int) -> str:
    """A marker's name inside its lane folder: BLOCK/RANK.ID.ATT (ID.ATT without a seq)."""
    if not rank:
        return f"{job_id}.{attempt}"
    sign, seq = ("-", rank + FIRST) if rank < 0 else ("", rank)
    return f"{sign}{seq // SEQ_BLOCK:09d}/{sign}{seq:012d}.{job_id}.{attempt}"


def parse_pending(name: str) -> Marker | None:
    """What a name `pending_name` made says (a path ending in it too); None if it is not
    one."""
    parts = name.rsplit("/", 1)[-1].split(".")
    if len(parts) == 2 and _digits(parts[1]):
        return Marker(parts[0], int(parts[1]), 0)
    if len(parts) == 3 and _digits(parts[2]):
        digits = parts[0].removeprefix("-")
        if _digits(digits):
            seq = int(digits)
            return Marker(parts[1], int(parts[2]), retry_rank(seq, digits != parts[0]))
    return None


def _digits(text: str) -> bool:
    """0-9 only: str.isdigit also takes "²", which int() refuses (found by the fuzzer)."""
    return text.isascii() and text.isdigit()


def is_marker(name: str) -> bool:
    """Whether a name inside a lane or block folder is a pending marker (`parse_pending`
    would read it), cheaply: every count of pending jobs asks it of each name."""
    head, _, attempt = name.rpartition(".")
    if not head or not _digits(attempt):
        return False
    rank, dot, job_id = head.partition(".")
    return not dot or (job_id != "" and "." not in job_id
                       and _digits(rank.removeprefix("-")))


def spec_rank(spec: dict) -> int:
    """The rank a job's spec gives it (its seq; before every seq if a retry put it
    first: the spec then says `"first": true`)."""
    seq = spec.get("seq")  # not a number in a corrupt spec: ranked as a job without seq
    return retry_rank(seq if type(seq) is int else 0, bool(spec.get("first")))


def is_lane(name: str) -> bool:
    """A lane folder under pending/ (lane_of names start with p); the rest there is from
    before lanes: block folders (digits) and markers (ID.ATT)."""
    return name.startswith("p") and "." not in name


def refresh_listing(folder: Path) -> None:
    """Make our cached listing of `folder` current before trusting it.

    sshfs keeps directory listings for up to 20 s and NFS for up to acdirmax (60 s),
    so jobs added through another host can stay invisible. Changing the folder
    through our own mount (a hidden probe, created and removed) invalidates our
    cached copy, so the next listing is read from the server. A local filesystem
    (`LOCAL_FS`) caches nothing stale: no probe there (it cost a create and an unlink
    per listing, a file's worth of journal work on every `watch` look and claim read).
    """
    if on_local_fs(str(folder)):
        return
    probe = folder / f".probe.{HOST}.{os.getpid()}.{threading.get_ident()}"
    with contextlib.suppress(OSError):
        touch_exclusive(probe)
        os.unlink(probe)


# Filesystems whose directory listings are never stale for a reader on the same host
# (what is not named here, NFS, sshfs, CIFS, any FUSE, gets the probe).
LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "zfs", "f2fs",
                      "jfs", "bcachefs", "overlay"})
_LOCAL: dict[str, bool] = {}  # queue folder (or folder) -> on a local filesystem
_LOCAL_MAX = 1024


def on_local_fs(folder: str) -> bool:
    """Whether `folder` lies on a local filesystem (/proc/self/mounts, its real path's
    longest mount point); asked once per queue folder (`HIDDEN`), False where unknown."""
    cut = folder.find(f"/{HIDDEN}/")
    key = folder[:cut + len(HIDDEN) + 1] if cut >= 0 else folder
    found = _LOCAL.get(key)
    if found is None:
        found = _mount_type(os.path.realpath(key)) in LOCAL_FS
        if len(_LOCAL) >= _LOCAL_MAX:
            _LOCAL.clear()
        _LOCAL[key] = found
    return found


def _mount_type(path: str) -> str:
    """The type of the filesystem `path` is on ("" where /proc/self/mounts is not there)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            table = [line.split() for line in mounts]
    except OSError:
        return ""
    best, kind = "", ""
    for fields in table:
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")  # a space in a mount point
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


class Layout:
    """The paths of one queue folder: `dirs[kind]`, `path(kind, name)`, `tmp`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / HIDDEN
        self.dirs = {name: self.base / name for name in SUBDIRS}
        self._dir_names = {name: str(path) for name, path in self.dirs.items()}
        self.tmp = self.dirs["tmp"]

    def path(self, kind: str, name: str) -> str:
        return f"{self._dir_names[kind]}/{name}"

    def open(self, *, create: bool) -> None:
        """Make sure the layout exists (creating it if `create`), or say it is no queue.

        Without `create` nothing is written: a reader may have read access only."""
        if not self.base.is_dir():
            if not create:
                if self.root.is_dir():
                    raise NoSuchQueue(f"no {HIDDEN} folder in {self.root}")
                if self.root.exists():
                    raise NoSuchQueue(f"{self.root} is a file; a SQLite queue is sqlite://PATH")
                raise NoSuchQueue(f"no folder {self.root}")
            self._create()
        elif not self.tmp.is_dir():  # .shoal made by someone else (`hire`'s worker logs)
            if not create:
                raise NoSuchQueue(f"{HIDDEN}/ there holds no queue yet")
            for path in self.dirs.values():
                make_dir(path)

    def _create(self) -> None:
        """Build .shoal under a temporary name and rename it into place, so a process that
        opens the queue meanwhile sees no queue or a whole one, never half a layout."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{HIDDEN}.{HOST}.{unique_token()}.tmp"
        for name in SUBDIRS:  # private, or shared in a setgid root (fsutil.make_dir)
            make_dir(staging / name)
        try:
            os.rename(staging, self.base)
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)

    def read_config(self) -> dict:
        """The settings in queue.toml (empty if there is none)."""
        path = self.base / CONFIG
        blob = read_bytes(path)
        if blob is None:
            return {}
        try:
            return tomllib.loads(blob.decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{path}: {exc}") from exc
        except RecursionError:  # tomllib recurses per nesting level (found by the fuzzer)
            raise UsageError(f"{path}: arrays or tables nested too deeply") from None

    def server_now(self) -> float:
        """The file server's clock (the mtime of a file we just wrote), not ours; ours for
        a reader that may not write here (read access only, a read-only mount)."""
        probe = self.path("tmp", f"clock.{HOST}.{os.getpid()}.{threading.get_ident()}.probe")
        try:
            atomic_write(probe, b"", self.tmp, fsync=False)
        except OSError as exc:
            if exc.errno not in READER_ERRNOS:
                raise
            return time.time()
        try:
            return os.stat(probe).st_mtime
        finally:
            unlink_quiet(probe)
