"""Security of the network queue, as a user or an attacker meets it: who gets in, what an
outsider's bytes do to the coordinator, what it does with bytes it cannot trust, and where
its secrets and its port are. Real sockets and real handshakes, no mocks."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import pickle
import shlex
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from shoal import defaults
from shoal.calls import runtime
from shoal.errors import AuthenticationFailed, CoordinatorUnreachable, MessageTooBig
from shoal.job import Job, Kind, Result, State
from shoal.net import wire
from shoal.net.contact import CONTACT_FILE, SERVER_SECRET, read_contact
from shoal.queue import open_queue
from shoal.queue.remote import CoordinatorQueue
from shoal.queue.sqlite import SqliteQueue
from shoal.serve.coordinator import Coordinator
from shoal.serve.locate import serve
from tests.conftest import wait_for
from tests.procs import Procs

AUTH_FAIL_S = 3.0  # a client with the wrong keys must be told this fast
FAST_S = 2.0  # a good client's operation takes less than this, whatever else is going on
HANDSHAKE_S = 1.0  # the coordinator's handshake timeout in these tests (default 5 s)
IDLE_CONNECTIONS = 200
SMALL_MESSAGE_BYTES = 64 * 1024
TOO_BIG_PATIENCE_S = 3.0

HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
# The start of a ZMTP 3 greeting: signature (0xFF, 8 padding bytes, 0x7F) and the major
# version; a peer that sends this and then nothing has begun a handshake it never finishes.
GREETING_START = b"\xff" + b"\x00" * 8 + b"\x7f\x03"


# -- a coordinator in this process, and its clients -----------------------------------------


@dataclass
class Served:
    coordinator: Coordinator
    status_dir: Path
    clients: list[CoordinatorQueue] = field(default_factory=list)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.coordinator.address.removeprefix("tcp://").rpartition(":")
        return host, int(port)

    def client(self, where: str | Path | None = None, **options: float) -> CoordinatorQueue:
        queue = CoordinatorQueue(str(where or self.status_dir), **options)
        self.clients.append(queue)
        return queue


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """`coordinator(**options)`: a Coordinator over SQLite serving from a thread; it and
    every client opened through it are closed at teardown."""
    started: list[Served] = []

    def start(**options: int) -> Served:
        n = len(started)
        status_dir = tmp_path / f"status{n}"
        served = Served(Coordinator(SqliteQueue(tmp_path / f"q{n}.db"), status_dir=status_dir,
                                    **options).start(), status_dir)
        started.append(served)
        return served

    yield start
    for served in started:
        for client in served.clients:
            client.close()
        served.coordinator.stop()
        served.coordinator.queue.close()


@pytest.fixture
def short_handshake(monkeypatch: pytest.MonkeyPatch) -> float:
    """Coordinators (and clients) built after this drop unfinished handshakes in 1 s."""
    monkeypatch.setattr(defaults, "HANDSHAKE_S", HANDSHAKE_S)
    return HANDSHAKE_S


def timed(action: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    value = action()
    return value, time.monotonic() - started


def round_trip(queue: CoordinatorQueue, tag: str) -> None:
    """Submit, claim and finish one job, each step within FAST_S."""
    job = Job.command_job(["echo", tag])
    ids, took = timed(lambda: queue.submit([job]))
    assert ids == [job.id] and took < FAST_S, f"submit took {took:.2f} s"
    leases, took = timed(lambda: queue.claim("good-worker", 1))
    assert [x.job_id for x in leases] == [job.id] and took < FAST_S, f"claim took {took:.2f} s"
    (lease,) = leases
    _, took = timed(lambda: queue.finish(lease, Result(job.id, State.DONE, attempt=lease.attempt,
                                                       worker=lease.worker, exit_code=0)))
    assert took < FAST_S, f"finish took {took:.2f} s"
    assert queue.get(job.id).state is State.DONE


def copy_status(served: Served, folder: Path, **changes: str) -> Path:
    """A copy of the coordinator's status file with some fields changed (a stale or forged
    status file, as a user might have)."""
    data = json.loads((served.status_dir / CONTACT_FILE).read_text())
    folder.mkdir(mode=0o700)
    path = folder / CONTACT_FILE
    path.write_text(json.dumps({**data, **changes}))
    return path


def other_keypair() -> tuple[str, str]:
    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


# -- 1, 2: clients with the wrong keys ------------------------------------------------------


def test_a_client_with_another_client_key_is_refused_within_3_s(coordinator, tmp_path: Path):
    served = coordinator()
    good = served.client()
    public, secret = other_keypair()
    forged = copy_status(served, tmp_path / "forged", client_public=public, client_secret=secret)

    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match=r"^authentication failed") as refused:
        open_queue(str(forged.parent))  # a status directory, as `shoal work DIR` takes it
    took = time.monotonic() - started
    assert took < AUTH_FAIL_S, f"the refusal took {took:.2f} s"
    assert "refused our key" in str(refused.value)

    # The CLI says the same in one line (exit status 2), and the coordinator serves on.
    done = subprocess.run([sys.executable, "-m", "shoal", "status", str(forged.parent)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("shoal: error: authentication failed"), done.stderr
    assert "Traceback" not in done.stderr
    round_trip(good, "after-forged-client-key")


def test_a_client_with_another_server_key_is_refused_within_3_s(coordinator, tmp_path: Path):
    served = coordinator()
    good = served.client()
    public, _ = other_keypair()
    stale = copy_status(served, tmp_path / "stale", server_public=public)

    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match=r"^authentication failed") as refused:
        CoordinatorQueue(str(stale))  # the status file itself
    took = time.monotonic() - started
    assert took < AUTH_FAIL_S, f"the refusal took {took:.2f} s"
    assert "wrong server key" in str(refused.value)
    round_trip(good, "after-wrong-server-key")


# -- 3: ZeroMQ without CURVE ----------------------------------------------------------------


def test_a_plain_zeromq_client_gets_nothing_and_its_handshake_fails(coordinator):
    served = coordinator()
    good = served.client()
    intruder_job = Job.command_job("touch /tmp/should-never-run")
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket()
    try:
        sock.connect(served.coordinator.address)
        sock.send(wire.pack([1, b"intruder", "ping", {}]))
        sock.send(wire.pack([2, b"intruder", "submit",
                             {"jobs": [intruder_job.to_dict(binary=True)], "watch": False}]))
        events = []
        deadline = time.monotonic() + AUTH_FAIL_S
        while not any(e & HANDSHAKE_FAILED for e in events):
            assert time.monotonic() < deadline, f"no handshake failure seen; events: {events}"
            if monitor.poll(50):
                events.append(recv_monitor_message(monitor)["event"])
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events
        # It keeps reconnecting and failing; it never gets a reply of any kind.
        assert sock.poll(500, zmq.POLLIN) == 0
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)
        context.term()
    assert good.get(intruder_job.id) is None
    assert sum(good.counts().values()) == 0
    round_trip(good, "after-plain-zeromq")


# -- 4: garbage, slow handshakes and idle connections ---------------------------------------


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the coordinator has closed this raw connection (EOF or reset)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True  # (its greeting bytes are read and ignored)
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def send_garbage(address: tuple[str, int], size: int) -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    with contextlib.suppress(ConnectionError):  # dropped before we finished sending: fine
        sock.sendall(os.urandom(size))
    return sock


def test_garbage_slow_handshakes_and_idle_connections_do_not_block_the_coordinator(
        short_handshake, coordinator):
    served = coordinator()
    good = served.client()
    address = served.host_port
    raw: list[socket.socket] = []
    try:
        raw += [send_garbage(address, size) for size in (1, 10, 4096, 64 * 1024, 1 << 20)]
        slow_from = time.monotonic()
        for _ in range(3):  # greetings begun and never finished (slowloris)
            sock = socket.create_connection(address, timeout=5)
            sock.sendall(GREETING_START)
            raw.append(sock)
        raw += [socket.create_connection(address, timeout=5) for _ in range(IDLE_CONNECTIONS)]
        all_open = time.monotonic()
        for sock in raw:
            sock.setblocking(False)

        # While they are held, and until the coordinator has dropped every one (its
        # handshake timeout), a good client is served promptly.
        rounds = 0
        open_ = list(raw)
        while open_:
            round_trip(good, f"during-{rounds}")
            rounds += 1
            open_ = [s for s in open_ if not closed_by_peer(s)]
            late = time.monotonic() - all_open
            assert late < short_handshake + 3, (
                f"{len(open_)} of {len(raw)} connections still open {late:.1f} s after the "
                f"last was made (handshake timeout {short_handshake:g} s)")
        assert rounds > 1
        assert time.monotonic() - slow_from >= short_handshake * 0.9, "dropped too early?"
    finally:
        for sock in raw:
            sock.close()
    round_trip(good, "after")
    assert good.counts()[State.DONE] == rounds + 1


# -- 5: an authenticated client sends too much ----------------------------------------------


def test_a_request_over_the_limit_is_refused_by_the_client_at_once(coordinator):
    served = coordinator(max_message_bytes=SMALL_MESSAGE_BYTES)
    client = served.client()
    huge = Job.command_job("true", env={"BIG": "x" * (4 * SMALL_MESSAGE_BYTES)})
    started = time.monotonic()
    with pytest.raises(MessageTooBig, match="over the coordinator's limit"):
        client.submit([huge])
    assert time.monotonic() - started < 1
    small = [Job.command_job("true", params={"i": i}, env={"PAD": "x" * 20_000})
             for i in range(10)]  # together over the limit, each far under it
    assert sorted(client.submit(small)) == sorted(job.id for job in small)
    assert client.get(huge.id) is None


def test_an_oversized_message_drops_only_its_sender_which_gives_up_and_recovers(coordinator):
    served = coordinator(max_message_bytes=SMALL_MESSAGE_BYTES)
    good = served.client()
    big = served.client(patience_s=TOO_BIG_PATIENCE_S)
    big._channel.max_message_bytes = None  # a client that does not check: the coordinator must
    huge = Job.command_job("true", env={"BIG": "x" * (4 * SMALL_MESSAGE_BYTES)})

    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        attempt = pool.submit(big.submit, [huge])
        rounds = 0
        while not attempt.done():  # other clients are served meanwhile
            round_trip(good, f"during-{rounds}")
            rounds += 1
            assert time.monotonic() - started < TOO_BIG_PATIENCE_S + 5, "big submit hangs"
        # What its sender sees: nobody answers (the coordinator drops the connection at
        # MAXMSGSIZE, the client retries and gives up after its patience).
        with pytest.raises(CoordinatorUnreachable, match="no coordinator answered"):
            attempt.result()
        took = time.monotonic() - started
    assert TOO_BIG_PATIENCE_S <= took < TOO_BIG_PATIENCE_S + 2, f"gave up after {took:.2f} s"
    assert rounds > 1
    assert good.get(huge.id) is None
    assert good.counts()[State.PENDING] == 0
    round_trip(good, "after")
    # The sender's connection is usable again for requests of a sane size.
    round_trip(big, "after-from-the-big-sender")


# -- 6: private files, loopback only --------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def non_loopback_ipv4() -> list[str]:
    """This host's IPv4 addresses outside 127/8 (Linux SIOCGIFADDR on each interface)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(sock.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue  # no IPv4 address on this interface
            address = socket.inet_ntoa(reply[20:24])
            if not ipaddress.ip_address(address).is_loopback:
                found.append(address)
    return found


def test_status_is_private_and_the_coordinator_listens_on_loopback_only(tmp_path: Path):
    status_dir = tmp_path / "status"
    status_dir.mkdir(mode=0o755)  # a too-open folder that already exists is tightened
    old_umask = os.umask(0)  # even with a careless umask
    try:
        coordinator = serve(SqliteQueue(tmp_path / "q.db"), status_dir).start()  # as the CLI
    finally:
        os.umask(old_umask)
    try:
        assert mode(status_dir) == 0o700
        for name in (CONTACT_FILE, SERVER_SECRET):
            assert mode(status_dir / name) == 0o600, name
            assert (status_dir / name).stat().st_uid == os.getuid()
        status = read_contact(status_dir)
        assert coordinator.address.startswith("tcp://127.0.0.1:")
        assert status.address == coordinator.address
        port = int(coordinator.address.rpartition(":")[2])
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # it does listen

        others = non_loopback_ipv4()
        if not others:
            pytest.skip("this machine has no non-loopback IPv4 address to try the port on")
        for address in others:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, port), timeout=2).close()
    finally:
        coordinator.stop()
        coordinator.queue.close()


# -- 7: nothing is unpickled ----------------------------------------------------------------


class PickleBomb:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def shoal_cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_coordinator_stores_and_lists_pickles_without_unpickling_them(
        procs: Procs, tmp_path: Path):
    markers = tmp_path / "markers"
    markers.mkdir()
    control = markers / "control"
    pickle.loads(pickle.dumps(PickleBomb(control)))  # the bomb is live: unpickling runs it
    assert control.exists()
    control.unlink()
    job_bomb = pickle.dumps(PickleBomb(markers / "job-payload"))
    result_bomb = pickle.dumps(PickleBomb(markers / "result-payload"))

    status_dir = tmp_path / "status"
    server = procs.shoal("serve", f"sqlite://{tmp_path / 'q.db'}", "--status", str(status_dir))
    wait_for(lambda: (status_dir / CONTACT_FILE).exists() or server.poll() is not None,
             15, message="the coordinator's status file")
    assert server.poll() is None, procs.output(server)
    client = CoordinatorQueue(str(status_dir))
    try:
        job = Job(id="pickle-bomb-1", name="bomb", kind=Kind.CALL, payload=job_bomb,
                  meta=runtime())
        assert client.submit([job]) == [job.id]
        assert "1 pending" in shoal_cli("status", str(status_dir))
        assert "bomb" in shoal_cli("results", str(status_dir))
        (lease,) = client.claim("w1")
        assert lease.job.payload == job_bomb  # stored and handed out as opaque bytes
        client.finish(lease, Result(job.id, State.DONE, name=job.name, attempt=lease.attempt,
                                    worker=lease.worker, value="<bomb>", payload=result_bomb))
        assert "1 done" in shoal_cli("status", str(status_dir))
        (row,) = [json.loads(line) for line in
                  shoal_cli("results", str(status_dir), "--format", "json").splitlines()]
        assert row["state"] == "done" and row["value"] == "<bomb>"
        stored = client.get(job.id)
        assert stored.job.payload == job_bomb and stored.result.payload == result_bomb
    finally:
        client.close()
    os.kill(server.pid, signal.SIGTERM)
    assert server.wait(timeout=10) == 0, procs.output(server)
    assert sorted(p.name for p in markers.iterdir()) == [], "something unpickled a payload"

