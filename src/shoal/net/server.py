"""The coordinator: one thread serving a local queue to authenticated clients over ZeroMQ.

One ROUTER socket, CurveZMQ on it, and a ZAP handler that admits only the client
key of our status file: a peer without it never gets a message through, so
nothing an outsider sends is ever decoded. Every request runs against the local
queue (SQLite by default) before it is answered, so an acknowledged request is
durable. Claims and result waits that find nothing are parked and answered the
moment a job or a result appears: workers and executors never poll.

A client that got no answer sends the same request again; replies to requests
that change state are kept for a while and sent again instead of acting twice.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from .. import defaults
from ..errors import JobNotFound, LeaseLost, ShoalError
from ..fsutil import HOST
from ..job import Job, Kind, Lease, Reaped, Result
from ..queue.base import Queue
from . import wire
from .status import Keys, Status, boot_id, write_status

log = logging.getLogger("shoal.serve")

ZAP_DOMAIN = "shoal"
CACHE_KEEP_S = 60.0  # a repeated request later than this acts again (idempotent anyway)
# Requests whose repeat must not act twice; their replies are cached.
MUTATING = frozenset({"submit", "put_blobs", "claim", "finish", "release",
                      "cancel", "retry", "send_control", "beat"})


@dataclass
class _Parked:
    """A claim or a result wait that found nothing yet."""

    route: bytes
    key: tuple[bytes, int]
    deadline: float
    args: dict[str, Any] = field(default_factory=dict)
    answered: bool = False


class _AllowedKey:
    """ZAP credentials: only the client key of our status file gets in."""

    def __init__(self, client_public: str) -> None:
        self.client_public = client_public.encode()

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = domain == ZAP_DOMAIN and key == self.client_public
        if not allowed:
            log.warning("refused a client with an unknown key")
        return allowed


def _endpoint_for_bind(bind: str) -> str:
    """`tcp://HOST:0` means any free port, which ZeroMQ spells `tcp://HOST:*`."""
    return bind[:-2] + ":*" if bind.endswith(":0") else bind


def advertised(endpoint: str, advertise: str | None = None) -> str:
    """The address clients use: the bound one, with a wildcard host replaced by ours."""
    host_port = endpoint.removeprefix("tcp://")
    host, _, port = host_port.rpartition(":")
    if advertise:
        host = advertise
    elif host in ("0.0.0.0", "*", "[::]", "::"):
        host = HOST
    return f"tcp://{host}:{port}"


class Coordinator:
    """Serve `queue` at `bind`; write the status file into `status_dir` if given."""

    def __init__(self, queue: Queue, *, bind: str = defaults.BIND, keys: Keys | None = None,
                 status_dir: str | Path | None = None, advertise: str | None = None,
                 max_message_bytes: int = defaults.MAX_MESSAGE_BYTES) -> None:
        self.queue = queue
        self.keys = keys or Keys.new()
        self.status_dir = Path(status_dir).expanduser().absolute() if status_dir else None
        self.boot = boot_id()
        self._context = zmq.Context()
        self._auth = ThreadAuthenticator(self._context, log=logging.getLogger("shoal.zap"))
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN, _AllowedKey(self.keys.client_public))
        self.max_message_bytes = max_message_bytes
        self._socket = self._bind(bind, max_message_bytes)
        self.bound = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.address = advertised(self.bound, advertise)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cache: collections.OrderedDict[tuple[bytes, int], tuple[float, bytes | None]] = (
            collections.OrderedDict())
        self._claims: list[_Parked] = []
        self._waits: list[_Parked] = []
        self._waits_by_id: dict[str, list[_Parked]] = {}  # job id -> waits that want it
        self._watchers: dict[str, set[bytes]] = {}
        self._routes: dict[bytes, bytes] = {}  # client id -> its latest routing id
        self._finals: list[Result] = []
        self._pending_may_grow = False
        # No reaping during our first lease: workers that ran on while no coordinator was
        # up beat in that time, so no live worker's lease is taken back on a restart.
        self._reap_from = self._next_reap = time.monotonic() + queue.lease_s
        self._reaps_seen: set[Reaped] = set()
        self._repeat = False  # the request being handled is a client's repeat
        queue.subscribe(self._finals.append)
        self._methods: dict[str, Callable[..., Any]] = {
            name.removeprefix("do_"): getattr(self, name)
            for name in dir(self) if name.startswith("do_")}
        if self.status_dir is not None:
            self.write_status()

    def _bind(self, bind: str, max_message_bytes: int) -> zmq.Socket:
        sock = self._context.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_secretkey = self.keys.server_secret.encode()
        sock.curve_publickey = self.keys.server_public.encode()
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(defaults.HANDSHAKE_S * 1000))
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a client reconnecting keeps its route
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(defaults.NET_HEARTBEAT_S * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(defaults.NET_HEARTBEAT_TIMEOUT_S * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TTL, int(defaults.NET_HEARTBEAT_TIMEOUT_S * 1000))
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(_endpoint_for_bind(bind))
        return sock

    def write_status(self) -> Path:
        assert self.status_dir is not None and self.keys.server_secret is not None
        status = Status(self.address, self.keys.server_public, self.keys.client_public,
                        self.keys.client_secret, HOST, os.getpid(), self.boot, time.time(),
                        self.queue.url, self.bound)
        return write_status(self.status_dir, status, self.keys.server_secret)

    # -- running ---------------------------------------------------------------------

    def start(self) -> Coordinator:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="shoal-coordinator",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def serve_forever(self) -> None:
        log.info("serving %s at %s", self.queue.url, self.address)
        try:
            while not self._stop.is_set():
                if self._socket.poll(self._poll_ms(), zmq.POLLIN):
                    self._handle_ready()
                self._timers()
        finally:
            self._close()

    def _close(self) -> None:
        self._socket.close(0)
        self._auth.stop()
        self._context.term()
        # status.json stays: the next run on this directory takes the same keys and address,
        # so copies of it on other machines stay good; nobody trusts it while we are gone.

    def _poll_ms(self) -> int:
        now = time.monotonic()
        wake = min([p.deadline for p in self._claims + self._waits] + [self._next_reap,
                                                                       now + 0.2])
        return max(0, int((wake - now) * 1000) + 1)

    def _handle_ready(self) -> None:
        for _ in range(1000):  # a burst, then timers get a turn
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) == 2:
                self._handle(frames[0], frames[1])
            self._after_changes()

    def _timers(self) -> None:
        now = time.monotonic()
        if now >= self._next_reap:
            self._next_reap = now + min(1.0, self.queue.lease_s / 4)
            self._reap()
        for parked in [p for p in self._claims if p.deadline <= now]:
            self._claims.remove(parked)
            self._answer(parked.route, parked.key, [])
        if self._waits:
            for parked in [p for p in self._waits if p.deadline <= now]:
                self._answer_wait(parked, [])
            self._waits = [p for p in self._waits if not p.answered]
        self._after_changes()
        while self._cache:  # forget old replies
            stamp, reply = next(iter(self._cache.values()))
            if (now - stamp < CACHE_KEEP_S and len(self._cache) <= defaults.REPLY_CACHE) \
                    or reply is None:
                break
            self._cache.popitem(last=False)

    # -- one request -----------------------------------------------------------------

    def _handle(self, route: bytes, frame: bytes) -> None:
        try:
            req_id, client, method, args, *repeat = wire.unpack(frame)
            if not (isinstance(req_id, int) and isinstance(client, bytes)
                    and isinstance(args, dict)):
                raise ValueError("bad request shape")
        except Exception as exc:
            log.warning("dropped a malformed request (%s)", exc)
            return
        self._repeat = bool(repeat)
        self._routes[client] = route
        key = (client, req_id)
        if method in MUTATING and self._answered_before(route, key):
            return
        handler = self._methods.get(method)
        try:
            if handler is None:
                raise ShoalError(f"unknown request {method!r} (client newer than coordinator?)")
            value = handler(route, key, **args)
        except ShoalError as exc:
            self._reply(route, key, method, [wire.ERR, req_id, wire.error_out(exc), self.boot])
        except Exception as exc:  # a bug or bad arguments: tell the client, keep serving
            log.exception("request %s failed", method)
            self._reply(route, key, method, [wire.ERR, req_id, wire.error_out(exc), self.boot])
        else:
            if value is not _PARKED:
                self._reply(route, key, method, [wire.OK, req_id, value, self.boot])
            elif method in MUTATING:
                self._cache[key] = (time.monotonic(), None)

    def _answered_before(self, route: bytes, key: tuple[bytes, int]) -> bool:
        """A repeated request: send the cached reply (or re-route a parked one)."""
        if key not in self._cache:
            return False
        reply = self._cache[key][1]
        if reply is None:  # still parked: answer on the newest route
            for parked in self._claims:
                if parked.key == key:
                    parked.route = route
        else:
            self._send(route, reply)
        return True

    def _reply(self, route: bytes, key: tuple[bytes, int], method: str, message: list) -> None:
        packed = wire.pack(message)
        if method in MUTATING:
            self._cache[key] = (time.monotonic(), packed)
        self._send(route, packed)

    def _answer(self, route: bytes, key: tuple[bytes, int], value: Any) -> bool:
        """Answer a parked request; False if its client cannot be reached."""
        packed = wire.pack([wire.OK, key[1], value, self.boot])
        if key in self._cache:
            self._cache[key] = (time.monotonic(), packed)
        return self._send(route, packed)

    def _send(self, route: bytes, packed: bytes) -> bool:
        try:
            self._socket.send_multipart([route, packed], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # gone (ROUTER_MANDATORY) or not reading: it retries
            log.debug("could not reach a client: %s", exc)
            return False
        return True

    # -- what changes wake parked requests -----------------------------------------

    def _after_changes(self) -> None:
        if self._pending_may_grow and self._claims:
            self._serve_claims()
        self._pending_may_grow = False
        if self._finals:
            finals = list(self._finals)  # the queue appends to this very list object
            self._finals.clear()
            self._push(finals)

    def _serve_claims(self) -> None:
        while self._claims:
            parked = self._claims[0]
            leases = self.queue.claim(parked.args["worker"], parked.args["n"])
            if not leases:
                return
            self._claims.pop(0)
            if not self._answer(parked.route, parked.key, [wire.lease_out(x) for x in leases]):
                for lease in leases:  # the worker went away while waiting
                    self.queue.release(lease)

    def _push(self, finals: list[Result]) -> None:
        for result in finals:
            for client in self._watchers.pop(result.job_id, ()):
                route = self._routes.get(client)
                if route is not None:
                    self._send(route, wire.pack([wire.PUSH, 0, wire.result_out(result),
                                                 self.boot]))
        if self._waits_by_id:
            ready: dict[int, tuple[_Parked, list[dict]]] = {}
            for result in finals:
                for parked in self._waits_by_id.get(result.job_id, ()):
                    if not parked.answered:
                        ready.setdefault(id(parked), (parked, []))[1].append(
                            wire.result_out(result))
            for parked, records in ready.values():
                self._answer_wait(parked, records)

    def _answer_wait(self, parked: _Parked, records: list[dict]) -> None:
        parked.answered = True
        for job_id in parked.args["ids"]:
            waiting = self._waits_by_id.get(job_id)
            if waiting is not None:
                waiting.remove(parked)
                if not waiting:
                    del self._waits_by_id[job_id]
        self._answer(parked.route, parked.key, records)

    # -- requests: jobs ----------------------------------------------------------------

    def do_hello(self, route: bytes, key: tuple) -> dict[str, Any]:
        config = self.queue.config_file()
        return {"protocol": wire.PROTOCOL, "boot": self.boot, "lease_s": self.queue.lease_s,
                "seed": self.queue.seed, "interpreters": self.queue.interpreters,
                "config": config.read_bytes() if config is not None else None,
                "queue": self.queue.url, "max_message_bytes": self.max_message_bytes}

    def do_ping(self, route: bytes, key: tuple) -> str:
        return self.boot

    def do_submit(self, route: bytes, key: tuple, jobs: list, watch: bool = False) -> list[str]:
        parsed = [wire.job(record) for record in jobs]
        new = self.queue.submit(parsed)
        self._pending_may_grow = bool(new)
        if watch:
            for record in self._watch(key[0], [job.id for job in parsed], set(new)):
                self._send(route, wire.pack([wire.PUSH, 0, record, self.boot]))
        return new

    def do_put_blobs(self, route: bytes, key: tuple, blobs: dict[str, bytes]) -> None:
        self.queue.put_blobs(blobs)

    def do_get_blob(self, route: bytes, key: tuple, digest: str) -> bytes | None:
        return self.queue.get_blob(digest)

    def do_missing_blobs(self, route: bytes, key: tuple, digests: list[str]) -> list[str]:
        return self.queue.missing_blobs(digests)

    def _final_results(self, ids: list[str]) -> dict[str, Result]:
        ready = {}
        for job_id in self.queue.final_ids(ids):
            status = self.queue.get(job_id)
            if status is not None and status.result is not None:
                ready[job_id] = status.result
        return ready

    def _watch(self, client: bytes, ids: list[str], new: set[str] | None = None) -> list[dict]:
        """Push these jobs' results to `client` when they land; return those already final."""
        ready = self._final_results(ids if new is None else [i for i in ids if i not in new])
        for job_id in ids:
            if job_id not in ready:
                self._watchers.setdefault(job_id, set()).add(client)
        return [wire.result_out(r) for r in ready.values()]

    def do_watch(self, route: bytes, key: tuple, ids: list[str]) -> list[dict]:
        return self._watch(key[0], ids)

    def do_claim(self, route: bytes, key: tuple, worker: str, n: int = 1,
                 wait_s: float = 0.0) -> Any:
        leases = self.queue.claim(worker, n) if not self._claims else []
        if leases or wait_s <= 0:
            return [wire.lease_out(x) for x in leases]
        self._claims.append(_Parked(route, key, time.monotonic() + wait_s,
                                    {"worker": worker, "n": n}))
        return _PARKED

    def _lease(self, fence: dict[str, Any], *, with_job: bool = False) -> Lease:
        """The lease a fence names; its job is read only where a log is placed by it."""
        status = self.queue.get(fence["id"]) if with_job else None
        job = status.job if status is not None else Job(fence["id"], "", Kind.COMMAND)
        return Lease(job, fence["attempt"], fence["worker"], fence["token"])

    def do_beat(self, route: bytes, key: tuple, info: dict, leases: list,
                progress: dict | None = None) -> dict[str, list[str]]:
        """A worker's heartbeat in one request: keep the progress its running jobs
        reported, then one `beat` of the queue (register, extend leases, take commands)."""
        fenced = [self._lease(fence) for fence in leases]
        for lease in fenced:
            text = (progress or {}).get(lease.job_id)
            if text is not None:
                path = self.queue.progress_path(lease)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(text)
        beat = self.queue.beat(wire.worker_in(info), fenced)
        return {"lost": [lease.job_id for lease in beat.lost], "commands": list(beat.commands)}

    def do_finish(self, route: bytes, key: tuple, lease: dict, result: dict,
                  log: bytes | None = None, then_claim: int = 0) -> list[dict]:
        """Record the result; with `then_claim`, also lease the worker its next jobs (one
        round trip instead of two) unless other workers are already waiting for work."""
        then_claim = 0 if self._claims else then_claim  # those waiting already go first
        return [wire.lease_out(x) for x in self._finish(lease, result, log, then_claim)]

    def _finish(self, lease: dict, result: dict, log: bytes | None,
                then_claim: int) -> list[Lease]:
        fenced = self._lease(lease, with_job=log is not None)
        record = wire.result_in(result)
        if log is not None:
            path = self.queue.attempt_log_path(fenced)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(log)
            record = replace(record, log=str(path))
        try:
            return self.queue.finish(fenced, record, then_claim=then_claim)
        except LeaseLost:
            if log is not None:
                self.queue.attempt_log_path(fenced).unlink(missing_ok=True)
            status = self.queue.get(fenced.job_id)
            done = status.result if status is not None else None
            if not self._repeat or done is None or done.reason.startswith("worker died") \
                    or (done.attempt, done.worker) != (fenced.attempt, fenced.worker):
                raise
            # A repeat of our own finish whose reply a coordinator restart lost.
            return self.queue.claim(fenced.worker, then_claim) if then_claim > 0 else []

    def do_release(self, route: bytes, key: tuple, lease: dict,
                   failed: dict | None = None) -> None:
        self.queue.release(self._lease(lease),
                           failed=wire.result_in(failed) if failed is not None else None)
        self._pending_may_grow = True

    def do_cancel(self, route: bytes, key: tuple, ids: list[str]) -> list[str]:
        return self.queue.cancel(ids)

    def do_retry(self, route: bytes, key: tuple, ids: list[str]) -> list[str]:
        again = self.queue.retry(ids)
        self._pending_may_grow = bool(again)
        return again

    def do_get(self, route: bytes, key: tuple, id: str) -> dict | None:
        status = self.queue.get(id)
        return wire.status_out(status) if status is not None else None

    def do_jobs(self, route: bytes, key: tuple) -> list[dict]:
        return [wire.status_out(s) for s in self.queue.jobs()]

    def do_counts(self, route: bytes, key: tuple) -> dict[str, int]:
        return {state.value: n for state, n in self.queue.counts().items()}

    def do_states(self, route: bytes, key: tuple, ids: list[str]) -> dict[str, str]:
        return {i: s.value for i, s in self.queue.states(ids).items()}

    def do_final_ids(self, route: bytes, key: tuple, ids: list[str]) -> list[str]:
        return self.queue.final_ids(ids)

    def do_results(self, route: bytes, key: tuple) -> list[dict]:
        return [wire.result_out(r) for r in self.queue.results()]

    def do_wait_results(self, route: bytes, key: tuple, ids: list[str],
                        timeout_s: float) -> Any:
        ready = [wire.result_out(r) for r in self._final_results(ids).values()]
        if ready or timeout_s <= 0:
            return ready
        parked = _Parked(route, key, time.monotonic() + timeout_s, {"ids": ids})
        self._waits.append(parked)
        for job_id in ids:
            self._waits_by_id.setdefault(job_id, []).append(parked)
        return _PARKED

    def do_is_drained(self, route: bytes, key: tuple) -> bool:
        return self.queue.is_drained()

    def _reap(self) -> list[Reaped]:
        """The served queue's reap (none during our first lease, see __init__)."""
        if time.monotonic() < self._reap_from:
            return []
        reaped = self.queue.reap()
        if not self._reaps_seen.issuperset(reaped):  # some job went back to pending
            self._pending_may_grow = True
        self._reaps_seen = set(reaped)
        return reaped

    def do_reap(self, route: bytes, key: tuple) -> list[dict]:
        """The served queue's reap: recent reaps by anyone, so a worker on a dead worker's
        host kills the attempts it left behind."""
        return [record.to_dict() for record in self._reap()]

    def do_read_log(self, route: bytes, key: tuple, id: str) -> bytes | None:
        status = self.queue.get(id)
        if status is None:
            raise JobNotFound(f"no job {id}")
        return self.queue.read_log(status)

    def do_progress(self, route: bytes, key: tuple) -> dict[str, list]:
        return {i: list(report) for i, report in self.queue.progress().items()}

    # -- requests: workers ------------------------------------------------------------

    def do_unregister(self, route: bytes, key: tuple, worker: str) -> None:
        self.queue.unregister(worker)

    def do_workers(self, route: bytes, key: tuple) -> list[dict]:
        return [wire.worker_out(w) for w in self.queue.workers()]

    def do_send_control(self, route: bytes, key: tuple, worker: str, command: str) -> None:
        self.queue.send_control(worker, command)


_PARKED = object()
