"""A worker's heartbeat over TCP is one request (its answer carries the coordinator's
reaps); a finish brings the next lease."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.job import Job, Result, State, WorkerInfo
from shoal.net import wire
from shoal.net.channel import Channel
from shoal.queue import STOP
from shoal.queue.remote import CoordinatorQueue
from shoal.queue.sqlite import SqliteQueue
from shoal.serve.locate import serve
from shoal.serve.service import HANDLERS, Service
from shoal.worker import Slot, Worker
from tests.conftest import wait_for
from tests.test_net_retries import RawClient, job_record


@pytest.fixture
def running(tmp_path: Path):
    running = serve(SqliteQueue(tmp_path / "q.sqlite", lease_s=30), tmp_path / "status").start()
    yield running
    running.stop()


@pytest.fixture
def coordinator(running, tmp_path: Path):
    return tmp_path / "status"


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the requests every CoordinatorQueue sends from now on."""
    sent: list[str] = []
    call = Channel.call

    def counted(self, method, *args, **kwargs):
        sent.append(method)
        return call(self, method, *args, **kwargs)

    monkeypatch.setattr(Channel, "call", counted)
    return sent


def test_a_heartbeat_is_one_request_and_carries_progress(coordinator, running, requests):
    queue = CoordinatorQueue(str(coordinator))
    try:
        queue.submit([Job.command_job(["echo", "1"])])
        worker = Worker(queue, slots=1)
        (lease,) = queue.claim(worker.id, 1)
        queue.files.progress_file(lease).write_bytes(b"3 10")
        worker._running[lease.job_id] = Slot(lease)  # as if a slot ran it
        queue.send_control(worker.id, STOP)
        del requests[:]
        served = sum(running.requests.values())
        worker._heartbeat()
        assert requests == ["beat"]
        assert sum(running.requests.values()) == served + 1  # counted where it is served
        assert worker._stopping.is_set()  # the command came with the beat
        (seen,) = queue.workers()
        assert (seen.id, seen.state, seen.running) == (worker.id, "working", (lease.job_id,))
        assert queue.files.progress() == {lease.job_id: (3, 10)}
    finally:
        queue.close()


def test_a_finish_that_asks_for_the_next_job_is_one_request(coordinator, requests):
    queue = CoordinatorQueue(str(coordinator))
    try:
        queue.submit([Job.command_job(["echo", str(i)]) for i in range(2)])
        (first,) = queue.claim("w", 1)
        del requests[:]
        (next_lease,) = queue.finish(first, Result(first.job_id, State.DONE), then_claim=1)
        assert requests == ["finish"] and next_lease.worker == "w"
    finally:
        queue.close()


def test_a_repeated_beat_hands_its_commands_over_once(coordinator):
    queue = CoordinatorQueue(str(coordinator))
    raw = RawClient(coordinator)
    try:
        raw.send(1, "submit", {"jobs": [job_record(1)]})
        queue.send_control("w", STOP)
        info = wire.worker_out(WorkerInfo("w", "host-a", 1, 1))
        first = raw.send(2, "beat", {"info": info, "leases": []})
        again = raw.send(2, "beat", {"info": info, "leases": []}, repeat=True)
        assert first[0] == wire.OK
        assert first[2] == {"lost": [], "commands": [STOP], "reaped": []}  # what an old
        # client reads (lost, commands) is there as before
        assert again[:3] == first[:3]  # the cached answer: the command is not lost
        assert raw.send(3, "beat", {"info": info, "leases": []})[2]["commands"] == []
    finally:
        raw.close()
        queue.close()


def test_a_heartbeat_brings_the_reaps_of_a_dead_worker(tmp_path: Path, requests):
    """A worker that died with a lease: its reap reaches another worker's heartbeat in
    that one request, so the orphans on its host are killed."""
    running = serve(SqliteQueue(tmp_path / "q.sqlite", lease_s=1), tmp_path / "status").start()
    queue = CoordinatorQueue(str(tmp_path / "status"))
    try:
        queue.submit([Job.command_job(["echo", "1"])])
        (lease,) = queue.claim("dead-worker", 1)
        info = WorkerInfo("alive", "host-a", 1, 1)
        # the coordinator reaps nothing in its first lease, then takes the lease back
        beats = []
        wait_for(lambda: beats.append(queue.heartbeat(info, [])) or beats[-1].reaped,
                 timeout_s=30)
        (reaped,) = beats[-1].reaped
        assert (reaped.job_id, reaped.worker, reaped.attempt) == (lease.job_id,
                                                                  "dead-worker", 1)
        assert "reap" not in requests
        assert running.requests["reap"] == 0
    finally:
        queue.close()
        running.stop()


def test_a_new_client_asks_an_old_coordinator_to_reap(coordinator, running, requests,
                                                      monkeypatch: pytest.MonkeyPatch):
    """A coordinator of before issue 18 answers a beat without `reaped`: the client
    then reaps in a second request, as it did."""
    beat = Service.beat

    def old_beat(self, *args, **kwargs):
        answer = beat(self, *args, **kwargs)
        del answer["reaped"]
        return answer

    monkeypatch.setattr(Service, "beat", old_beat)
    monkeypatch.setitem(HANDLERS, "beat", old_beat)
    queue = CoordinatorQueue(str(coordinator))
    try:
        del requests[:]
        assert queue.heartbeat(WorkerInfo("w", "host-a", 1, 1), []).reaped == ()
        assert requests == ["beat", "reap"]
        assert (running.requests["beat"], running.requests["reap"]) == (1, 1)
    finally:
        queue.close()
