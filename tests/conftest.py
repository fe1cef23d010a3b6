"""Shared fixtures: queues of every backend, a condition waiter, no leftover children."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal.queue import open_queue
from shoal.queue.base import Queue
from shoal.queue.folder import FolderQueue
from shoal.queue.memory import MemoryQueue
from shoal.queue.remote import CoordinatorQueue
from shoal.queue.sqlite import SqliteQueue
from shoal.serve.coordinator import Coordinator

pytest.register_assert_rewrite("tests.redisd")
from tests import redisd  # noqa: E402 - after the rewrite hook, as its plugin

pytest_plugins = ["tests.procs", "tests.redisd"]

TEST_LEASE_S = 0.6
BACKENDS = ["memory", "folder", "sqlite", "tcp", "redis", "redis_cluster", "redis_sentinel"]
REDIS_BACKENDS = {"redis", "redis_cluster", "redis_sentinel"}

# A suite started in the background by a shell without job control (`nohup pytest &`, a
# script's `cmd &`) inherits SIGINT ignored, and so would every command it starts, which
# then sleeps through the SIGINT a test sends as Ctrl-C would (`shoal status --watch` hung
# so). A handler here, unlike an ignored signal, is back to the default in every child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# One redis-server (one Cluster, one Sentinel group) for the whole session, started when
# a test first needs it; each test gets queues of its own name on it.
_REDIS: dict[str, redisd.RedisServer | redisd.RedisCluster | redisd.RedisSentinel] = {}
_STARTS = {"redis": redisd.start_redis, "redis_cluster": redisd.start_cluster,
           "redis_sentinel": redisd.start_sentinel}


def redis_queue_url(backend: str = "redis") -> str:
    """The URL of a new, empty queue (a name of its own) on the session's server."""
    if backend not in _REDIS:
        folder = Path(tempfile.mkdtemp(prefix=f"shoal-{backend}-"))
        _REDIS[backend] = _STARTS[backend](folder)
    base = _REDIS[backend].url
    return f"{base}{'&' if '?' in base else '?'}queue=t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session", autouse=True)
def _stop_redis() -> Iterator[None]:
    yield
    for server in _REDIS.values():
        server.stop()
        first = (server if isinstance(server, redisd.RedisServer) else server.master
                 if isinstance(server, redisd.RedisSentinel) else server.nodes[0])
        shutil.rmtree(first.dir.parent, ignore_errors=True)


def wait_for(condition: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.02,
             message: str = "condition") -> object:
    """Poll `condition` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)


class QueueFactory:
    """Opens views of one queue: the same object for memory, a fresh instance for a folder,
    so a second view behaves like another process or host on the same queue."""

    def __init__(self, backend: str, tmp_path: Path, lease_s: float) -> None:
        self.backend = backend
        self.lease_s = lease_s
        self.log_cap_bytes: int | None = None  # set before the first view is opened
        self.path = tmp_path / "queue"
        self._memory: MemoryQueue | None = None
        self._coordinator: Coordinator | None = None
        self._opened: list[Queue] = []
        self.url = redis_queue_url(backend) if backend in REDIS_BACKENDS else ""

    def __call__(self) -> Queue:
        if self.backend == "tcp":  # a coordinator over sqlite; each call is another client
            if self._coordinator is None:
                served = SqliteQueue(self.path.with_suffix(".db"), lease_s=self.lease_s,
                                     log_cap_bytes=self.log_cap_bytes)
                self._coordinator = Coordinator(served, status_dir=self.path.with_suffix(
                    ".status")).start()
            client = CoordinatorQueue(str(self.path.with_suffix(".status")))
            self._opened.append(client)
            return client
        if self.backend in REDIS_BACKENDS:  # each call is another client of one queue
            view = open_queue(self.url, lease_s=self.lease_s, log_cap_bytes=self.log_cap_bytes)
            self._opened.append(view)
            return view
        if self.backend == "memory":
            if self._memory is None:
                self._memory = MemoryQueue(lease_s=self.lease_s,
                                           log_cap_bytes=self.log_cap_bytes)
            return self._memory
        if self.backend == "sqlite":
            return SqliteQueue(self.path.with_suffix(".db"), lease_s=self.lease_s,
                               log_cap_bytes=self.log_cap_bytes)
        return FolderQueue(self.path, lease_s=self.lease_s, log_cap_bytes=self.log_cap_bytes)

    def close(self) -> None:
        for client in self._opened:
            client.close()
        if self._coordinator is not None:
            self._coordinator.stop()


@pytest.fixture(params=BACKENDS)
def queue_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueFactory]:
    factory = QueueFactory(request.param, tmp_path, TEST_LEASE_S)
    yield factory
    factory.close()


@pytest.fixture
def queue(queue_factory: QueueFactory) -> Iterator[Queue]:
    q = queue_factory()
    yield q
    q.close()


def _children(pid: int) -> list[int]:
    """Live children of `pid`, but for the session's redis-servers (tests.redisd), which
    outlive single tests by design."""
    servers = set(redisd._LIVE)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid and int(entry.name) not in servers:
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Every test must leave no child process of the test runner behind."""
    yield
    deadline = time.monotonic() + 5
    while _children(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _children(os.getpid())
    assert not left, f"test left child processes behind: {left}"


def shoal_processes(worker: str | None = None, job: str | None = None) -> list[int]:
    """Live processes carrying a shoal job's environment (by worker and/or job id)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if worker and f"SHOAL_WORKER={worker}".encode() not in env:
            continue
        if job and f"SHOAL_JOB_ID={job}".encode() not in env:
            continue
        if worker or job:
            found.append(int(entry.name))
    return found
