"""The coordinator: one thread serving a local queue to authenticated clients over ZeroMQ.

One ROUTER socket, CurveZMQ on it, and a ZAP handler that admits only the client
key of our status file: a peer without it never gets a message through, so
nothing an outsider sends is ever decoded. Every request runs against the local
queue (SQLite by default) before it is answered, so an acknowledged request is
durable. Claims that find nothing are parked (`parking.py`) and answered the
moment a job appears, and watched results are pushed the moment they are recorded:
workers and executors never poll.
What each request does is in `service.py`.

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
from pathlib import Path
from typing import Any, NamedTuple

import zmq
from zmq.auth.thread import ThreadAuthenticator

from .. import defaults
from ..errors import QueueFull, ShoalError, no_space
from ..fsutil import HOST
from ..net import wire
from ..net.contact import Contact, Keys, boot_id, write_contact
from ..queue.base import GroupLost, Queue
from .parking import Key, Parking
from .schema import check
from .service import GROUPED, HANDLERS, MUTATING, PARKED, SCHEMAS, Request, Service

log = logging.getLogger("shoal.serve")

ZAP_DOMAIN = "shoal"
BURST = 1024  # requests served in a row before timers get a turn
GROUP_MAX = 128  # requests read at once, whose writes may share one commit
CACHE_KEEP_S = 60.0  # a repeated request later than this acts again (idempotent anyway)
FULL_SAY_S = 60.0  # a full disk met by reaps is logged at most this often


class Incoming(NamedTuple):
    """A request read, not yet served."""

    req: Request
    method: str
    args: dict[str, Any]


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
        self._full_said = -FULL_SAY_S  # when a full queue was last logged (monotonic)
        self._thread: threading.Thread | None = None
        self._cache: collections.OrderedDict[Key, tuple[float, bytes | None]] = (
            collections.OrderedDict())
        self._parking = Parking(queue, answer=self._answer, push=self._push)
        self._outbox: list[tuple[bytes, bytes]] | None = None  # replies held for a commit
        self.requests: collections.Counter[str] = collections.Counter()  # served, by method
        self._service = Service(queue, self._parking, boot=self.boot,
                                max_message_bytes=max_message_bytes, push=self._push)
        if self.status_dir is not None:
            self.write_contact()

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

    def write_contact(self) -> Path:
        assert self.status_dir is not None and self.keys.server_secret is not None
        contact = Contact(self.address, self.keys.server_public, self.keys.client_public,
                          self.keys.client_secret, HOST, os.getpid(), self.boot, time.time(),
                          self.queue.url, self.bound)
        return write_contact(self.status_dir, contact, self.keys.server_secret)

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
                try:
                    if self._socket.poll(self._poll_ms(), zmq.POLLIN):
                        self._handle_ready()
                    self._timers()
                except QueueFull as exc:  # a full disk: requests get it (wire.error_out)
                    self._say_full(exc)  # and wait; we serve on and reap once space returns
                    self._service.hold_reaps()
        finally:
            self._close()

    def _say_full(self, exc: QueueFull) -> None:
        """Log a full queue (disk) met by a reap, at most once per FULL_SAY_S."""
        now = time.monotonic()
        if now - self._full_said >= FULL_SAY_S:
            self._full_said = now
            log.warning("%s; serving on, reaping again once writes go through", exc)

    def _close(self) -> None:
        self._socket.close(0)
        self._auth.stop()
        self._context.term()
        # status.json stays: the next run on this directory takes the same keys and address,
        # so copies of it on other machines stay good; nobody trusts it while we are gone.

    def _poll_ms(self) -> int:
        now = time.monotonic()
        wake = min([*self._parking.deadlines(), self._service.next_reap, now + 0.2])
        return max(0, int((wake - now) * 1000) + 1)

    def _handle_ready(self) -> None:
        for _ in range(BURST // GROUP_MAX):  # a burst, then timers get a turn
            batch = self._read(GROUP_MAX)
            if not batch:
                break
            self._serve(batch)
            self._service.after_changes()

    def _timers(self) -> None:
        now = time.monotonic()
        self._service.timers(now)
        while self._cache:  # forget old replies
            stamp, reply = next(iter(self._cache.values()))
            if (now - stamp < CACHE_KEEP_S and len(self._cache) <= defaults.REPLY_CACHE) \
                    or reply is None:
                break
            self._cache.popitem(last=False)

    def _read(self, most: int) -> list[Incoming]:
        """Up to `most` requests that arrived already (malformed ones dropped)."""
        batch: list[Incoming] = []
        while len(batch) < most:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 2:
                continue
            try:
                req_id, client, method, args, repeat = wire.request_in(frames[1])
            except wire.MalformedMessage as exc:
                log.warning("dropped a malformed request (%s)", exc)
                continue
            batch.append(Incoming(Request(frames[0], (client, req_id), repeat), method, args))
        return batch

    # -- group commit ----------------------------------------------------------------

    def _serve(self, batch: list[Incoming]) -> None:
        """Each run of requests that may share a commit (`GROUPED`) in one group of the
        queue's writes (`Queue.group`), the others one by one, in the order they came."""
        run: list[Incoming] = []
        for incoming in batch:
            if incoming.method in GROUPED:
                run.append(incoming)
                continue
            self._serve_group(run)
            run = []
            self._handle(incoming)
        self._serve_group(run)

    def _serve_group(self, run: list[Incoming]) -> None:
        """The requests of `run` in one commit; their replies (and pushes) wait in the
        outbox until it is done, so nothing is acknowledged before it is durable. A group
        the queue could not commit did nothing: what we noted of it is undone, and its
        requests run again one by one, each answered as without a group."""
        if len(run) <= 1:
            for incoming in run:
                self._handle(incoming)
            return
        undo = self._undo_point(run)
        self._outbox, committed = [], False
        try:
            with self.queue.group():
                for incoming in run:
                    self._handle(incoming)
            committed = True
        except GroupLost as exc:
            log.warning("%s; serving its %d requests one by one", exc, len(run))
        except Exception:  # a bug of ours (handlers answer their own errors): undone too
            log.exception("a group of %d requests failed; serving them one by one", len(run))
        finally:
            outbox, self._outbox = self._outbox, None
            if not committed:
                undo()
        if not committed:
            for incoming in run:
                self._handle(incoming)
            return
        for route, packed in outbox:
            self._send(route, packed)

    def _undo_point(self, run: list[Incoming]) -> Callable[[], None]:
        """What undoes our notes of `run` should its group be lost: the replies cached
        for it, what the service noted to push, the claims it parked."""
        fresh = [incoming.req.key for incoming in run if incoming.req.key not in self._cache]
        noted = self._service.notes()
        parked = len(self._parking.claims)

        def undo() -> None:
            for key in fresh:
                self._cache.pop(key, None)
            self._service.restore_notes(noted)
            del self._parking.claims[parked:]

        return undo

    # -- one request -----------------------------------------------------------------

    def _handle(self, incoming: Incoming) -> None:
        req, method, args = incoming
        route, req_id = req.route, req.key[1]
        self.requests[method] += 1
        self._parking.seen(req.client, route)
        if method in MUTATING and self._answered_before(route, req.key):
            return
        handler = HANDLERS.get(method)
        try:
            if handler is None:
                raise ShoalError(f"unknown request {method!r} (client newer than coordinator?)")
            check(method, SCHEMAS[method], args)  # wrong types: one line back, no traceback
            value = handler(self._service, req, **args)
        except GroupLost:
            raise  # the group is lost as a whole: see _serve_group
        except ShoalError as exc:
            if isinstance(exc, QueueFull):  # a beat refused for space: its worker lives
                self._service.hold_reaps()
            self._reply(req, method, [wire.ERR, req_id, wire.error_out(exc), self.boot])
        except Exception as exc:  # a bug or bad arguments: tell the client, keep serving
            if no_space(exc, "") is None:  # a full disk is no bug: the client hears NoSpace
                log.exception("request %s failed", method)
            else:
                self._service.hold_reaps()
            self._reply(req, method, [wire.ERR, req_id, wire.error_out(exc), self.boot])
        else:
            if value is not PARKED:
                self._reply(req, method, [wire.OK, req_id, value, self.boot])
            elif method in MUTATING:
                self._cache[req.key] = (time.monotonic(), None)

    def _answered_before(self, route: bytes, key: Key) -> bool:
        """A repeated request: send the cached reply (or re-route a parked one)."""
        if key not in self._cache:
            return False
        reply = self._cache[key][1]
        if reply is None:  # still parked: answer on the newest route
            self._parking.reroute(key, route)
        else:
            self._send(route, reply)
        return True

    def _reply(self, req: Request, method: str, message: list) -> None:
        packed = wire.pack(message)
        if method in MUTATING:
            self._cache[req.key] = (time.monotonic(), packed)
        self._send(req.route, packed)

    def _answer(self, route: bytes, key: Key, value: Any) -> bool:
        """Answer a parked request; False if its client cannot be reached."""
        packed = wire.pack([wire.OK, key[1], value, self.boot])
        if key in self._cache:
            self._cache[key] = (time.monotonic(), packed)
        return self._send(route, packed)

    def _push(self, route: bytes, record: dict) -> bool:
        """Send a client a result it is watching, outside any reply."""
        return self._send(route, wire.pack([wire.PUSH, 0, record, self.boot]))

    def _send(self, route: bytes, packed: bytes) -> bool:
        if self._outbox is not None:  # in a group: sent once it is committed
            self._outbox.append((route, packed))
            return True
        try:
            self._socket.send_multipart([route, packed], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # gone (ROUTER_MANDATORY) or not reading: it retries
            log.debug("could not reach a client: %s", exc)
            return False
        return True
