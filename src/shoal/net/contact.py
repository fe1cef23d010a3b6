"""A coordinator's contact card: its address, its keys, and whether it still lives.

The card is written to `DIR/status.json` (the name kept from when it was called a
status file, so existing directories and copies still work).

The directory is mode 0700 and its files 0600, because `status.json` holds the
client secret key: whoever can read it may run code on the workers. Copying that
one file to another machine is all a client there needs (`shoal work FILE`).

Layout::

    DIR/status.json     address, server public key, client key pair, pid, host, boot
    DIR/server.secret   the coordinator's own secret key (never needed by clients)
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import UsageError
from ..fsutil import HOST, atomic_write

CONTACT_FILE = "status.json"
SERVER_SECRET = "server.secret"
_KEYS = ("server_public", "client_public", "client_secret")
# What ZeroMQ takes as a TCP endpoint (anything else: its EINVAL out of every client)
_ENDPOINT = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.*-]+):[0-9]{1,5}")
_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def _is_z85_key(text: str) -> bool:
    """40 Z85 characters that decode to 32 bytes (each group of 5 below 2**32)."""
    if len(text) != 40 or not set(text) <= set(_Z85):
        return False
    for start in range(0, 40, 5):
        value = 0
        for char in text[start:start + 5]:
            value = value * 85 + _Z85.index(char)
        if value >= 2**32:
            return False
    return True


@dataclass(frozen=True)
class Keys:
    """CurveZMQ keys (Z85 text): the coordinator's pair and the one pair clients share."""

    server_public: str
    server_secret: str | None  # only the coordinator has it
    client_public: str
    client_secret: str

    @classmethod
    def new(cls) -> Keys:
        import zmq  # only a coordinator makes keys

        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(server_public.decode(), server_secret.decode(), client_public.decode(),
                   client_secret.decode())


@dataclass(frozen=True)
class Contact:
    """How to reach a coordinator: what status.json says."""

    address: str
    server_public: str
    client_public: str
    client_secret: str
    host: str
    pid: int
    boot: str
    started: float
    queue: str
    bound: str = ""  # the bind address (the port a restart takes again)

    def keys(self, server_secret: str | None = None) -> Keys:
        return Keys(self.server_public, server_secret, self.client_public, self.client_secret)


def private_dir(path: Path) -> Path:
    """Create `path` as a 0700 directory (or tighten an existing one)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    old = os.umask(0o077)  # the temporary file is 0600 from the start
    try:
        atomic_write(path, data, path.parent)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)


def load_keys(folder: Path) -> Keys | None:
    """The keys a previous coordinator left in `folder` (a restart keeps them), if any."""
    try:
        contact = read_contact(folder)
        secret = (folder / SERVER_SECRET).read_bytes().decode("ascii", "replace").strip()
    except (FileNotFoundError, UsageError):
        return None
    return contact.keys(secret) if _is_z85_key(secret) else None  # garbage: new keys


def write_contact(folder: Path, contact: Contact, server_secret: str) -> Path:
    private_dir(folder)
    _write_private(folder / SERVER_SECRET, server_secret.encode())
    target = folder / CONTACT_FILE
    _write_private(target, json.dumps(asdict(contact), indent=1).encode())
    return target


def contact_path(where: str | Path) -> Path:
    """The status.json a path names (the file itself, or the directory holding it)."""
    path = Path(os.path.expanduser(where))  # "~nobody" stays as written
    return path if path.suffix == ".json" else path / CONTACT_FILE


def read_contact(where: str | Path) -> Contact:
    """The contact a status file holds; UsageError for one that is not (bad JSON, a field
    missing or of the wrong type), FileNotFoundError where there is none."""
    path = contact_path(where)
    blob = path.read_bytes()  # FileNotFoundError: no contact file here (callers tell why)
    try:
        data = json.loads(blob)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        unknown = sorted(set(data) - {field.name for field in fields(Contact)})
        if unknown:  # by repr: a name may hold a newline, and the message is one line
            raise TypeError(f"unknown field {unknown[0]!r}")
        contact = Contact(**data)
        _check_types(contact)
    except (ValueError, TypeError, RecursionError) as exc:
        raise UsageError(f"{path}: not a shoal status file ({exc})") from None
    return contact


def _check_types(contact: Contact) -> None:
    """TypeError for a field of the wrong type: every reader trusts them (pid: os.kill;
    a key that is not one: ZeroMQ's EINVAL, out of every client)."""
    for name, value in asdict(contact).items():
        if name in _KEYS:
            if not (isinstance(value, str) and _is_z85_key(value)):
                raise TypeError(f"{name} is not a CurveZMQ key (40 Z85 characters)")
        elif name in ("address", "bound"):
            if not (isinstance(value, str) and (_ENDPOINT.fullmatch(value)
                                                or (name == "bound" and not value))):
                raise TypeError(f"{name} {value!r} is not tcp://HOST:PORT")
        elif name == "pid":
            if type(value) is not int or not 0 < value < 2**31:
                raise TypeError(f"pid {value!r} is not a process id")
        elif name == "started":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"started {value!r} is not a time")
        elif not isinstance(value, str):
            raise TypeError(f"{name} {value!r} is not a string")


def is_contact_file(where: str | Path) -> bool:
    """True if `where` is a contact file or a directory holding one (not a queue URL)."""
    return contact_path(where).is_file()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def boot_id() -> str:
    """Names this run of a coordinator: host, pid and start time."""
    return f"{HOST}-{os.getpid()}-{time.time_ns():x}"


def dead_here(contact: Contact) -> bool:
    """True if the contact names a coordinator on this host whose process is gone."""
    return contact.host == HOST and not process_alive(contact.pid)
