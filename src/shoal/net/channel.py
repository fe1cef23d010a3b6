"""A client's connection to a coordinator: one DEALER socket owned by one I/O thread.

Callers from any thread hand a request to the I/O thread and wait for its reply.
A request with no reply is sent again (same id) after `RESEND_S` plus the wait it
asked for, so a lost message or a coordinator restart costs a delay, never a
duplicate: the coordinator answers a repeat from its reply cache, and requests
are idempotent anyway. ZeroMQ reconnects by itself; the socket monitor tells us
at once when the CurveZMQ handshake fails, which ZeroMQ would otherwise hide
behind endless silent reconnects.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from .. import defaults
from ..errors import AuthenticationFailed, CoordinatorUnreachable, MessageTooBig, ShoalError
from ..fsutil import unique_token
from . import wire
from .contact import Keys

log = logging.getLogger("shoal.net")

_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


@dataclass
class _Call:
    req_id: int
    frame: bytes
    wait_s: float
    repeat: bytes = b""  # the same request marked as a repeat
    sent_at: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class Channel:
    """Send requests to the coordinator at `address`; deliver its pushes to `on_push`.

    `on_push(message)` runs on a separate dispatcher thread, so it may call back into
    the channel. It gets each pushed result record, and `None` after the coordinator
    restarted (so the caller can register its watches again).
    """

    def __init__(self, address: str, keys: Keys, *, on_push: Callable[[Any], None],
                 patience_s: float = defaults.PATIENCE_S) -> None:
        self.address = address
        self.patience_s = patience_s
        self.client_id = unique_token().encode()
        self.boot: str | None = None
        self.max_message_bytes: int | None = None  # the coordinator's limit, once known
        self._on_push = on_push
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._outbox: collections.deque[_Call] = collections.deque()
        self._pending: dict[int, _Call] = {}
        self._auth_error: AuthenticationFailed | None = None
        self._silent = False  # a call found nobody for its whole patience; none answered since
        self._closed = False
        self._context = zmq.Context()
        self._socket = self._connect(keys)
        self._monitor = self._socket.get_monitor_socket(_HANDSHAKE_EVENTS)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._pushes: collections.deque[Any] = collections.deque()
        self._push_ready = threading.Condition()
        self._io = threading.Thread(target=self._run, name="shoal-net-io", daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch, name="shoal-net-push",
                                            daemon=True)
        self._io.start()
        self._dispatcher.start()

    def _connect(self, keys: Keys) -> zmq.Socket:
        sock = self._context.socket(zmq.DEALER)
        # Our own routing id: the coordinator's route to us survives reconnections
        # (ROUTER_HANDOVER there), so pushes find us again at once.
        sock.setsockopt(zmq.ROUTING_ID, b"c" + self.client_id)
        sock.curve_serverkey = keys.server_public.encode()
        sock.curve_publickey = keys.client_public.encode()
        sock.curve_secretkey = keys.client_secret.encode()
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(defaults.HANDSHAKE_S * 1000))
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(defaults.NET_HEARTBEAT_S * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(defaults.NET_HEARTBEAT_TIMEOUT_S * 1000))
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.connect(self.address)
        return sock

    # -- callers ---------------------------------------------------------------------

    def call(self, method: str, args: dict[str, Any] | None = None, *, wait_s: float = 0.0,
             patience_s: float | None = None) -> Any:
        """Send a request and return the coordinator's answer (or raise its error).

        `wait_s` is how long the coordinator may hold the request (a parked claim)."""
        if self._auth_error is not None:
            raise self._auth_error
        if self._closed:
            raise ShoalError(f"connection to {self.address} is closed")
        req_id = next(self._ids)
        frame = wire.pack([req_id, self.client_id, method, args or {}])
        # The repeat is the same array with a fifth element, `true`: one header byte apart.
        assert frame[0] == 0x94, "a request is a msgpack fixarray of 4"
        call = _Call(req_id, frame, wait_s, b"\x95" + frame[1:] + b"\xc3")
        if self.max_message_bytes is not None and len(call.repeat) > self.max_message_bytes:
            # libzmq would drop the connection without a word: say so here instead.
            raise MessageTooBig(f"{method} request of {len(call.repeat)} bytes is over the "
                                f"coordinator's limit of {self.max_message_bytes} bytes")
        with self._lock:
            self._pending[req_id] = call
            self._outbox.append(call)
        os.write(self._wake_w, b"!")
        patience = self.patience_s if patience_s is None else patience_s
        if self._silent:  # do not wait the whole patience again for a coordinator that is gone
            patience = min(patience, defaults.RESEND_S)
        if not call.done.wait(wait_s + patience):
            with self._lock:
                self._pending.pop(req_id, None)
            self._silent = True
            raise CoordinatorUnreachable(
                f"no coordinator answered at {self.address} for {patience:.0f} s "
                f"(is it running? is the network up?)")
        if call.error is not None:
            raise call.error
        return call.value

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"!")
        self._io.join(timeout=5)
        with self._push_ready:
            self._push_ready.notify_all()
        self._dispatcher.join(timeout=5)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the I/O thread -----------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._closed:
                ready = dict(poller.poll(self._idle_ms()))
                if self._wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 65536)
                if self._monitor in ready:
                    self._read_monitor()
                if self._socket in ready:
                    self._read_replies()
                self._send_due()
        finally:
            self._socket.disable_monitor()
            self._monitor.close(0)
            self._socket.close(0)
            self._context.term()

    def _idle_ms(self) -> int | None:
        """How long the I/O thread may sleep: until the first resend falls due, or (no
        call waiting) until something arrives or a caller wakes it. A thousand clients in
        a process (one I/O thread each) would otherwise wake ten thousand times a second."""
        now = time.monotonic()
        with self._lock:
            if self._outbox:
                return 0
            due = min((c.sent_at + c.wait_s for c in self._pending.values() if c.sent_at),
                      default=None)
        if due is None:
            return None
        return max(0, int((due + defaults.RESEND_S - now) * 1000) + 1)

    def _send_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            fresh = list(self._outbox)
            self._outbox.clear()
            stale = [c for c in self._pending.values()
                     if c.sent_at and now - c.sent_at > c.wait_s + defaults.RESEND_S]
        for call in fresh + stale:
            # Too much queued while disconnected (zmq.Again): the next round sends it again.
            with contextlib.suppress(zmq.Again):
                self._socket.send(call.repeat if call.sent_at else call.frame, zmq.NOBLOCK)
            call.sent_at = now

    def _read_replies(self) -> None:
        while True:
            try:
                frame = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                kind, req_id, value, boot = wire.reply_in(frame)
            except wire.MalformedMessage as exc:  # only an authenticated coordinator gets here
                log.warning("dropped a malformed reply from %s (%s)", self.address, exc)
                continue
            self._silent = False
            if boot != self.boot:
                if self.boot is not None:
                    log.warning("coordinator at %s restarted; carrying on", self.address)
                    self._queue_push(None)
                self.boot = boot
            if kind == wire.PUSH:
                self._queue_push(value)
                continue
            with self._lock:
                call = self._pending.pop(req_id, None)
            if call is None:
                continue  # the answer to a repeat we no longer wait for
            if kind == wire.ERR:
                call.error = wire.error_in(value)
            else:
                call.value = value
            call.done.set()

    def _read_monitor(self) -> None:
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._auth_error = None
                continue
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                why = ("the coordinator refused our key (the status file is not the one of "
                       "the coordinator serving there now)")
            else:
                why = ("the encrypted handshake failed (wrong server key in the status "
                       "file, or not a shoal coordinator at that address)")
            self._auth_error = AuthenticationFailed(
                f"authentication failed with {self.address}: {why}")
            self._fail_all(self._auth_error)

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            calls = list(self._pending.values())
            self._pending.clear()
            self._outbox.clear()
        for call in calls:
            call.error = error
            call.done.set()

    # -- pushes -----------------------------------------------------------------------

    def _queue_push(self, message: Any) -> None:
        with self._push_ready:
            self._pushes.append(message)
            self._push_ready.notify()

    def _dispatch(self) -> None:
        while True:
            with self._push_ready:
                while not self._pushes and not self._closed:
                    self._push_ready.wait()
                if self._closed and not self._pushes:
                    return
                batch = list(self._pushes)
                self._pushes.clear()
            for message in batch:
                try:
                    self._on_push(message)
                except Exception:
                    log.exception("a result callback failed")
