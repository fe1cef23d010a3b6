"""A request sent again (no reply came) never acts twice, before or after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from shoal.errors import AuthenticationFailed
from shoal.job import Job, Result, State
from shoal.net import wire
from shoal.net.contact import read_contact
from shoal.queue import open_queue
from shoal.queue.sqlite import SqliteQueue
from shoal.serve.coordinator import Coordinator
from shoal.serve.locate import serve


class RawClient:
    """A DEALER with the right keys that sends exactly the frames we build."""

    def __init__(self, status_dir: Path) -> None:
        status = read_contact(status_dir)
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.curve_serverkey = status.server_public.encode()
        self.socket.curve_publickey = status.client_public.encode()
        self.socket.curve_secretkey = status.client_secret.encode()
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(status.address)

    def send(self, req_id: int, method: str, args: dict, *, repeat: bool = False,
             client: bytes = b"raw-client") -> list:
        envelope = [req_id, client, method, args] + ([True] if repeat else [])
        self.socket.send(wire.pack(envelope))
        assert self.socket.poll(5000), f"no reply to {method}"
        return wire.unpack(self.socket.recv())

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()


@pytest.fixture
def served(tmp_path: Path):
    coordinators = []

    def start() -> Coordinator:
        queue = SqliteQueue(tmp_path / "q.sqlite", lease_s=30)  # a restart: same keys, port
        coordinators.append(serve(queue, tmp_path / "status").start())
        return coordinators[-1]

    yield start, tmp_path / "status"
    for coordinator in coordinators:
        coordinator.stop()


def job_record(i: int) -> dict:
    return Job.command_job(["echo", str(i)]).to_dict(binary=True)


def test_a_repeated_claim_gets_the_same_lease_and_takes_no_second_job(served):
    start, status = served
    start()
    raw = RawClient(status)
    try:
        raw.send(1, "submit", {"jobs": [job_record(1), job_record(2)]})
        first = raw.send(2, "claim", {"worker": "w", "n": 1})
        again = raw.send(2, "claim", {"worker": "w", "n": 1}, repeat=True)
        assert first[0] == wire.OK and again[:3] == first[:3]
        counts = raw.send(3, "counts", {})[2]
        assert (counts["running"], counts["pending"]) == (1, 1)
        assert raw.send(1, "submit", {"jobs": [job_record(1)]}, repeat=True)[2] == [
            job_record(1)["id"], job_record(2)["id"]]  # the cached answer, nothing new
        assert raw.send(4, "counts", {})[2]["pending"] == 1
    finally:
        raw.close()


def test_a_finish_repeated_after_a_restart_is_accepted_once_and_a_stale_one_refused(served):
    start, status = served
    coordinator = start()
    raw = RawClient(status)
    try:
        raw.send(1, "submit", {"jobs": [job_record(1)]})
        (lease,) = raw.send(2, "claim", {"worker": "w", "n": 1})[2]
        fence = {"id": lease["job"]["id"], "attempt": lease["attempt"], "worker": "w",
                 "token": lease["token"]}
        result = Result(fence["id"], State.DONE, attempt=1, worker="w", exit_code=0)
        finish = {"lease": fence, "result": wire.result_out(result)}
        assert raw.send(3, "finish", finish)[0] == wire.OK
        coordinator.stop()  # the reply cache goes with it
        start()
        assert raw.send(3, "finish", finish, repeat=True)[0] == wire.OK  # our own, again
        refused = raw.send(4, "finish", finish)  # not a repeat: a second finish of a lease
        assert refused[0] == wire.ERR and refused[2]["type"] == "LeaseLost"
        results = raw.send(5, "results", {})[2]
        assert [r["job_id"] for r in results] == [fence["id"]]
    finally:
        raw.close()


def test_a_tcp_url_without_a_status_file_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SHOAL_STATUS", raising=False)
    with pytest.raises(AuthenticationFailed, match="no key for it here"):
        open_queue("tcp://127.0.0.1:9")


def test_a_result_push_lost_on_the_way_still_resolves_its_future(tmp_path):
    import shoal
    from shoal.queue.remote import PUSH_SWEEP_S

    class LosingCoordinator(Coordinator):
        """Drops every result push, as a network blip during a reconnection would."""

        def _push(self, route, record):
            return False

    coordinator = LosingCoordinator(SqliteQueue(tmp_path / "q.sqlite"),
                                    status_dir=tmp_path / "status").start()
    try:
        with shoal.Executor(str(tmp_path / "status"), workers=1) as ex:
            future = ex.submit(pow, 2, 10)
            assert future.result(timeout=PUSH_SWEEP_S + 5) == 1024
    finally:
        coordinator.stop()
