"""`redis://HOST:PORT/DB?queue=NAME` (and rediss://, redis+sentinel://, Cluster): a queue
kept in a Redis server that many hosts share.

Every state change is one Lua script (see *.lua here) fenced by the lease token, so
Redis runs it whole and alone; leases are judged by the server's clock (`TIME` inside
the scripts) only. Claimers block on a wake-up list (BLPOP) instead of polling; waiters
for results block on the `finals` stream (XREAD BLOCK) after a catch-up read of the
states, so nothing recorded between two reads is missed. Counts are kept by the scripts
(HINCRBY), never by scanning.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import msgpack

from ... import defaults
from ...errors import LeaseLost
from ...job import Beat, Job, JobStatus, Lease, Reaped, Result, State, WorkerInfo, dumps, loads
from ..base import Queue, blobs_of, reaped_keep_s, running_attempts
from ..files import LocalFiles
from ..redis_link import check_durability, confirm_durable, connect, parse_url, translated_errors
from ..settings import QueueSettings
from .keys import QueueKeys
from .records import job_of, needs_job, record_of, result_of, spec_of
from .scripts import Scripts
from .watch import FinalsWatch

SUBMIT_BATCH = 2000  # jobs per submit script call (one round trip each)
READ_BATCH = 500  # ids per read (HMGET, HSCAN COUNT)
CANCELLED = "cancelled by user"
F = TypeVar("F", bound=Callable[..., Any])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _translated(method: F) -> F:
    """Errors of redis-py inside `method` become one-line shoal errors (QueueFull,
    QueueUnavailable, ...) naming the URL without its password."""

    @functools.wraps(method)
    def run(self: RedisQueue, *args: Any, **kwargs: Any) -> Any:
        with translated_errors(self.address):
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


class RedisQueue(Queue):
    """A queue in Redis; see the module docstring."""

    blocking_claim = True
    cross_host = True

    def __init__(self, url: str, *, lease_s: float = defaults.LEASE_S) -> None:
        settings = QueueSettings(lease_s=lease_s)
        super().__init__(url, settings,
                         LocalFiles(settings, running=lambda: running_attempts(self)))
        self.address = parse_url(url)
        self.url = self.address.safe_url  # never the password
        self.keys = QueueKeys(self.address.queue)
        self.client = connect(self.address)
        self.cluster = hasattr(self.client, "get_primaries")
        try:
            check_durability(self.client, self.address)
        except BaseException:
            self.client.close()
            raise
        self.scripts = Scripts(self.client)
        import redis

        self._cut_off = redis.exceptions.ConnectionError
        self._watch = FinalsWatch(self._catchup, self._read_finals)

    @property
    def _lease_ms(self) -> int:
        return max(1, round(self.settings.lease_s * 1000))

    def _run(self, script: Any, args: list[Any], *extra_keys: str, client: Any = None) -> Any:
        return script(keys=[*self.keys.shared, *extra_keys], args=args, client=client)

    # -- jobs -------------------------------------------------------------------------

    @_translated
    def submit(self, jobs: Iterable[Job]) -> list[str]:
        jobs = list(jobs)
        blobs = blobs_of(jobs)
        if blobs:
            self.put_blobs(blobs)  # before the jobs that name them
        new: list[str] = []
        for first in range(0, len(jobs), SUBMIT_BATCH):
            batch = jobs[first:first + SUBMIT_BATCH]
            items: list[Any] = []
            for job in batch:
                items += (job.id, spec_of(job), job.payload or b"")
            # Redis's Lua msgpack knows no bin type: bytes travel as raw strings.
            added = self._submit_batch(msgpack.packb(items, use_bin_type=False))
            if isinstance(added, int):  # all of them
                new += [job.id for job in batch]
            else:
                new += [_text(i) for i in added]
        return new

    def _submit_batch(self, items: bytes) -> Any:
        """One submit script call; with durable=strict, confirmed on disk or a replica
        before it returns (on the same connection, in the same round trip)."""
        if self.address.durable != "strict":
            return self._run(self.scripts.submit, [items])
        if self.cluster:  # Cluster pipelines refuse scripts: the wait comes right after
            added = self._run(self.scripts.submit, [items])
            confirm_durable(self.client, self.address, 0)
            return added
        pipe = self.client.pipeline(transaction=False)
        self._run(self.scripts.submit, [items], client=pipe)
        (added,) = confirm_durable(pipe, self.address, 1)
        return added

    @_translated
    def claim(self, worker: str, n: int = 1, *, wait_s: float = 0.0) -> list[Lease]:
        deadline = time.monotonic() + wait_s
        while True:
            leases = self._leases(worker, self._run(self.scripts.claim,
                                                    [worker, n, self._lease_ms]))
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return leases
            # Sleep until a submit, release or reap pushes a wake-up token (or time is up).
            self.client.blpop([self.keys.wake], timeout=max(remaining, 0.001))

    def _leases(self, worker: str, rows: list[Any]) -> list[Lease]:
        return [Lease(job_of(spec, payload), int(attempt), worker, _text(token))
                for _id, attempt, token, spec, payload in rows]

    @_translated
    def beat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        leases = list(leases)
        args: list[Any] = [info.id, dumps(info.to_dict()), info.host, self._lease_ms]
        for lease in leases:
            args += [lease.job_id, lease.token]
        lost, commands = self._run(self.scripts.beat, args, self.keys.control(info.id))
        return Beat(tuple(leases[int(i)] for i in lost), tuple(_text(c) for c in commands))

    @_translated
    def finish(self, lease: Lease, result: Result, *, then_claim: int = 0) -> list[Lease]:
        if result.log and self._token(lease.job_id) == lease.token:
            result = self.files.place_log(lease, result)
        rows = self._run(self.scripts.finish, [
            lease.job_id, lease.token, record_of(result), result.state.value, lease.worker,
            then_claim, self._lease_ms])
        if rows is None:
            raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer current")
        return self._leases(lease.worker, rows)

    def _token(self, job_id: str) -> str | None:
        token = self.client.hget(self.keys.token, job_id)
        return None if token is None else _text(token)

    @_translated
    def release(self, lease: Lease, *, failed: Result | None = None) -> None:
        record = record_of(failed) if failed is not None else b""
        if not self._run(self.scripts.release, [lease.job_id, lease.token, record]):
            raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer current")

    @_translated
    def cancel(self, job_ids: Iterable[str]) -> list[str]:
        ids = list(job_ids)
        if not ids:
            return []
        done = [_text(i) for i in self._run(self.scripts.cancel, [CANCELLED, *ids])]
        return done

    @_translated
    def retry(self, job_ids: Iterable[str]) -> list[str]:
        ids = list(job_ids)
        return [_text(i) for i in self._run(self.scripts.retry, ids)] if ids else []

    @_translated
    def reap(self) -> list[Reaped]:
        keep_ms = round(reaped_keep_s(self.settings.lease_s) * 1000)
        _failed, recent = self._run(self.scripts.reap, [keep_ms, defaults.REAPED_KEEP,
                                                       defaults.MAX_ATTEMPTS])
        found = []
        for _entry_id, fields in recent:
            record = {_text(k): _text(v) for k, v in zip(fields[::2], fields[1::2],
                                                          strict=True)}
            found.append(Reaped(record["job"], record["worker"], int(record["attempt"]),
                                record["host"]))
        return found

    # -- reads --------------------------------------------------------------------------

    @_translated
    def get(self, job_id: str) -> JobStatus | None:
        (row,) = self._run(self.scripts.status, [job_id])
        return None if row is None else self._status(row)

    def _status(self, row: list[Any]) -> JobStatus:
        spec, payload, state, attempt, worker, record, earlier = row
        job = job_of(spec, payload)
        return JobStatus(job, State(_text(state)), int(attempt),
                         _text(worker) if worker else None,
                         result_of(record, job) if record else None,
                         tuple(result_of(r, job) for r in earlier if r))

    def jobs(self) -> Iterator[JobStatus]:
        for ids in self._scan(self.keys.state):
            with translated_errors(self.address):
                rows = self._run(self.scripts.status, ids)
            yield from (self._status(row) for row in rows if row is not None)

    def _scan(self, key: str) -> Iterator[list[str]]:
        """The fields of a hash, a batch at a time (listing everything is O(jobs) anyway)."""
        cursor = 0
        while True:
            with translated_errors(self.address):
                cursor, found = self.client.hscan(key, cursor, count=READ_BATCH)
            if found:
                yield [_text(k) for k in found]
            if int(cursor) == 0:
                return

    @_translated
    def states(self, job_ids: Iterable[str]) -> dict[str, State]:
        wanted = list(job_ids)
        found: dict[str, State] = {}
        for first in range(0, len(wanted), READ_BATCH):
            chunk = wanted[first:first + READ_BATCH]
            for job_id, state in zip(chunk, self.client.hmget(self.keys.state, chunk),
                                     strict=True):
                if state is not None:
                    found[job_id] = State(_text(state))
        return found

    @_translated
    def counts(self) -> dict[State, int]:
        counts = dict.fromkeys(State, 0)
        for state, number in self.client.hgetall(self.keys.counts).items():
            counts[State(_text(state))] = int(number)
        return counts

    def results(self) -> Iterator[Result]:
        for ids in self._scan(self.keys.result):
            with translated_errors(self.address):
                found = self._results_of(ids)
            yield from found

    def _results_of(self, job_ids: list[str]) -> list[Result]:
        """The recorded results of these jobs (those without one are left out)."""
        found = []
        for first in range(0, len(job_ids), READ_BATCH):
            chunk = job_ids[first:first + READ_BATCH]
            records = self.client.hmget(self.keys.result, chunk)
            short = [i for i, r in zip(chunk, records, strict=True) if r and needs_job(r)]
            specs = dict(zip(short, self.client.hmget(self.keys.spec, short), strict=True)
                         ) if short else {}
            for job_id, record in zip(chunk, records, strict=True):
                if record:
                    spec = specs.get(job_id)
                    found.append(result_of(record, job_of(spec, None) if spec else None))
        return found

    @_translated
    def wait_results(self, job_ids: Iterable[str], timeout_s: float) -> list[Result]:
        """Results among `job_ids`, blocking on the finals stream for up to `timeout_s`
        (see watch.py; this becomes the contract's `watch(ids, timeout_s)`)."""
        wanted = list(job_ids)
        if not wanted:
            return []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._results_of(self._watch.wait(wanted, deadline))
            except self._cut_off:
                self._watch.reset()  # a reconnect: catch up again from the states
                if time.monotonic() >= deadline:
                    return []
                time.sleep(0.05)

    def _catchup(self, ids: list[str]) -> list[Any]:
        return self._run(self.scripts.catchup, ids)

    def _read_finals(self, cursor: bytes, block_ms: int) -> list[Any]:
        return self.client.xread({self.keys.finals: cursor}, count=1000, block=block_ms)

    # -- function blobs --------------------------------------------------------------------

    @_translated
    def put_blobs(self, blobs: Mapping[str, bytes]) -> None:
        for digest in self.missing_blobs(blobs):
            self.client.set(self.keys.blob(digest), blobs[digest], nx=True)

    @_translated
    def get_blob(self, digest: str) -> bytes | None:
        return self.client.get(self.keys.blob(digest))

    @_translated
    def missing_blobs(self, digests: Iterable[str]) -> list[str]:
        return [d for d in digests if not self.client.exists(self.keys.blob(d))]

    # -- workers ---------------------------------------------------------------------------

    @_translated
    def unregister(self, worker: str) -> None:
        self._run(self.scripts.unregister, [worker], self.keys.control(worker))

    @_translated
    def workers(self) -> list[WorkerInfo]:
        now_ms, infos, seen = self._run(self.scripts.workers, [])
        last = {_text(k): float(v) for k, v in zip(seen[::2], seen[1::2], strict=True)}
        found = []
        for worker, info in zip(infos[::2], infos[1::2], strict=True):
            age_s = max(0.0, (float(now_ms) - last.get(_text(worker), 0.0)) / 1000)
            found.append(replace(WorkerInfo.from_dict(loads(info)), age_s=age_s,
                                 lost=age_s > self.settings.lease_s))
        return found

    @_translated
    def send_control(self, worker: str, command: str) -> None:
        self.client.rpush(self.keys.control(worker), command)

    def close(self) -> None:
        self.client.close()
