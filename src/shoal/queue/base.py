"""The queue contract every backend keeps.

Guarantees (see docs/architecture.md and RELIABILITY.md):

* `submit` is idempotent by job id, and all or nothing per batch (batches.py: sqlite,
  tcp and Redis read an iterable in batches; a failed one leaves the earlier ones in,
  and says how many).
* A full disk (or a server out of memory) raises `QueueFull` (`NoSpace`): nothing
  half-written; the same call goes through once space returns.
* `claim` hands out a job under a lease; the lease's `token` fences stale owners.
* A lease that no `beat` extends expires: the job goes back to pending with
  attempt + 1, until `job.max_attempts`; then it is failed with a reason that says so.
* `finish` records exactly one final result per job: a stale lease is refused
  with `LeaseLost`, never silently recorded.
* Execution is therefore at-least-once, the recorded outcome exactly-once.
* Jobs are numbered in submission order (`JobStatus.seq`: 1, 2, ...; a resubmitted
  job keeps its number) and claimed in that order (a folder queue: roughly, see
  folder/layout.py).
* `retry` starts final jobs afresh (done ones only with `force`); `purge` empties the
  queue of jobs, results and logs, never of the user's job files.
* Function blobs (pickled callables a call job names by sha256 in `job.blob_refs`)
  come with the jobs in `job.blobs`; `submit` stores each once per queue, before the
  jobs that name it, and `get_blob` gives it back to workers.

Beside the state machine, a queue has `settings` (settings.py: read once at open) and
`files` (files.py: where logs, progress and the shared config live).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from itertools import islice
from typing import ClassVar, TypeVar

from .. import defaults
from ..errors import QueueFull, ShoalError, UsageError
from ..job import Beat, Job, JobStatus, JobSummary, Lease, Reaped, Result, State, WorkerInfo
from .files import JobFiles
from .scheduling import Capacity
from .settings import QueueSettings

T = TypeVar("T")

# Control commands a worker understands.
STOP = "stop"  # finish running jobs, claim no more, exit
STOP_NOW = "stop-now"  # release running jobs back to the queue and exit
CONTROL_COMMANDS = (STOP, STOP_NOW)
CANCELLED = "cancelled by user"  # a cancel's reason


def poll(attempt: Callable[[], list[T]], wait_s: float, *, first_s: float = defaults.POLL_MIN_S,
         most_s: float = defaults.POLL_MAX_S) -> list[T]:
    """Call `attempt` until it returns something or `wait_s` passed, the delay between
    tries doubling from `first_s` to `most_s`: how backends that cannot block wait."""
    deadline = time.monotonic() + wait_s
    delay = first_s
    while True:
        found = attempt()
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, most_s)


def blobs_of(jobs: Iterable[Job]) -> dict[str, bytes]:
    """The function blobs these jobs carry, each once."""
    found: dict[str, bytes] = {}
    for job in jobs:
        if job.blobs:
            found.update(job.blobs)
    return found


def lost_reason(attempts: int, worker: str) -> str:
    """The failure reason when a job's workers kept dying under it."""
    return (
        f"worker died or lost its lease {attempts} time(s) while running this job "
        f"(last: {worker}); giving up after max_attempts={attempts}"
    )


def running_attempts(queue: Queue) -> Iterator[tuple[str, int, str]]:
    """(job id, attempt, worker) of each running job, from `jobs()`: what `LocalFiles`
    reads progress of where the backend has no cheaper listing."""
    for status in queue.jobs():
        if status.state is State.RUNNING and status.worker:
            yield status.job.id, status.attempt, status.worker


def cancelled_result(files: JobFiles, job: Job, attempt: int, worker: str = "") -> Result:
    """The CANCELLED record of `job` at `attempt`; a running one (its `worker` given)
    names that worker and the log its attempt wrote so far (`files.cancelled_log`), so
    `shoal logs` still shows what the job printed before it was killed."""
    log = files.cancelled_log(Lease(job, attempt, worker, "")) if worker else None
    return Result(job.id, State.CANCELLED, name=job.name, params=job.params,
                  reason=CANCELLED, attempt=attempt, worker=worker, log=log)


def listing_order(status: JobStatus) -> tuple[int, str]:
    """Submission order: seq, then name (jobs a backend could not number have seq 0)."""
    return status.seq, status.job.name


def chosen(statuses: Iterable[JobStatus], states: Collection[State] | None,
           limit: int | None) -> list[JobStatus]:
    """What `listing` returns, from statuses read in any order: those in `states` (all if
    None), in submission order, at most `limit`."""
    if states is not None:
        states = frozenset(states)
        statuses = [s for s in statuses if s.state in states]
    return page_of(sorted(statuses, key=listing_order), limit)


def page_of(ordered: list[T], limit: int | None, offset: int = 0) -> list[T]:
    """At most `limit` (None: all) of `ordered`, from place `offset` on (a negative one
    counts as 0): how `summaries` cuts a page out of rows already in order."""
    start = max(offset, 0)
    return ordered[start:] if limit is None else ordered[start:start + max(limit, 0)]


def search_text(job: Job) -> str:
    """What `Queue.search` looks in, lower case: the name, the id and each parameter
    written `name=value`."""
    params = "\n".join(f"{name}={value}" for name, value in job.params.items())
    return f"{job.name}\n{job.id}\n{params}".lower()


def reaped_keep_s(lease_s: float) -> float:
    """How long `reap` keeps reporting a reap (see defaults.REAPED_KEEP_S)."""
    return max(defaults.REAPED_KEEP_S, lease_s)


class GroupLost(ShoalError):
    """A `Queue.group` that could not be committed: none of the writes made in it happened."""


class WatchSet(set):
    """Job ids a caller watches across many `watch` calls (the Executor's pending calls).

    It remembers the ids added since a backend last looked and where that backend had
    read its journal of finals up to, so a `watch` costs what changed since the last
    call, not a scan of every id: with 10^5 ids watched, a scan per result landing would
    make `Executor.map` quadratic. Each result is reported by the call that first sees
    it (rarely twice, in a race): the caller removes the ids it got, and adds an id again
    to hear of it again (a job retried since).
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        super().__init__(ids)
        self.added: set[str] = set(self)  # not yet looked at by a backend
        self.mark: tuple[Queue, object] | None = None  # (backend, its journal position)
        self.paced_until = 0.0  # no full scan before this (monotonic)
        self._guard = threading.Lock()  # one thread adds while another watches

    def add(self, job_id: str) -> None:
        with self._guard:
            super().add(job_id)
            self.added.add(job_id)

    def update(self, *more: Iterable[str]) -> None:
        for ids in more:
            for job_id in ids:
                self.add(job_id)

    def __ior__(self, other: AbstractSet[str]) -> WatchSet:  # type: ignore[override,misc]
        self.update(other)
        return self

    def take_added(self) -> set[str]:
        """The ids added since the last call (the backend now looks at them)."""
        with self._guard:
            added, self.added = self.added, set()
        return added


class Queue(ABC):
    """A job queue. Backends implement the abstract methods; capabilities are class flags."""

    #: claim(wait_s=...) blocks until a job arrives instead of polling.
    blocking_claim: ClassVar[bool] = False
    #: workers on other hosts can share this queue.
    cross_host: ClassVar[bool] = False
    #: only this process can reach it (no `shoal work` elsewhere can join).
    in_process: ClassVar[bool] = False
    #: job files live in the queue's own folder (`settings.root`), so a submit copies them there.
    keeps_job_files: ClassVar[bool] = False

    #: how this queue is tuned (lease_s, seed, interpreters, root, log cap): read once.
    settings: QueueSettings
    #: where running attempts write their logs and progress, and the shared config.
    files: JobFiles

    def __init__(self, url: str, settings: QueueSettings, files: JobFiles) -> None:
        self.url = url
        self.settings = settings
        self.files = files
        self._blobs: dict[str, bytes] = {}

    # -- jobs ---------------------------------------------------------------

    @abstractmethod
    def submit(self, jobs: Iterable[Job]) -> list[str]:
        """Add jobs; return the ids of those that were new (existing ids change nothing).
        `jobs` may be any iterable (a generator of 10^6): sqlite, tcp and Redis read it
        in batches (`batches.submit_in_batches`), never all at once; memory and folder
        take it whole.

        A job whose `after` names jobs not all done starts WAITING (see `scheduling`);
        unknown ids or a cycle refuse the whole submission (`scheduling.check_after`,
        `DependencyError`) before anything is stored."""

    @abstractmethod
    def claim(self, worker: str, n: int = 1, *, wait_s: float = 0.0,
              fit: Capacity | None = None) -> list[Lease]:
        """Lease up to `n` pending jobs to `worker`; wait up to `wait_s` for the first one.

        Jobs go by the rules of `scheduling`: highest priority first, then rank (input
        order, retried jobs first); never a WAITING job; with `fit` (the worker's free
        resources and labels) only jobs that fit, each taking its share before the next
        is chosen, so the n jobs fit together. A job that does not fit is passed over,
        not waited for: a smaller job behind it may go."""

    @abstractmethod
    def beat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        """One heartbeat, one atomic step: register or refresh the worker `info` describes,
        extend those of its `leases` whose token is still current (the others come back in
        `Beat.lost`), and hand over the control commands waiting for it (removed as read).
        It does not reap: a worker's heartbeat is `heartbeat`, a beat and a reap."""

    def heartbeat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        """A worker's heartbeat: `beat`, and in `Beat.reaped` what `reap` reports, so the
        worker kills the orphans of dead workers on its host. Backends that can answer
        both in one step (tcp: one round trip) override it; this default beats, then reaps
        here. A refused beat (a full disk) raises before any reap, so our own leases never
        look dead to us; a reap refused after the beat went through leaves `reaped` empty
        (the next heartbeat reaps again) rather than losing the commands the beat took."""
        beat = self.beat(info, leases)
        try:
            reaped = self.reap()
        except QueueFull:
            return beat
        return replace(beat, reaped=tuple(reaped))

    @abstractmethod
    def finish(self, lease: Lease, result: Result, *, then_claim: int = 0,
               fit: Capacity | None = None) -> list[Lease]:
        """Record the final result; raise `LeaseLost` if the lease is no longer current.

        A DONE result releases the jobs waiting for this one (PENDING once all their
        dependencies are done); a FAILED one ends them (`scheduling.dependency_reason`),
        and theirs in turn, without scanning jobs that do not wait for it.

        With `then_claim` > 0, also lease the same worker up to that many next jobs without
        waiting (`_claim_next`; `fit` as in `claim`, what is free once this job is over),
        and return them: in the same step where the backend can (one transaction, one
        round trip), else right after the finish.
        """

    def _claim_next(self, lease: Lease, then_claim: int,
                    fit: Capacity | None = None) -> list[Lease]:
        """What `finish(..., then_claim=n)` hands out where the backend cannot do better:
        a claim of up to n jobs for the lease's worker, without waiting."""
        return self.claim(lease.worker, then_claim, fit=fit) if then_claim > 0 else []

    @abstractmethod
    def release(self, lease: Lease, *, failed: Result | None = None) -> None:
        """Put the job back to pending; fenced like finish (`LeaseLost` if stale).

        Without `failed` (a worker stopping) the job goes back untouched. With it (a run
        that failed and is tried again) the attempt number grows and `failed` is kept as
        the attempt's record, which `get(...).attempts` shows: the user sees why it ran
        twice.
        """

    @abstractmethod
    def cancel(self, job_ids: Iterable[str]) -> list[str]:
        """Cancel jobs not yet final; return the ids that were cancelled.

        A running job's lease becomes stale, so its worker's finish is refused and
        the worker kills the job at its next beat. Its CANCELLED result names that
        worker and keeps the attempt's log so far (`cancelled_result`); the worker then
        adds the rest with `keep_log`.
        """

    def keep_log(self, lease: Lease, result: Result) -> None:  # noqa: B027 - optional hook
        """A worker whose lease was taken back killed its job: keep the attempt's whole
        log if the job's final result is a cancel of this very attempt (worker and
        attempt match), else drop it. Default: nothing to do, the cancel's record names
        the attempt's log where this worker writes it (a disk every view sees)."""

    @abstractmethod
    def retry(self, job_ids: Iterable[str], *, force: bool = False,
              first: bool = True) -> list[str]:
        """Put final (failed or cancelled) jobs back to pending with fresh attempts; with
        `force`, done jobs too (their result is set aside). Returns the ids moved.

        With `first`, they go before every pending job of their priority (a negative
        rank, see `scheduling`); without, in their input order. A retried job whose
        dependencies are not all done waits for them (WAITING); the jobs that had ended
        because it failed ("dependency ... failed") come back to WAITING with it.

        A retried job is no longer final: `get`, `states` and `watch` show it pending (a
        watcher that had its result adds the id to its WatchSet again to hear of the new
        one). It keeps its `seq`.
        """

    def purge(self, *, force: bool = False) -> int:
        """Remove every job, result, failed-attempt record and log (a fresh sweep: the
        next submit runs everything again); job files stay, and a folder queue's
        drop-ins are scanned again. Refused while a live worker is registered, unless
        `force` (its running jobs' leases go, so their results are refused and the
        worker kills them at its next beat). Returns how many jobs were removed."""
        if not force:
            alive = sorted(info.id for info in self.workers() if not info.lost)
            if alive:
                raise UsageError(f"{self.url}: {len(alive)} worker(s) still running "
                                 f"({', '.join(alive[:3])}{', ...' if len(alive) > 3 else ''})"
                                 "; stop them first or add --force")
        return self._purge()

    @abstractmethod
    def _purge(self) -> int:
        """`purge` once it is allowed: remove what it says; return the number of jobs."""

    @abstractmethod
    def get(self, job_id: str) -> JobStatus | None:
        """The job's state (with its `seq`), or None if unknown."""

    @abstractmethod
    def jobs(self) -> Iterator[JobStatus]:
        """Every job with its state and `seq` (order unspecified)."""

    def listing(self, states: Collection[State] | None = None,
                limit: int | None = None) -> Iterator[JobStatus]:
        """Jobs in submission order (`listing_order`) with their state and result but not
        their failed attempts (`attempts` is empty): what `shoal results`, `status` and
        `#N` read, so a backend reads it in bulk instead of job by job. Only jobs in
        `states` if given (None: every state), at most `limit` (the first in order).
        The default sorts `jobs()`; backends override it with a cheaper read."""
        return iter(chosen((replace(s, attempts=()) if s.attempts else s for s in self.jobs()),
                           states, limit))

    def summaries(self, states: Collection[State] | None = None, limit: int | None = None,
                  offset: int = 0) -> Iterator[JobSummary]:
        """`listing` narrowed to what a table row shows (`JobSummary`): the same jobs in
        the same order, the first `offset` of them skipped (a page of a table: the
        dashboard's deep pages read what they show, not every row before). Backends whose
        records can be read field by field override it (10^5 rows without building a Job
        and a Result each); the default reads the listing up to the page's end."""
        offset = max(offset, 0)
        reach = None if limit is None else offset + max(limit, 0)
        return map(JobSummary.of, islice(self.listing(states, reach), offset, None))

    def search(self, text: str, states: Collection[State] | None = None) -> Iterator[JobSummary]:
        """The jobs whose name, id or a parameter written `name=value` holds `text` (any
        case), as `summaries` rows in submission order, only those in `states` (None:
        all): the dashboard's search. The default reads the `listing` (parameters are
        no part of a summary); sqlite matches in its SQL."""
        wanted = text.lower()
        return (JobSummary.of(status) for status in self.listing(states)
                if wanted in search_text(status.job))

    @abstractmethod
    def counts(self) -> dict[State, int]:
        """Number of jobs in each state."""

    @abstractmethod
    def results(self) -> Iterator[Result]:
        """Every recorded final result (one that cannot be decoded: a failure whose reason
        says "corrupt record" and where it is, never left out)."""

    def strays(self) -> dict[str, list[str]]:
        """What lies among the queue's records that is none of them (a folder queue: files
        a user left in its state folders), by where it lies: ignored by every other
        method, named by `status`. Default: nothing can stray in."""
        return {}

    def states(self, job_ids: Iterable[str]) -> dict[str, State]:
        """The state of each of these jobs (unknown ids are left out); used for progress."""
        found = {}
        for job_id in job_ids:
            status = self.get(job_id)
            if status is not None:
                found[job_id] = status.state
        return found

    def watch(self, ids: Collection[str], timeout_s: float) -> list[Result]:
        """Final results among `ids`, waiting up to `timeout_s` for at least one.

        Every final state counts, however it came: a finish, a cancel, a reap at the
        attempt cap, another process's work. `ids` is best a set (fast `in`); a caller
        that watches many ids across many calls passes a `WatchSet`, so a backend that
        journals its finals answers from what changed since the last call instead of
        scanning every id. A WatchSet may be empty, and grow while a watch waits (an
        empty plain collection answers at once). The default polls (`_watch_once`) with
        a growing delay; memory blocks on its lock and tcp waits for the coordinator's
        push.
        """
        if timeout_s <= 0 and not isinstance(ids, WatchSet):  # one look, nothing to keep
            return self._final_results(list(ids))
        if not ids and not isinstance(ids, WatchSet):
            return []
        watched = ids if isinstance(ids, WatchSet) else WatchSet(ids)
        deadline = time.monotonic() + timeout_s

        def attempt() -> list[Result]:
            pause = min(watched.paced_until, deadline) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            return self._watch_once(watched)

        return poll(attempt, timeout_s, first_s=0.001, most_s=0.05)

    def _watch_once(self, ids: WatchSet) -> list[Result]:
        """One look at `ids`: the finals journalled since the caller's last look plus a
        scan of the ids added since; a scan of every id where there is no journal (then
        paced, so that scanning takes at most a fifth of the time)."""
        fresh = ids.take_added()
        since = ids.mark[1] if ids.mark is not None and ids.mark[0] is self else None
        journal = self._finals_since(since) if since is not None else None
        if journal is None:  # first look, or no journal reaching back that far: scan all
            mark = self._finals_mark()
            started = time.monotonic()
            landed = self._final_results(list(ids))
            took = time.monotonic() - started
            ids.paced_until = time.monotonic() + 4 * took if mark is None else 0.0
        else:
            ended, mark = journal
            wanted = {i for i in ended if i in ids}
            wanted.update(i for i in fresh if i in ids)
            landed = self._final_results(list(wanted)) if wanted else []
        ids.mark = (self, mark) if mark is not None else None
        return list({r.job_id: r for r in landed}.values())

    def _final_results(self, job_ids: list[str]) -> list[Result]:
        """The final results among these jobs (a scan; backends do it in one read)."""
        found = []
        for job_id, state in self.states(job_ids).items():
            status = self.get(job_id) if state.final else None
            if status is not None and status.result is not None:
                found.append(status.result)
        return found

    def _finals_mark(self) -> object | None:
        """Where the journal of finals ends now; None if this backend keeps none."""
        return None

    def _finals_since(self, mark: object) -> tuple[list[str], object] | None:
        """The jobs that became final after `mark`, and the journal's new end; None if
        the journal no longer reaches back to `mark` (the caller scans instead)."""
        return None

    def is_drained(self) -> bool:
        """True when no job is pending or running (new submissions may still come)."""
        counts = self.counts()
        return counts[State.PENDING] == 0 and counts[State.RUNNING] == 0

    def judge_leases_by(self, clock: Callable[[], float]) -> None:  # noqa: B027 - optional
        """Stamp and judge lease deadlines and worker beats on `clock` (seconds, like
        time.time) from now on: a coordinator hands its queue its own monotonic-based
        clock (serve/clock.py), being the only party that stamps and judges them.
        Default: nothing, the backend judges on one clock of its own already (memory:
        this process's monotonic clock; folder: the reaper's; Redis: the server's)."""

    @abstractmethod
    def reap(self) -> list[Reaped]:
        """Take expired leases back (to pending with attempt + 1, or failed at the cap),
        then report every reap of the last `reaped_keep_s(lease_s)`, by any caller.

        Whoever reaps, a worker on the dead worker's host hears it at its next heartbeat
        and kills what was left running there; callers act on each record once. Only
        `reap` takes leases back (never `claim`, `beat` or a read), so no reap goes
        unreported.
        """

    # -- function blobs ---------------------------------------------------------

    def put_blobs(self, blobs: Mapping[str, bytes]) -> None:
        """Store function blobs under their sha256 digests; those already here are skipped.

        `submit` calls this with the blobs its jobs carry, before it writes the jobs, so
        no worker ever sees a job whose blob is missing. The default keeps them in this
        object (enough for an in-process queue); shared backends store them with the queue.
        """
        for digest, blob in blobs.items():
            self._blobs.setdefault(digest, blob)

    def get_blob(self, digest: str) -> bytes | None:
        """The function blob stored under `digest`, or None if this queue has none."""
        return self._blobs.get(digest)

    def missing_blobs(self, digests: Iterable[str]) -> list[str]:
        """Which of these digests the queue has no blob for (so a client sends only those)."""
        return [digest for digest in digests if self.get_blob(digest) is None]

    # -- workers ------------------------------------------------------------

    @abstractmethod
    def unregister(self, worker: str) -> None:
        """Remove a worker that stopped cleanly."""

    @abstractmethod
    def workers(self) -> list[WorkerInfo]:
        """Registered workers; those silent for longer than the lease are marked lost."""

    @abstractmethod
    def send_control(self, worker: str, command: str) -> None:
        """Leave a control command (STOP, STOP_NOW) for a worker; its next `beat` takes it."""

    # -- lifecycle ------------------------------------------------------------

    def refresh(self) -> None:  # noqa: B027 - optional hook
        """Pick up work that appeared outside `submit` (drop-in files); default: nothing."""

    def group(self) -> AbstractContextManager[None]:
        """Make the writes of every call this thread makes inside the block one commit, at
        its exit: a coordinator runs the requests of one loop turn so, and many clients
        cost one transaction, not one each. Each call stays all or nothing on its own (an
        error undoes that call's writes only, as before), but none is durable, so none
        may be acknowledged, before the exit returns. The exit raises `GroupLost` when the
        group could not be committed as a whole (a full disk at the commit): then none
        of its calls' writes happened. Default: every call commits as it goes."""
        return nullcontext()

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Return once every result recorded so far is durable (backends that defer it)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
