"""`tcp://HOST:PORT` or a coordinator's contact file: `CoordinatorQueue`, a client of `shoal serve`.

Every operation is a request to the coordinator, which runs it on its local queue
(see serve/). Claims block on the coordinator, which answers as soon as there is a
job, and watched results are pushed as they land, so workers and executors never poll.
Logs of jobs run here travel with their results, progress reports and the tails of
running logs with beats; `queue.files` (ShippedFiles) reads them back from the coordinator.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import defaults
from ..errors import (
    AuthenticationFailed,
    CoordinatorUnreachable,
    MessageTooBig,
    UsageError,
)
from ..job import Beat, Job, JobStatus, JobSummary, Lease, Reaped, Result, State, WorkerInfo
from ..net import wire
from ..net.channel import Channel
from ..net.contact import Contact, contact_path, dead_here, read_contact
from .base import Queue, WatchSet, blobs_of
from .batches import submit_pipelined
from .files import ShippedFiles
from .scheduling import Capacity
from .settings import QueueSettings

CONNECT_S = 10.0  # how long the first contact may take before we say nobody answers
CONTACT_ENV = "SHOAL_STATUS"
SENT_BLOBS_KEPT = 10_000  # digests remembered as stored at the coordinator (then forgotten)
SUBMIT_BATCH = 10_000  # jobs per submit request (~1.3 MB for plain command jobs)
# The oldest watched ids are asked for again this often, this many at a time (lost pushes).
PUSH_SWEEP_S = 2.0
PUSH_SWEEP_IDS = 2000
RESTART_POLL_S = 0.1  # how often a client re-reads the status file of a coordinator that died

log = logging.getLogger("shoal.net")


def find_contact(where: str) -> Contact:
    """The contact (address and keys) for `where`: a contact file or dir, or a tcp:// URL."""
    if not where.startswith("tcp://"):
        try:
            return read_contact(where)
        except FileNotFoundError:
            raise UsageError(f"{contact_path(where)}: no coordinator status file here") from None
    candidates = [Path(os.environ[CONTACT_ENV])] if os.environ.get(CONTACT_ENV) else []
    home = Path.home() / ".shoal"
    candidates += sorted(home.glob("servers/*/status.json")) + sorted(
        home.glob("sessions/*/status.json"))
    for candidate in candidates:
        try:
            contact = read_contact(candidate)
        except (FileNotFoundError, UsageError):
            continue
        if contact.address == where or contact.bound == where:
            return contact
    raise AuthenticationFailed(
        f"authentication failed with {where}: no key for it here; point shoal at the "
        f"coordinator's status file (copy its status.json to this machine) or set "
        f"{CONTACT_ENV}=PATH")


def restarted_contact(where: str, contact: Contact, patience_s: float) -> Contact:
    """`contact`, or, if it names a coordinator that died on this host, the contact its
    restart writes (same keys, same address): a client started while `shoal serve` is
    being restarted waits for it as long as a connected client waits for an answer
    (its patience), instead of dying with "not running" between the old process's
    death and the new one's status file."""
    if not dead_here(contact):
        return contact
    log.warning("%s: its coordinator (pid %d on this host) is not running; waiting up to "
                "%.0f s for it to restart", contact.address, contact.pid, patience_s)
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        time.sleep(RESTART_POLL_S)
        contact = find_contact(where)
        if not dead_here(contact):
            return contact
    raise CoordinatorUnreachable(
        f"{contact.address}: its coordinator (pid {contact.pid} on this host) is not "
        f"running (waited {patience_s:.0f} s for a restart); start it again "
        f"(shoal serve --status DIR) to carry on")


def _records(jobs: list[Job]) -> list[dict[str, Any]]:
    """Jobs as a submit request carries them (compact: Job.to_record)."""
    return [job.to_record() for job in jobs]


def dependencies_first(jobs: list[Job]) -> list[Job]:
    """`jobs` reordered so that each comes after the jobs of the list it waits for
    (otherwise in their order); unchanged if some wait for each other (the coordinator
    refuses that with the names)."""
    if not any(job.after for job in jobs):
        return jobs
    by_id = {job.id: job for job in jobs}
    left = {job_id: len({d for d in job.after if d in by_id}) for job_id, job in by_id.items()}
    waiting: dict[str, list[str]] = {}
    for job_id, job in by_id.items():
        for dep in {d for d in job.after if d in by_id}:
            waiting.setdefault(dep, []).append(job_id)
    ready = deque(job_id for job_id, count in left.items() if count == 0)
    ordered: list[Job] = []
    while ready:
        job_id = ready.popleft()
        ordered.append(by_id[job_id])
        for other in waiting.get(job_id, ()):
            left[other] -= 1
            if left[other] == 0:
                ready.append(other)
    return ordered if len(ordered) == len(by_id) else jobs


class CoordinatorStore:
    """The `FileStore` (files.py) of a coordinator: what `ShippedFiles` asks it for."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    def fetch_log(self, job_id: str, attempt: int | None) -> bytes | None:
        return self._call("read_log", id=job_id, attempt=attempt)

    def fetch_progress(self) -> dict[str, tuple[float, float | None]]:
        return {i: (done, total) for i, (done, total) in self._call("progress").items()}

    def fetch_config(self) -> bytes | None:
        return self._call("get_config")

    def put_config(self, data: bytes) -> str | None:
        return self._call("put_config", data=data)


class CoordinatorQueue(Queue):
    """A client of a shoal coordinator; see the module docstring."""

    blocking_claim = True
    cross_host = True

    def __init__(self, where: str, *, patience_s: float = defaults.PATIENCE_S,
                 lease_s: float | None = None) -> None:
        self.contact = restarted_contact(where, find_contact(where), patience_s)
        self._sent_blobs: set[str] = set()  # function blobs the coordinator has for sure
        self._watching = False  # set by the first watch(): submit then asks for pushes
        self._watched: dict[str, None] = {}  # ids whose result is pushed to us, oldest first
        self._landed: dict[str, Result] = {}  # pushed, not yet handed out by watch()
        self._watched_lock = threading.Condition()
        self._next_sweep = 0.0
        self._patience_s = patience_s
        self._channel = self._connect()
        try:
            info = self._channel.call("hello", patience_s=min(CONNECT_S, patience_s))
        except BaseException:
            self._channel.close()
            raise
        self._channel.max_message_bytes = info.get("max_message_bytes")
        # The coordinator's settings, read once; logs travel with beats and results.
        settings = QueueSettings(
            lease_s=info["lease_s"], seed=info["seed"],
            interpreters={k: list(v) for k, v in info["interpreters"].items()},
            log_cap_bytes=info.get("log_cap_bytes") or defaults.MAX_SHIPPED_LOG_BYTES)
        self.files: ShippedFiles = ShippedFiles(
            settings, CoordinatorStore(self._call), config=info.get("config"),
            config_stamp=info.get("config_stamp"))
        super().__init__(self.contact.address, settings, self.files)

    def _connect(self) -> Channel:
        return Channel(self.contact.address, self.contact.keys(), on_push=self._on_push,
                       patience_s=self._patience_s)

    def _link(self) -> Channel:
        """The connection; a queue used again after close() connects again (as sqlite
        reopens its file), so results stay readable after an Executor shut down."""
        if self._channel.closed:
            max_bytes = self._channel.max_message_bytes
            self._channel = self._connect()
            self._channel.max_message_bytes = max_bytes
        return self._channel

    def _call(self, method: str, **args: Any) -> Any:
        return self._link().call(method, args)

    # -- pushed results ------------------------------------------------------------------

    def watch(self, ids: Collection[str], timeout_s: float) -> list[Result]:
        """Results are pushed by the coordinator: the ids not asked for yet are sent once
        (those already final come back at once), then we wait for pushes. A pushed result
        goes to the first watch() that names it. The oldest ids are asked for again now
        and then, so a push lost in a network blip costs a delay, not a hang."""
        if not ids and not isinstance(ids, WatchSet):
            return []
        watched = ids if isinstance(ids, WatchSet) else WatchSet(ids)
        self._watching = True
        fresh = watched.take_added()
        now = time.monotonic()
        with self._watched_lock:
            ask = [i for i in fresh if i not in self._watched and i not in self._landed]
            self._watched.update(dict.fromkeys(ask))
            if now >= self._next_sweep and self._watched:
                self._next_sweep = now + PUSH_SWEEP_S
                ask += [i for i in itertools.islice(self._watched, PUSH_SWEEP_IDS)
                        if i in watched and i not in fresh]
        if ask:
            for record in self._call("watch", ids=ask):
                self._deliver(record)
        deadline = now + timeout_s
        with self._watched_lock:
            while True:
                found = [self._landed.pop(i) for i in [i for i in self._landed if i in watched]]
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self._watched_lock.wait(remaining)

    def _on_push(self, message: Any) -> None:
        if message is None:  # the coordinator restarted: register our watches again
            with self._watched_lock:
                ids = sorted(self._watched)
            for record in self._call("watch", ids=ids):
                self._deliver(record)
            return
        self._deliver(message)

    def _deliver(self, record: dict[str, Any]) -> None:
        result = wire.result_in(record)
        with self._watched_lock:
            self._watched.pop(result.job_id, None)
            self._landed[result.job_id] = result
            self._watched_lock.notify_all()

    # -- jobs ------------------------------------------------------------------------

    def submit(self, jobs: Iterable[Job]) -> list[str]:
        """In requests of SUBMIT_BATCH jobs, read as they come; the next batch is encoded
        while one is in flight (batches.submit_pipelined)."""
        return submit_pipelined(jobs, SUBMIT_BATCH, _records, self._submit_batch)

    def _submit_batch(self, batch: list[Job], records: list[dict[str, Any]]) -> list[str]:
        self._send_blobs(blobs_of(batch))
        if self._watching:
            with self._watched_lock:
                self._watched.update(dict.fromkeys(job.id for job in batch))
        try:
            return self._call("submit", jobs=records, watch=self._watching)
        except MessageTooBig:
            if len(batch) == 1:
                raise
        # Too big together: in two requests (each is idempotent), the jobs others wait
        # for first, so that no half names a job only the other half brings.
        batch = dependencies_first(batch)
        half = len(batch) // 2
        return (self._submit_batch(batch[:half], _records(batch[:half]))
                + self._submit_batch(batch[half:], _records(batch[half:])))

    def _send_blobs(self, blobs: Mapping[str, bytes]) -> None:
        """Send the coordinator the blobs it lacks, one per request, before the jobs."""
        fresh = [digest for digest in blobs if digest not in self._sent_blobs]
        if not fresh:
            return
        self.put_blobs({digest: blobs[digest] for digest in self.missing_blobs(fresh)})
        if len(self._sent_blobs) > SENT_BLOBS_KEPT:
            self._sent_blobs.clear()
        self._sent_blobs.update(fresh)

    def put_blobs(self, blobs: Mapping[str, bytes]) -> None:
        for digest, blob in blobs.items():  # one per request: each may be near the size limit
            self._call("put_blobs", blobs={digest: blob})

    def get_blob(self, digest: str) -> bytes | None:
        return self._call("get_blob", digest=digest)

    def missing_blobs(self, digests: Iterable[str]) -> list[str]:
        return self._call("missing_blobs", digests=list(digests))

    def claim(self, worker: str, n: int = 1, *, wait_s: float = 0.0,
              fit: Capacity | None = None) -> list[Lease]:
        args: dict[str, Any] = {"worker": worker, "n": n, "wait_s": wait_s}
        if fit is not None:  # left out when None: a coordinator of before issue 15 serves it
            args["fit"] = fit.to_dict()
        records = self._link().call("claim", args, wait_s=wait_s)
        return self._leases_in(records)

    def beat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        """One request: the worker's record, its leases' fences and what each running
        job wrote since the last beat (progress, its log's tail so far)."""
        leases = list(leases)
        return self._beat_of(self._beat_request(info, leases), leases)

    def heartbeat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        """One request: the coordinator's answer to a beat carries the reaps its own
        reaping reported last (`reaped`); a coordinator of before issue 18 leaves it out,
        and then we ask it to reap in a second request, as before."""
        leases = list(leases)
        answer = self._beat_request(info, leases)
        beat = self._beat_of(answer, leases)
        if "reaped" not in answer:
            return replace(beat, reaped=tuple(self.reap()))
        return replace(beat, reaped=tuple(Reaped.from_dict(r) for r in answer["reaped"]))

    def _beat_request(self, info: WorkerInfo, leases: list[Lease]) -> dict[str, Any]:
        reports = self.files.beat_reports(leases)
        return self._call("beat", info=wire.worker_out(info),
                          leases=[wire.fence_out(x) for x in leases],
                          progress={i: p for i, (p, _) in reports.items() if p is not None},
                          logs={i: t for i, (_, t) in reports.items() if t is not None})

    @staticmethod
    def _beat_of(answer: dict[str, Any], leases: list[Lease]) -> Beat:
        lost = set(answer["lost"])
        return Beat(tuple(lease for lease in leases if lease.job_id in lost),
                    tuple(answer["commands"]))

    def _leases_in(self, records: list[dict[str, Any]]) -> list[Lease]:
        """Leases from a reply; each carries the shared config's stamp (see files.py)."""
        if records:
            self.files.note_config(records[-1].get("config"))
        return [wire.lease_in(record) for record in records]

    def finish(self, lease: Lease, result: Result, *, then_claim: int = 0,
               fit: Capacity | None = None) -> list[Lease]:
        """Record the result (its log travels with it) and lease the worker up to
        `then_claim` next jobs: one round trip."""
        shipped = self.files.shipped_log(lease, result)
        more: dict[str, Any] = {"then_claim": then_claim}
        if fit is not None and then_claim > 0:
            more["fit"] = fit.to_dict()
        try:
            next_leases = self._call("finish", lease=wire.fence_out(lease),
                                     result=wire.result_out(result), log=shipped, **more)
        except MessageTooBig as exc:  # a huge return value: record why, not nothing
            failed = replace(result, state=State.FAILED, payload=None, value=None,
                             reason=f"result too big to send to the coordinator: {exc}")
            next_leases = self._call("finish", lease=wire.fence_out(lease),
                                     result=wire.result_out(failed),
                                     log=shipped[-65536:] if shipped else None, **more)
        self.files.forget(lease, shipped)
        return self._leases_in(next_leases)

    def release(self, lease: Lease, *, failed: Result | None = None) -> None:
        """Back to pending; a failed attempt's log travels with its record."""
        shipped = None if failed is None else self.files.shipped_log(lease, failed)
        self._call("release", lease=wire.fence_out(lease),
                   failed=None if failed is None else wire.result_out(failed), log=shipped)
        self.files.forget(lease, shipped)

    def cancel(self, job_ids: Iterable[str]) -> list[str]:
        return self._call("cancel", ids=list(job_ids))

    def keep_log(self, lease: Lease, result: Result) -> None:
        """A cancelled attempt's whole log travels to the coordinator, which keeps it if
        the job's result is the cancel of this attempt."""
        shipped = self.files.shipped_log(lease, result)
        try:
            if shipped is not None:
                self._call("keep_log", lease=wire.fence_out(lease), log=shipped)
        finally:
            self.files.forget(lease, shipped)

    def retry(self, job_ids: Iterable[str], *, force: bool = False,
              first: bool = True) -> list[str]:
        ids = list(job_ids)
        if self._watching:
            with self._watched_lock:
                self._watched.update(dict.fromkeys(ids))
            self._call("watch", ids=ids)
        more = {} if first else {"first": False}  # defaults left out, as in claim
        return self._call("retry", ids=ids, force=force, **more)

    def purge(self, *, force: bool = False) -> int:
        """The coordinator's queue judges whether its workers are alive."""
        return int(self._call("purge", force=force))

    def _purge(self) -> int:
        return self.purge(force=True)

    def get(self, job_id: str) -> JobStatus | None:
        record = self._call("get", id=job_id)
        return wire.status_in(record) if record is not None else None

    def jobs(self) -> Iterator[JobStatus]:
        return iter([wire.status_in(record) for record in self._call("jobs")])

    def listing(self, states: Collection[State] | None = None,
                limit: int | None = None) -> Iterator[JobStatus]:
        """One request: the coordinator's queue filters, orders and cuts."""
        wanted = None if states is None else sorted(State(s).value for s in states)
        return iter([wire.status_in(record)
                     for record in self._call("listing", states=wanted, limit=limit)])

    def summaries(self, states: Collection[State] | None = None, limit: int | None = None,
                  offset: int = 0) -> Iterator[JobSummary]:
        """One request: the coordinator's queue filters, orders and cuts out the page;
        only its rows travel."""
        wanted = None if states is None else sorted(State(s).value for s in states)
        return iter([wire.summary_in(row) for row in self._call(
            "summaries", states=wanted, limit=limit, offset=offset)])

    def search(self, text: str, states: Collection[State] | None = None) -> Iterator[JobSummary]:
        """One request: the coordinator's queue searches."""
        wanted = None if states is None else sorted(State(s).value for s in states)
        return iter([wire.summary_in(row) for row in self._call(
            "search", text=text, states=wanted)])

    def counts(self) -> dict[State, int]:
        counts = dict.fromkeys(State, 0)
        for state, number in self._call("counts").items():
            counts[State(state)] = number
        return counts

    def states(self, job_ids: Iterable[str]) -> dict[str, State]:
        return {i: State(s) for i, s in self._call("states", ids=list(job_ids)).items()}

    def results(self) -> Iterator[Result]:
        return iter([wire.result_in(record) for record in self._call("results")])

    def is_drained(self) -> bool:
        return self._call("is_drained")

    def reap(self) -> list[Reaped]:
        return [Reaped.from_dict(record) for record in self._call("reap")]

    # -- workers ---------------------------------------------------------------------------

    def unregister(self, worker: str) -> None:
        self._call("unregister", worker=worker)

    def workers(self) -> list[WorkerInfo]:
        return [wire.worker_in(record) for record in self._call("workers")]

    def send_control(self, worker: str, command: str) -> None:
        self._call("send_control", worker=worker, command=command)

    def close(self) -> None:
        self._channel.close()
