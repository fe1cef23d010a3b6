"""FolderQueue: the state machine of a queue in a folder (paths in layout.py).

Whoever renames a job's marker away owns its next transition, so a worker whose
lease was reaped (or cancelled) finds its claimed name gone and its result is
refused. Workers and their liveness are registry.py's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import cast

from ... import defaults
from ...dropins import ELSEWHERE, LOGGED, DropIns
from ...errors import LeaseLost, MalformedJob, QueueUnavailable
from ...fsutil import (
    HOST,
    atomic_write,
    claim_rename,
    create_exclusive,
    list_names,
    make_dir,
    names_full_disk,
    read_bytes,
    sync_filesystem,
    touch_exclusive,
    unique_token,
    unlink_quiet,
)
from ...job import (
    Beat,
    Job,
    JobStatus,
    JobSummary,
    Kind,
    Lease,
    Reaped,
    Result,
    State,
    WorkerInfo,
    dumps,
    loads,
)
from ...trust import trust_from_config
from ..base import (
    Queue,
    WatchSet,
    blobs_of,
    cancelled_result,
    lost_reason,
    poll,
    reaped_keep_s,
)
from ..files import LocalFiles, check_log_name
from ..lanes import LaneNames
from ..scheduling import FIRST, Capacity, after_taking, check_after
from ..settings import QueueSettings, checked_config
from . import deps
from .finals import LocalFinals, WatchMark
from .groupcommit import GroupCommit
from .lanes import LEGACY, LaneView, lane_blocks, lane_folders
from .layout import (
    FINAL_DIRS,
    Layout,
    final_id,
    is_record,
    parse_marker,
    parse_pending,
    pending_name,
    refresh_listing,
    spec_rank,
)
from .listing import read_listing, read_summaries
from .registry import WorkerRegistry
from .strays import stray_files

log = logging.getLogger(__name__)

STATE_READS = 5  # looks at a job that moved while get() read its state (see _state_of)
MOVING_S = 2.0  # how long get() keeps looking for a job found nowhere (see _state_of)
MKDIR_TRIES = 10  # a pending block folder removed under us is made again this often
PLAIN = Job("", "", Kind.COMMAND)  # how a job of the legacy lane schedules


class Batch:
    """What one `submit` wrote so far, to take back if it fails half-way."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []  # with a spec written: the jobs to place, in order
        self.seqs: dict[str, int] = {}  # job id -> its seq (also its first rank)
        self.specs: dict[str, str] = {}  # job id -> the spec this call created
        self.placed: list[Job] = []  # whose marker this call made, or began to make

    def add(self, job: Job, seq: int, spec: str | None) -> None:
        self.jobs.append(job)
        self.seqs[job.id] = seq
        if spec is not None:
            self.specs[job.id] = spec


class FolderQueue(Queue):
    """A queue kept in `root/.shoal`; see layout.py for what lives where."""

    blocking_claim = False
    cross_host = True
    keeps_job_files = True

    def __init__(self, root: str | Path, *, lease_s: float | None = None,
                 log_cap_bytes: int | None = None, fsync: bool | None = None,
                 create: bool = True) -> None:
        self.root = Path(root).absolute()
        self.layout = Layout(self.root)
        self.layout.open(create=create)
        self.base = self.layout.base
        config = checked_config(self.layout.read_config(), str(self.base / "queue.toml"))
        settings = QueueSettings(
            lease_s=float(lease_s or config.get("lease_s", defaults.LEASE_S)),
            seed=config.get("seed", 0),
            interpreters={**defaults.INTERPRETERS, **config.get("interpreters", {})},
            root=self.root,
            log_cap_bytes=log_cap_bytes or config.get("log_cap_bytes"),
            log_name=check_log_name(config.get("log_name", defaults.LOG_NAME),
                                    str(self.base / "queue.toml")),
            trust=trust_from_config(config, self.root, str(self.base / "queue.toml")))
        # Logs beside job files (NAME.log) or in .shoal/logs; the config in .shoal.
        files = LocalFiles(settings, log_dir=self.base / "logs",
                           config_path=self.base / "config.toml", running=self._running)
        super().__init__(f"dir://{self.root}", settings, files)
        # fsync = false in queue.toml trades durability across a power cut for speed on
        # tiny jobs: a submission made just before the cut may be lost, and a result
        # recorded just before it may be lost (the job then runs again).
        self.fsync = bool(config.get("fsync", True)) if fsync is None else fsync
        self.dirs = self.layout.dirs
        self.tmp = self.layout.tmp
        self.path = self.layout.path
        self.registry = WorkerRegistry(self.layout, self.settings.lease_s)
        self._view = LaneView(self.dirs["pending"], self._lane_template)
        self._lanes: dict[str, Job] = {}  # lane -> a job like its jobs (its file is written)
        self._lane_names = LaneNames()
        self._ranks: dict[str, int] = {}  # job id -> rank of the jobs we claimed
        # Jobs whose end is recorded but whose dependants a full disk kept waiting: settled
        # at a later beat (in memory: a process that exits first leaves them to a reap).
        self._unsettled: dict[str, State] = {}
        self._seq_end: int | None = None  # the number after our last reserved range
        self._claim_lock = threading.RLock()  # also guards the view
        self._commits = GroupCommit(self.base)
        self._finals = LocalFinals()  # what a watcher here hears of without a scan
        self._dropins = DropIns(self.root, self.settings.interpreters, self.settings.log_name,
                                self.settings.trust.log_dirs)

    # -- submit ---------------------------------------------------------------

    @names_full_disk
    def submit(self, jobs: Iterable[Job]) -> list[str]:
        """Check the dependencies, number the jobs not seen yet (`_reserve`), write every
        blob and spec, then every marker (pending, or waiting: deps.py), then make them
        durable with one sync. All or nothing: a write that fails (a full disk) takes
        back the specs and markers this call made, and no marker is made before every
        spec is written, so no worker sees part of the batch."""
        jobs = list(jobs)
        check_after(jobs, self._known)
        self._write_blobs(blobs_of(jobs))
        fresh = list(dict.fromkeys(job.id for job in jobs
                                   if not os.path.exists(self.path("jobs", f"{job.id}.json"))))
        first = self._reserve(len(fresh)) if fresh else 0
        numbers = {job_id: first + i for i, job_id in enumerate(fresh)}
        batch = Batch()
        try:
            for job in jobs:
                if job.id not in batch.seqs:
                    self._write_spec(job, numbers.get(job.id, 0), batch)
            for job in batch.jobs:
                batch.placed.append(job)
                if not deps.place(self, job, batch.seqs[job.id]):  # another submitter's
                    batch.placed.pop()  # marker, on our spec: neither is ours to take back
                    batch.specs.pop(job.id, None)
        except BaseException:
            self._take_back(batch)
            raise
        new = [job.id for job in batch.jobs]
        if new and self.fsync:
            sync_filesystem(self.base)
        return new

    def _write_spec(self, job: Job, seq: int, batch: Batch) -> None:
        """Write the job's spec, if it is new (numbered `seq`) or a submitter died
        between its spec and its marker; note it in `batch` then."""
        spec = self.path("jobs", f"{job.id}.json")
        # The spec appears complete (link of a written file): another submitter of the
        # same job that finds it reads the number we gave it, so a repair below makes
        # the very marker we make (one name: one of us creates it), never a second one.
        if seq and create_exclusive(spec, dumps({**job.to_dict(), "seq": seq}), self.tmp,
                                    fsync=False):
            batch.add(job, seq, spec)
        elif self._state_of(job.id, job, self._rank_of(job.id)) is None:
            seq = self._seq_of(job.id) or seq  # the spec stays: it was there before us
            atomic_write(spec, dumps({**job.to_dict(), "seq": seq}), self.tmp, fsync=False)
            batch.add(job, seq, None)

    def _take_back(self, batch: Batch) -> None:
        """Undo a submission that failed half-way: its markers, then the specs it made.
        A marker a claimer took already (markers are made only once every spec is
        written) stays, with its spec: that job was submitted."""
        taken = set()
        for i, job in enumerate(batch.placed):
            seq = batch.seqs[job.id]
            for dep in job.after:
                unlink_quiet(self.dirs["after"] / dep / job.id)
            gone = False
            for marker in [self.path("waiting", job.id), *self._pending_paths(job, 1, seq)]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(marker)
                    gone = True
            if not gone and i < len(batch.placed) - 1:  # made, and claimed since
                taken.add(job.id)
        for job_id, spec in batch.specs.items():
            if job_id not in taken:
                unlink_quiet(spec)

    # -- submission order ------------------------------------------------------------

    def _reserve(self, count: int) -> int:
        """The first of `count` numbers no other submitter has, after those given so far.

        seq/START holds how many numbers its submitter took from START on; each range
        starts right after another one, so the ranges tile 1, 2, ... without a gap, and
        two submitters who read the same end race for the same name: link(2) of a
        complete file lets exactly one win (atomic on NFS too); the other moves past
        the winner's range and tries again. A stale listing only costs such tries, so
        the folder is listed once per queue object: later submits start where ours
        ended and step over the ranges others took meanwhile."""
        start = self._seq_end
        if start is None:  # the first time: where the ranges end now (later: where ours did)
            folder = self.dirs["seq"]
            make_dir(folder)  # a queue made before submissions were numbered
            refresh_listing(folder)
            starts = [int(name) for name in list_names(folder) if name.isdigit()]
            start = self._range_end(max(starts)) if starts else 1
        mine = self.path("tmp", f"seq.{unique_token()}")
        atomic_write(mine, str(count).encode(), self.tmp, fsync=False)
        try:
            while True:
                try:
                    os.link(mine, self.path("seq", str(start)))
                except FileExistsError:
                    if os.stat(mine).st_nlink == 1:  # not an NFS retransmit of our link
                        start = self._range_end(start)
                        continue
                self._seq_end = start + count
                return start
        finally:
            unlink_quiet(mine)

    def _range_end(self, start: int) -> int:
        """The number after the range that starts at `start`."""
        blob = read_bytes(self.path("seq", str(start))) or b""
        return start + (int(blob) if blob.strip().isdigit() else 1)

    def _known(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs the queue holds (for `check_after`)."""
        return {job_id for job_id in job_ids
                if os.path.exists(self.path("jobs", f"{job_id}.json"))}

    def _spec(self, job_id: str) -> dict | None:
        blob = read_bytes(self.path("jobs", f"{job_id}.json"))
        try:
            spec = loads(blob) if blob else None
        except ValueError:
            return None
        return spec if isinstance(spec, dict) else None

    def _seq_of(self, job_id: str) -> int:
        """The job's seq from its spec (0: none, a job submitted before seq existed)."""
        try:
            return int((self._spec(job_id) or {}).get("seq", 0))
        except (ValueError, TypeError):
            return 0

    def _rank_of(self, job_id: str) -> int:
        """The job's rank (layout.Marker): known for the jobs we claimed, else its spec's."""
        if job_id in self._ranks:
            return self._ranks[job_id]
        try:
            return spec_rank(self._spec(job_id) or {})
        except (ValueError, TypeError):
            return 0

    def _pending_path(self, job: Job, attempt: int, rank: int) -> str:
        return self.path("pending",
                         f"{self._lane_names(job)}/{pending_name(job.id, attempt, rank)}")

    def _pending_paths(self, job: Job, attempt: int, rank: int) -> list[str]:
        """Where the job's marker for `attempt` may be: its lane, or where markers were
        before lanes (a queue made by an older shoal)."""
        return [self._pending_path(job, attempt, rank),
                self.path("pending", pending_name(job.id, attempt, max(rank, 0)))]

    def _lane_template(self, lane: str) -> Job | None:
        """A job that schedules as the jobs of `lane`, found once per process: from the
        name of a plain lane (`p5`), else from its lanes/ file, else (a file lost to a
        purge that a long-lived submitter did not see) from one of its jobs. None if
        none can be read yet."""
        if lane == LEGACY:
            return PLAIN
        if lane not in self._lanes:
            if lane[1:].lstrip("-").isdigit():
                self._lanes[lane] = Job("", lane, Kind.COMMAND, priority=int(lane[1:]))
            else:
                template = self._read_lane(lane) or self._lane_from_a_job(lane)
                if template is None:
                    return None
                self._lanes[lane] = template
        return self._lanes[lane]

    def _read_lane(self, lane: str) -> Job | None:
        spec = None
        blob = read_bytes(self.path("lanes", f"{lane}.json"))
        with contextlib.suppress(ValueError):
            spec = loads(blob) if blob else None
        if not isinstance(spec, dict):
            return None
        try:
            return Job("", lane, Kind.COMMAND, priority=int(spec.get("priority", 0)),
                       needs=dict(spec.get("needs", {})), labels=tuple(spec.get("labels", ())))
        except (TypeError, ValueError):
            return None

    def _lane_from_a_job(self, lane: str) -> Job | None:
        """The lane's first readable job as its template; its lanes/ file written again."""
        for _, names in lane_blocks(self.dirs["pending"] / lane, f"{lane}/"):
            for name in names[:3]:
                marker = parse_pending(name)
                job = self._job_or_none(marker.job_id) if marker is not None else None
                if job is not None and self._lane_names(job) == lane:
                    self._write_lane(lane, job)
                    return self._lanes[lane]
            if names:
                return None
        return None

    def _write_lane(self, lane: str, job: Job) -> None:
        """lanes/LANE.json, before the lane's first marker: what a claimer reads to know
        what the lane's jobs need without opening one."""
        if lane in self._lanes:
            return
        info = {"priority": job.priority, "needs": dict(job.needs), "labels": list(job.labels)}
        path = self.path("lanes", f"{lane}.json")
        if not os.path.exists(path):
            make_dir(self.dirs["lanes"])  # a queue made before lanes
            create_exclusive(path, dumps(info), self.tmp, fsync=False)
        self._lanes[lane] = Job("", lane, Kind.COMMAND, priority=job.priority,
                                needs=dict(job.needs), labels=tuple(job.labels))

    def _to_pending(self, job: Job, attempt: int, rank: int, src: str | None = None) -> bool:
        """Create the job's pending marker (or rename `src` to it); True if this call did.
        Its block folder may be missing (never made, or removed empty by a claimer just
        now): then it is made, and we try again. Our mount may still show a removed
        folder for a while (sshfs, NFS attribute caches), so the tries are spread over
        a few seconds; a marker that cannot be made at all is an error, never a job
        left without one."""
        lane = self._lane_names(job)
        self._write_lane(lane, job)
        name = f"{lane}/{pending_name(job.id, attempt, rank)}"
        target = self.path("pending", name)
        folder = os.path.dirname(target)
        with self._claim_lock:  # our claims see the marker in the view or in the folder
            for tries in range(MKDIR_TRIES):
                try:
                    if src is None:
                        made = touch_exclusive(target)
                    else:
                        os.rename(src, target)
                        made = True
                    if made:
                        self._view.add(lane, self._lanes[lane], name)
                    return made
                except FileNotFoundError:
                    if src is not None and not os.path.lexists(src):
                        return os.path.lexists(target)  # it was our source that was gone
                    if tries:  # the folders may be in our cache only: read them again
                        refresh_listing(self.dirs["pending"])
                        refresh_listing(Path(folder).parent)
                        time.sleep(min(0.02 * 2 ** tries, 0.5))
                    for level in (os.path.dirname(folder), folder):  # lane, then block
                        with contextlib.suppress(FileExistsError, FileNotFoundError):
                            make_dir(level)
            raise FileNotFoundError(errno.ENOENT, "cannot make the job's pending marker "
                                    "(its folder keeps vanishing)", target)

    # -- function blobs ----------------------------------------------------------

    def _blob_path(self, digest: str) -> Path:
        if not digest.isalnum():  # a digest is hex; never a path of its own
            raise MalformedJob(f"bad function blob name {digest!r}")
        return self.base / "blobs" / digest

    def _write_blobs(self, blobs: Mapping[str, bytes]) -> bool:
        """Write the blobs not stored yet (temp name, then rename); True if any was."""
        wrote = False
        for digest, blob in blobs.items():
            path = self._blob_path(digest)
            with contextlib.suppress(OSError):
                if os.stat(path).st_size == len(blob):
                    continue  # a torn copy (a crash before its sync) is written again
            make_dir(path.parent)  # a queue made before blobs existed
            atomic_write(path, blob, self.tmp, fsync=False)  # the caller's sync covers it
            wrote = True
        return wrote

    @names_full_disk
    def put_blobs(self, blobs: Mapping[str, bytes]) -> None:
        if self._write_blobs(blobs) and self.fsync:
            sync_filesystem(self.base)

    def get_blob(self, digest: str) -> bytes | None:
        try:
            with open(self._blob_path(digest), "rb") as handle:  # one read of its whole size
                return handle.read()
        except FileNotFoundError:
            return None

    def missing_blobs(self, digests: Iterable[str]) -> list[str]:
        return [digest for digest in digests if not self._blob_path(digest).exists()]

    def _read_job(self, job_id: str) -> Job:
        return self._read_spec(job_id)[0]

    def _read_spec(self, job_id: str) -> tuple[Job, int]:
        """The job and its seq (0 for a job submitted before jobs were numbered)."""
        job, seq, _ = self._read_entry(job_id)
        return job, seq

    def _read_entry(self, job_id: str) -> tuple[Job, int, int]:
        """The job, its seq and its rank (layout.Marker) from one read of its spec."""
        blob = read_bytes(self.path("jobs", f"{job_id}.json"))
        if blob is None:
            raise MalformedJob(f"{self.path('jobs', job_id + '.json')}: job spec is missing")
        try:
            data = loads(blob)
            return Job.from_dict(data), int(data.get("seq", 0)), spec_rank(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise MalformedJob(f"{self.path('jobs', job_id + '.json')}: {exc}") from exc

    def _job_or_none(self, job_id: str) -> Job | None:
        try:
            return self._read_job(job_id)
        except MalformedJob:
            return None

    # -- claim ----------------------------------------------------------------

    @names_full_disk
    def claim(self, worker: str, n: int = 1, *, wait_s: float = 0.0,
              fit: Capacity | None = None) -> list[Lease]:
        return poll(lambda: self._claim_some(worker, n, fit), wait_s)

    def _claim_some(self, worker: str, n: int, fit: Capacity | None) -> list[Lease]:
        # One claimer at a time per process: slots of one worker share its claimed/ names,
        # and the NFS retransmit check in claim_rename is only sound for a name that a
        # single claimer renames into.
        with self._claim_lock:
            return self._claim_locked(worker, n, fit)

    def _claim_locked(self, worker: str, n: int, fit: Capacity | None) -> list[Lease]:
        """Take the view's best marker (lanes.py) until n leases, each job taking its share
        of `fit`; a view that is old, or shows nothing before we got a lease, is read
        again (once)."""
        leases: list[Lease] = []
        fresh = self._view.stale()
        if fresh:
            self._view.read()
        while len(leases) < n:
            found = self._view.best(fit)
            if found is None:
                if leases or fresh:
                    break
                self._view.read()
                fresh = True
                continue
            lane, name = found
            self._view.took(lane)
            lease = self._try_claim(name, worker)
            if lease is None:
                self._view.collided(lane)
                continue
            leases.append(lease)
            fit = after_taking(fit, lease.job)
        return leases

    def _try_claim(self, name: str, worker: str) -> Lease | None:
        parsed = parse_pending(name)
        if parsed is None:
            return None
        job_id, attempt, rank = parsed
        claimed = self.path("claimed", f"{job_id}.{attempt}.{worker}")
        if not claim_rename(self.path("pending", name), claimed):
            return None  # another claimer reads the same names, just ahead of us
        try:
            job, seq = self._read_spec(job_id)
        except MalformedJob as exc:
            self._fail_unreadable(job_id, attempt, worker, claimed, str(exc))
            return None
        if len(self._ranks) > 4 * defaults.CLAIM_BATCH:
            self._ranks.clear()  # leases are few; the rest were reaped or cancelled
        self._ranks[job_id] = rank
        return Lease(job, attempt, worker, f"{attempt}.{worker}", seq)

    def _fail_unreadable(self, job_id: str, attempt: int, worker: str, claimed: str,
                         reason: str) -> None:
        fence = self._fence_path(job_id, attempt, worker)
        if claim_rename(claimed, fence):
            result = Result(job_id, State.FAILED, reason=f"malformed: {reason}",
                            attempt=attempt, worker=worker, host=HOST)
            self._write_final(result)
            unlink_quiet(fence)
            deps.ended(self, job_id, State.FAILED)

    # -- beat, finish, release -----------------------------------------------

    def _fence_path(self, job_id: str, attempt: int, owner: str) -> str:
        """committing/ID.ATT.OWNER.NONCE: a name nobody else (nor an earlier call) uses, so
        claim_rename's NFS retransmit check cannot mistake another fence for ours."""
        return self.path("committing", f"{job_id}.{attempt}.{owner}.{unique_token()}")

    def _claimed_path(self, lease: Lease) -> str:
        return self.path("claimed", f"{lease.job_id}.{lease.attempt}.{lease.worker}")

    @names_full_disk
    def beat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        """Rewrite the worker's record with a new beat counter (which is what keeps its
        leases alive here), report the leases whose claimed marker is gone, take its
        commands."""
        self.registry.write_beat(info)
        for job_id in list(self._unsettled):  # space is back
            self._dependants_end(job_id, self._unsettled.pop(job_id))
        lost = tuple(lease for lease in leases if not os.path.exists(self._claimed_path(lease)))
        return Beat(lost, self.registry.take_commands(info.id))

    def _fence(self, lease: Lease) -> str:
        claimed = self._claimed_path(lease)
        fence = self._fence_path(lease.job_id, lease.attempt, lease.worker)
        if not claim_rename(claimed, fence):
            raise LeaseLost(f"job {lease.job_id} attempt {lease.attempt}: lease of "
                            f"{lease.worker} expired or the job was cancelled")
        return fence

    @names_full_disk
    def finish(self, lease: Lease, result: Result, *, then_claim: int = 0,
               fit: Capacity | None = None) -> list[Lease]:
        """Fence, place the log, write the result (its fence goes once it is durable), set
        free or end the jobs waiting for it, then claim up to `then_claim` next jobs."""
        fence = self._fence(lease)
        placed = self.files.place_log(lease, result)
        try:
            self._write_final(placed, fsync=False)
        except OSError:  # a full disk: the lease stays ours, for the worker to try again
            if placed.log != result.log and placed.log and result.log:
                with contextlib.suppress(OSError):
                    os.replace(placed.log, result.log)
            os.rename(fence, self._claimed_path(lease))
            raise
        self._ranks.pop(lease.job_id, None)
        if self.fsync:
            self._commits.add(fence)  # see groupcommit.py
        else:
            unlink_quiet(fence)
        self._dependants_end(lease.job_id, result.state)  # before the next claim
        try:
            return self._claim_next(lease, then_claim, fit)
        except OSError:  # recorded all the same; the worker claims again later
            return []

    def _dependants_end(self, job_id: str, state: State) -> None:
        """Set free or end the jobs waiting for `job_id`; on a full disk, again at the
        next beat (the result stands: the worker must not retry the finish)."""
        try:
            deps.ended(self, job_id, state)
        except OSError:
            self._unsettled[job_id] = state

    def flush(self) -> None:
        self._commits.flush()

    def close(self) -> None:
        self._commits.close()

    def _write_final(self, result: Result, *, fsync: bool | None = None) -> None:
        folder = self.dirs[FINAL_DIRS[result.state]]
        atomic_write(folder / f"{result.job_id}.json", dumps(result.to_dict()), self.tmp,
                     fsync=self.fsync if fsync is None else fsync)
        self._finals.add(result.job_id)

    @names_full_disk
    def release(self, lease: Lease, *, failed: Result | None = None) -> None:
        """With `failed`, its record is written first (a stale holder's record is later
        overwritten by the current holder's), then the marker moves to the next attempt."""
        attempt = lease.attempt
        if failed is not None:
            record = self.path("attempts", f"{lease.job_id}.{attempt}.json")
            atomic_write(record, dumps(failed.to_dict()), self.tmp, fsync=False)
            attempt += 1
        rank = self._rank_of(lease.job_id)  # kept: a job a retry put first stays first
        if not self._to_pending(lease.job, attempt, rank, self._claimed_path(lease)):
            raise LeaseLost(f"job {lease.job_id} attempt {lease.attempt}: lease lost")
        self._ranks.pop(lease.job_id, None)

    def _failed_attempts(self, job_id: str, before: int) -> tuple[Result, ...]:
        """Records of the failed attempts below `before` (a stat per attempt: none for a
        job on its first)."""
        records = []
        for attempt in range(1, before):
            blob = read_bytes(self.path("attempts", f"{job_id}.{attempt}.json"))
            if blob is not None:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    records.append(Result.from_dict(loads(blob)))
        return tuple(records)

    # -- progress -----------------------------------------------------------------

    def _running(self) -> Iterator[tuple[str, int, str]]:
        """(job id, attempt, worker) of each claimed marker: whose progress to read."""
        for name in self._fresh_names("claimed"):
            parsed = parse_marker("claimed", name)
            if parsed is not None:
                yield parsed

    # -- cancel, retry, inspect -------------------------------------------------

    def _attempt_bound(self, job: Job) -> int:
        return max(job.max_attempts, job.retries + 1) + 1

    def _running_entries(self, job_id: str) -> list[tuple[str, str]]:
        prefix = job_id + "."
        return [(kind, name) for kind in ("claimed", "committing")
                for name in list_names(self.dirs[kind])
                if name.startswith(prefix) and is_record(kind, name)]

    def _final_result(self, job_id: str, *, quarantine: bool = False) -> Result | None:
        """The job's final result. An unreadable one while the job's finish still holds
        its fence (a crash before its group commit) counts as none, and with `quarantine`
        is moved aside so the job can run again; one without (`_corrupt`) is a failure."""
        for state in FINAL_DIRS:
            result = self._record(state, job_id, quarantine=quarantine)
            if result is not None:
                return result
        return None

    def _record(self, state: State, job_id: str, *, quarantine: bool = False) -> Result | None:
        """The result in the `state` folder (see `_final_result`)."""
        path = self.path(FINAL_DIRS[state], f"{job_id}.json")
        blob = read_bytes(path)
        if blob is None:
            return None
        try:
            return Result.from_dict(loads(blob))
        except (ValueError, KeyError, TypeError, AttributeError):
            if quarantine:
                claim_rename(path, self.path("attempts", f"{job_id}.corrupt."
                                             f"{secrets.token_hex(4)}.json"))
                return None
            if self._running_entries(job_id):
                return None  # its finish is still committing, or died doing it: the reaper's
            return self._corrupt(state, job_id, path)

    def _corrupt(self, state: State, job_id: str, path: str) -> Result:
        """A final record that does not decode and that no finish is writing (a bad disk,
        a hand edit): the job failed, the reason names the file. Moved to failed/ where we
        may write (never over a record there), so counts agree with what listings show
        and `retry --failed` takes it; a reader that may not write shows it failed too."""
        if state is not State.FAILED:
            target = self.path("failed", f"{job_id}.json")
            with contextlib.suppress(OSError):
                os.link(path, target)
                unlink_quiet(path)
                path = target
        return Result(job_id, State.FAILED, reason=f"corrupt record: {path}")

    def _state_of(self, job_id: str, job: Job, rank: int, *,
                  patient: bool = False) -> JobStatus | None:
        """Where the job is, looked for in the order jobs move (`_state_once`). Found
        nowhere means it moved back meanwhile (a release, a reap: claimed -> pending) or is
        between two names (a retry sets its result aside, then makes its marker): look
        again, STATE_READS times; `patient`, for up to MOVING_S more, the pause between
        looks growing (a job without any marker, its submitter dead, costs that)."""
        seq = rank + FIRST if rank < 0 else rank
        tries, pause, waited = 0, 0.001, 0.0
        while True:
            status = self._state_once(job_id, job, rank)
            if status is not None:
                return replace(status, seq=seq)
            tries += 1
            if tries < STATE_READS:
                continue
            if not patient or waited >= MOVING_S:
                return None
            time.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.1)

    def _state_once(self, job_id: str, job: Job, rank: int) -> JobStatus | None:
        """One look: its final record first (most jobs asked about have ended, and a
        retry moves the record aside before it makes a marker), then in the order a job
        moves forward (waiting, pending, claimed, committing, final), so one that moves
        forward while we look is seen where it went. A fence outlives its result by a
        group commit: a result found wins over it."""
        ended = self._final_result(job_id)
        if ended is not None:
            return JobStatus(job, ended.state, ended.attempt, ended.worker or None, ended)
        if os.path.exists(self.path("waiting", job_id)):
            return JobStatus(job, State.WAITING, 1)
        attempt = self._pending_attempt(job, rank)
        if attempt is not None:
            return JobStatus(job, State.PENDING, attempt)
        running = self._running_entries(job_id)
        result = self._final_result(job_id)
        if result is not None:
            return JobStatus(job, result.state, result.attempt, result.worker or None, result)
        for kind, name in running:
            _, attempt, worker = parse_marker(kind, name) or ("", 0, "")
            return JobStatus(job, State.RUNNING, attempt, worker)
        return None

    def _pending_attempt(self, job: Job, rank: int) -> int | None:
        """The attempt the job's pending marker is for; None if it has none."""
        for attempt in range(1, self._attempt_bound(job) + 1):
            if any(os.path.exists(path) for path in self._pending_paths(job, attempt, rank)):
                return attempt
        return None

    def get(self, job_id: str) -> JobStatus | None:
        try:
            job, _, rank = self._read_entry(job_id)
        except MalformedJob:
            return None
        status = self._state_of(job_id, job, rank, patient=True)
        if status is None or status.attempt <= 1:
            return status
        return replace(status, attempts=self._failed_attempts(job_id, status.attempt))

    @names_full_disk
    def cancel(self, job_ids: Iterable[str]) -> list[str]:
        cancelled = []
        who = f"cancel-{HOST}-{os.getpid()}-{secrets.token_hex(3)}"
        for job_id in job_ids:
            status = self.get(job_id)
            if status is None or status.state.final:
                continue
            markers = [(self.path(kind, name), *(parse_marker(kind, name) or ("", 0, ""))[1:])
                       for kind, name in self._running_entries(job_id) if kind == "claimed"]
            rank = self._rank_of(job_id)
            markers += [(path, n, "") for n in range(1, self._attempt_bound(status.job) + 1)
                        for path in self._pending_paths(status.job, n, rank)]
            markers.append((self.path("waiting", job_id), 0, ""))
            for marker, attempt, worker in markers:
                fence = self._fence_path(job_id, attempt, who)
                if claim_rename(marker, fence):
                    result = cancelled_result(self.files, status.job, attempt, worker)
                    self._write_final(result)
                    unlink_quiet(fence)
                    cancelled.append(job_id)
                    deps.ended(self, job_id, State.CANCELLED)
                    break
        return cancelled

    @names_full_disk
    def retry(self, job_ids: Iterable[str], *, force: bool = False,
              first: bool = True) -> list[str]:
        """The final result is renamed aside (whoever renames it owns the retry), its
        failed attempts' records too; the jobs that ended because of it wait again
        (deps.py); then the job gets its first marker for attempt 1, at a rank before
        every seq if `first` (the spec says so: a release or reap keeps it)."""
        again = []
        states = (State.FAILED, State.CANCELLED, State.DONE) if force else (State.FAILED,
                                                                             State.CANCELLED)
        for job_id in job_ids:
            for state in states:
                if self._park_final(job_id, state):
                    job = self._job_or_none(job_id)
                    if job is None:  # unreadable spec: a claim fails it, malformed
                        self._to_pending(Job(job_id, job_id, Kind.COMMAND), 1, 0)
                    else:
                        deps.bring_back(self, job)
                        deps.place(self, job, self._set_first(job_id, first))
                    again.append(job_id)
                    break
        return again

    def _park_final(self, job_id: str, state: State) -> bool:
        """Rename the job's `state` result aside (True if this call did), with its failed
        attempts' records and, for a done job, the log its run placed."""
        final = self.path(FINAL_DIRS[state], f"{job_id}.json")
        parked = self.path("attempts", f"{job_id}.retried.{secrets.token_hex(4)}.json")
        if not claim_rename(final, parked):
            return False
        # The fence of the finish that wrote it may outlive it by a group commit;
        # without its result it would look like a running job.
        for kind, name in self._running_entries(job_id):
            if kind == "committing":
                unlink_quiet(self.path(kind, name))
        self._park_failed_attempts(job_id, parked)
        if state is State.DONE:
            self._set_aside_placed_log(job_id, parked)
        return True

    def _set_first(self, job_id: str, first: bool) -> int:
        """Record in the spec whether a retry put the job first; its rank from then on."""
        self._ranks.pop(job_id, None)  # a lease of ours that a cancel took: its rank is old
        spec = self._spec(job_id) or {}
        if bool(spec.get("first")) != first:
            spec = {key: value for key, value in spec.items() if key != "first"}
            if first:
                spec["first"] = True
            atomic_write(self.path("jobs", f"{job_id}.json"), dumps(spec), self.tmp,
                         fsync=self.fsync)
        return spec_rank(spec)

    def _set_aside_placed_log(self, job_id: str, parked: str) -> None:
        """A done job run again: the log its run placed outside our log folder (beside its
        job file, where a log means "done", or at the path the job named) moves into the
        log folder, so the new run can place its own there, never beside an old one."""
        blob = read_bytes(parked)
        try:
            log = Result.from_dict(loads(blob)).log if blob else None
        except (ValueError, KeyError, TypeError):
            return
        if log and Path(log).parent != self.files.local_dir():
            with contextlib.suppress(OSError):
                os.rename(log, self.files.local_dir() / f"{job_id}.retried.{unique_token()}.log")

    @names_full_disk
    def _purge(self) -> int:
        """Markers first (nothing can be claimed any more), then results, records,
        specs and the numbering; the logs results name go with them. Job files stay, and
        our drop-in scanner forgets them, so they are submitted again."""
        removed = sum(1 for name in list_names(self.dirs["jobs"]) if name.endswith(".json"))
        self.files.forget_logs(self.results(), self._attempt_records())
        for kind in ("waiting", "pending", "claimed", "committing", *FINAL_DIRS.values(),
                     "attempts", "reaped", "after", "lanes", "jobs", "blobs", "seq"):
            folder = self.dirs[kind]
            for name in list_names(folder):
                path = folder / name
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    unlink_quiet(path)
        with self._claim_lock:
            self._view.forget()
        self._lanes, self._ranks, self._seq_end = {}, {}, None
        self._dropins = DropIns(self.root, self.settings.interpreters, self.settings.log_name,
                                self.settings.trust.log_dirs)
        if self.fsync:
            sync_filesystem(self.base)
        return removed

    def _attempt_records(self) -> Iterator[Result]:
        for name in list_names(self.dirs["attempts"]):
            blob = read_bytes(self.path("attempts", name))
            with contextlib.suppress(ValueError, KeyError, TypeError):
                if blob is not None:
                    yield Result.from_dict(loads(blob))

    def _park_failed_attempts(self, job_id: str, parked: str) -> None:
        """A retried job starts afresh: its old failed attempts' records are kept aside,
        not shown as the new run's (up to the attempt its final result names)."""
        try:
            last = int(loads(read_bytes(parked) or b"{}").get("attempt", 0))
        except (ValueError, TypeError, AttributeError):  # unreadable: nothing to set aside
            return
        tag = parked.rsplit(".", 2)[-2]  # the retry's token
        for attempt in range(1, last + 1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path("attempts", f"{job_id}.{attempt}.json"),
                           self.path("attempts", f"{job_id}.{attempt}.retried.{tag}.json"))

    def jobs(self) -> Iterator[JobStatus]:
        for name in list_names(self.dirs["jobs"]):
            if name.endswith(".json"):
                status = self.get(name[:-5])
                if status is not None:
                    yield status

    def listing(self, states: Collection[State] | None = None,
                limit: int | None = None) -> Iterator[JobStatus]:
        return iter(read_listing(self, states, limit))  # listing.py: a read per job, no get()

    def summaries(self, states: Collection[State] | None = None, limit: int | None = None,
                  offset: int = 0) -> Iterator[JobSummary]:
        return iter(read_summaries(self, states, limit, offset))  # listing's reads, no records

    def _fresh_names(self, kind: str) -> list[str]:
        """The names in a state folder that shoal made there (stray files left out)."""
        refresh_listing(self.dirs[kind])
        return [name for name in list_names(self.dirs[kind]) if is_record(kind, name)]

    def strays(self) -> dict[str, list[str]]:
        return stray_files(self.layout)  # strays.py

    def _pending_blocks(self) -> Iterator[tuple[Path | None, list[str]]]:
        """The pending markers lane by lane, block by block (lanes.py), as names under
        pending/; each block is listed fresh when the caller gets to it, so one that
        stops early reads little."""
        for _, folder, prefix in lane_folders(self.dirs["pending"]):
            yield from lane_blocks(folder, prefix)

    def _pending_names(self) -> list[str]:
        """Every pending marker, in order."""
        return [name for _, names in self._pending_blocks() for name in names]

    def counts(self) -> dict[State, int]:
        counts = dict.fromkeys(State, 0)
        counts[State.PENDING] = sum(len(names) for _, names in self._pending_blocks())
        counts[State.WAITING] = len(self._fresh_names("waiting"))
        final: set[str] = set()
        for state, folder in FINAL_DIRS.items():
            names = self._fresh_names(folder)
            counts[state] = len(names)
            final.update(name[:-5] for name in names)
        # A fence outlives its result by a group commit; such a job is already final.
        counts[State.RUNNING] = len({name.split(".")[0] for kind in ("claimed", "committing")
                                     for name in self._fresh_names(kind)} - final)
        return counts

    def states(self, job_ids: Iterable[str]) -> dict[str, State]:
        """Cheap for many ids: a few directory listings instead of a lookup per job."""
        wanted = set(job_ids)
        pending = set()
        for name in self._pending_names():
            parsed = parse_pending(name)
            if parsed is not None:
                pending.add(parsed[0])
        found = dict.fromkeys(wanted & set(self._fresh_names("waiting")), State.WAITING)
        found.update(dict.fromkeys(wanted & pending, State.PENDING))
        for kind in ("claimed", "committing"):
            for name in self._fresh_names(kind):
                if name.split(".")[0] in wanted:
                    found[name.split(".")[0]] = State.RUNNING
        for state, folder in FINAL_DIRS.items():
            for name in self._fresh_names(folder):
                if name[:-5] in wanted:
                    found[name[:-5]] = state
        return found

    def _final_results(self, job_ids: list[str]) -> list[Result]:
        """A stat per id for a few ids; listings of the final folders for many."""
        if len(job_ids) > 64:
            wanted = set(job_ids)
            final = [name[:-5] for folder in FINAL_DIRS.values()
                     for name in self._fresh_names(folder) if name[:-5] in wanted]
        else:
            final = [i for i in job_ids if any(os.path.exists(self.path(folder, f"{i}.json"))
                                               for folder in FINAL_DIRS.values())]
        found = [self._final_result(job_id) for job_id in final]
        return [result for result in found if result is not None]

    def _watch_once(self, ids: WatchSet) -> list[Result]:
        """The finals this process wrote since the last look (finals.py) and the ids added
        since; every so often a full scan, which finds other processes' finals too."""
        fresh = ids.take_added()
        kept = ids.mark[1] if ids.mark is not None and ids.mark[0] is self else None
        mark = cast("WatchMark | None", kept)  # only this method marks a WatchSet for us
        noted = self._finals.since(mark.end) if mark is not None else None
        began = time.monotonic()
        if mark is None or noted is None or began >= mark.next_scan:
            end = self._finals.end()  # finals noted while we scan are looked at next time
            landed = self._final_results(list(ids))
            # another process's final: one we did not note, before or during the scan
            since = None if mark is None or noted is None else self._finals.since(mark.end)
            if since is not None and {r.job_id for r in landed} - set(since[0]):
                self._finals.last_foreign = time.monotonic()
            next_scan = time.monotonic() + self._finals.scan_pause(time.monotonic() - began)
        else:
            ended, end = noted
            ours = {i for i in ended if i in ids}  # final: their records are read at once
            landed = [r for r in map(self._final_result, ours) if r is not None]
            added = [i for i in fresh if i in ids and i not in ours]
            landed += self._final_results(added) if added else []
            next_scan = mark.next_scan
        ids.mark = (self, WatchMark(end, next_scan))
        return list({r.job_id: r for r in landed}.values())

    def is_drained(self) -> bool:
        """No job pending or running; a queue whose folder went away (moved or deleted
        under a running worker) is not drained but gone: its readers see no job there."""
        if any(self._fresh_names(kind) for kind in ("claimed", "committing")):
            return False
        if not self._nothing_pending():
            return False
        if not os.path.isdir(self.dirs["pending"]):
            raise QueueUnavailable(f"{self.base}: the queue's folder is gone (moved or "
                                   "deleted while in use)")
        return True

    def _nothing_pending(self) -> bool:
        """No pending marker, read block by block until one is found."""
        return not any(names for _, names in self._pending_blocks())

    def results(self) -> Iterator[Result]:
        """Every final record, a corrupt one as a failure (`_corrupt`)."""
        for state, folder in FINAL_DIRS.items():
            for name in list_names(self.dirs[folder]):
                job_id = final_id(name)
                result = self._record(state, job_id) if job_id is not None else None
                if result is not None:
                    yield result

    # -- reaping ----------------------------------------------------------------

    @names_full_disk
    def reap(self) -> list[Reaped]:
        """Take back leases of workers judged dead, leave a record of each in reaped/,
        and report the records of the last reaped_keep_s (by any host)."""
        records: dict[str, dict] = {}  # one read per worker per reap, however many leases
        for kind in ("claimed", "committing"):
            for name in list_names(self.dirs[kind]):
                parsed = parse_marker(kind, name)
                if parsed is None:
                    continue
                job_id, attempt, worker = parsed
                if worker not in records:
                    records[worker] = self.registry.record(worker)
                if not self.registry.observer.dead(worker, records[worker].get("beat")):
                    continue
                if self._reap_entry(self.path(kind, name), job_id, attempt, worker):
                    self._log_reap(Reaped(job_id, worker, attempt,
                                          str(records[worker].get("host", ""))))
        return self._recent_reaps()

    def _reap_entry(self, marker: str, job_id: str, attempt: int, worker: str) -> bool:
        if self._final_result(job_id, quarantine=True) is not None:  # recorded: tidy up
            unlink_quiet(marker)
            return False
        try:
            job, _, rank = self._read_entry(job_id)
        except MalformedJob:
            job, rank = Job(job_id, job_id, Kind.COMMAND), 0  # a claim fails it, malformed
        if attempt == 0:  # the fence of a waiting job whose ender died: it waits again
            if claim_rename(marker, self.path("waiting", job_id)):
                deps.settle(self, job)
            return False
        if attempt < job.max_attempts:
            return self._to_pending(job, attempt + 1, rank, marker)
        fence = self._fence_path(job_id, attempt, worker)
        if not claim_rename(marker, fence):
            return False
        failed = Result(job_id, State.FAILED, name=job.name, params=job.params,
                        reason=lost_reason(attempt, worker), attempt=attempt, worker=worker)
        self._write_final(failed)
        unlink_quiet(fence)
        deps.ended(self, job_id, State.FAILED)
        return True

    def _log_reap(self, record: Reaped) -> None:
        path = self.path("reaped", f"{record.job_id}.{record.attempt}.{record.worker}")
        try:
            atomic_write(path, dumps(record.to_dict()), self.tmp, fsync=False)
        except FileNotFoundError:  # a queue made before reaped/ existed
            make_dir(self.dirs["reaped"])
            atomic_write(path, dumps(record.to_dict()), self.tmp, fsync=False)

    def _recent_reaps(self) -> list[Reaped]:
        """The records in reaped/ younger than reaped_keep_s on the file server's clock;
        older ones are removed (by whoever sees them first)."""
        names = self._fresh_names("reaped")
        if not names:
            return []
        oldest = self.layout.server_now() - reaped_keep_s(self.settings.lease_s)
        found = []
        for name in sorted(names):
            path = self.path("reaped", name)
            try:
                with open(path, "rb") as handle:  # open: fresh attributes even on NFS
                    young = os.fstat(handle.fileno()).st_mtime >= oldest
                    record = Reaped.from_dict(loads(handle.read())) if young else None
            except (FileNotFoundError, ValueError, TypeError):
                continue
            if record is None:
                unlink_quiet(path)
            else:
                found.append(record)
        return found

    # -- workers and control (registry.py) -------------------------------------------

    @names_full_disk
    def unregister(self, worker: str) -> None:
        self.registry.unregister(worker)

    def workers(self) -> list[WorkerInfo]:
        return self.registry.workers()

    @names_full_disk
    def send_control(self, worker: str, command: str) -> None:
        self.registry.send_control(worker, command)

    # -- drop-in job files -----------------------------------------------------------

    @names_full_disk
    def refresh(self) -> None:
        """Submit job files dropped into the folder since the last look, and run again
        the done ones whose log is gone (dropins.py)."""
        refresh_listing(self.root)
        found = self._dropins.scan()
        to_submit = found.fresh + found.unlogged  # unlogged: done, or skipped for an old log
        new = set(self.submit(to_submit)) if to_submit else set()
        if not found.waiting:
            return
        done = {name[:-5] for name in self._fresh_names("done")}
        again = [found.waiting[job_id] for job_id in (found.waiting.keys() & done) - new]
        again = [job for job in again if self._lost_its_log(job)]
        if again:
            self.retry([job.id for job in again], force=True)

    def _lost_its_log(self, job: Job) -> bool:
        """Done, yet neither a log beside it nor its recorded log is there. Looked at
        after the state: a finish places the log before it writes the result, so a job
        that finished after the folder was listed has its log by now."""
        status = self.get(job.id)
        if status is None or status.state is not State.DONE or status.result is None:
            return False
        name = job.path or ""
        if self._dropins.logged(name):
            self._dropins.mark(name, LOGGED)
            return False
        if not status.result.log or os.path.exists(status.result.log):
            self._dropins.mark(name, ELSEWHERE)  # not asked again at every scan
            return False
        return True
