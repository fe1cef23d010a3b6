"""A coordinator reached across a real network link: workers in another network namespace.

The test makes a network namespace and a veth pair (10.231.X.1 here, 10.231.X.2 there),
binds `shoal serve` to the near end, and runs `shoal work --drain` inside the namespace with
`ip netns exec`. Those workers have no loopback path to the coordinator: every request
crosses the veth link, as it would cross a cable between two machines.

Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and iproute2 (`ip`, Debian package iproute2).
Without them the test is skipped with the reason, except when CI is "true": there they must
work, so the same reason fails the test. Everything made here has a unique random name and is
removed by that name (processes by PID) at teardown, even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from shoal.job import Job, State
from shoal.net.contact import CONTACT_FILE, read_contact
from shoal.queue.remote import CoordinatorQueue
from tests.conftest import wait_for

N_JOBS = 20
N_WORKERS = 2
START_S = 15.0
DRAIN_S = 60.0
STOP_S = 10.0
# Each job says who ran it and in which network namespace (`net:[INODE]`).
JOB = 'echo "job=$JOB_I worker=$SHOAL_WORKER netns=$(readlink /proc/self/ns/net)"'


def unavailable(reason: str) -> NoReturn:
    """Skip: this machine cannot make network namespaces; but on CI that is a broken runner."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and network namespaces must work here, but: {reason}")
    pytest.skip(reason)


def ip_tool() -> str:
    found = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None)
    if found is None:
        unavailable("the `ip` command is not installed (Debian package iproute2)")
    return found


@dataclass(frozen=True)
class Netns:
    """A namespace `name` joined to this one by a veth pair."""

    ip: str
    name: str
    host_if: str  # our end, with host_addr
    ns_if: str  # the namespace's end, with ns_addr
    host_addr: str
    ns_addr: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.ip, *args], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)

    def must(self, *args: str) -> None:
        done = self.run(*args)
        if done.returncode != 0:
            pytest.fail(f"ip {' '.join(args)} failed: {done.stderr.strip()}")

    @property
    def inode(self) -> int:
        return os.stat(f"/run/netns/{self.name}").st_ino


def free_subnet(tool: str) -> int:
    """A random X with no 10.231.X.0/24 address or route on this machine."""
    used = subprocess.run([tool, "-4", "-o", "addr", "show"], capture_output=True, text=True,
                          timeout=30).stdout
    used += subprocess.run([tool, "-4", "route", "show", "table", "all"], capture_output=True,
                           text=True, timeout=30).stdout
    candidates = [x for x in range(1, 255) if f"10.231.{x}." not in used]
    if not candidates:
        pytest.fail("every 10.231.X.0/24 is in use on this machine")
    return random.choice(candidates)


def remove(net: Netns) -> list[str]:
    """Delete the veth pair and the namespace we made; what is still there afterwards."""
    net.run("link", "del", net.host_if)  # deletes both ends
    net.run("netns", "del", net.name)
    left = []
    if net.name in net.run("netns", "list").stdout.split():
        left.append(f"network namespace {net.name}")
    if net.run("link", "show", net.host_if).returncode == 0:
        left.append(f"interface {net.host_if}")
    return left


@pytest.fixture
def netns() -> Iterator[Netns]:
    tool = ip_tool()
    token = secrets.token_hex(3)
    x = free_subnet(tool)
    net = Netns(tool, f"shoal-test-{token}", f"shv{token}h", f"shv{token}n",
                f"10.231.{x}.1", f"10.231.{x}.2")
    try:
        made = net.run("netns", "add", net.name)
        if made.returncode != 0:
            unavailable(f"`ip netns add {net.name}` refused: {made.stderr.strip()}")
        paired = net.run("link", "add", net.host_if, "type", "veth", "peer", "name", net.ns_if)
        if paired.returncode != 0:
            unavailable(f"cannot make a veth pair: {paired.stderr.strip()}")
        net.must("link", "set", net.ns_if, "netns", net.name)
        net.must("addr", "add", f"{net.host_addr}/24", "dev", net.host_if)
        net.must("link", "set", net.host_if, "up")
        net.must("-n", net.name, "addr", "add", f"{net.ns_addr}/24", "dev", net.ns_if)
        net.must("-n", net.name, "link", "set", net.ns_if, "up")
        net.must("-n", net.name, "link", "set", "lo", "up")
        yield net
    finally:
        left = remove(net)
        assert not left, f"could not clean up: {', '.join(left)}"


@pytest.fixture
def spawn(netns: Netns, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """`spawn(argv)`: a process in its own session, logging to a file; every one is killed by
    its PID (its process group) at teardown, before the namespace goes."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"proc-{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=tmp_path)
        proc.log_path = log_path  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_S)


def output(proc: subprocess.Popen[bytes]) -> str:
    return proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]


def shoal(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal", *args]


def test_workers_in_another_network_namespace_run_every_job(netns: Netns, spawn,
                                                            tmp_path: Path):
    status_dir = tmp_path / "status"
    server = spawn(shoal("-v", "serve", f"sqlite://{tmp_path / 'q.db'}",
                         "--bind", f"tcp://{netns.host_addr}:0", "--status", str(status_dir)))
    wait_for(lambda: (status_dir / CONTACT_FILE).exists() or server.poll() is not None,
             START_S, message="the coordinator's status file")
    assert server.poll() is None, output(server)
    address = read_contact(status_dir).address
    assert address.startswith(f"tcp://{netns.host_addr}:"), address

    client = CoordinatorQueue(str(status_dir), patience_s=30)
    try:
        jobs = [Job.command_job(JOB, env={"JOB_I": str(i)}) for i in range(N_JOBS)]
        assert len(client.submit(jobs)) == N_JOBS
        workers = [spawn([netns.ip, "netns", "exec", netns.name,
                          *shoal("-v", "work", str(status_dir), "--drain", "--slots", "2")])
                   for _ in range(N_WORKERS)]
        for worker in workers:  # `ip netns exec` execs python: the PID stays the worker's
            try:
                code = worker.wait(timeout=DRAIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {worker.pid} did not drain in {DRAIN_S:g} s:\n"
                            f"{output(worker)}\ncoordinator:\n{output(server)}")
            assert code == 0, output(worker)

        worker_pids = {str(w.pid) for w in workers}
        here = os.readlink("/proc/self/ns/net")
        there = f"net:[{netns.inode}]"
        assert here != there
        for job in jobs:
            status = client.get(job.id)
            assert status.state is State.DONE, (status, [output(w) for w in workers])
            assert status.result.worker.split("-")[-2] in worker_pids, status.result.worker
            log = client.files.read_log(status)
            assert log is not None, (
                f"job {job.id} has no log: its result names {status.result.log}, a path on "
                f"the worker, so the worker did not ship it to the coordinator")
            log = log.decode()
            assert log.strip() == (f"job={job.env['JOB_I']} worker={status.result.worker} "
                                   f"netns={there}"), log
    finally:
        client.close()

    # What a user types: `shoal logs STATUS_DIR JOB` prints that log.
    for job in (jobs[0], jobs[-1]):
        shown = subprocess.run(shoal("logs", str(status_dir), job.id), capture_output=True,
                               text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"job={job.env['JOB_I']} worker="), shown.stdout
        assert shown.stdout.rstrip().endswith(f"netns={there}"), shown.stdout
    os.kill(server.pid, signal.SIGTERM)
    assert server.wait(timeout=STOP_S) == 0, output(server)
