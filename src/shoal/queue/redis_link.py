"""Reaching a Redis server safely: the client, one-line errors, durability.

The queue's state machine lives in `redisq/`; this module turns a queue address
(`redis_url.parse_url`, re-exported here) into a connected redis-py client (plain,
Cluster or Sentinel) with retries and backoff on connection errors, translates
redis-py errors into one-line shoal errors that never show the password, and checks
the server's persistence settings once, so a user learns before losing jobs, not after.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..errors import (
    AuthenticationFailed,
    DurabilityWarning,
    NotDurable,
    QueueFull,
    QueueUnavailable,
    ShoalError,
    UsageError,
)
from .redis_url import RedisAddress, mask_url, parse_url

__all__ = ["Durability", "RedisAddress", "check_durability", "confirm_durable", "connect",
           "mask_url", "parse_url", "read_durability", "translate", "translated_errors"]

log = logging.getLogger(__name__)

# -- settings (seconds; why each has its value) --------------------------------------------
# A dead host should fail a connect in seconds, not the kernel's minutes.
CONNECT_TIMEOUT_S = 5.0
# The first PING retries this often: a typo in the URL fails fast instead of backing off.
PROBE_RETRIES = 1
# Later operations retry this often, the delay doubling from BACKOFF_BASE_S to BACKOFF_CAP_S:
# about half a minute in all, enough for a restart or a Sentinel failover (about 3 s
# here); the small cap means work resumes within a second of the server's return.
RETRIES = 36
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 1.0
# No read timeout: claims and result waits block server-side for as long as they ask.
# A dead host or a cut network is found by TCP keepalive instead: first probe after
# KEEPALIVE_IDLE_S of silence, then every KEEPALIVE_INTERVAL_S, dropped after
# KEEPALIVE_COUNT unanswered (about 11 s); a killed server resets the connection at once.
SOCKET_TIMEOUT_S: float | None = None
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 3
# A pooled connection idle this long is PINGed before use, so a dead one is replaced
# before it costs a command.
HEALTH_CHECK_S = 15
# How long durable=strict waits for the disk or a replica to confirm a write.
STRICT_WAIT_S = 5.0


# -- errors -----------------------------------------------------------------------------------


def _one_line(exc: BaseException, address: RedisAddress) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return address.mask(text)


def translate(exc: BaseException, address: RedisAddress, *, connecting: bool = False
              ) -> ShoalError:
    """The shoal error for a redis-py error: one line, the URL without its password."""
    import redis.exceptions as rex
    from redis.sentinel import MasterNotFoundError

    where, text = address.safe_url, _one_line(exc, address)
    upper = text.upper()
    if isinstance(exc, rex.OutOfMemoryError) or "OOM COMMAND NOT ALLOWED" in upper:
        return QueueFull(f"{where}: queue full: the Redis server is at its maxmemory, so new jobs "
                         f"are refused (running jobs can still finish); free memory or raise "
                         f"maxmemory ({text})")
    if isinstance(exc, rex.AuthenticationError) or any(
            word in upper for word in ("WRONGPASS", "NOAUTH", "INVALID PASSWORD")):
        hint = ("the server needs a password: put it in the URL, in REDIS_PASSWORD, or in a "
                "file named by ?password_file=" if not address.password
                else "wrong user or password")
        return AuthenticationFailed(f"{where}: the server refused us: {hint} ({text})")
    if isinstance(exc, rex.NoPermissionError):
        return AuthenticationFailed(f"{where}: the Redis user may not do this; grant it the "
                                    f"queue's keys and commands ({text})")
    if isinstance(exc, MasterNotFoundError):
        return QueueUnavailable(f"{where}: no sentinel named a reachable master "
                                f"{address.service!r} ({text})")
    if isinstance(exc, rex.RedisClusterException) and "not enabled" in text.lower():
        return UsageError(f"{where}: cluster=1, but this server is not a Cluster node "
                          f"(drop cluster=1)")
    if isinstance(exc, rex.ReadOnlyError):
        return QueueUnavailable(f"{where}: the server is a read-only replica; name the master, "
                                f"or reach it through redis+sentinel:// ({text})")
    if isinstance(exc, rex.BusyLoadingError):
        return QueueUnavailable(f"{where}: the server is still loading its data; try again "
                                f"in a moment ({text})")
    if isinstance(exc, rex.ClusterDownError):
        return QueueUnavailable(f"{where}: the Cluster is down or a slot has no master ({text})")
    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError)):
        tls_problem = _tls_problem(text, address, connecting)
        if tls_problem:
            return UsageError(f"{where}: {tls_problem}")
        return QueueUnavailable(f"{where}: no Redis server answered ({text})")
    return ShoalError(f"{where}: {text}")


def _tls_problem(text: str, address: RedisAddress, connecting: bool) -> str | None:
    lower = text.lower()
    if address.tls:
        if "certificate verify failed" in lower or "certificate_verify_failed" in lower:
            return (f"the server's TLS certificate is not trusted; give its CA with "
                    f"?ca=/path/ca.crt ({text})")
        if "wrong version number" in lower or "record layer" in lower or "ssl" in lower:
            return f"TLS handshake failed; if the server does not use TLS, use redis:// ({text})"
        if connecting and "timeout" in lower:
            return (f"no answer to the TLS handshake; if the server does not use TLS, "
                    f"use redis:// ({text})")
        return None
    if connecting and ("reset by peer" in lower or "closed by server" in lower):
        return ("the server closed the connection at once; if it requires TLS, "
                f"use rediss:// ({text})")
    return None


@contextlib.contextmanager
def translated_errors(address: RedisAddress, *, connecting: bool = False) -> Iterator[None]:
    """Inside, every redis-py error becomes a one-line shoal error (QueueFull for OOM, ...)."""
    import redis.exceptions as rex

    try:
        yield
    except (rex.RedisError, rex.RedisClusterException) as exc:  # the latter is no RedisError
        raise translate(exc, address, connecting=connecting) from None


# -- connecting -------------------------------------------------------------------------------


def _redis_py() -> Any:
    try:
        import redis
    except ImportError:
        raise UsageError("a redis:// queue needs the redis package: pip install 'shoal[redis]'"
                         ) from None
    return redis


def _retry(address: RedisAddress, retries: int, *, saying: bool = True) -> Any:
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    backoff = ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S)
    if not saying:
        return Retry(backoff, retries)
    return _SayingRetry(address.safe_url, backoff, retries)


def _make_saying_retry() -> type:
    from redis.exceptions import AuthenticationError
    from redis.retry import Retry

    class SayingRetry(Retry):  # type: ignore[misc]
        """A redis-py Retry that logs once when the server goes away and once when it is back,
        not once per retry; shared by every connection of a client (deepcopy keeps it).
        A refused password is not retried: it will not get better."""

        def __init__(self, who: str, backoff: Any, retries: int) -> None:
            super().__init__(backoff, retries)
            self._who = who
            self._lock = threading.Lock()
            self._down_since: float | None = None
            self._gave_up = False

        def __deepcopy__(self, memo: dict[int, Any]) -> SayingRetry:
            return self

        def call_with_retry(self, do: Callable[[], Any], fail: Callable[..., Any],
                            *args: Any, **kwargs: Any) -> Any:
            failed = False

            def noting(error: Exception, *count: Any) -> Any:
                nonlocal failed
                if isinstance(error, AuthenticationError):
                    fail(error, *count)
                    raise error
                failed = True
                self._lost(error)
                return fail(error, *count)

            try:
                result = super().call_with_retry(do, noting, *args, **kwargs)
            except Exception:
                self._gave_up = self._gave_up or failed  # the next call that works ends it
                raise
            # Only a call that met the outage, or the first after one gave up, may say it
            # is over (not one that needed no server, e.g. on a connection already closed).
            self._back(failed or self._gave_up)
            return result

        def _lost(self, error: Exception) -> None:
            with self._lock:
                if self._down_since is not None:
                    return
                self._down_since = time.monotonic()
            log.warning("redis %s: connection lost (%s); reconnecting with backoff",
                        self._who, " ".join(str(error).split()))

        def _back(self, over: bool) -> None:
            if not over:
                return
            with self._lock:
                since, self._down_since = self._down_since, None
                self._gave_up = False
            if since is not None:
                log.warning("redis %s: reconnected after %.1f s", self._who,
                            time.monotonic() - since)

    return SayingRetry


class _LazySayingRetry:
    """Builds the Retry subclass on first use, so importing this module needs no redis-py."""

    cls: type | None = None

    def __call__(self, who: str, backoff: Any, retries: int) -> Any:
        if self.cls is None:
            self.cls = _make_saying_retry()
        return self.cls(who, backoff, retries)


_SayingRetry = _LazySayingRetry()


def _client_options(address: RedisAddress, retry: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "username": address.username, "password": address.password,
        "socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_keepalive": True, "socket_keepalive_options": _keepalive_options(),
        "health_check_interval": HEALTH_CHECK_S, "retry": retry,
    }
    if address.tls:
        options.update(ssl=True, ssl_ca_certs=address.ca)
    return options


def _keepalive_options() -> dict[int, int]:
    wanted = {"TCP_KEEPIDLE": KEEPALIVE_IDLE_S, "TCP_KEEPINTVL": KEEPALIVE_INTERVAL_S,
              "TCP_KEEPCNT": KEEPALIVE_COUNT}
    return {getattr(socket, name): value for name, value in wanted.items()
            if hasattr(socket, name)}  # Linux has all three; others keep the OS's


def connect(address: RedisAddress, **options: Any) -> Any:
    """A redis-py client for the address: Redis, RedisCluster, or a Sentinel's master_for.

    A throwaway probe (short timeouts, one retry) first checks that the server answers,
    so a wrong password, no server or a TLS mismatch is a one-line shoal error at once;
    the client returned retries connection errors with exponential backoff for about
    half a minute, logged once per outage. `options` override redis-py client arguments
    (e.g. socket_timeout for long blocking reads).
    """
    redis = _redis_py()
    with translated_errors(address, connecting=True):
        probing = {**_client_options(address, _retry(address, PROBE_RETRIES, saying=False)),
                   "socket_timeout": CONNECT_TIMEOUT_S}
        cluster = address.cluster
        if cluster is None and not address.sentinel:
            cluster = _cluster_enabled(redis, address, probing)
        with contextlib.closing(_client(redis, address, bool(cluster), probing)) as probe:
            probe.ping()
        chosen = {**_client_options(address, _retry(address, RETRIES)), **options}
        return _client(redis, address, bool(cluster), chosen)


def _client(redis: Any, address: RedisAddress, cluster: bool, kwargs: dict[str, Any]) -> Any:
    if address.sentinel:
        return _sentinel_client(address, kwargs)
    if cluster:
        return _cluster_client(redis, address, kwargs)
    host, port = address.hosts[0]
    return redis.Redis(host=host, port=port, db=address.db, **kwargs)


def _cluster_enabled(redis: Any, address: RedisAddress, kwargs: dict[str, Any]) -> bool:
    """Whether the first host that answers is a Cluster node (INFO cluster)."""
    failure: Exception | None = None
    for host, port in address.hosts:
        try:
            with contextlib.closing(redis.Redis(host=host, port=port, **kwargs)) as probe:
                info = probe.info("cluster")
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            if isinstance(exc, redis.exceptions.AuthenticationError):
                raise
            failure = exc
            continue
        enabled = bool(int(info.get("cluster_enabled", 0)))
        if not enabled and len(address.hosts) > 1:
            raise UsageError(f"{address.safe_url}: several hosts, but {host}:{port} is not a "
                             f"Cluster node; name one server, or use redis+sentinel://")
        return enabled
    assert failure is not None
    raise failure


def _cluster_client(redis: Any, address: RedisAddress, kwargs: dict[str, Any]) -> Any:
    from redis.cluster import ClusterNode

    nodes = [ClusterNode(host, port) for host, port in address.hosts]
    return redis.RedisCluster(startup_nodes=nodes, **kwargs)


def _sentinel_client(address: RedisAddress, kwargs: dict[str, Any]) -> Any:
    from redis.sentinel import Sentinel

    to_sentinels = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout":
                    CONNECT_TIMEOUT_S}
    if address.tls:
        to_sentinels.update(ssl=True, ssl_ca_certs=address.ca)
    watchers = Sentinel(list(address.hosts), sentinel_kwargs=to_sentinels, **kwargs)
    if not address.tls:  # a TLS set keeps redis-py's own connection class
        kwargs = {"connection_class": _following_connection(), **kwargs}
    return watchers.master_for(address.service, db=address.db, **kwargs)


def _following_connection() -> type:
    """A Sentinel connection that asks for the master on every reconnect.

    redis-py's command retry reconnects through connect_check_health, which dials the
    address the connection had: after a failover, a connection cut mid-command would
    knock on the dead master until its retries ran out (seen as "no Redis server
    answered" half a minute after the new master was up).
    """
    from redis.sentinel import SentinelManagedConnection

    class FollowingConnection(SentinelManagedConnection):  # type: ignore[misc]
        def connect_check_health(self, check_health: bool = True,
                                 retry_socket_connect: bool = True) -> None:
            if not self._sock and self.connection_pool.is_master:
                self.host, self.port = self.connection_pool.get_master_address()
            super().connect_check_health(check_health=check_health,
                                         retry_socket_connect=retry_socket_connect)

    return FollowingConnection


# -- durability -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Durability:
    """What the server(s) behind an address do with an acknowledged write.

    A setting is None where the server refused CONFIG GET (managed services often do).
    """

    appendonly: str | None
    appendfsync: str | None
    maxmemory_policy: str | None
    version: tuple[int, ...]
    replicas: int
    cluster: bool
    #: the run_id of every server read: a restarted server is another server.
    servers: tuple[str, ...] = ()

    @property
    def aof_always(self) -> bool:
        """Redis fsyncs the AOF before it replies: an acknowledged write is on disk."""
        return self.appendonly == "yes" and self.appendfsync == "always"

    @property
    def has_waitaof(self) -> bool:
        return self.version >= (7, 2)

    def risk(self) -> str | None:
        """Why an acknowledged submit could be lost on a restart, naming the setting to change."""
        if self.appendonly is None:
            return ("the server does not let us read its persistence settings (CONFIG GET); "
                    "make sure it runs with appendonly yes and appendfsync always")
        if self.appendonly != "yes":
            return ("appendonly is no: jobs acknowledged by submit are lost if redis-server "
                    "restarts; set appendonly yes and appendfsync always")
        if self.appendfsync != "always":
            return (f"appendfsync is {self.appendfsync}: about the last second of acknowledged "
                    f"submits can be lost if the server crashes; set appendfsync always "
                    f"(or use durable=strict with a replica)")
        return None


_WARNED: set[str] = set()
_KNOWN: dict[str, Durability] = {}
_STATE_LOCK = threading.Lock()


def _servers(client: Any) -> list[Any]:
    """The plain clients of every master behind `client` (one unless it is a Cluster)."""
    get_primaries = getattr(client, "get_primaries", None)
    if get_primaries is None:
        return [client]
    return [client.get_redis_connection(node) for node in get_primaries()]


def _config(server: Any, name: str) -> str | None:
    import redis.exceptions as rex

    try:
        reply = server.config_get(name)
    except rex.ResponseError:  # CONFIG renamed away or not permitted (NOPERM)
        return None
    value = reply.get(name, reply.get(name.encode())) if isinstance(reply, dict) else None
    return value.decode() if isinstance(value, bytes) else value


def read_durability(client: Any, address: RedisAddress) -> Durability:
    """Read the persistence settings of every master behind `client` (the weakest counts)."""
    cluster = hasattr(client, "get_primaries")
    with translated_errors(address):
        readings = []
        for server in _servers(client):
            info = server.info("server")
            replication = server.info("replication")
            version = tuple(int(x) for x in re.findall(r"\d+", str(info.get("redis_version")))[:3])
            readings.append(Durability(
                appendonly=_config(server, "appendonly"),
                appendfsync=_config(server, "appendfsync"),
                maxmemory_policy=_config(server, "maxmemory-policy"),
                version=version, replicas=int(replication.get("connected_slaves", 0)),
                cluster=cluster, servers=(str(info.get("run_id", "")),)))
    weakest = min(readings, key=lambda d: (d.aof_always, d.appendonly == "yes", d.replicas))
    return replace(weakest, servers=tuple(sorted(r.servers[0] for r in readings)))


def check_durability(client: Any, address: RedisAddress) -> Durability:
    """At connect: refuse a server that may evict queue keys; warn once (warnings.warn with
    DurabilityWarning, once per server per process) when an acknowledged submit could be
    lost on a restart."""
    found = read_durability(client, address)
    policy = found.maxmemory_policy
    if policy is not None and policy != "noeviction":
        raise UsageError(f"{address.safe_url}: maxmemory-policy is {policy}: Redis may evict "
                         f"queue keys and lose jobs silently; set maxmemory-policy noeviction")
    seen = f"{_server_key(address)}/{','.join(found.servers)}"
    with _STATE_LOCK:
        _KNOWN[_server_key(address)] = found
        first = seen not in _WARNED
        _WARNED.add(seen)
    risk = found.risk()
    if risk and first:
        warnings.warn(f"{address.safe_url}: {risk}", DurabilityWarning, stacklevel=2)
    return found


def _server_key(address: RedisAddress) -> str:
    return f"{address.service or ''}@{','.join(f'{h}:{p}' for h, p in address.hosts)}"


def confirm_durable(client: Any, address: RedisAddress, n_writes: int) -> list[Any]:
    """For durable=strict: make sure the last writes reached disk or a replica.

    `client` is best a pipeline holding the `n_writes` writes, not yet executed: the
    wait is appended and runs on the same connection in the same round trip (Redis
    counts WAIT/WAITAOF per connection), and the writes' results are returned. A plain
    client runs only the wait, which is right when its last writes used the same
    connection (one thread). Without durable=strict a pipeline is simply executed.

    How: a master with a replica waits for one (WAIT, or WAITAOF on Redis 7.2+, which
    also waits for the local fsync under appendonly): a failover promotes a replica, so
    the master's disk alone does not keep the write; with no replica, on an AOF-always
    server the reply already means "on disk"; else WAITAOF (7.2+) for the local fsync;
    else NotDurable says why and what to change.
    """
    pipeline = hasattr(client, "command_stack")
    how = _strict_command(client, address) if address.durable == "strict" else None
    with translated_errors(address):
        if how is None:
            return client.execute()[:n_writes] if pipeline else []
        if pipeline:
            client.execute_command(*how)
            results = client.execute()
            reply = results[-1]
            results = results[:n_writes]
        else:
            reply, results = client.execute_command(*how), []
    _check_reply(how, reply, address)
    return results


def _strict_command(client: Any, address: RedisAddress) -> tuple[Any, ...] | None:
    with _STATE_LOCK:
        known = _KNOWN.get(_server_key(address))
    if known is None:
        known = read_durability(_plain_client(client, address), address)
        with _STATE_LOCK:
            _KNOWN[_server_key(address)] = known
    wait_ms = int(STRICT_WAIT_S * 1000)
    if known.cluster:
        if known.aof_always:
            return None  # Redis fsyncs before it replies
        raise NotDurable(f"{address.safe_url}: durable=strict on a Redis Cluster needs "
                         f"appendonly yes and appendfsync always on every master")
    if known.replicas > 0:
        # A replica may be promoted (Sentinel failover) and the master's disk is then
        # gone with it: the write must have reached a replica, whatever appendfsync says.
        # (Replication is asynchronous: without this, a failover soon after the submit
        # was seen to promote a replica that had none of the acknowledged jobs.)
        if known.has_waitaof:
            return ("WAITAOF", 1 if known.appendonly == "yes" else 0, 1, wait_ms)
        return ("WAIT", 1, wait_ms)
    if known.aof_always:
        return None  # Redis fsyncs before it replies
    if known.has_waitaof and known.appendonly == "yes":
        return ("WAITAOF", 1, 0, wait_ms)
    raise NotDurable(f"{address.safe_url}: durable=strict cannot be confirmed: appendfsync is "
                     f"{known.appendfsync}, appendonly is {known.appendonly}, and no replica "
                     f"is connected; set appendonly yes and appendfsync always, or add a replica")


def _plain_client(client: Any, address: RedisAddress) -> Any:
    """A client that runs commands at once, on the same pool as `client` (maybe a pipeline)."""
    if not hasattr(client, "command_stack"):
        return client
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        raise NotDurable(f"{address.safe_url}: durable=strict: call check_durability once "
                         f"before confirm_durable on this kind of pipeline")
    import redis

    return redis.Redis(connection_pool=pool)


def _check_reply(how: tuple[Any, ...], reply: Any, address: RedisAddress) -> None:
    if how[0] == "WAITAOF":
        local, replicas = (int(x) for x in reply)
        ok = local >= how[1] and replicas >= how[2]
    else:
        ok = int(reply) >= how[1]
    if not ok:
        raise NotDurable(f"{address.safe_url}: durable=strict: {' '.join(map(str, how[:3]))} "
                         f"was not confirmed within {STRICT_WAIT_S:g} s (got {reply!r}); the "
                         f"write was made but may not survive a crash; submit again once the "
                         f"replica or disk is back (submit is idempotent)")
