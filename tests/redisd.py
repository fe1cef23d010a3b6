"""Real redis-server processes for tests: a single server, a Cluster, a Sentinel set.

Each server runs in its own directory on a free loopback port, started with Popen by
this process (so we reap it ourselves: no zombie lingers under PID 1) and stopped by
its PID, never by name. Without redis-server a test skips with the reason, except in
CI (`CI=true`), where a missing server is a failure.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 30.0  # generous: the machine is shared and loaded
STOP_TIMEOUT_S = 15.0
CLUSTER_MAX_PORT = 55535  # the cluster bus listens on port + 10000
SENTINEL_MASTER = "shoal"

_LIVE: dict[int, subprocess.Popen[bytes]] = {}  # pid -> process, for the exit sweep


def _require(program: str) -> str:
    """The program's path, or skip (fail in CI) saying what is missing."""
    path = shutil.which(program)
    if path is None:
        reason = f"{program} is not installed (apt-get install redis-server redis-tools)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def server_binary() -> str:
    """redis-server, or the server named by SHOAL_REDIS_SERVER (e.g. a Valkey 8 binary, to
    run the tests that need a newer server than Debian's 7.0)."""
    chosen = os.environ.get("SHOAL_REDIS_SERVER")
    return chosen if chosen else _require("redis-server")


def _redis_py() -> Any:
    try:
        import redis
    except ImportError:
        reason = "the redis package (redis-py) is not installed (pip install redis)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return redis


def _wait(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    from tests.conftest import wait_for  # at call time: conftest imports this module

    return wait_for(condition, timeout_s=timeout_s, message=what)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster: bool = False) -> int:
    """A loopback port that is free now (and, for Cluster, whose bus port+10000 is too).

    Picked below the kernel's ephemeral range so outgoing connections rarely take it.
    """
    top = 32000 if not cluster else min(32000, CLUSTER_MAX_PORT)
    for _ in range(500):
        port = random.randint(20000, top)
        if _bindable(port) and (not cluster or _bindable(port + 10000)):
            return port
    raise RuntimeError("no free loopback port found")


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed CA and a server certificate for 127.0.0.1, made with openssl."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """Make a throwaway CA and a server certificate for 127.0.0.1/localhost in `folder`."""
    openssl = _require("openssl")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=shoal-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf")
    return TlsFiles(ca=folder / "ca.crt", cert=folder / "server.crt", key=folder / "server.key")


@dataclass
class RedisServer:
    """One redis-server process: its port, directory and PID; restart keeps the directory."""

    dir: Path
    port: int
    args: list[str]
    password: str | None = None
    tls: TlsFiles | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        """A URL with the password in it (tests only: shoal itself never prints one)."""
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ca={self.tls.ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    def client(self, **options: Any) -> Any:
        """A plain redis-py client to this server (for test set-up and checks)."""
        redis = _redis_py()
        kwargs: dict[str, Any] = {"host": "127.0.0.1", "port": self.port,
                                  "password": self.password, "socket_timeout": 10}
        if self.tls is not None:
            kwargs.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
        kwargs.update(options)
        return redis.Redis(**kwargs)

    def start(self) -> RedisServer:
        """Start the process and wait until it answers PING (skip if TLS is not built in)."""
        binary = server_binary()
        log = open(self.dir / "stdout.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [binary, *self.args], cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _LIVE[self.proc.pid] = self.proc
        try:
            _wait(self._ready, START_TIMEOUT_S, f"redis-server on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            text = self._logs()
            said = [line.split(" # ")[-1] for line in text.splitlines() if "tls" in line.lower()]
            if self.tls is not None and said:
                pytest.skip(f"this redis-server was built without TLS: {'; '.join(said[-2:])}")
            raise RuntimeError(f"redis-server on port {self.port} exited "
                               f"({self.proc.returncode}): {text.strip()[-500:]}")
        redis = _redis_py()
        try:
            with contextlib.closing(self.client(socket_timeout=2)) as c:
                return bool(c.ping())
        except redis.exceptions.BusyLoadingError:
            return False
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError):
            return True  # it answers; the test set up its own users
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False

    def _logs(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.log, self.dir / "stdout.log")
                 if p.exists()]
        return "\n".join(parts)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the server by PID; for a deadly signal, wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            self._reap()

    def _reap(self) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        _LIVE.pop(self.proc.pid, None)

    def stop(self) -> None:
        """SIGTERM (Redis flushes its AOF and exits), SIGKILL if it will not, then reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a SIGSTOPped server cannot exit
                os.kill(self.proc.pid, signal.SIGTERM)
        self._reap()

    def restart(self) -> RedisServer:
        """Start again on the same port and directory (the AOF brings the data back)."""
        self.stop()
        return self.start()

    def version(self) -> tuple[int, ...]:
        """The Redis version the server reports (Valkey reports the Redis one it matches)."""
        with contextlib.closing(self.client()) as c:
            text = str(c.info("server").get("redis_version", "0"))
        return tuple(int(part) for part in text.split(".") if part.isdigit())

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _server_args(folder: Path, port: int, *, appendfsync: str | None, password: str | None,
                 tls: TlsFiles | None, extra: Sequence[str]) -> list[str]:
    args = ["--bind", "127.0.0.1", "--dir", str(folder), "--logfile", str(folder / "redis.log"),
            "--save", "", "--daemonize", "no", "--protected-mode", "no"]
    if appendfsync is None:
        args += ["--appendonly", "no"]
    else:
        args += ["--appendonly", "yes", "--appendfsync", appendfsync]
    if tls is None:
        args += ["--port", str(port)]
    else:
        args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.cert),
                 "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca),
                 "--tls-auth-clients", "no"]
    if password is not None:
        args += ["--requirepass", password]
    return args + list(extra)


def start_redis(tmp: Path, *, appendfsync: str | None = "always", password: str | None = None,
                tls: TlsFiles | None = None, extra: Sequence[str] = (),
                port: int | None = None) -> RedisServer:
    """Start one redis-server in a fresh folder under `tmp`.

    `appendfsync=None` runs without an AOF (appendonly no); `extra` are more
    redis-server arguments, later ones overriding earlier ones (e.g. `--maxmemory 2mb`).
    """
    for attempt in range(5):  # another test may take the port between pick and bind
        chosen = port or free_port(cluster="--cluster-enabled" in extra)
        folder = Path(tmp) / f"redis-{chosen}-{attempt}"
        folder.mkdir(parents=True, exist_ok=True)
        args = _server_args(folder, chosen, appendfsync=appendfsync, password=password, tls=tls,
                            extra=extra)
        server = RedisServer(dir=folder, port=chosen, args=args, password=password, tls=tls)
        try:
            return server.start()
        except RuntimeError as exc:
            if port is not None or "Address already in use" not in str(exc):
                raise
    raise RuntimeError("could not start redis-server: ports kept being taken")


@dataclass
class RedisCluster:
    """A Redis Cluster of `masters` nodes, no replicas, all slots covered."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0?cluster=1"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(tmp: Path, masters: int = 3, *, appendfsync: str | None = "always"
                  ) -> RedisCluster:
    """Start `masters` cluster nodes, give each an equal share of the 16384 slots, join them."""
    extra = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "2000")
    nodes: list[RedisServer] = []
    try:
        for _ in range(masters):
            nodes.append(start_redis(tmp, appendfsync=appendfsync, extra=extra))
        _form_cluster(nodes)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisCluster(nodes)


def _form_cluster(nodes: list[RedisServer]) -> None:
    """What `redis-cli --cluster create` does: slots, epochs, MEET, wait for state ok."""
    share = 16384 // len(nodes)
    clients = [node.client() for node in nodes]
    try:
        for i, c in enumerate(clients):
            first = i * share
            last = 16383 if i == len(nodes) - 1 else first + share - 1
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)

        def all_ok() -> bool:
            for c in clients:
                info = c.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text or f"cluster_known_nodes:{len(nodes)}" \
                        not in text:
                    return False
            return True

        _wait(all_ok, START_TIMEOUT_S, "cluster_state:ok on every node")
    finally:
        for c in clients:
            c.close()


@dataclass
class RedisSentinel:
    """A master, a replica and sentinel(s) watching them as master `shoal`."""

    master: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SENTINEL_MASTER}"

    def master_port(self) -> int:
        """The port the sentinels name as master now."""
        with contextlib.closing(self.sentinels[0].client()) as c:
            _host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                            SENTINEL_MASTER)
        return int(port)

    def stop(self) -> None:
        for server in [*self.sentinels, self.master, self.replica]:
            server.stop()


def start_sentinel(tmp: Path, *, sentinels: int = 1, appendfsync: str | None = "always"
                   ) -> RedisSentinel:
    """Start a master, one replica and `sentinels` sentinels (quorum 1, down after 1 s)."""
    started: list[RedisServer] = []
    try:
        master = start_redis(tmp, appendfsync=appendfsync,
                             extra=("--repl-diskless-sync-delay", "0"))
        started.append(master)
        replica = start_redis(tmp, appendfsync=appendfsync, extra=(
            "--replicaof", "127.0.0.1", str(master.port), "--repl-diskless-sync-delay", "0"))
        started.append(replica)
        _wait(lambda: _replica_online(master), START_TIMEOUT_S, "the replica to link")
        watchers = []
        for _ in range(sentinels):
            watcher = _start_one_sentinel(tmp, master.port)
            started.append(watcher)
            watchers.append(watcher)
        for watcher in watchers:
            _wait(lambda w=watcher: _sentinel_knows_replica(w, sentinels), START_TIMEOUT_S,
                  "the sentinel to see the replica")
    except BaseException:
        for server in started:
            server.stop()
        raise
    return RedisSentinel(master=master, replica=replica, sentinels=watchers)


def _replica_online(master: RedisServer) -> bool:
    with contextlib.closing(master.client()) as c:
        info = c.info("replication")
    return any(isinstance(v, dict) and v.get("state") == "online"
               for k, v in info.items() if k.startswith("slave"))


def _sentinel_knows_replica(watcher: RedisServer, sentinels: int) -> bool:
    with contextlib.closing(watcher.client()) as c:
        replicas = c.execute_command("SENTINEL", "REPLICAS", SENTINEL_MASTER)
        master = c.execute_command("SENTINEL", "MASTER", SENTINEL_MASTER)
    fields = _pairs(master)
    others = int(fields.get("num-other-sentinels", "0"))
    return bool(replicas) and others >= sentinels - 1


def _pairs(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


def _start_one_sentinel(tmp: Path, master_port: int) -> RedisServer:
    for attempt in range(5):
        port = free_port()
        folder = Path(tmp) / f"sentinel-{port}-{attempt}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"  # sentinel rewrites its conf: it must be its own
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {folder}\n"
            f"logfile {folder / 'redis.log'}\n"
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 3000\n")
        server = RedisServer(dir=folder, port=port, args=[str(conf), "--sentinel"])
        try:
            return server.start()
        except RuntimeError as exc:
            if "Address already in use" not in str(exc):
                raise
    raise RuntimeError("could not start a sentinel: ports kept being taken")


@atexit.register
def _kill_leftovers() -> None:
    """A server a test forgot still dies with the test process (by its PID)."""
    for pid, proc in list(_LIVE.items()):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


# -- session fixtures ---------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One durable redis-server (AOF, appendfsync always) for the whole session."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster for the whole session."""
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    """A master, a replica and one sentinel for the whole session."""
    group = start_sentinel(tmp_path_factory.mktemp("redis-sentinel"))
    yield group
    group.stop()
