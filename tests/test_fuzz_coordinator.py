"""Fuzzed requests to a real coordinator over a real CurveZMQ socket, from a client that
holds the keys (the only one whose bytes get past the handshake): garbage frames,
requests of any shape, and well-shaped requests to every handler with arguments of any
type. Every well-shaped request gets an answer (a value or an error), the others are
dropped, and an ordinary client is served all along.

Long mode (see tests/fuzzing.py): `SHOAL_FUZZ_LONG=1 python -m pytest -q
tests/test_fuzz_coordinator.py`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.job import Job
from shoal.net import wire
from shoal.queue.remote import CoordinatorQueue
from shoal.queue.sqlite import SqliteQueue
from shoal.serve.coordinator import Coordinator
from shoal.serve.service import HANDLERS, SCHEMAS
from tests.fuzzing import TIMEOUT, scaled
from tests.test_fuzz_wire import records, values
from tests.test_net_retries import RawClient

pytestmark = TIMEOUT

ANSWER_S = 30.0  # a loaded machine: generous; a well-shaped request is always answered
# A claim with wait_s parks until a job comes: not a request that must answer at once.
METHODS = sorted(set(HANDLERS) - {"claim"})
ARG_NAMES = ["jobs", "watch", "blobs", "digest", "digests", "ids", "worker", "n", "wait_s",
             "fit", "info", "leases", "progress", "logs", "lease", "result", "log",
             "then_claim", "job_id", "id", "ids", "state", "attempt", "reason", "offset",
             "limit", "command", "config", "text", "x"]
args = st.dictionaries(st.sampled_from(ARG_NAMES),
                       values | records | st.lists(records, max_size=2), max_size=4)


class Intruder(RawClient):
    """A DEALER socket with the clients' keys: what a buggy or hostile client can send."""

    def __init__(self, status_dir: Path) -> None:
        super().__init__(status_dir)
        self.ids = itertools.count(1)

    def answer(self, req_id: int) -> tuple[str, int, Any, str]:
        """The reply to request `req_id` (skipping pushes and late replies)."""
        while self.socket.poll(int(ANSWER_S * 1000)):
            kind, got, value, boot = wire.reply_in(self.socket.recv())
            if kind != wire.PUSH and got == req_id:
                return kind, got, value, boot
        raise AssertionError(f"no answer to request {req_id} in {ANSWER_S} s")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Intruder,
                                                                        CoordinatorQueue]]:
    folder = tmp_path_factory.mktemp("coordinator")
    coordinator = Coordinator(SqliteQueue(folder / "q.db"), status_dir=folder / "status").start()
    intruder = Intruder(folder / "status")
    client = CoordinatorQueue(str(folder / "status"))
    yield intruder, client
    client.close()
    intruder.close()
    coordinator.stop()
    coordinator.queue.close()


class Tracebacks(logging.Handler):
    """Collects what shoal logs at ERROR: a request's failure logged with its traceback
    is a bug (a bad request gets a one-line error back, and nothing in the log)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def tracebacks() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    logging.getLogger("shoal").addHandler(handler)
    yield handler
    logging.getLogger("shoal").removeHandler(handler)


def still_serves(client: CoordinatorQueue, tag: str) -> None:
    job = Job.command_job(f"echo {tag}")
    client.submit([job])
    assert client.get(job.id) is not None


@scaled(0.3)
@given(st.binary(max_size=100) | values.map(wire.pack)
       | st.lists(values, min_size=3, max_size=6).map(wire.pack))
def test_frames_that_are_no_request_are_dropped(served: tuple[Intruder, CoordinatorQueue],
                                                frame: bytes) -> None:
    intruder, client = served
    intruder.socket.send(frame)
    still_serves(client, "after-garbage")


@scaled(0.3)
@given(st.sampled_from(METHODS) | st.text(max_size=8), args, st.booleans())
def test_every_well_shaped_request_is_answered(served: tuple[Intruder, CoordinatorQueue],
                                               tracebacks: Tracebacks, method: str,
                                               arguments: dict, repeat: bool) -> None:
    intruder, client = served
    req_id = next(intruder.ids)
    intruder.socket.send(wire.pack([req_id, b"intruder", method, arguments,
                                    *([True] if repeat else [])]))
    kind, _, value, _ = intruder.answer(req_id)
    if kind == wire.ERR:
        assert wire.error_in(value)
    logged, tracebacks.records = tracebacks.records, []
    assert not logged, logged[-1].getMessage()
    still_serves(client, "after-request")


def test_a_request_whose_method_is_not_text_does_not_stop_the_coordinator(
        served: tuple[Intruder, CoordinatorQueue]) -> None:
    """Found by the fuzzer: `[1, client, ["ping"], {}]` stopped the coordinator (a
    TypeError from `method in MUTATING`, outside the handler's try)."""
    intruder, client = served
    intruder.socket.send(wire.pack([next(intruder.ids), b"intruder", ["ping"], {}]))
    req_id = next(intruder.ids)
    intruder.socket.send(wire.pack([req_id, b"intruder", "ping", {}]))
    assert intruder.answer(req_id)[0] == wire.OK
    still_serves(client, "after-a-list-method")


# One value of each type a request may carry, for arguments of the wrong type.
SAMPLES: list[Any] = ["x", 5, 1.5, True, b"b", ["x"], {"x": 1}, None]


def _wrong_for(kinds: frozenset[type]) -> Any:
    return next(v for v in SAMPLES if type(v) not in kinds)


def _right_for(kinds: frozenset[type] | None) -> Any:
    return next(v for v in ["x", 5, True, b"b", [], {}, None]
                if kinds is None or type(v) in kinds)


def _wrong_typed_requests() -> Iterator[tuple[str, dict[str, Any]]]:
    """Each argument of each request, of a type it does not take (the others as taken),
    then a few that a type alone does not tell."""
    for method, schema in sorted(SCHEMAS.items()):
        for name, kinds in sorted(schema.kinds.items()):
            rest = {other: _right_for(schema.kinds.get(other)) for other in schema.required
                    if other != name}
            yield method, {**rest, name: _wrong_for(kinds)}
    yield from [
        ("claim", {"worker": "w", "n": 1, "wait_s": float("nan")}),
        ("claim", {"worker": "w", "n": 2**64 - 1, "wait_s": 1.0}),
        ("claim", {"worker": "w", "n": 1, "fit": {"free": "x"}}),
        ("watch", {"ids": [["a"]]}),
        ("cancel", {"ids": {"a": "b"}}),
        ("beat", {"info": {}, "leases": [5]}),
        ("finish", {"lease": {"id": 5}, "result": {}}),
        ("release", {"lease": {"attempt": 1}}),
        ("listing", {"states": ["nope"]}),
        ("put_blobs", {"blobs": {"d": "text, not bytes"}}),
        ("get", {}),
        ("get", {"id": "x", "extra": 1}),
    ]


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[tuple[Intruder, CoordinatorQueue]]:
    """A coordinator of an empty queue (a claim parks), its intruder and a client."""
    coordinator = Coordinator(SqliteQueue(tmp_path / "q.db"), status_dir=tmp_path / "s").start()
    intruder, client = Intruder(tmp_path / "s"), CoordinatorQueue(str(tmp_path / "s"))
    yield intruder, client
    client.close()
    intruder.close()
    coordinator.stop()
    coordinator.queue.close()


def test_arguments_of_the_wrong_type_get_a_one_line_error_and_no_traceback(
        idle: tuple[Intruder, CoordinatorQueue], caplog: pytest.LogCaptureFixture) -> None:
    """Wrong types reached the handlers: each failed with a traceback in the log, and a
    claim that parked with `n="x"` (or a NaN `wait_s`) failed later in the coordinator's
    own loop, which stopped serving everybody."""
    intruder, client = idle
    caplog.set_level(logging.WARNING, logger="shoal")
    for method, arguments in _wrong_typed_requests():
        req_id = next(intruder.ids)
        intruder.socket.send(wire.pack([req_id, b"intruder", method, arguments]))
        kind, _, value, _ = intruder.answer(req_id)
        assert kind == wire.ERR, (method, arguments, value)
        assert value["type"] == "MalformedMessage", (method, arguments, value)
        assert value["message"] and "\n" not in value["message"], value
    still_serves(client, "after-wrong-types")  # wakes any parked claim
    assert client.claim("w", 1) != []  # the coordinator's loop lives on
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
