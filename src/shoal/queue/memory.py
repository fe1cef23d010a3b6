"""`memory://`: the whole queue in one process, guarded by one lock.

The reference implementation of the contract: fast default for tests and for
embedding, and the model the other backends are checked against.

Memory is bounded by what is in flight: a job that reaches a final state drops its
pickled arguments, and a function blob goes once no unfinished job names it. A
finished call therefore cannot be retried here (`retry` leaves it alone). Jobs are
numbered by a counter (`JobStatus.seq`) and claimed by the rules of `scheduling`:
pending ones wait in `PendingLanes` (a heap per lane), waiting ones are reached through
a reverse index (dependency -> dependants), so a job ending touches only its own.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import replace

from .. import defaults
from ..errors import LeaseLost
from ..job import Beat, Job, JobStatus, Kind, Lease, Reaped, Result, State, WorkerInfo
from .base import (
    Queue,
    WatchSet,
    blobs_of,
    cancelled_result,
    chosen,
    lost_reason,
    reaped_keep_s,
    running_attempts,
)
from .files import LocalFiles
from .lanes import PendingLanes
from .scheduling import (
    Capacity,
    after_taking,
    check_after,
    dependency_end,
    dependency_reason,
    first_state,
    retry_rank,
)
from .settings import QueueSettings

FINALS_KEPT = 200_000  # ids kept in the journal of finals that watch() reads


class MemoryQueue(Queue):
    """In-process queue; deadlines on this process's monotonic clock."""

    blocking_claim = True
    cross_host = False
    in_process = True

    def __init__(self, url: str = "memory://", *, lease_s: float = defaults.LEASE_S,
                 log_cap_bytes: int | None = None) -> None:
        settings = QueueSettings(lease_s=lease_s, log_cap_bytes=log_cap_bytes)
        # Logs go to a temporary folder that goes with this object.
        super().__init__(url, settings,
                         LocalFiles(settings, running=lambda: running_attempts(self)))
        lock = threading.RLock()
        self._lock = threading.Condition(lock)  # notified when jobs may be claimable
        self._landed = threading.Condition(lock)  # notified when jobs become final
        self._jobs: dict[str, Job] = {}
        self._state: dict[str, State] = {}
        self._attempt: dict[str, int] = {}
        self._pending = PendingLanes()
        self._rank: dict[str, float] = {}  # id -> rank (see scheduling): seq, or below
        self._dependants: dict[str, list[str]] = {}  # id -> jobs that name it in `after`
        self._done_upto: dict[str, int] = {}  # waiting id -> its first deps known done
        self._seq: dict[str, int] = {}  # id -> place in submission order
        self._numbers = itertools.count(1)
        self._leases: dict[str, tuple[str, str, float]] = {}  # id -> worker, token, deadline
        self._results: dict[str, Result] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._control: dict[str, list[str]] = {}
        self._tokens = itertools.count(1)
        self._failed_attempts: dict[str, dict[int, Result]] = {}  # id -> attempt -> record
        # Reaps by anyone, newest last, with when (monotonic): what reap() reports.
        self._reaped: deque[tuple[float, Reaped]] = deque(maxlen=defaults.REAPED_KEEP)
        self._blob_users: dict[str, int] = {}  # digest -> unfinished jobs that name it
        # Ids of jobs as they became final, for watch(); item i has position _finals_start + i.
        self._finals: list[str] = []
        self._finals_start = 0

    def submit(self, jobs: Iterable[Job]) -> list[str]:
        with self._lock:
            fresh: dict[str, Job] = {}
            for job in jobs:
                if job.id not in self._jobs:
                    fresh.setdefault(job.id, job)
            waits = [job for job in fresh.values() if job.after]
            if waits:
                check_after(fresh.values(), lambda ids: {i for i in ids if i in self._jobs})
            self._put_blobs_locked(blobs_of(fresh.values()))
            for job in fresh.values():
                job_id = job.id
                self._jobs[job_id] = job
                self._attempt[job_id] = 1
                seq = self._seq[job_id] = next(self._numbers)
                if job.after:
                    self._state[job_id] = State.WAITING  # until placed below
                    for dep in job.after:
                        self._dependants.setdefault(dep, []).append(job_id)
                else:
                    self._state[job_id] = State.PENDING
                    self._rank[job_id] = seq
                    self._pending.push(job, seq)
                for digest in job.blob_refs:
                    self._blob_users[digest] = self._blob_users.get(digest, 0) + 1
            for job in waits:  # jobs of this submission count as not final yet
                if not self._state[job.id].final:  # (not ended with one placed before it)
                    self._place_locked(job.id, self._seq[job.id])
            if fresh:
                self._lock.notify_all()
        return list(fresh)

    def _place_locked(self, job_id: str, rank: float) -> bool:
        """Start a job afresh as its dependencies say: pending at `rank`, waiting, or
        ended at once because one of them failed or was cancelled. True unless ended."""
        job = self._jobs[job_id]
        self._rank[job_id] = rank  # kept while it waits: a job a retry put first stays first
        deps = {dep: self._state[dep] for dep in job.after}
        state = first_state(deps)
        if state is State.PENDING:
            self._to_pending(job_id, self._attempt[job_id], rank)
        elif state is State.WAITING:
            self._state[job_id] = State.WAITING
        else:
            ended = dependency_end(deps)
            assert ended is not None
            self._end_by_dependency_locked(job_id, ended[1], ended[0])
            return False
        return True

    def _end_by_dependency_locked(self, job_id: str, dep_id: str, state: State) -> None:
        """End a job that will never run because `dep_id` ended in `state`."""
        self._set_final_locked(job_id, self._unrun(job_id, dep_id, state))

    def _unrun(self, job_id: str, dep_id: str, state: State) -> Result:
        """The result of a job that ends without running because `dep_id` ended so."""
        job = self._jobs[job_id]
        return Result(job_id, state, name=job.name, params=job.params, attempt=0,
                      reason=dependency_reason(dep_id, self._jobs[dep_id].name, state))

    def put_blobs(self, blobs: Mapping[str, bytes]) -> None:
        with self._lock:
            self._put_blobs_locked(blobs)

    def _put_blobs_locked(self, blobs: Mapping[str, bytes]) -> None:
        for digest, blob in blobs.items():
            self._blobs.setdefault(digest, blob)

    def get_blob(self, digest: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(digest)

    def _set_final_locked(self, job_id: str, result: Result) -> None:
        """Record a final result, then release or end the jobs waiting for this one (and
        theirs in turn): one pass over the reverse index, no recursion."""
        self._record_final_locked(job_id, result)
        ended = [job_id]
        while ended:
            dep_id = ended.pop()
            state = self._state[dep_id]
            for waiting in self._dependants.get(dep_id, ()):
                if self._state[waiting] is not State.WAITING:
                    continue
                if state is not State.DONE:
                    self._record_final_locked(waiting, self._unrun(waiting, dep_id, state))
                    ended.append(waiting)
                elif self._all_done_locked(waiting):
                    self._to_pending(waiting, self._attempt[waiting],
                                     self._rank.get(waiting, self._seq[waiting]))

    def _all_done_locked(self, job_id: str) -> bool:
        """Whether every dependency of a waiting job is done, looking only past the ones
        seen done before: a reduce over n jobs costs O(n) in all, not O(n) per finish."""
        after = self._jobs[job_id].after
        upto = self._done_upto.get(job_id, 0)
        while upto < len(after) and self._state[after[upto]] is State.DONE:
            upto += 1
        if upto < len(after):
            self._done_upto[job_id] = upto
            return False
        self._done_upto.pop(job_id, None)
        return True

    def _record_final_locked(self, job_id: str, result: Result) -> None:
        """Record a final result and let go of what only running the job needed."""
        self._pending.discard(job_id)
        self._done_upto.pop(job_id, None)
        self._results[job_id] = result
        self._state[job_id] = result.state
        self._finals.append(job_id)
        self._landed.notify_all()
        if len(self._finals) > FINALS_KEPT:  # a watcher this far behind scans its ids
            del self._finals[:FINALS_KEPT // 2]
            self._finals_start += FINALS_KEPT // 2
        job = self._jobs[job_id]
        if job.payload is None and not job.blobs:
            return
        self._jobs[job_id] = replace(job, payload=None, blobs={})
        for digest in job.blob_refs:
            users = self._blob_users.get(digest, 0) - 1
            if users > 0:
                self._blob_users[digest] = users
            else:
                self._blob_users.pop(digest, None)
                self._blobs.pop(digest, None)

    def claim(self, worker: str, n: int = 1, *, wait_s: float = 0.0,
              fit: Capacity | None = None) -> list[Lease]:
        deadline = time.monotonic() + wait_s
        with self._lock:
            while True:
                leases = self._claim_locked(worker, n, fit)
                remaining = deadline - time.monotonic()
                if leases or remaining <= 0:
                    break
                self._lock.wait(min(remaining, self.settings.lease_s / 2))
        return leases

    def _claim_locked(self, worker: str, n: int, fit: Capacity | None) -> list[Lease]:
        leases: list[Lease] = []
        while len(leases) < n:
            job_id = self._pending.pop(fit)
            if job_id is None:
                break
            fit = after_taking(fit, self._jobs[job_id])
            attempt = self._attempt[job_id]
            token = f"{attempt}.{next(self._tokens)}"
            self._leases[job_id] = (worker, token, time.monotonic() + self.settings.lease_s)
            self._state[job_id] = State.RUNNING
            leases.append(Lease(self._jobs[job_id], attempt, worker, token,
                                self._seq.get(job_id, 0)))
        return leases

    def beat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        lost = []
        with self._lock:
            now = time.monotonic()
            self._workers[info.id] = (info, now)
            for lease in leases:
                if self._current(lease):
                    owner, token, _ = self._leases[lease.job_id]
                    self._leases[lease.job_id] = (owner, token, now + self.settings.lease_s)
                else:
                    lost.append(lease)
            commands = self._control.pop(info.id, [])
        return Beat(tuple(lost), tuple(commands))

    def _current(self, lease: Lease) -> bool:
        held = self._leases.get(lease.job_id)
        return held is not None and held[1] == lease.token

    def _end_lease(self, lease: Lease) -> None:
        if not self._current(lease):
            raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer current")
        del self._leases[lease.job_id]

    def finish(self, lease: Lease, result: Result, *, then_claim: int = 0,
               fit: Capacity | None = None) -> list[Lease]:
        with self._lock:
            self._end_lease(lease)
            result = self.files.place_log(lease, result)
            self._set_final_locked(lease.job_id, result)
            return self._claim_locked(lease.worker, then_claim, fit) if then_claim > 0 else []

    def release(self, lease: Lease, *, failed: Result | None = None) -> None:
        with self._lock:
            self._end_lease(lease)
            job_id = lease.job_id
            attempt = self._attempt[job_id]
            if failed is not None:
                self._failed_attempts.setdefault(job_id, {})[attempt] = failed
                attempt += 1
            self._to_pending(job_id, attempt, self._rank[job_id])

    def _to_pending(self, job_id: str, attempt: int, rank: float) -> None:
        self._attempt[job_id] = attempt
        self._state[job_id] = State.PENDING
        self._rank[job_id] = rank
        self._pending.push(self._jobs[job_id], rank)
        self._lock.notify_all()

    def cancel(self, job_ids: Iterable[str]) -> list[str]:
        with self._lock:
            asked = [i for i in dict.fromkeys(job_ids)
                     if i in self._state and not self._state[i].final]
            for job_id in asked:
                if self._state[job_id].final:
                    continue  # cancelled with a job it waited for, earlier in the list
                lease = self._leases.pop(job_id, None)
                self._set_final_locked(job_id, cancelled_result(
                    self.files, self._jobs[job_id], self._attempt[job_id],
                    lease[0] if lease is not None else ""))
        return asked

    def retry(self, job_ids: Iterable[str], *, force: bool = False,
              first: bool = True) -> list[str]:
        again = []
        retried = (State.FAILED, State.CANCELLED, State.DONE) if force else (State.FAILED,
                                                                             State.CANCELLED)
        with self._lock:
            for job_id in job_ids:
                if self._state.get(job_id) not in retried or not self._runnable(job_id):
                    continue
                seq = self._seq[job_id]
                if self._start_again(job_id, retry_rank(seq, first)):
                    self._bring_back_locked(job_id)
                    again.append(job_id)
        return again

    def _runnable(self, job_id: str) -> bool:
        """False for a call whose arguments were dropped when it ended."""
        job = self._jobs[job_id]
        return not (job.kind is Kind.CALL and job.payload is None)

    def _start_again(self, job_id: str, rank: float) -> bool:
        """A final job afresh (no result, no old attempt records) where its dependencies
        put it; False if one of them ended it again at once."""
        del self._results[job_id]
        self._failed_attempts.pop(job_id, None)
        self._attempt[job_id] = 1
        for waiting in self._dependants.get(job_id, ()):  # it may have been done: look again
            self._done_upto.pop(waiting, None)
        return self._place_locked(job_id, rank)

    def _bring_back_locked(self, job_id: str) -> None:
        """The jobs that ended without running because `job_id` failed or was cancelled
        (and theirs in turn) start again: `job_id` is not final any more."""
        back = [job_id]
        while back:
            dep_id = back.pop()
            dep_name = self._jobs[dep_id].name
            for waiting in self._dependants.get(dep_id, ()):
                result = self._results.get(waiting)
                if (result is not None and result.attempt == 0 and self._runnable(waiting)
                        and result.reason == dependency_reason(dep_id, dep_name, result.state)
                        and self._start_again(waiting, self._seq[waiting])):
                    back.append(waiting)

    def _purge(self) -> int:
        with self._lock:
            removed = len(self._jobs)
            self.files.forget_logs(self._results.values(),
                                   (r for records in self._failed_attempts.values()
                                    for r in records.values()))
            for kept in (self._jobs, self._state, self._attempt, self._seq, self._leases,
                         self._results, self._failed_attempts, self._blob_users, self._blobs,
                         self._rank, self._dependants, self._done_upto):
                kept.clear()
            self._pending.clear()
            self._reaped.clear()
            self._numbers = itertools.count(1)
            self._landed.notify_all()
            return removed

    def watch(self, ids: Collection[str], timeout_s: float) -> list[Result]:
        """Answers as soon as a result lands: waits on the condition every final notifies."""
        if not ids and not isinstance(ids, WatchSet):
            return []
        watched = ids if isinstance(ids, WatchSet) else WatchSet(ids)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                found = self._watch_once(watched)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self._landed.wait(remaining)

    def _final_results(self, job_ids: list[str]) -> list[Result]:
        with self._lock:
            return [self._results[i] for i in job_ids if i in self._results]

    def _finals_mark(self) -> object | None:
        with self._lock:
            return self._finals_start + len(self._finals)

    def _finals_since(self, mark: object) -> tuple[list[str], object] | None:
        assert isinstance(mark, int)
        with self._lock:
            if mark < self._finals_start:
                return None
            return (self._finals[mark - self._finals_start:],
                    self._finals_start + len(self._finals))

    def get(self, job_id: str) -> JobStatus | None:
        with self._lock:
            if job_id not in self._jobs:
                return None
            return self._status(job_id)

    def _status(self, job_id: str) -> JobStatus:
        held = self._leases.get(job_id)
        attempt = self._attempt[job_id]
        records = self._failed_attempts.get(job_id, {})  # those before a retry() do not count
        return JobStatus(self._jobs[job_id], self._state[job_id], attempt,
                         held[0] if held else None, self._results.get(job_id),
                         tuple(records[n] for n in sorted(records) if n < attempt),
                         self._seq[job_id])

    def jobs(self) -> Iterator[JobStatus]:
        with self._lock:
            statuses = [self._status(job_id) for job_id in self._jobs]
        return iter(statuses)

    def listing(self, states: Collection[State] | None = None,
                limit: int | None = None) -> Iterator[JobStatus]:
        with self._lock:
            leases = self._leases
            statuses = [JobStatus(self._jobs[job_id], state, self._attempt[job_id],
                                  leases[job_id][0] if job_id in leases else None,
                                  self._results.get(job_id), (), self._seq[job_id])
                        for job_id, state in self._state.items()
                        if states is None or state in states]
        return iter(chosen(statuses, None, limit))

    def counts(self) -> dict[State, int]:
        with self._lock:
            counts = dict.fromkeys(State, 0)
            for state in self._state.values():
                counts[state] += 1
        return counts

    def results(self) -> Iterator[Result]:
        with self._lock:
            return iter(list(self._results.values()))

    def reap(self) -> list[Reaped]:
        with self._lock:
            self._reap_locked()
            oldest = time.monotonic() - reaped_keep_s(self.settings.lease_s)
            while self._reaped and self._reaped[0][0] < oldest:
                self._reaped.popleft()
            return [record for _, record in self._reaped]

    def _reap_locked(self) -> None:
        """Take expired leases back (to pending, or failed at the cap) and log each reap."""
        now = time.monotonic()
        expired = [(job_id, held) for job_id, held in self._leases.items() if held[2] < now]
        for job_id, (worker, _token, _deadline) in expired:
            del self._leases[job_id]
            job, attempt = self._jobs[job_id], self._attempt[job_id]
            host = self._workers[worker][0].host if worker in self._workers else ""
            self._reaped.append((now, Reaped(job_id, worker, attempt, host)))
            if attempt >= job.max_attempts:
                self._set_final_locked(job_id, Result(
                    job_id, State.FAILED, name=job.name, params=job.params,
                    reason=lost_reason(attempt, worker), attempt=attempt, worker=worker,
                ))
            else:
                self._to_pending(job_id, attempt + 1, self._rank[job_id])
        if expired:
            self._lock.notify_all()

    def unregister(self, worker: str) -> None:
        with self._lock:
            self._workers.pop(worker, None)
            self._control.pop(worker, None)

    def workers(self) -> list[WorkerInfo]:
        now = time.monotonic()
        with self._lock:
            return [
                replace(info, age_s=now - seen, lost=now - seen > self.settings.lease_s)
                for info, seen in self._workers.values()
            ]

    def send_control(self, worker: str, command: str) -> None:
        with self._lock:
            self._control.setdefault(worker, []).append(command)
            self._lock.notify_all()
