"""What the coordinator does for each request: one explicit table over the served queue.

`HANDLERS` maps each request a client may send (see `queue/remote.py`) to the method
that serves it, whose type hints are the schema its arguments are checked against
before it runs (`SCHEMAS`, schema.py); `MUTATING` names those whose repeat must not act twice (the
coordinator caches their replies). A handler returns the reply's value, or
`PARKED` when the request waits in `Parking` for a job. Handlers that may end jobs
(finish, cancel, reap) note them; `after_changes` pushes their results to watchers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import JobNotFound, LeaseLost
from ..job import Job, Kind, Lease, Reaped, Result, State
from ..net import wire
from ..queue.base import Queue
from ..queue.scheduling import Capacity
from .clock import LeaseClock
from .parking import Key, Parking, Push, leases_out
from .schema import Schema, schema_of

log = logging.getLogger("shoal.serve")

PARKED = object()  # a handler's value: no reply now, the request waits in Parking


def _states(names: list[str] | None) -> set[State] | None:
    """The states a listing asks for (None: all); MalformedMessage for a name of none."""
    if names is None:
        return None
    try:
        return {State(name) for name in names}
    except ValueError as exc:
        raise wire.MalformedMessage(str(exc)) from None


@dataclass(frozen=True)
class Request:
    """Where a request came from."""

    route: bytes  # the ROUTER's id of the connection it came on
    key: Key  # (client id, request id)
    repeat: bool = False  # the client sent it before and got no answer

    @property
    def client(self) -> bytes:
        return self.key[0]


class Service:
    """Serves requests against `queue`; `push` sends a client a result it did not ask
    for in this request (watched jobs already final at submission)."""

    def __init__(self, queue: Queue, parking: Parking, *, boot: str, max_message_bytes: int,
                 push: Push) -> None:
        self.queue = queue
        self.parking = parking
        self.boot = boot
        self.max_message_bytes = max_message_bytes
        self._push = push
        self._ended: set[str] = set()  # jobs that may have become final since the last look
        self._recorded: dict[str, Result] = {}  # ...and those whose final record we know
        self._pending_may_grow = False
        # Jobs may have ended that no request named: those waiting for a job that failed
        # or was cancelled (or a job submitted after one that had); see _look_for_ends.
        self._ends_unseen = False
        self._next_look = 0.0
        # No reaping during our first lease: workers that ran on while no coordinator was
        # up beat in that time, so no live worker's lease is taken back on a restart.
        self._reap_from = self.next_reap = time.monotonic() + queue.settings.lease_s
        self._reaps_seen: set[Reaped] = set()
        # What our last reap reported, as a beat's answer carries it: a worker's
        # heartbeat is one request (our timer reaps; the worker only hears of it).
        self._reported: list[dict[str, Any]] = []
        # Leases and beats on our monotonic clock; a pause or jump of it buys a grace.
        self.clock = LeaseClock(queue.settings.lease_s)
        queue.judge_leases_by(self.clock.now)

    def notes(self) -> tuple[set[str], dict[str, Result]]:
        """What we noted to push so far (copies): kept before a group of requests."""
        return set(self._ended), dict(self._recorded)

    def restore_notes(self, notes: tuple[set[str], dict[str, Result]]) -> None:
        """Back to `notes`: a group that was not committed ended no job."""
        self._ended, self._recorded = set(notes[0]), dict(notes[1])
        self._pending_may_grow = self._ends_unseen = True  # a look costs little

    # -- between requests --------------------------------------------------------------

    def timers(self, now: float) -> None:
        """Reap when due, answer expired parked requests, then what changed."""
        self.watch_clock()
        if now >= self.next_reap:
            self.next_reap = now + min(1.0, self.queue.settings.lease_s / 4)
            self._reap()
        self.parking.expire(now)
        self.after_changes()

    def after_changes(self) -> None:
        """Wake parked claims if jobs may have become pending; push the results of jobs
        that may have ended to the clients watching them."""
        if self._pending_may_grow and self.parking.claims:
            self.parking.serve_claims()
        self._pending_may_grow = False
        self._look_for_ends()
        if self._ended or self._recorded:
            known, self._recorded = self._recorded, {}
            ended, self._ended = self._ended, set()
            finals = [known[i] for i in self.parking.watched_among(set(known))]
            unknown = self.parking.watched_among(ended - known.keys())
            if unknown:
                finals += self.queue.watch(unknown, 0)
            if finals:
                self.parking.deliver(finals)

    def _look_for_ends(self) -> None:
        """Push the results of watched jobs that ended as a consequence of a request
        (a failed or cancelled job's dependants, which the queue ends itself): one look
        at the queue's journal of finals (`watch` with a WatchSet), paced where the
        queue keeps none and must scan (at most a fifth of the time)."""
        now = time.monotonic()
        if not self._ends_unseen or now < self._next_look:
            return
        self._ends_unseen = False
        if not self.parking.watching:
            return
        finals = self.queue.watch(self.parking.watching, 0)
        self._next_look = now + 4 * (time.monotonic() - now)
        if finals:
            self.parking.deliver(finals)

    def watch_clock(self) -> None:
        """After a pause of ours or a jump of the wall clock (`LeaseClock.check`), reap
        nothing for one lease, as after a restart: the beats that waited unread renew
        the leases of live workers first."""
        why = self.clock.check()
        if why:
            self.hold_reaps()
            log.warning("coordinator %s: no lease is taken back for %g s, so that live "
                        "workers are heard first", why, self.queue.settings.lease_s)

    def hold_reaps(self) -> None:
        """Take no lease back for one lease from now: after a pause or a clock jump, and
        while the disk is full (a worker's beat may not have been written, though the
        worker lives)."""
        self._reap_from = max(self._reap_from, time.monotonic() + self.queue.settings.lease_s)

    def _reap(self) -> list[Reaped]:
        """The served queue's reap (none during our first lease, see __init__, nor for a
        lease after a pause or a clock jump, see watch_clock)."""
        self.watch_clock()
        if time.monotonic() < self._reap_from:
            self._reported = []
            return []
        reaped = self.queue.reap()
        self._reported = [record.to_dict() for record in reaped]
        if not self._reaps_seen.issuperset(reaped):  # some job went back to pending, or failed
            self._pending_may_grow = self._ends_unseen = True
            self._ended.update(record.job_id for record in reaped)
        self._reaps_seen = set(reaped)
        return reaped

    def _watch(self, client: bytes, ids: list[str], new: set[str] | None = None) -> list[dict]:
        """Push these jobs' results to `client` when they land; return those already final."""
        old = ids if new is None else [i for i in ids if i not in new]
        ready = {r.job_id: r for r in self.queue.watch(set(old), 0)} if old else {}
        self.parking.watch(client, [job_id for job_id in ids if job_id not in ready])
        return [wire.result_out(r) for r in ready.values()]

    def _lease(self, fence: dict[str, Any], *, with_job: bool = False) -> Lease:
        """The lease a fence names; its job is read only where a log is placed by it."""
        job_id, attempt, worker, token = wire.fence_in(fence)
        status = self.queue.get(job_id) if with_job else None
        job = status.job if status is not None else Job(job_id, "", Kind.COMMAND)
        return Lease(job, attempt, worker, token)

    # -- requests: jobs ----------------------------------------------------------------

    def hello(self, req: Request) -> dict[str, Any]:
        settings, files = self.queue.settings, self.queue.files
        return {"protocol": wire.PROTOCOL, "boot": self.boot, "lease_s": settings.lease_s,
                "seed": settings.seed, "interpreters": settings.interpreters,
                "log_cap_bytes": settings.log_cap_bytes, "config": files.config(),
                "config_stamp": files.config_stamp(),
                "queue": self.queue.url, "max_message_bytes": self.max_message_bytes}

    def ping(self, req: Request) -> str:
        return self.boot

    def submit(self, req: Request, jobs: list[dict], watch: bool = False) -> list[str]:
        parsed = [wire.job_in(record) for record in jobs]
        new = self.queue.submit(parsed)
        self._pending_may_grow = bool(new)
        # a job waiting for one that had failed ends at once, with those waiting for it
        self._ends_unseen = self._ends_unseen or any(job.after for job in parsed)
        if watch:
            for record in self._watch(req.client, [job.id for job in parsed], set(new)):
                self._push(req.route, record)
        return new

    def put_blobs(self, req: Request, blobs: dict[str, bytes]) -> None:
        self.queue.put_blobs(blobs)

    def get_blob(self, req: Request, digest: str) -> bytes | None:
        return self.queue.get_blob(digest)

    def missing_blobs(self, req: Request, digests: list[str]) -> list[str]:
        return self.queue.missing_blobs(digests)

    def watch(self, req: Request, ids: list[str]) -> list[dict]:
        return self._watch(req.client, ids)

    def claim(self, req: Request, worker: str, n: int = 1, wait_s: float = 0.0,
              fit: dict | None = None) -> Any:
        """Lease jobs that fit (`fit`: the worker's free Capacity as a dict), or park the
        claim until some arrive. Parked claims had every pending job offered after the
        last request (`after_changes`), so one that takes any job means none is pending;
        else a claim may take what fits it and none of them."""
        capacity = wire.fit_in(fit)
        leases = ([] if self.parking.any_job_would_do()
                  else self.queue.claim(worker, n, fit=capacity))
        if leases or wait_s <= 0:
            return leases_out(self.queue, leases)
        self.parking.park_claim(req.route, req.key, time.monotonic() + wait_s, worker, n,
                                capacity)
        return PARKED

    def beat(self, req: Request, info: dict, leases: list[dict],
             progress: dict[str, bytes] | None = None,
             logs: dict[str, bytes] | None = None) -> dict[str, list[str]]:
        """A worker's heartbeat in one request: keep the progress and the log tails its
        running jobs sent, then one `beat` of the queue (register, extend leases, take
        commands)."""
        fenced = [self._lease(fence) for fence in leases]
        for lease in fenced:
            text = (progress or {}).get(lease.job_id)
            if text is not None:
                self.queue.files.receive_progress(lease, text)
            tail = (logs or {}).get(lease.job_id)
            if tail is not None:
                self.queue.files.receive_log(lease, tail)
        beat = self.queue.beat(wire.worker_in(info), fenced)
        return {"lost": [lease.job_id for lease in beat.lost], "commands": list(beat.commands),
                "reaped": self._reported}

    def finish(self, req: Request, lease: dict, result: dict, log: bytes | None = None,
               then_claim: int = 0, fit: dict | None = None) -> list[dict]:
        """Record the result; with `then_claim`, also lease the worker its next jobs that
        fit `fit` (one round trip instead of two) unless other workers are already
        waiting for work. A job done may release jobs that waited for it."""
        then_claim = 0 if self.parking.claims else then_claim  # those waiting go first
        leases = self._finish(lease, result, log, then_claim, wire.fit_in(fit),
                              repeat=req.repeat)
        return leases_out(self.queue, leases)

    def _finish(self, lease: dict, result: dict, log: bytes | None, then_claim: int,
                fit: Capacity | None, *, repeat: bool) -> list[Lease]:
        fenced = self._lease(lease, with_job=log is not None)
        record = wire.result_in(result)
        if log is not None:
            record = replace(record, log=self.queue.files.receive_log(fenced, log))
        try:
            leases = self.queue.finish(fenced, record, then_claim=then_claim, fit=fit)
            if record.state is State.DONE:  # the jobs waiting for it may be pending now
                self._pending_may_grow = True
            else:  # ...or ended with it
                self._ends_unseen = True
            if log is None:  # recorded as sent (a shipped log moves): no need to read it back
                self._recorded[fenced.job_id] = record
            else:
                self._ended.add(fenced.job_id)
            return leases
        except LeaseLost:
            if log is not None and not self._cancelled_attempt(fenced):  # not ours to keep
                Path(record.log).unlink(missing_ok=True)
            status = self.queue.get(fenced.job_id)
            done = status.result if status is not None else None
            if not repeat or done is None or done.reason.startswith("worker died") \
                    or (done.attempt, done.worker) != (fenced.attempt, fenced.worker):
                raise
            # A repeat of our own finish whose reply a coordinator restart lost.
            return self.queue._claim_next(fenced, then_claim, fit)

    def release(self, req: Request, lease: dict, failed: dict | None = None,
                log: bytes | None = None) -> None:
        """Back to pending; a failed attempt's record keeps the log it shipped."""
        fenced = self._lease(lease)
        record = wire.result_in(failed) if failed is not None else None
        if record is not None and log is not None:
            record = replace(record, log=self.queue.files.receive_log(fenced, log))
        self.queue.release(fenced, failed=record)
        self._pending_may_grow = True

    def cancel(self, req: Request, ids: list[str]) -> list[str]:
        cancelled = self.queue.cancel(ids)
        self._ended.update(cancelled)
        self._ends_unseen = self._ends_unseen or bool(cancelled)
        return cancelled

    def keep_log(self, req: Request, lease: dict, log: bytes) -> bool:
        """A cancelled attempt's whole log, from the worker that ran it, in place of the
        tail its cancel kept: only if the job's result is the cancel of this attempt."""
        fenced = self._lease(lease)
        if not self._cancelled_attempt(fenced):
            return False
        self.queue.files.receive_log(fenced, log)
        return True

    def _cancelled_attempt(self, lease: Lease) -> bool:
        """Whether the job's final result is a cancel of this very attempt (whose record
        names the attempt's log: where `receive_log` puts it)."""
        status = self.queue.get(lease.job_id)
        ended = status.result if status is not None else None
        return ended is not None and ended.state is State.CANCELLED and bool(ended.log) \
            and (ended.attempt, ended.worker) == (lease.attempt, lease.worker)

    def retry(self, req: Request, ids: list[str], force: bool = False,
              first: bool = True) -> list[str]:
        again = self.queue.retry(ids, force=force, first=first)
        self._pending_may_grow = bool(again)
        self._ends_unseen = True  # one whose dependency had failed ends again at once
        return again

    def purge(self, req: Request, force: bool = False) -> int:
        """Empty the served queue (its own check of live workers applies)."""
        return self.queue.purge(force=force)

    def get(self, req: Request, id: str) -> dict | None:
        status = self.queue.get(id)
        return wire.status_out(status) if status is not None else None

    def jobs(self, req: Request) -> list[dict]:
        return [wire.status_out(s) for s in self.queue.jobs()]

    def listing(self, req: Request, states: list[str] | None = None,
                limit: int | None = None) -> list[dict]:
        wanted = _states(states)
        return [wire.status_out(s) for s in self.queue.listing(wanted, limit)]

    def summaries(self, req: Request, states: list[str] | None = None,
                  limit: int | None = None, offset: int = 0) -> list[list]:
        wanted = _states(states)
        return [wire.summary_out(row) for row in self.queue.summaries(wanted, limit, offset)]

    def search(self, req: Request, text: str, states: list[str] | None = None) -> list[list]:
        wanted = _states(states)
        return [wire.summary_out(row) for row in self.queue.search(text, wanted)]

    def counts(self, req: Request) -> dict[str, int]:
        return {state.value: n for state, n in self.queue.counts().items()}

    def states(self, req: Request, ids: list[str]) -> dict[str, str]:
        return {i: s.value for i, s in self.queue.states(ids).items()}

    def results(self, req: Request) -> list[dict]:
        return [wire.result_out(r) for r in self.queue.results()]

    def is_drained(self, req: Request) -> bool:
        return self.queue.is_drained()

    def reap(self, req: Request) -> list[dict]:
        """The served queue's reap: recent reaps by anyone, so a worker on a dead worker's
        host kills the attempts it left behind."""
        self._reap()
        return self._reported

    def read_log(self, req: Request, id: str, attempt: int | None = None) -> bytes | None:
        status = self.queue.get(id)
        if status is None:
            raise JobNotFound(f"no job {id}")
        return self.queue.files.read_log(status, attempt)

    def progress(self, req: Request) -> dict[str, list]:
        return {i: list(report) for i, report in self.queue.files.progress().items()}

    def get_config(self, req: Request) -> bytes | None:
        return self.queue.files.config()

    def put_config(self, req: Request, data: bytes) -> str | None:
        """Replace the shared config; the reply is its new stamp (see queue/files.py)."""
        self.queue.files.set_config(data)
        return self.queue.files.config_stamp()

    # -- requests: workers ------------------------------------------------------------

    def unregister(self, req: Request, worker: str) -> None:
        self.queue.unregister(worker)

    def workers(self, req: Request) -> list[dict]:
        return [wire.worker_out(w) for w in self.queue.workers()]

    def send_control(self, req: Request, worker: str, command: str) -> None:
        self.queue.send_control(worker, command)


Handler = Callable[..., Any]  # (service, request, **the request's arguments) -> reply value

# Every request a client may send, by the name on the wire.
HANDLERS: dict[str, Handler] = {
    "hello": Service.hello,
    "ping": Service.ping,
    "submit": Service.submit,
    "put_blobs": Service.put_blobs,
    "get_blob": Service.get_blob,
    "missing_blobs": Service.missing_blobs,
    "watch": Service.watch,
    "claim": Service.claim,
    "beat": Service.beat,
    "finish": Service.finish,
    "release": Service.release,
    "cancel": Service.cancel,
    "keep_log": Service.keep_log,
    "retry": Service.retry,
    "purge": Service.purge,
    "get": Service.get,
    "jobs": Service.jobs,
    "listing": Service.listing,
    "summaries": Service.summaries,
    "search": Service.search,
    "counts": Service.counts,
    "states": Service.states,
    "results": Service.results,
    "is_drained": Service.is_drained,
    "reap": Service.reap,
    "read_log": Service.read_log,
    "progress": Service.progress,
    "get_config": Service.get_config,
    "put_config": Service.put_config,
    "unregister": Service.unregister,
    "workers": Service.workers,
    "send_control": Service.send_control,
}
# Requests whose repeat must not act twice; their replies are cached.
MUTATING = frozenset({"submit", "put_blobs", "claim", "finish", "release",
                      "cancel", "retry", "purge", "send_control", "beat", "put_config"})
assert MUTATING.issubset(HANDLERS)  # a cached reply needs a handler that makes it
# What each request's arguments may be: its handler's type hints (see schema.py).
SCHEMAS: dict[str, Schema] = {method: schema_of(handler) for method, handler in HANDLERS.items()}
# Requests whose writes may share one commit with others (`Queue.group`): the busy ones,
# and reads. Left out: those whose files follow their commit (purge forgets logs, cancel
# and keep_log keep them) and the rare ones, which each commit alone as before.
GROUPED = frozenset(HANDLERS) - {"purge", "cancel", "keep_log", "retry", "send_control",
                                 "put_config", "unregister", "reap"}
