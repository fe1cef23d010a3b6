"""Reaching Redis safely (queue/redis_link.py), against real redis-server processes:
URLs, passwords that never show, TLS, durability warnings, eviction, queue full,
Cluster detection, Sentinel failover."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.errors import (
    AuthenticationFailed,
    DurabilityWarning,
    NotDurable,
    QueueFull,
    QueueUnavailable,
    UsageError,
)
from shoal.queue import redis_link
from shoal.queue.redis_link import (
    check_durability,
    confirm_durable,
    connect,
    parse_url,
    read_durability,
    translated_errors,
)
from tests.conftest import wait_for
from tests.redisd import (
    RedisServer,
    make_tls_files,
    start_cluster,
    start_redis,
    start_sentinel,
)

SECRET = "s3cret-Pa55"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A password-protected, durable server shared by this module's tests."""
    server = start_redis(tmp_path_factory.mktemp("secured"), password=SECRET)
    yield server
    server.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    monkeypatch.delenv("REDIS_USERNAME", raising=False)


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shown(exc: BaseException) -> str:
    """What a user sees of an error: its message, which must be one line."""
    text = str(exc)
    assert "\n" not in text, text
    return text


# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expect"), [
    ("redis://localhost", dict(hosts=(("localhost", 6379),), db=0, queue="shoal",
                               tls=False, service=None, cluster=None, durable="normal")),
    ("redis://h:7000/3?queue=sweep-1", dict(hosts=(("h", 7000),), db=3, queue="sweep-1")),
    ("redis://alice:pw@h:1/0", dict(username="alice", password="pw")),
    ("redis://:p%40ss@h/0", dict(username=None, password="p@ss")),
    ("rediss://h:6380/0?ca=/etc/hostname", dict(tls=True, ca="/etc/hostname")),
    ("redis://h:7000?cluster=1", dict(cluster=True)),
    ("redis://h:7000?cluster=0&durable=strict", dict(cluster=False, durable="strict")),
    ("redis+sentinel://s1:26379,s2:26380/mymaster?queue=q",
     dict(hosts=(("s1", 26379), ("s2", 26380)), service="mymaster", queue="q", db=0)),
    ("redis+sentinel://s1/mymaster/2", dict(hosts=(("s1", 26379),), db=2)),
    ("redis://[::1]:7001/0", dict(hosts=(("::1", 7001),))),
])
def test_parse_url_reads_every_part(url: str, expect: dict[str, Any], clean_env: None) -> None:
    address = parse_url(url)
    for name, value in expect.items():
        assert getattr(address, name) == value, name


@pytest.mark.parametrize(("url", "complaint"), [
    ("http://h/0", "not a Redis URL"),
    ("redis://h:port/0", "not a number"),
    ("redis://h:99999/0", "out of range"),
    ("redis://h/zero", "database 'zero'"),
    ("redis://h/0?qeue=x", "unknown option 'qeue'"),
    ("redis://h/0?queue={x}", "queue="),
    ("redis://h/0?cluster=maybe", "cluster='maybe'"),
    ("redis://h/3?cluster=1", "only database 0"),
    ("redis://h/0?durable=very", "durable='very'"),
    ("redis://h/0?ca=/etc/hostname", "needs TLS"),
    ("rediss://h/0?ca=/no/such/ca.crt", "no such file"),
    ("redis+sentinel://h:26379", "name the Sentinel master"),
    ("redis+sentinel://h/m?cluster=1", "cannot be combined"),
    ("redis://:hunter2@h/0?bad=1", "unknown option"),
    ("redis://a:1,b:2/0?cluster=0", "several hosts"),
])
def test_bad_urls_are_one_line_usage_errors(url: str, complaint: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_url(url)
    assert complaint in shown(caught.value)
    assert "hunter2" not in str(caught.value)


def test_parse_url_accepts_options_the_caller_allows() -> None:
    address = parse_url("redis://h/0?queue=q&lease_s=5", allow=["lease_s"])
    assert dict(address.options) == {"lease_s": "5"}


def test_the_password_never_shows(clean_env: None) -> None:
    address = parse_url("redis://alice:hunter2@h:1/0?queue=q")
    for text in (repr(address), str(address), address.safe_url, f"{address!r} {address}"):
        assert "hunter2" not in text
        assert "alice:***@" in text


# -- passwords ----------------------------------------------------------------------------


def test_wrong_password_is_one_line_authentication_error(secured: RedisServer,
                                                         clean_env: None) -> None:
    url = f"redis://:wrong-{SECRET}@127.0.0.1:{secured.port}/0"
    with pytest.raises(AuthenticationFailed) as caught:
        connect(parse_url(url))
    text = shown(caught.value)
    assert "wrong user or password" in text
    assert SECRET not in text and "wrong-" not in text
    assert f"127.0.0.1:{secured.port}" in text


def test_missing_password_says_where_to_put_it(secured: RedisServer, clean_env: None) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        connect(parse_url(f"redis://127.0.0.1:{secured.port}/0"))
    assert "REDIS_PASSWORD" in shown(caught.value)


def test_the_cli_says_a_refused_password_in_one_line(secured: RedisServer,
                                                     clean_env: None) -> None:
    for url, said in ((f"redis://:wrong-{SECRET}@127.0.0.1:{secured.port}/0?queue=q",
                       "wrong user or password"),
                      (f"redis://127.0.0.1:{secured.port}/0?queue=q", "REDIS_PASSWORD")):
        run = subprocess.run([sys.executable, "-m", "shoal", "status", url],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and said in run.stderr, run.stderr
        assert "Traceback" not in run.stderr and SECRET not in run.stderr + run.stdout


def test_password_from_environment(secured: RedisServer, clean_env: None,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    address = parse_url(f"redis://127.0.0.1:{secured.port}/0")
    assert SECRET not in repr(address)
    assert connect(address).ping()


def test_password_from_a_private_file(secured: RedisServer, clean_env: None,
                                      tmp_path: Path) -> None:
    secret_file = tmp_path / "redis.pw"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    url = f"redis://127.0.0.1:{secured.port}/0?password_file={secret_file}"
    assert connect(parse_url(url)).ping()

    secret_file.chmod(0o644)
    with pytest.raises(UsageError) as caught:
        parse_url(url)
    assert "chmod 600" in shown(caught.value) and SECRET not in str(caught.value)
    with pytest.raises(UsageError, match="No such file"):
        parse_url(f"redis://127.0.0.1:{secured.port}/0?password_file={tmp_path}/none")


def test_no_server_is_queue_unavailable_fast(clean_env: None) -> None:
    port = dead_port()
    started = time.monotonic()
    with pytest.raises(QueueUnavailable) as caught:
        connect(parse_url(f"redis://:{SECRET}@127.0.0.1:{port}/0"))
    assert "no Redis server answered" in shown(caught.value)
    assert SECRET not in str(caught.value)
    assert time.monotonic() - started < 15


# -- TLS ----------------------------------------------------------------------------------


def test_tls_with_a_self_signed_ca(tmp_path: Path, clean_env: None) -> None:
    tls = make_tls_files(tmp_path / "tls")
    server = start_redis(tmp_path, tls=tls, password=SECRET)  # skips if built without TLS
    try:
        good = f"rediss://:{SECRET}@127.0.0.1:{server.port}/0?ca={tls.ca}"
        client = connect(parse_url(good))
        assert client.set("k", "v") and client.get("k") == b"v"
        client.close()

        with pytest.raises(UsageError) as caught:  # no CA: certificate not trusted
            connect(parse_url(f"rediss://:{SECRET}@127.0.0.1:{server.port}/0"))
        assert "?ca=" in shown(caught.value) and SECRET not in str(caught.value)

        with pytest.raises(UsageError) as caught:  # plain client on a TLS-only server
            connect(parse_url(f"redis://:{SECRET}@127.0.0.1:{server.port}/0"))
        assert "rediss://" in shown(caught.value) and SECRET not in str(caught.value)
    finally:
        server.stop()


def test_tls_client_on_a_plain_server_is_told(secured: RedisServer, tmp_path: Path,
                                              clean_env: None) -> None:
    tls = make_tls_files(tmp_path / "tls")
    with pytest.raises(UsageError) as caught:
        connect(parse_url(f"rediss://:{SECRET}@127.0.0.1:{secured.port}/0?ca={tls.ca}"))
    assert "redis://" in shown(caught.value) and SECRET not in str(caught.value)


# -- durability ---------------------------------------------------------------------------


@pytest.mark.parametrize(("appendfsync", "warning"), [
    (None, "appendonly is no"),
    ("everysec", "appendfsync is everysec"),
    ("always", None),
])
def test_durability_warned_once_naming_the_setting(tmp_path: Path, appendfsync: str | None,
                                                   warning: str | None) -> None:
    server = start_redis(tmp_path, appendfsync=appendfsync)
    try:
        address = parse_url(server.url)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):  # three connects: one warning
                client = connect(address)
                check_durability(client, address)
                client.close()
        ours = [w for w in caught if issubclass(w.category, DurabilityWarning)]
        if warning is None:
            assert ours == []
        else:
            assert len(ours) == 1
            assert warning in str(ours[0].message)
            assert "appendfsync always" in str(ours[0].message)
    finally:
        server.stop()


def test_an_acl_user_without_config_is_warned_not_refused(tmp_path: Path,
                                                          clean_env: None) -> None:
    """Managed servers often refuse CONFIG: shoal still connects, says what it could not
    check, and the ACL user comes from the URL."""
    server = start_redis(tmp_path, extra=("--user", "default", "off",
                                          "--user", "alice", "on", f">{SECRET}", "~*", "&*",
                                          "+@all", "-config"))
    try:
        address = parse_url(f"redis://alice:{SECRET}@127.0.0.1:{server.port}/0")
        client = connect(address)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = check_durability(client, address)
        assert found.appendonly is None and found.version >= (6,)
        [warning] = [w for w in caught if issubclass(w.category, DurabilityWarning)]
        assert "CONFIG GET" in str(warning.message) and SECRET not in str(warning.message)
        with pytest.raises(AuthenticationFailed) as denied, translated_errors(address):
            client.config_set("appendfsync", "no")
        assert "may not" in shown(denied.value)
    finally:
        server.stop()


def test_a_server_that_may_evict_keys_is_refused(tmp_path: Path) -> None:
    server = start_redis(tmp_path, extra=("--maxmemory", "64mb",
                                          "--maxmemory-policy", "allkeys-lru"))
    try:
        address = parse_url(server.url)
        with pytest.raises(UsageError) as caught:
            check_durability(connect(address), address)
        text = shown(caught.value)
        assert "allkeys-lru" in text and "maxmemory-policy noeviction" in text
    finally:
        server.stop()


def test_out_of_memory_is_queue_full_and_reads_still_work(tmp_path: Path) -> None:
    server = start_redis(tmp_path, extra=("--maxmemory", "4mb",
                                          "--maxmemory-policy", "noeviction"))
    try:
        address = parse_url(server.url)
        client = connect(address)
        check_durability(client, address)  # noeviction is accepted
        blob = b"x" * 10_000
        with pytest.raises(QueueFull) as caught:
            for i in range(10_000):
                with translated_errors(address):
                    client.set(f"{address.key_prefix}job:{i}", blob)
        assert "queue full" in shown(caught.value)
        assert client.get(f"{address.key_prefix}job:0") == blob  # reads still work

        # A flagged script is refused whole before it writes: no half-made job is seen.
        # (maxmemory pinned far below use, so freed buffers cannot let it through.)
        client.config_set("maxmemory", "100kb")
        script = ("#!lua\nredis.call('SET', KEYS[1], ARGV[1])\n"
                  "redis.call('SET', KEYS[2], ARGV[1])\nreturn 1")
        keys = [f"{address.key_prefix}half:a", f"{address.key_prefix}half:b"]
        with pytest.raises(QueueFull), translated_errors(address):
            client.eval(script, 2, *keys, "v")
        assert client.exists(*keys) == 0

        client.config_set("maxmemory", "4mb")
        client.delete(*[f"{address.key_prefix}job:{i}" for i in range(200)])
        with translated_errors(address):  # memory freed: submits work again
            assert client.set(f"{address.key_prefix}again", b"ok")
    finally:
        server.stop()


def test_strict_durability(tmp_path: Path) -> None:
    """durable=strict: AOF always needs no wait; everysec with no replica is refused before
    anything is written, with the reason, where the server has no WAITAOF (Redis 7.0)."""
    always = start_redis(tmp_path)
    lazy = start_redis(tmp_path, appendfsync="everysec")
    try:
        for server, ok in ((always, True), (lazy, lazy.version() >= (7, 2))):
            address = parse_url(server.url + "?durable=strict")
            client = connect(address)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DurabilityWarning)
                check_durability(client, address)
            pipe = client.pipeline(transaction=False)
            pipe.set("a", 1)
            pipe.incr("n")
            if ok:
                assert confirm_durable(pipe, address, 2) == [True, 1]
            else:
                with pytest.raises(NotDurable) as caught:
                    confirm_durable(pipe, address, 2)
                assert "appendfsync always" in shown(caught.value)
                assert client.exists("a", "n") == 0  # refused before the writes were sent
            client.close()
    finally:
        always.stop()
        lazy.stop()


def test_strict_durability_uses_waitaof_where_the_server_has_it(tmp_path: Path) -> None:
    server = start_redis(tmp_path, appendfsync="everysec")
    try:
        version = server.version()
        if version < (7, 2):
            pytest.skip(f"this redis-server ({'.'.join(map(str, version))}) has no WAITAOF "
                        f"(7.2+); point SHOAL_REDIS_SERVER at a newer one to run this")
        address = parse_url(server.url + "?durable=strict")
        client = connect(address)
        assert read_durability(client, address).has_waitaof
        pipe = client.pipeline(transaction=False)
        pipe.set("k", "v")
        assert confirm_durable(pipe, address, 1) == [True]  # fsynced, though everysec
        stats = client.info("commandstats")
        assert stats["cmdstat_waitaof"]["calls"] >= 1
        client.close()
    finally:
        server.stop()


def test_strict_durability_waits_for_a_replica(tmp_path: Path) -> None:
    group = start_sentinel(tmp_path, appendfsync="everysec")
    try:
        address = parse_url(group.url + "?durable=strict")
        client = connect(address)
        known = read_durability(client, address)
        assert known.replicas == 1 and not known.aof_always
        pipe = client.pipeline(transaction=False)
        pipe.set("strict-key", "v")
        assert confirm_durable(pipe, address, 1) == [True]
        with contextlib.closing(group.replica.client()) as replica:
            assert replica.get("strict-key") == b"v"  # WAIT returned: the replica has it
        client.close()
    finally:
        group.stop()


# -- reconnects ---------------------------------------------------------------------------


@pytest.fixture
def killed_under_a_client(tmp_path: Path, request: pytest.FixtureRequest,
                          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, Any]]:
    """A client that wrote "before", and its server SIGKILLed since (restart: .start());
    parametrized (indirect), the client's calls retry that many times, not RETRIES."""
    if hasattr(request, "param"):
        monkeypatch.setattr(redis_link, "RETRIES", request.param)  # read by connect()
    server = start_redis(tmp_path)
    try:
        address = parse_url(server.url)
        client = connect(address)
        client.set("before", "kept")
        server.kill(signal.SIGKILL)
        yield server, address, client
    finally:
        server.stop()


def times_said(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


def test_restart_under_a_client_is_survived_and_said_once(
        killed_under_a_client: tuple[Any, Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    server, address, client = killed_under_a_client
    restarter = threading.Timer(1.5, server.start)
    restarter.start()
    with caplog.at_level(logging.WARNING, logger="shoal.queue.redis_link"), \
            translated_errors(address):
        for _ in range(3):  # fresh connections fail while the server is down, then work
            client.connection_pool.disconnect()
            assert client.get("before") == b"kept"
    restarter.join()
    said = [r.getMessage() for r in caplog.records]
    assert times_said(caplog, "connection lost") == 1, said
    assert times_said(caplog, "reconnected after") == 1, said


@pytest.mark.parametrize("killed_under_a_client", [2], indirect=True)
def test_an_outage_longer_than_the_retries_is_still_said_over(
        killed_under_a_client: tuple[Any, Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    """A call that gave up raises; the first call that works afterwards says the way back,
    even when it met no error itself (the server was back before it started)."""
    server, address, client = killed_under_a_client
    with caplog.at_level(logging.WARNING, logger="shoal.queue.redis_link"):
        with pytest.raises(QueueUnavailable), translated_errors(address):
            client.get("before")  # three tries, then it gives up
        server.start()
        with translated_errors(address):
            assert client.get("before") == b"kept"
            assert client.get("before") == b"kept"
    said = [r.getMessage() for r in caplog.records]
    assert times_said(caplog, "connection lost") == 1, said
    assert times_said(caplog, "reconnected after") == 1, said


# -- Cluster and Sentinel -----------------------------------------------------------------


def test_no_sentinel_is_queue_unavailable(clean_env: None) -> None:
    port = dead_port()
    with pytest.raises(QueueUnavailable) as caught:
        connect(parse_url(f"redis+sentinel://127.0.0.1:{port}/shoal"))
    assert "'shoal'" in shown(caught.value)


def test_cluster_is_detected_and_checked(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path)
    try:
        plain_url = f"redis://127.0.0.1:{cluster.ports[1]}/0?queue=q"
        address = parse_url(plain_url)  # no cluster=1: INFO cluster says so
        client = connect(address)
        assert hasattr(client, "get_primaries") and len(client.get_primaries()) == 3
        for i in range(30):  # keys of different queues spread; one queue's share a slot
            client.set(f"shoal:{{q{i}}}:n", i)
        owners = {client.keyslot(f"shoal:{{q{i}}}:n") // (16384 // 3) for i in range(30)}
        assert len(owners) > 1
        assert client.keyslot(f"{address.key_prefix}a") == client.keyslot(
            f"{address.key_prefix}b")
        assert check_durability(client, address).aof_always
        client.close()

        cluster.nodes[0].stop()  # the first host named is down: the others are asked
        dead = dead_port()
        hosts = ",".join(f"127.0.0.1:{p}" for p in [dead, *cluster.ports[1:]])
        client = connect(parse_url(f"redis://{hosts}/0?queue=q"))
        assert hasattr(client, "get_primaries") and client.ping()
        client.close()

    finally:
        cluster.stop()


def test_several_hosts_that_are_no_cluster_are_refused(secured: RedisServer,
                                                       clean_env: None) -> None:
    dead = dead_port()  # the first host is down, the second is no Cluster node
    url = f"redis://:{SECRET}@127.0.0.1:{dead},127.0.0.1:{secured.port}/0"
    with pytest.raises(UsageError) as caught:
        connect(parse_url(url))
    assert "not a Cluster node" in shown(caught.value) and SECRET not in str(caught.value)


def test_cluster_flag_on_a_plain_server_is_refused(secured: RedisServer,
                                                   clean_env: None) -> None:
    with pytest.raises(UsageError) as caught:
        connect(parse_url(f"redis://:{SECRET}@127.0.0.1:{secured.port}/0?cluster=1"))
    assert "cluster=1" in shown(caught.value)


def test_sentinel_failover_is_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                       ) -> None:
    group = start_sentinel(tmp_path)
    try:
        address = parse_url(group.url + "?queue=q")
        client = connect(address)
        client.set("before", "kept")
        assert client.wait(1, 5000) == 1  # the replica has it before the master dies
        old_master = group.master.port
        killed = time.monotonic()
        group.master.kill(signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="shoal.queue.redis_link"), \
                translated_errors(address):
            wait_for(lambda: _write_works(client), timeout_s=60,
                     message="writes to reach the new master")
        took = time.monotonic() - killed
        print(f"sentinel failover: writes work again {took:.2f} s after kill -9 of the master")
        assert group.master_port() == group.replica.port != old_master
        assert client.get("before") == b"kept"
        assert took < 30
    finally:
        group.stop()


def _write_works(client: Any) -> bool:
    import redis

    try:
        return bool(client.set("after", "ok"))
    except redis.exceptions.RedisError:  # refused or read-only while the sentinel decides
        return False


def test_no_redis_py_import_is_needed_to_parse() -> None:
    """`shoal` without the redis extra still parses URLs (errors come at connect)."""
    code = ("import sys; sys.modules['redis'] = None; "
            "from shoal.queue.redis_link import parse_url; "
            "print(parse_url('redis://h/0?queue=q').queue)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, timeout=60)
    assert out.stdout.strip() == "q", out.stderr
