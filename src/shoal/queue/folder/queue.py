"""FolderQueue: the state machine of a queue in a folder (paths in layout.py).

Whoever renames a job's marker away owns its next transition, so a worker whose
lease was reaped (or cancelled) finds its claimed name gone and its result is
refused. Workers and their liveness are registry.py's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from ... import defaults
from ...dropins import ELSEWHERE, LOGGED, DropIns
from ...errors import LeaseLost, MalformedJob
from ...fsutil import (
    HOST,
    atomic_write,
    claim_rename,
    list_names,
    read_bytes,
    sync_filesystem,
    touch_exclusive,
    unique_token,
    unlink_quiet,
    write_new,
)
from ...job import Beat, Job, JobStatus, Lease, Reaped, Result, State, WorkerInfo, dumps, loads
from ..base import Queue, blobs_of, lost_reason, poll, reaped_keep_s
from ..files import LocalFiles, check_log_name
from ..settings import QueueSettings
from .groupcommit import GroupCommit
from .layout import FINAL_DIRS, Layout, parse_marker, refresh_listing
from .registry import WorkerRegistry

log = logging.getLogger(__name__)

STATE_READS = 5  # looks at a job that moved while get() read its state (see _state_of)


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
        config = self.layout.read_config()
        settings = QueueSettings(
            lease_s=float(lease_s or config.get("lease_s", defaults.LEASE_S)),
            seed=config.get("seed", 0),
            interpreters={**defaults.INTERPRETERS, **config.get("interpreters", {})},
            root=self.root,
            log_cap_bytes=log_cap_bytes or config.get("log_cap_bytes"),
            log_name=check_log_name(config.get("log_name", defaults.LOG_NAME),
                                    str(self.base / "queue.toml")))
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
        self._batch: list[str] = []
        self._claim_lock = threading.Lock()
        self._commits = GroupCommit(self.base)
        self._dropins = DropIns(self.root, self.settings.interpreters, self.settings.log_name)

    # -- submit ---------------------------------------------------------------

    def submit(self, jobs: Iterable[Job]) -> list[str]:
        """Write every blob, spec and marker, then make them durable with one sync."""
        jobs = list(jobs)
        self._write_blobs(blobs_of(jobs))
        new = []
        for job in jobs:
            spec = self.path("jobs", f"{job.id}.json")
            # The spec is complete and closed before its pending marker exists, and only
            # a marker leads anyone to read it, so an exclusive create needs no temp name.
            if write_new(spec, dumps(job.to_dict())):
                touch_exclusive(self.path("pending", f"{job.id}.1"))
                new.append(job.id)
            elif self._state_of(job.id, job) is None:
                # A submitter died between writing the spec and the marker: repair.
                atomic_write(spec, dumps(job.to_dict()), self.tmp, fsync=False)
                touch_exclusive(self.path("pending", f"{job.id}.1"))
                new.append(job.id)
        if new and self.fsync:
            sync_filesystem(self.base)
        return new

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
            path.parent.mkdir(exist_ok=True)  # a queue made before blobs existed
            atomic_write(path, blob, self.tmp, fsync=False)  # the caller's sync covers it
            wrote = True
        return wrote

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
        blob = read_bytes(self.path("jobs", f"{job_id}.json"))
        if blob is None:
            raise MalformedJob(f"{self.path('jobs', job_id + '.json')}: job spec is missing")
        try:
            return Job.from_dict(loads(blob))
        except (ValueError, TypeError, KeyError) as exc:
            raise MalformedJob(f"{self.path('jobs', job_id + '.json')}: {exc}") from exc

    # -- claim ----------------------------------------------------------------

    def claim(self, worker: str, n: int = 1, *, wait_s: float = 0.0) -> list[Lease]:
        return poll(lambda: self._claim_some(worker, n), wait_s)

    def _claim_some(self, worker: str, n: int) -> list[Lease]:
        # One claimer at a time per process: slots of one worker share its claimed/ names,
        # and the NFS retransmit check in claim_rename is only sound for a name that a
        # single claimer renames into.
        with self._claim_lock:
            return self._claim_locked(worker, n)

    def _claim_locked(self, worker: str, n: int) -> list[Lease]:
        leases: list[Lease] = []
        for refill in (False, True):
            if refill:
                if leases:
                    break
                self._refill_batch()
            while self._batch and len(leases) < n:
                lease = self._try_claim(self._batch.pop(), worker)
                if lease is not None:
                    leases.append(lease)
        return leases

    def _refill_batch(self) -> None:
        """Read up to CLAIM_BATCH pending names: cost independent of how many wait."""
        refresh_listing(self.dirs["pending"])
        names = []
        try:
            with os.scandir(self.dirs["pending"]) as entries:
                for entry in entries:
                    if not entry.name.startswith("."):
                        names.append(entry.name)
                        if len(names) >= defaults.CLAIM_BATCH:
                            break
        except FileNotFoundError:
            return
        random.shuffle(names)  # workers reading the same listing rarely collide
        self._batch = names

    def _try_claim(self, name: str, worker: str) -> Lease | None:
        job_id, _, attempt_text = name.partition(".")
        claimed = self.path("claimed", f"{name}.{worker}")
        if not attempt_text.isdigit() or not claim_rename(self.path("pending", name), claimed):
            return None
        attempt = int(attempt_text)
        try:
            job = self._read_job(job_id)
        except MalformedJob as exc:
            self._fail_unreadable(job_id, attempt, worker, claimed, str(exc))
            return None
        return Lease(job, attempt, worker, f"{attempt}.{worker}")

    def _fail_unreadable(self, job_id: str, attempt: int, worker: str, claimed: str,
                         reason: str) -> None:
        fence = self._fence_path(job_id, attempt, worker)
        if claim_rename(claimed, fence):
            result = Result(job_id, State.FAILED, reason=f"malformed: {reason}",
                            attempt=attempt, worker=worker, host=HOST)
            self._write_final(result)
            unlink_quiet(fence)

    # -- beat, finish, release -----------------------------------------------

    def _fence_path(self, job_id: str, attempt: int, owner: str) -> str:
        """committing/ID.ATT.OWNER.NONCE: a name nobody else (nor an earlier call) uses, so
        claim_rename's NFS retransmit check cannot mistake another fence for ours."""
        return self.path("committing", f"{job_id}.{attempt}.{owner}.{unique_token()}")

    def _claimed_path(self, lease: Lease) -> str:
        return self.path("claimed", f"{lease.job_id}.{lease.attempt}.{lease.worker}")

    def beat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        """Rewrite the worker's record with a new beat counter (which is what keeps its
        leases alive here), report the leases whose claimed marker is gone, take its
        commands."""
        self.registry.write_beat(info)
        lost = tuple(lease for lease in leases if not os.path.exists(self._claimed_path(lease)))
        return Beat(lost, self.registry.take_commands(info.id))

    def _fence(self, lease: Lease) -> str:
        claimed = self._claimed_path(lease)
        fence = self._fence_path(lease.job_id, lease.attempt, lease.worker)
        if not claim_rename(claimed, fence):
            raise LeaseLost(f"job {lease.job_id} attempt {lease.attempt}: lease of "
                            f"{lease.worker} expired or the job was cancelled")
        return fence

    def finish(self, lease: Lease, result: Result, *, then_claim: int = 0) -> list[Lease]:
        """Fence, place the log, write the result (its fence goes once it is durable),
        then claim up to `then_claim` next jobs."""
        fence = self._fence(lease)
        result = self.files.place_log(lease, result)
        self._write_final(result, fsync=False)
        if self.fsync:
            self._commits.add(fence)  # see groupcommit.py
        else:
            unlink_quiet(fence)
        return self._claim_next(lease, then_claim)

    def flush(self) -> None:
        self._commits.flush()

    def close(self) -> None:
        self._commits.close()

    def _write_final(self, result: Result, *, fsync: bool | None = None) -> None:
        folder = self.dirs[FINAL_DIRS[result.state]]
        atomic_write(folder / f"{result.job_id}.json", dumps(result.to_dict()), self.tmp,
                     fsync=self.fsync if fsync is None else fsync)

    def release(self, lease: Lease, *, failed: Result | None = None) -> None:
        """With `failed`, its record is written first (a stale holder's record is later
        overwritten by the current holder's), then the marker moves to the next attempt."""
        attempt = lease.attempt
        if failed is not None:
            record = self.path("attempts", f"{lease.job_id}.{attempt}.json")
            atomic_write(record, dumps(failed.to_dict()), self.tmp, fsync=False)
            attempt += 1
        target = self.path("pending", f"{lease.job_id}.{attempt}")
        if not claim_rename(self._claimed_path(lease), target):
            raise LeaseLost(f"job {lease.job_id} attempt {lease.attempt}: lease lost")

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
            job_id, attempt, worker = parse_marker("claimed", name)
            yield job_id, int(attempt), worker

    # -- cancel, retry, inspect -------------------------------------------------

    def _attempt_bound(self, job: Job) -> int:
        return max(job.max_attempts, job.retries + 1) + 1

    def _running_entries(self, job_id: str) -> list[tuple[str, str]]:
        prefix = job_id + "."
        return [(kind, name) for kind in ("claimed", "committing")
                for name in list_names(self.dirs[kind]) if name.startswith(prefix)]

    def _final_result(self, job_id: str, *, quarantine: bool = False) -> Result | None:
        """The job's final result; an unreadable one (a crash before its group commit)
        counts as none, and with `quarantine` is moved aside so the job can run again."""
        for folder in FINAL_DIRS.values():
            path = self.path(folder, f"{job_id}.json")
            blob = read_bytes(path)
            if blob is None:
                continue
            try:
                return Result.from_dict(loads(blob))
            except (ValueError, KeyError, TypeError):
                if quarantine:
                    claim_rename(path, self.path("attempts", f"{job_id}.corrupt."
                                                 f"{secrets.token_hex(4)}.json"))
        return None

    def _state_of(self, job_id: str, job: Job) -> JobStatus | None:
        # A job is always in one place, but a rename can move it while we look in one
        # folder after another (claimed before we look there, back to pending after):
        # found nowhere means it moved, so look again.
        for _ in range(STATE_READS):
            status = self._state_once(job_id, job)
            if status is not None:
                return status
        return None

    def _state_once(self, job_id: str, job: Job) -> JobStatus | None:
        result = self._final_result(job_id)
        if result is not None:
            return JobStatus(job, result.state, result.attempt, result.worker or None, result)
        for kind, name in self._running_entries(job_id):
            _, attempt, worker = parse_marker(kind, name)
            return JobStatus(job, State.RUNNING, int(attempt), worker)
        for attempt in range(1, self._attempt_bound(job) + 1):
            if os.path.exists(self.path("pending", f"{job_id}.{attempt}")):
                return JobStatus(job, State.PENDING, attempt)
        return None

    def get(self, job_id: str) -> JobStatus | None:
        try:
            job = self._read_job(job_id)
        except MalformedJob:
            return None
        status = self._state_of(job_id, job)
        if status is None or status.attempt <= 1:
            return status
        return replace(status, attempts=self._failed_attempts(job_id, status.attempt))

    def cancel(self, job_ids: Iterable[str]) -> list[str]:
        cancelled = []
        who = f"cancel-{HOST}-{os.getpid()}-{secrets.token_hex(3)}"
        for job_id in job_ids:
            status = self.get(job_id)
            if status is None or status.state.final:
                continue
            markers = [self.path(kind, name) for kind, name in self._running_entries(job_id)
                       if kind == "claimed"]
            markers += [self.path("pending", f"{job_id}.{n}")
                        for n in range(1, self._attempt_bound(status.job) + 1)]
            for marker in markers:
                attempt = os.path.basename(marker).split(".")[1]
                fence = self._fence_path(job_id, int(attempt), who)
                if claim_rename(marker, fence):
                    result = Result(job_id, State.CANCELLED, name=status.job.name,
                                    params=status.job.params, attempt=int(attempt),
                                    reason="cancelled by user")
                    self._write_final(result)
                    unlink_quiet(fence)
                    cancelled.append(job_id)
                    break
        return cancelled

    def retry(self, job_ids: Iterable[str]) -> list[str]:
        again = []
        for job_id in job_ids:
            for state in (State.FAILED, State.CANCELLED):
                final = self.path(FINAL_DIRS[state], f"{job_id}.json")
                parked = self.path("attempts", f"{job_id}.retried.{secrets.token_hex(4)}.json")
                if claim_rename(final, parked):
                    self._park_failed_attempts(job_id, parked)
                    touch_exclusive(self.path("pending", f"{job_id}.1"))
                    again.append(job_id)
                    break
        return again

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

    def _fresh_names(self, kind: str) -> list[str]:
        refresh_listing(self.dirs[kind])
        return list_names(self.dirs[kind])

    def counts(self) -> dict[State, int]:
        counts = dict.fromkeys(State, 0)
        counts[State.PENDING] = len(self._fresh_names("pending"))
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
        found = dict.fromkeys(wanted & {n.split(".")[0] for n in self._fresh_names("pending")},
                              State.PENDING)
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

    def is_drained(self) -> bool:
        for kind in ("pending", "claimed", "committing"):
            refresh_listing(self.dirs[kind])
            with os.scandir(self.dirs[kind]) as entries:
                if any(not entry.name.startswith(".") for entry in entries):
                    return False
        return True

    def results(self) -> Iterator[Result]:
        for folder in FINAL_DIRS.values():
            for name in list_names(self.dirs[folder]):
                blob = read_bytes(self.path(folder, name))
                if blob is not None and name.endswith(".json"):
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        yield Result.from_dict(loads(blob))

    # -- reaping ----------------------------------------------------------------

    def reap(self) -> list[Reaped]:
        """Take back leases of workers judged dead, leave a record of each in reaped/,
        and report the records of the last reaped_keep_s (by any host)."""
        records: dict[str, dict] = {}  # one read per worker per reap, however many leases
        for kind in ("claimed", "committing"):
            for name in list_names(self.dirs[kind]):
                parts = parse_marker(kind, name)
                if len(parts) != 3 or not parts[1].isdigit():
                    continue
                job_id, attempt, worker = parts[0], int(parts[1]), parts[2]
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
            job = self._read_job(job_id)
        except MalformedJob:
            job = Job.command_job("true", name=job_id)
        if attempt < job.max_attempts:
            return claim_rename(marker, self.path("pending", f"{job_id}.{attempt + 1}"))
        fence = self._fence_path(job_id, attempt, worker)
        if not claim_rename(marker, fence):
            return False
        failed = Result(job_id, State.FAILED, name=job.name, params=job.params,
                        reason=lost_reason(attempt, worker), attempt=attempt, worker=worker)
        self._write_final(failed)
        unlink_quiet(fence)
        return True

    def _log_reap(self, record: Reaped) -> None:
        path = self.path("reaped", f"{record.job_id}.{record.attempt}.{record.worker}")
        try:
            atomic_write(path, dumps(record.to_dict()), self.tmp, fsync=False)
        except FileNotFoundError:  # a queue made before reaped/ existed
            self.dirs["reaped"].mkdir(exist_ok=True)
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

    def unregister(self, worker: str) -> None:
        self.registry.unregister(worker)

    def workers(self) -> list[WorkerInfo]:
        return self.registry.workers()

    def send_control(self, worker: str, command: str) -> None:
        self.registry.send_control(worker, command)

    # -- drop-in job files -----------------------------------------------------------

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
            try:
                self.retry([job.id for job in again], force=True)
            except TypeError:  # a Queue.retry without force= (before issue 14's queue part)
                log.warning("%s: cannot run done jobs again whose log was deleted "
                            "(this shoal's retry has no force)", self.root)
                for job in again:
                    self._dropins.mark(job.path or "", ELSEWHERE)

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
