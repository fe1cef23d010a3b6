"""Queue URLs for Redis: what `redis://`, `rediss://` and `redis+sentinel://` say.

    redis://[user:pass@]host:port/db?queue=NAME
    rediss://...?ca=/path/ca.crt                     TLS, CA file optional
    redis+sentinel://[user:pass@]host:port[,host:port]/MASTER[/db]?queue=NAME
    ...&cluster=1 (or auto-detected at connect), &durable=strict, &password_file=/path

The password comes from the URL, else `?password_file=` (mode 600), else
`REDIS_PASSWORD` (`REDIS_USERNAME` likewise for an ACL user). It is never shown:
`RedisAddress` prints the URL with `***` in its place. Parsing needs no redis-py.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import parse_qsl, quote, unquote

from ..errors import UsageError

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_QUEUE = "shoal"

SCHEMES = {  # scheme -> (tls, sentinel)
    "redis": (False, False),
    "rediss": (True, False),
    "redis+sentinel": (False, True),
    "rediss+sentinel": (True, True),
}
OPTIONS = ("queue", "cluster", "durable", "ca", "password_file")
DURABLE = ("normal", "strict")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_USERINFO = re.compile(r"(://[^/@?#]*?:)[^/@?#]*@")


def mask_url(text: str) -> str:
    """`text` with any password in a URL's user part replaced by ***."""
    return _USERINFO.sub(r"\1***@", text)


@dataclass(frozen=True, repr=False)
class RedisAddress:
    """Where a Redis queue lives and how to reach it; its repr and str never show the password."""

    hosts: tuple[tuple[str, int], ...]
    queue: str = DEFAULT_QUEUE
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None
    #: the Sentinel master name; None when not reached through Sentinel.
    service: str | None = None
    #: True or False when the URL says; None means: ask the server (INFO cluster).
    cluster: bool | None = None
    durable: str = "normal"
    #: query options the caller allowed beyond OPTIONS (see parse_url's `allow`).
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def sentinel(self) -> bool:
        return self.service is not None

    @property
    def key_prefix(self) -> str:
        """`shoal:{NAME}:` - every key of the queue shares the hash tag, so one Cluster slot."""
        return f"shoal:{{{self.queue}}}:"

    @property
    def safe_url(self) -> str:
        """The URL with the password shown as *** (for messages and logs)."""
        scheme = ("rediss" if self.tls else "redis") + ("+sentinel" if self.sentinel else "")
        auth = ""
        if self.username or self.password:
            auth = quote(self.username or "", safe="") + (":***" if self.password else "") + "@"
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        path = f"/{self.service}" + (f"/{self.db}" if self.db else "") if self.sentinel \
            else f"/{self.db}"
        query = [f"queue={self.queue}"]
        if self.cluster is not None:
            query.append(f"cluster={int(self.cluster)}")
        if self.durable != "normal":
            query.append(f"durable={self.durable}")
        if self.ca:
            query.append(f"ca={self.ca}")
        query += [f"{k}={v}" for k, v in sorted(self.options.items())]
        return f"{scheme}://{auth}{hosts}{path}?{'&'.join(query)}"

    def mask(self, text: str) -> str:
        """`text` with this address's password (and any URL password) replaced by ***."""
        if self.password:
            text = text.replace(self.password, "***")
        return mask_url(text)

    def __repr__(self) -> str:
        return f"RedisAddress({self.safe_url!r})"

    def __str__(self) -> str:
        return self.safe_url


# -- parsing ----------------------------------------------------------------------------------


def parse_url(url: str, *, allow: Iterable[str] = ()) -> RedisAddress:
    """Read a `redis://`, `rediss://` or `redis+sentinel://` URL; UsageError names the problem.

    `allow` names query options the caller understands beyond OPTIONS; they come back
    in `RedisAddress.options`. Any other option is refused, so a typo is not ignored.
    """
    shown = mask_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise UsageError(f"{shown}: not a Redis URL (use {', '.join(s + '://' for s in SCHEMES)})")
    tls, sentinel = SCHEMES[scheme.lower()]
    rest, _, query_text = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username, password = _userinfo(userinfo) if at else (None, None)
    hosts = _hosts(hostlist, DEFAULT_SENTINEL_PORT if sentinel else DEFAULT_PORT, shown)
    query = _query(query_text, (*OPTIONS, *allow), shown)
    service, db = _path(path, sentinel, shown)
    cluster = _flag(query.get("cluster"), "cluster", shown)
    if sentinel and cluster:
        raise UsageError(f"{shown}: cluster=1 cannot be combined with Sentinel")
    if len(hosts) > 1 and not sentinel and cluster is False:
        raise UsageError(f"{shown}: several hosts are for a Cluster or for Sentinel; "
                         f"drop cluster=0, or use redis+sentinel://")
    if cluster and db:
        raise UsageError(f"{shown}: Redis Cluster has only database 0 (drop /{db})")
    queue = query.get("queue", DEFAULT_QUEUE)
    if not _QUEUE_NAME.fullmatch(queue):
        raise UsageError(f"{shown}: queue={queue!r}: use 1-200 letters, digits, '_', '-', '.', ':'")
    durable = query.get("durable", "normal")
    if durable not in DURABLE:
        raise UsageError(f"{shown}: durable={durable!r}: use durable=strict (or normal)")
    ca = query.get("ca")
    if ca is not None:
        if not tls:
            raise UsageError(f"{shown}: ca= needs TLS: use rediss:// (or drop ca=)")
        if not Path(ca).is_file():
            raise UsageError(f"{shown}: ca={ca}: no such file")
    if password is None:
        password = _password_from(query.get("password_file"), shown)
    if username is None:
        username = os.environ.get("REDIS_USERNAME") or None
    extra = {k: v for k, v in query.items() if k not in OPTIONS}
    return RedisAddress(hosts=hosts, queue=queue, db=db, username=username, password=password,
                        tls=tls, ca=ca, service=service, cluster=cluster, durable=durable,
                        options=MappingProxyType(extra))


def _userinfo(text: str) -> tuple[str | None, str | None]:
    user, colon, password = text.partition(":")
    return (unquote(user) or None, unquote(password) if colon else None)


def _hosts(text: str, default_port: int, shown: str) -> tuple[tuple[str, int], ...]:
    found = []
    for part in text.split(","):
        if not part:
            raise UsageError(f"{shown}: a host is missing (use host:port[,host:port])")
        if part.startswith("["):  # [::1]:6379
            host, _, tail = part[1:].partition("]")
            port_text = tail[1:] if tail.startswith(":") else ""
        else:
            host, _, port_text = part.partition(":")
        if not host:
            raise UsageError(f"{shown}: a host is missing before :{port_text}")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise UsageError(f"{shown}: port {port_text!r} is not a number") from None
        if not 0 < port < 65536:
            raise UsageError(f"{shown}: port {port} is out of range")
        found.append((host, port))
    return tuple(found)


def _query(text: str, known: Iterable[str], shown: str) -> dict[str, str]:
    names = tuple(known)
    query: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name not in names:
            raise UsageError(f"{shown}: unknown option {name!r} (known: {', '.join(names)})")
        query[name] = value
    return query


def _path(path: str, sentinel: bool, shown: str) -> tuple[str | None, int]:
    parts = [p for p in path.split("/") if p]
    if sentinel:
        if not parts or len(parts) > 2:
            raise UsageError(f"{shown}: name the Sentinel master: redis+sentinel://HOST:PORT/MASTER")
        return parts[0], _db(parts[1] if len(parts) == 2 else "0", shown)
    if len(parts) > 1:
        raise UsageError(f"{shown}: the path is the database number only (/0)")
    return None, _db(parts[0] if parts else "0", shown)


def _db(text: str, shown: str) -> int:
    if not text.isdigit():
        raise UsageError(f"{shown}: database {text!r} is not a number (/0, /1, ...)")
    return int(text)


def _flag(value: str | None, name: str, shown: str) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("1", "yes", "true", "on"):
        return True
    if value.lower() in ("0", "no", "false", "off"):
        return False
    raise UsageError(f"{shown}: {name}={value!r}: use {name}=1 or {name}=0")


def _password_from(password_file: str | None, shown: str) -> str | None:
    if password_file is None:
        return os.environ.get("REDIS_PASSWORD") or None
    path = Path(os.path.expanduser(password_file))
    try:  # ValueError: a NUL in the name (%00), or a file that is not text
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(f"{shown}: password_file={password_file} can be read by others "
                             f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")
        text = path.read_text()
    except (OSError, ValueError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) else exc
        raise UsageError(f"{shown}: password_file={password_file!r}: {problem}") from None
    secret = text.strip("\r\n")
    if not secret:
        raise UsageError(f"{shown}: password_file={password_file} is empty")
    return secret
