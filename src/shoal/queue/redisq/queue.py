"""`redis://HOST:PORT/DB?queue=NAME` (and rediss://, redis+sentinel://, Cluster): a queue
kept in a Redis server that many hosts share.

Every state change is one Lua script (see *.lua here) fenced by the lease token, so
Redis runs it whole and alone; leases are stamped and judged by the server's clock
(`TIME` inside the scripts) only, never a client's. A worker's heartbeat is one script
too (heartbeat.lua: its beat, then a reap). Claimers block on a wake-up list (BLPOP)
instead of polling; `watch` blocks on the `finals` stream (XREAD BLOCK), which is also
its journal of finals (`_finals_mark`/`_finals_since`, finals.lua), so a look costs what
changed since the caller's last one and nothing recorded between two looks is missed.
Counts are kept by the scripts (HINCRBY), never by scanning.

Logs, progress reports and the shared config travel with the state changes
(`ShippedFiles` over store.py's `RedisStore`): a beat carries its running jobs' progress
and log tails inside the beat script, finish and release(failed=) carry the attempt's
log (its last `log_cap_bytes`), and leases carry the config's stamp.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import msgpack

from ... import defaults
from ...errors import LeaseLost, NoSuchQueue
from ...job import (
    STATES,
    Beat,
    Job,
    JobStatus,
    JobSummary,
    Lease,
    Reaped,
    Result,
    State,
    WorkerInfo,
    dumps,
    loads,
    record_text,
)
from ..base import CANCELLED, Queue, WatchSet, blobs_of, chosen, page_of, reaped_keep_s
from ..batches import submit_pipelined
from ..files import ShippedFiles
from ..lanes import LaneNames
from ..redis_link import check_durability, confirm_durable, connect, parse_url, translated_errors
from ..scheduling import Capacity, check_after, needs_of
from ..settings import QueueSettings
from .keys import QueueKeys
from .records import job_of, needs_job, record_of, result_from, result_of, with_reason
from .scripts import Scripts
from .store import RedisStore

SUBMIT_BATCH = 2000  # jobs per submit script call (one round trip each)
READ_BATCH = 500  # ids per read (HMGET, HSCAN COUNT)
LISTING_PAGE = 1000  # jobs listing.lua scans per call (about 10 ms of the server's time)
FINALS_BATCH = 10_000  # finals stream entries read per look at most
# A watch of a WatchSet, which may grow while it waits, blocks on the stream this long at
# most before it looks at the ids added meanwhile (an id whose job ended before the wait
# began is in no entry the wait could see).
WATCH_SLICE_S = 0.25
F = TypeVar("F", bound=Callable[..., Any])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _packed(value: Any) -> bytes:
    """msgpack for the scripts: Redis's Lua msgpack knows no bin type, so bytes travel
    as raw strings."""
    return msgpack.packb(value, use_bin_type=False)


def _capacity(fit: Capacity | None) -> bytes:
    """A claim's capacity for the scripts (prelude.lua's capacity_of); b"" takes any job."""
    return b"" if fit is None else _packed([dict(fit.free), sorted(fit.labels)])


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

    files: ShippedFiles

    def __init__(self, url: str, *, lease_s: float = defaults.LEASE_S,
                 log_cap_bytes: int | None = None, create: bool = True) -> None:
        """`log_cap_bytes`: a finished job's log keeps its last this many bytes (default
        defaults.MAX_SHIPPED_LOG_BYTES, as for tcp://); the workers' setting applies.
        `create=False`: NoSuchQueue unless the queue exists (`_exists`)."""
        settings = QueueSettings(lease_s=lease_s,
                                 log_cap_bytes=log_cap_bytes or defaults.MAX_SHIPPED_LOG_BYTES)
        self.address = parse_url(url)
        self.keys = QueueKeys(self.address.queue)
        self.client = connect(self.address)
        self.cluster = hasattr(self.client, "get_primaries")
        try:
            if not create and not self._exists():
                raise NoSuchQueue(f"the Redis server holds no key of queue "
                                  f"{self.address.queue!r}")
            check_durability(self.client, self.address)
            self.scripts = Scripts(self.client)
            self._lane_names = LaneNames()
            store = RedisStore(self.client, self.keys,
                               lambda data: self._run(self.scripts.config, [data]), self.address)
            files = ShippedFiles(settings, store, config_stamp=store.stamp())
        except BaseException:
            self.client.close()
            raise
        super().__init__(self.address.safe_url, settings, files)  # never the password

    def _exists(self) -> bool:
        """A queue exists while Redis holds any of its keys: jobs and their records (from
        the first submit), registered workers, the shared config, the lease counter. All
        share one hash tag, so one EXISTS (one Cluster slot) answers."""
        with translated_errors(self.address):
            return bool(self.client.exists(*self.keys.shared))

    @property
    def _lease_ms(self) -> int:
        return max(1, round(self.settings.lease_s * 1000))

    def _run(self, script: Any, args: list[Any], *extra_keys: str, client: Any = None) -> Any:
        return script(keys=[*self.keys.shared, *extra_keys], args=args, client=client)

    # -- jobs -------------------------------------------------------------------------

    @_translated
    def submit(self, jobs: Iterable[Job]) -> list[str]:
        """Batches of SUBMIT_BATCH jobs, read as they come, one script call each; the next
        batch is encoded while one runs (batches.submit_pipelined)."""
        return submit_pipelined(jobs, SUBMIT_BATCH, self._encoded, self._store)

    def _encoded(self, jobs: list[Job]) -> list[tuple[list[Job], bytes, bytes]]:
        """The script calls that store `jobs` (one, unless a list with dependencies came
        whole): each call's jobs and its two arguments."""
        calls = []
        for first in range(0, len(jobs), SUBMIT_BATCH):
            batch = jobs[first:first + SUBMIT_BATCH]
            items: list[Any] = []
            shapes: dict[str, bytes] = {}
            for job in batch:
                lane = self._lane_names(job)
                if lane not in shapes:
                    shapes[lane] = _packed([needs_of(job), sorted(job.labels)])
                items += (job.id, record_text(job), job.payload or b"", lane, list(job.after))
            calls.append((batch, _packed(items), _packed(shapes)))
        return calls

    def _store(self, jobs: list[Job], calls: list[tuple[list[Job], bytes, bytes]]) -> list[str]:
        with translated_errors(self.address):  # this runs in submit_pipelined's thread
            if any(job.after for job in jobs):  # refused whole, before anything is stored
                check_after(jobs, self._known)
            blobs = blobs_of(jobs)
            if blobs:
                self.put_blobs(blobs)  # before the jobs that name them
            new: list[str] = []
            for batch, items, shapes in calls:
                added = self._submit_batch(items, shapes)
                if isinstance(added, int):  # all of them
                    new += [job.id for job in batch]
                else:
                    new += [_text(i) for i in added]
            return new

    def _known(self, ids: list[str]) -> set[str]:
        """Which of these ids the queue holds (for `check_after`)."""
        found: set[str] = set()
        for first in range(0, len(ids), READ_BATCH):
            chunk = ids[first:first + READ_BATCH]
            found.update(i for i, state in zip(chunk, self.client.hmget(self.keys.state, chunk),
                                               strict=True) if state is not None)
        return found

    def _submit_batch(self, items: bytes, shapes: bytes) -> Any:
        """One submit script call; with durable=strict, confirmed on disk or a replica
        before it returns (on the same connection, in the same round trip)."""
        args = [items, shapes]
        if self.address.durable != "strict":
            return self._run(self.scripts.submit, args)
        if self.cluster:  # Cluster pipelines refuse scripts: the wait comes right after
            added = self._run(self.scripts.submit, args)
            confirm_durable(self.client, self.address, 0)
            return added
        pipe = self.client.pipeline(transaction=False)
        self._run(self.scripts.submit, args, client=pipe)
        (added,) = confirm_durable(pipe, self.address, 1)
        return added

    @_translated
    def claim(self, worker: str, n: int = 1, *, wait_s: float = 0.0,
              fit: Capacity | None = None) -> list[Lease]:
        deadline = time.monotonic() + wait_s
        capacity = _capacity(fit)
        delay = defaults.POLL_MIN_S
        while True:
            reply = self._run(self.scripts.claim, [worker, n, self._lease_ms, capacity])
            leases = self._leases(worker, reply)
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return leases
            if reply[2]:  # jobs are pending but none fits: BLPOP would take our own token
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, defaults.POLL_MAX_S)
                continue
            # Sleep until a submit, release or reap pushes a wake-up token (or time is up).
            self.client.blpop([self.keys.wake], timeout=max(remaining, 0.001))

    def _leases(self, worker: str, reply: list[Any]) -> list[Lease]:
        """Leases from a claim's reply {config stamp, rows, pending left}; the stamp tells
        the worker's files whether the shared config changed before these jobs start."""
        stamp, rows, _left = reply
        if not rows:
            return []
        self.files.note_config(_text(stamp) if stamp else None)
        return [Lease(job_of(spec, payload), int(attempt), worker, _text(token), int(seq))
                for _id, attempt, token, spec, payload, seq in rows]

    @_translated
    def beat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        leases = list(leases)
        lost, commands = self._run(self.scripts.beat, self._beat_args(info, leases),
                                   self.keys.control(info.id))
        return Beat(tuple(leases[int(i)] for i in lost), tuple(_text(c) for c in commands))

    @_translated
    def heartbeat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        """The beat and the reap in one script (heartbeat.lua): one round trip, and the
        leases just renewed are judged an instant later by the same server, so a worker
        stalled between two calls (a loaded host) never takes its own live leases back."""
        leases = list(leases)
        lost, commands, recent = self._run(
            self.scripts.heartbeat, [*self._reap_args(), *self._beat_args(info, leases)],
            self.keys.control(info.id))
        return Beat(tuple(leases[int(i)] for i in lost), tuple(_text(c) for c in commands),
                    tuple(_reaped(recent)))

    def _beat_args(self, info: WorkerInfo, leases: list[Lease]) -> list[Any]:
        """beat.lua's ARGV: the worker, then each lease with its progress and log tail."""
        reports = self.files.beat_reports(leases)
        args: list[Any] = [info.id, dumps(info.to_dict()), info.host, self._lease_ms]
        for lease in leases:
            progress, tail = reports.get(lease.job_id, (None, None))
            args += [lease.job_id, lease.token, progress or b"", tail or b""]
        return args

    @_translated
    def finish(self, lease: Lease, result: Result, *, then_claim: int = 0,
               fit: Capacity | None = None) -> list[Lease]:
        shipped = self.files.shipped_log(lease, result)
        if shipped is not None:
            result = replace(result, log=self._log_name(lease.job_id))
        try:
            reply = self._run(self.scripts.finish, [
                lease.job_id, lease.token, record_of(result), result.state.value, lease.worker,
                then_claim, self._lease_ms, shipped or b"", _capacity(fit)])
            if reply is None and shipped is not None:  # cancelled meanwhile: keep its log
                self._keep_shipped(lease, shipped)
        finally:
            self.files.forget(lease, shipped)  # kept in Redis, or not this attempt's to keep
        if reply is None:
            raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer current")
        return self._leases(lease.worker, reply)

    def _log_name(self, log_id: str) -> str:
        """What a result shows as its log: where `shoal logs` finds it."""
        return f"{self.url}#log={log_id}"

    @_translated
    def release(self, lease: Lease, *, failed: Result | None = None) -> None:
        shipped = None if failed is None else self.files.shipped_log(lease, failed)
        if failed is not None and shipped is not None:
            failed = replace(failed, log=self._log_name(f"{lease.job_id}.{lease.attempt}"))
        record = record_of(failed) if failed is not None else b""
        try:
            kept = self._run(self.scripts.release, [lease.job_id, lease.token, record,
                                                    shipped or b""])
        finally:
            self.files.forget(lease, shipped)
        if not kept:
            raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer current")

    @_translated
    def cancel(self, job_ids: Iterable[str]) -> list[str]:
        ids = list(job_ids)
        if not ids:
            return []
        return [_text(i) for i in self._run(self.scripts.cancel,
                                            [CANCELLED, self._log_name(""), *ids])]

    @_translated
    def keep_log(self, lease: Lease, result: Result) -> None:
        """A cancelled attempt's whole log replaces the tail its cancel kept (keeplog.lua)."""
        shipped = self.files.shipped_log(lease, result)
        try:
            if shipped is not None:
                self._keep_shipped(lease, shipped)
        finally:
            self.files.forget(lease, shipped)

    def _keep_shipped(self, lease: Lease, shipped: bytes) -> None:
        self._run(self.scripts.keeplog, [lease.job_id, lease.attempt, lease.worker, shipped])

    @_translated
    def retry(self, job_ids: Iterable[str], *, force: bool = False,
              first: bool = True) -> list[str]:
        ids = list(job_ids)
        if not ids:
            return []
        return [_text(i) for i in self._run(self.scripts.retry, [
            "1" if force else "0", "1" if first else "0", *ids])]

    @_translated
    def _purge(self) -> int:
        return int(self._run(self.scripts.purge, []))

    @_translated
    def reap(self) -> list[Reaped]:
        return _reaped(self._run(self.scripts.reap, self._reap_args()))

    def _reap_args(self) -> list[Any]:
        """reap.lua's ARGV: how long reaps are reported, how many, the default cap."""
        keep_ms = round(reaped_keep_s(self.settings.lease_s) * 1000)
        return [keep_ms, defaults.REAPED_KEEP, defaults.MAX_ATTEMPTS]

    # -- reads --------------------------------------------------------------------------

    @_translated
    def get(self, job_id: str) -> JobStatus | None:
        (row,) = self._run(self.scripts.status, [job_id])
        return None if row is None else self._status(row)

    def _status(self, row: list[Any]) -> JobStatus:
        spec, payload, state, attempt, worker, record, earlier, seq = row
        job = job_of(spec, payload)
        return JobStatus(job, State(_text(state)), int(attempt),
                         _text(worker) if worker else None,
                         result_of(record, job) if record else None,
                         tuple(result_of(r, job) for r in earlier if r), int(seq))

    def jobs(self) -> Iterator[JobStatus]:
        for ids in self._scan(self.keys.state):
            with translated_errors(self.address):
                rows = self._run(self.scripts.status, ids)
            yield from (self._status(row) for row in rows if row is not None)

    def listing(self, states: Collection[State] | None = None,
                limit: int | None = None) -> Iterator[JobStatus]:
        """listing.lua page by page (the scan, the filter and the reads in the script, no
        attempt records), then sorted here: Redis keeps no index by seq."""
        found: list[JobStatus] = []
        for reply in self._pages(states, "payloads"):
            found += self._listed(reply)
        return iter(chosen(found, None, limit))

    def summaries(self, states: Collection[State] | None = None, limit: int | None = None,
                  offset: int = 0) -> Iterator[JobSummary]:
        """listing.lua's pages without payloads, rows taken from the decoded records (no
        Job or Result built). Redis keeps no index by seq: every row is read and sorted
        here, then the page cut out."""
        found = [_summary(*row) for reply in self._pages(states, "summaries")
                 for row in json.loads(reply[0])]
        found.sort(key=lambda row: (row.seq, row.name))
        return iter(page_of(found, limit, offset))

    def _pages(self, states: Collection[State] | None, what: str) -> Iterator[list]:
        """listing.lua's replies (`what`: payloads or summaries), one per page of
        LISTING_PAGE jobs scanned."""
        wanted = "" if states is None else " ".join(sorted(State(s).value for s in states))
        if states is not None and not wanted:
            return
        cursor: Any = 0
        while True:
            with translated_errors(self.address):
                reply = self._run(self.scripts.listing,
                                  [wanted, what, cursor, LISTING_PAGE])
            yield reply
            cursor = _text(reply[1])
            if cursor == "0":
                return

    def _listed(self, reply: list[Any]) -> list[JobStatus]:
        """listing.lua's reply: one JSON array of rows, the cursor, then (id, payload)
        pairs."""
        payloads = {_text(i): p for i, p in zip(reply[2::2], reply[3::2], strict=True)}
        statuses = []
        for spec, state, attempt, worker, record, seq in json.loads(reply[0]):
            if spec["id"] in payloads:
                spec["payload"] = payloads[spec["id"]]
            job = Job.from_dict(spec)
            statuses.append(JobStatus(job, STATES[state], attempt, worker,
                                      result_from(record, job) if record else None, (), seq))
        return statuses

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
                found = self._final_results(ids)
            yield from found

    def _final_results(self, job_ids: list[str]) -> list[Result]:
        """The recorded results of these jobs (those without one are left out): only final
        jobs have a result (retry drops it)."""
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

    # -- watching for finals: the `finals` stream is the journal (base._watch_once) ---------

    @_translated
    def watch(self, ids: Collection[str], timeout_s: float) -> list[Result]:
        """Final results among `ids`: a look (base._watch_once: the stream entries since
        the caller's mark, the ids added since), then XREAD BLOCK on the stream until an
        entry lands, and another look. The mark lives in the stream, so a reconnect (the
        client retries) misses nothing; a trimmed stream makes the look scan every id."""
        if timeout_s <= 0 and not isinstance(ids, WatchSet):
            return self._final_results(list(ids))
        if not ids and not isinstance(ids, WatchSet):
            return []
        watched = ids if isinstance(ids, WatchSet) else WatchSet(ids)
        grows = watched is ids
        deadline = time.monotonic() + timeout_s
        while True:
            found = self._watch_once(watched)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            if grows:
                remaining = min(remaining, WATCH_SLICE_S)
            assert watched.mark is not None  # _watch_once always leaves our stream mark
            stream_id = watched.mark[1][0]  # type: ignore[index]
            self.client.xread({self.keys.finals: stream_id}, count=1,
                              block=max(1, round(remaining * 1000)))

    def _finals_mark(self) -> object | None:
        newest, added = self._run(self.scripts.finals, [])
        return _text(newest), int(added)

    def _finals_since(self, mark: object) -> tuple[list[str], object] | None:
        assert isinstance(mark, tuple)
        reply = self._run(self.scripts.finals, [mark[0], mark[1], FINALS_BATCH])
        if not reply:
            return None
        return [_text(i) for i in reply[2:]], (_text(reply[0]), int(reply[1]))

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


def _reaped(entries: list[Any]) -> list[Reaped]:
    """The reaps a script reported: entries of the `reaped` stream."""
    found = []
    for _entry_id, fields in entries:
        record = {_text(k): _text(v) for k, v in zip(fields[::2], fields[1::2], strict=True)}
        found.append(Reaped(record["job"], record["worker"], int(record["attempt"]),
                            record["host"]))
    return found


def _summary(seq: int, job_id: str, name: str, state: str, attempt: int, worker: str | None,
             exit_code: int | None, reason: str, started: float | None, ended: float | None,
             host: str, log: str | None, lost: bool, dep: str | None,
             dep_name: str) -> JobSummary:
    """A summary row of listing.lua (the reason of a script's short record written out
    here, as `with_reason` does for whole records)."""
    if lost or dep:
        short = {"state": state, "attempt": attempt, "worker": worker or "", "lost": lost,
                 "reason": reason}
        if dep:
            short.update(dep=dep, dep_name=dep_name)
        reason = with_reason(short)["reason"]
    return JobSummary(seq, job_id, name, STATES[state], attempt, worker, exit_code, reason,
                      started, ended, host, log)
