"""The queue contract every backend keeps.

Guarantees (see docs/architecture.md and RELIABILITY.md):

* `submit` is idempotent by job id.
* `claim` hands out a job under a lease; the lease's `token` fences stale owners.
* A lease that no `beat` extends expires: the job goes back to pending with
  attempt + 1, until `job.max_attempts`; then it is failed with a reason that says so.
* `finish` records exactly one final result per job: a stale lease is refused
  with `LeaseLost`, never silently recorded.
* Execution is therefore at-least-once, the recorded outcome exactly-once.
* Function blobs (pickled callables a call job names by sha256 in `job.blob_refs`)
  come with the jobs in `job.blobs`; `submit` stores each once per queue, before the
  jobs that name it, and `get_blob` gives it back to workers.

Beside the state machine, a queue has `settings` (settings.py: read once at open) and
`files` (files.py: where logs, progress and the shared config live).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import ClassVar, TypeVar

from .. import defaults
from ..job import Beat, Job, JobStatus, Lease, Reaped, Result, State, WorkerInfo
from .files import JobFiles
from .settings import QueueSettings

T = TypeVar("T")

# Control commands a worker understands.
STOP = "stop"  # finish running jobs, claim no more, exit
STOP_NOW = "stop-now"  # release running jobs back to the queue and exit
CONTROL_COMMANDS = (STOP, STOP_NOW)


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


def reaped_keep_s(lease_s: float) -> float:
    """How long `reap` keeps reporting a reap (see defaults.REAPED_KEEP_S)."""
    return max(defaults.REAPED_KEEP_S, lease_s)


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
        self._listeners: list[Callable[[Result], None]] = []
        self._blobs: dict[str, bytes] = {}

    # -- jobs ---------------------------------------------------------------

    @abstractmethod
    def submit(self, jobs: Iterable[Job]) -> list[str]:
        """Add jobs; return the ids of those that were new (existing ids change nothing)."""

    @abstractmethod
    def claim(self, worker: str, n: int = 1, *, wait_s: float = 0.0) -> list[Lease]:
        """Lease up to `n` pending jobs to `worker`; wait up to `wait_s` for the first one."""

    @abstractmethod
    def beat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        """One heartbeat, one atomic step: register or refresh the worker `info` describes,
        extend those of its `leases` whose token is still current (the others come back in
        `Beat.lost`), and hand over the control commands waiting for it (removed as read).
        It does not reap: a worker's heartbeat is `beat` then `reap`."""

    @abstractmethod
    def finish(self, lease: Lease, result: Result, *, then_claim: int = 0) -> list[Lease]:
        """Record the final result; raise `LeaseLost` if the lease is no longer current.

        With `then_claim` > 0, also lease the same worker up to that many next jobs without
        waiting (`_claim_next`), and return them: in the same step where the backend can
        (one transaction, one round trip), else right after the finish.
        """

    def _claim_next(self, lease: Lease, then_claim: int) -> list[Lease]:
        """What `finish(..., then_claim=n)` hands out where the backend cannot do better:
        a claim of up to n jobs for the lease's worker, without waiting."""
        return self.claim(lease.worker, then_claim) if then_claim > 0 else []

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
        the worker kills the job at its next beat.
        """

    @abstractmethod
    def retry(self, job_ids: Iterable[str]) -> list[str]:
        """Put final (failed or cancelled) jobs back to pending with fresh attempts."""

    @abstractmethod
    def get(self, job_id: str) -> JobStatus | None:
        """The job's state, or None if unknown."""

    @abstractmethod
    def jobs(self) -> Iterator[JobStatus]:
        """Every job with its state (order unspecified)."""

    @abstractmethod
    def counts(self) -> dict[State, int]:
        """Number of jobs in each state."""

    @abstractmethod
    def results(self) -> Iterator[Result]:
        """Every recorded final result."""

    def states(self, job_ids: Iterable[str]) -> dict[str, State]:
        """The state of each of these jobs (unknown ids are left out); used for progress."""
        found = {}
        for job_id in job_ids:
            status = self.get(job_id)
            if status is not None:
                found[job_id] = status.state
        return found

    def wait_results(self, job_ids: Iterable[str], timeout_s: float) -> list[Result]:
        """Final results among `job_ids`, waiting up to `timeout_s` for at least one.

        The default polls `final_ids` with a growing delay (1 ms to 50 ms); backends
        that can block (memory) or push (network) answer as soon as a result lands.
        """
        wanted = list(job_ids)
        ready = poll(lambda: self.final_ids(wanted), timeout_s, first_s=0.001, most_s=0.05)
        found = []
        for job_id in ready:
            status = self.get(job_id)
            if status is not None and status.result is not None:
                found.append(status.result)
        return found

    #: subscribe() sees every final result (not only those recorded through this object).
    pushes_all_results: ClassVar[bool] = False

    def subscribe(self, callback: Callable[[Result], None]) -> None:
        """Have `callback(result)` called for final results recorded through this queue
        object (all of them where `pushes_all_results`); poll for the others."""
        self._listeners.append(callback)

    def _announce(self, results: list[Result]) -> None:
        """Tell subscribers about final results; call without holding locks."""
        for result in results:
            for callback in list(self._listeners):
                callback(result)

    def final_ids(self, job_ids: list[str]) -> list[str]:
        """Which of these jobs have a final result (cheap check, no records read)."""
        return [i for i, s in self.states(job_ids).items() if s.final]

    def is_drained(self) -> bool:
        """True when no job is pending or running (new submissions may still come)."""
        counts = self.counts()
        return counts[State.PENDING] == 0 and counts[State.RUNNING] == 0

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
