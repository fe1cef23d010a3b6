"""Finding a live coordinator from its status directory, or becoming it.

A status file can outlive its coordinator (kill -9, a reboot, a lost machine), so
it is never trusted on sight: on its own host the process must exist, elsewhere
the coordinator must answer a ping. Becoming the coordinator is guarded by a
lock file created exclusively, so two first runs started together elect one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
from pathlib import Path

import zmq

from .. import defaults
from ..errors import ShoalError, UsageError
from ..fsutil import HOST, NETWORK_FS, filesystem_type, make_dir, write_new
from ..net.channel import Channel
from ..net.contact import (
    Contact,
    dead_here,
    load_keys,
    private_dir,
    process_alive,
    read_contact,
)
from ..queue import open_queue
from ..queue.base import Queue
from .coordinator import Coordinator

log = logging.getLogger("shoal.serve")

PING_S = 3.0  # a coordinator that answers a ping this fast is alive
# ...but on a loaded machine a live one can take longer: while something still listens
# at its address, it gets this long before we call it dead (two coordinators for one
# session would run its body twice, so a wrong "dead" costs far more than a wait).
SLOW_PING_S = 30.0
LOCK_FILE = "serving.lock"


def alive(contact: Contact, timeout_s: float = PING_S,
          slow_timeout_s: float = SLOW_PING_S) -> bool:
    """True if the coordinator this contact names answers (or surely runs, on this host).

    No answer within `timeout_s` is final only if nothing listens at its address any
    more; a listener that is merely slow is given `slow_timeout_s` to answer."""
    if dead_here(contact):
        return False
    if _ping(contact, timeout_s):
        return True
    return _listening(contact.address) and _ping(contact, slow_timeout_s)


def _ping(contact: Contact, timeout_s: float) -> bool:
    channel = Channel(contact.address, contact.keys(), on_push=lambda _m: None,
                      patience_s=timeout_s)
    try:  # any coordinator holding these keys will do: a restart keeps them
        channel.call("ping")
        return True
    except ShoalError:
        return False
    finally:
        channel.close()


def _listening(address: str, timeout_s: float = PING_S) -> bool:
    """True if a TCP connection to `address` (tcp://HOST:PORT) is accepted."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def live_contact(folder: Path) -> Contact | None:
    """The contact in `folder` if its coordinator is alive, else None."""
    try:
        contact = read_contact(folder)
    except (FileNotFoundError, UsageError):
        return None
    return contact if alive(contact) else None


def state_dir() -> Path:
    """A directory on a local disk for coordinator state (SQLite refuses network mounts)."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "shoal"
    with contextlib.suppress(OSError):
        make_dir(base)  # private: the queue's commands, logs and payloads
        if filesystem_type(base) not in NETWORK_FS:
            return base
    fallback = Path(f"/var/tmp/shoal-{os.getuid()}")
    return private_dir(fallback)


def default_queue(folder: Path) -> str:
    """The SQLite queue served from status directory `folder`: one state file per status
    directory (two directories of one name elsewhere stay apart), on a local disk."""
    folder = Path(os.path.expanduser(folder)).absolute()
    tag = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    return f"sqlite://{state_dir() / f'{folder.name}-{tag}.sqlite'}"


def serve(queue: Queue | str, status_dir: str | Path, *, bind: str | None = None,
          advertise: str | None = None, checked: bool = False) -> Coordinator:
    """Start a coordinator for `queue` whose status goes to `status_dir`.

    A restart on the same directory keeps the keys and, unless `bind` says
    otherwise, the address, so clients of the dead coordinator reconnect by
    themselves. Refuses if a live coordinator already serves from that directory
    (`checked`: the caller holds the lead lock and found none).
    """
    folder = private_dir(Path(os.path.expanduser(status_dir)).absolute())
    previous = None
    with contextlib.suppress(FileNotFoundError, UsageError):
        previous = read_contact(folder)
    if previous is not None and not checked and alive(previous):
        raise UsageError(f"{folder}: a coordinator already serves {previous.queue} at "
                         f"{previous.address} (pid {previous.pid} on {previous.host})")
    keys = load_keys(folder)
    again = previous.bound if bind is None and previous is not None else None
    queue = open_queue(queue)
    try:
        if again:
            try:  # the last run's address, so clients of the dead coordinator come back
                return Coordinator(queue, bind=again, keys=keys, status_dir=folder,
                                   advertise=advertise)
            except zmq.ZMQError as exc:
                log.warning("cannot listen at %s again (%s); taking a new port", again, exc)
        return Coordinator(queue, bind=bind or defaults.BIND, keys=keys, status_dir=folder,
                           advertise=advertise)
    except Exception:
        queue.close()
        raise


def take_lead(folder: Path, *, timeout_s: float = 30.0) -> bool:
    """Try to become the one process that serves from `folder`.

    True: we hold the lock (call `drop_lead` when done). False: a live coordinator
    is there already. A lock whose holder died is broken and taken.
    """
    folder = private_dir(folder)
    lock = folder / LOCK_FILE
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = _boot(folder)
        if live_contact(folder) is not None:
            return False
        if write_new(lock, f"{HOST} {os.getpid()}\n".encode()):
            if _boot(folder) != before and live_contact(folder) is not None:
                lock.unlink(missing_ok=True)  # one came up just before our lock
                return False
            return True
        if _stale_lock(lock):
            lock.unlink(missing_ok=True)
            continue
        time.sleep(0.2)  # another first run is starting its coordinator
    raise ShoalError(f"{lock}: another process has been starting a coordinator for "
                     f"{timeout_s:.0f} s; remove the lock if that process is gone")


def _boot(folder: Path) -> str | None:
    with contextlib.suppress(FileNotFoundError, UsageError):
        return read_contact(folder).boot
    return None


def _stale_lock(lock: Path) -> bool:
    try:  # a lock being written, or garbage, is not stale: take_lead names it after a wait
        host, pid_text = lock.read_text().split()
        pid = int(pid_text)
        age = time.time() - lock.stat().st_mtime
    except (FileNotFoundError, ValueError):
        return False
    if host == HOST:
        return 0 < pid < 2**31 and not process_alive(pid)
    return age > 60  # another host's first run takes seconds, not a minute


def drop_lead(folder: Path) -> None:
    (folder / LOCK_FILE).unlink(missing_ok=True)
