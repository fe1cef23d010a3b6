"""Fuzzed network messages: every decoder of net/wire.py returns a value or raises
`wire.MalformedMessage`, whatever bytes or records arrive, and what the encoders write
decodes to what they were given.

Long mode (1500 examples per property, see tests/fuzzing.py):
`SHOAL_FUZZ_LONG=1 python -m pytest -q tests/test_fuzz_wire.py`.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import ShoalError
from shoal.job import Job, JobStatus, Kind, Lease, Result, State, WorkerInfo
from shoal.net import wire
from tests.fuzzing import FUZZ, TIMEOUT

pytestmark = TIMEOUT

text = st.text(max_size=20)
numbers = st.floats(allow_nan=False, allow_infinity=False)
# Anything msgpack can carry, as unpack gives it back (lists, str keys or int keys).
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | numbers | text
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(text | st.integers(-5, 5), inner, max_size=4),
    max_leaves=12)

jobs = st.builds(
    Job, id=text, name=text, kind=st.sampled_from(Kind),
    command=st.none() | text | st.lists(text, max_size=3).map(tuple),
    path=st.none() | text, cwd=st.none() | text,
    env=st.dictionaries(text, text, max_size=3), params=st.dictionaries(text, values, max_size=3),
    log=st.none() | text, timeout_s=st.none() | numbers, retries=st.integers(0, 9),
    max_attempts=st.integers(1, 9), payload=st.none() | st.binary(max_size=30),
    meta=st.dictionaries(text, values, max_size=3), priority=st.integers(-9, 9),
    after=st.lists(text, max_size=3).map(tuple),
    needs=st.dictionaries(text, numbers, max_size=3), labels=st.lists(text, max_size=3).map(tuple))
results = st.builds(
    Result, job_id=text, state=st.sampled_from(State), name=text,
    params=st.dictionaries(text, values, max_size=3), exit_code=st.none() | st.integers(-255, 255),
    reason=text, attempt=st.integers(0, 9), worker=text, host=text,
    started=st.none() | numbers, ended=st.none() | numbers, log=st.none() | text,
    value=values, payload=st.none() | st.binary(max_size=30))
workers = st.builds(
    WorkerInfo, id=text, host=text, pid=st.integers(0, 2**31), slots=st.integers(0, 64),
    state=text, running=st.lists(text, max_size=3).map(tuple), done=st.integers(0, 10**6),
    started=numbers, log=st.none() | text, age_s=st.none() | numbers, lost=st.booleans(),
    resources=st.dictionaries(text, numbers, max_size=3),
    labels=st.lists(text, max_size=3).map(tuple))
leases = st.builds(Lease, job=jobs, attempt=st.integers(0, 9), worker=text, token=text,
                   seq=st.integers(0, 10**9))
statuses = st.builds(JobStatus, job=jobs, state=st.sampled_from(State),
                     attempt=st.integers(0, 9), worker=st.none() | text,
                     result=st.none() | results, attempts=st.lists(results, max_size=2).map(tuple),
                     seq=st.integers(0, 10**9))

DECODERS = {"job": wire.job_in, "lease": wire.lease_in, "result": wire.result_in,
            "status": wire.status_in, "worker": wire.worker_in}
# Records with the decoders' own field names, holding anything: wrong types, missing keys.
FIELDS = sorted({"job", "state", "kind", "attempt", "worker", "token", "seq", "result",
                 "attempts", *Job.__dataclass_fields__, *Result.__dataclass_fields__,
                 *WorkerInfo.__dataclass_fields__})
records = st.dictionaries(st.sampled_from(FIELDS) | text, values, max_size=12)


def through_wire(record: Any) -> Any:
    return wire.unpack(wire.pack(record))


def decodes_or_refuses(decode: Any, data: Any) -> Any:
    """The property every decoder keeps: a value, or MalformedMessage (nothing else)."""
    try:
        return decode(data)
    except wire.MalformedMessage as exc:
        assert str(exc)
        return None


# -- round trips ---------------------------------------------------------------------------


@FUZZ
@given(values)
def test_any_message_round_trips(message: Any) -> None:
    assert wire.unpack(wire.pack(message)) == message


@FUZZ
@given(jobs)
def test_a_job_round_trips(job: Job) -> None:
    assert wire.job_in(through_wire(job.to_dict(binary=True))) == job


@FUZZ
@given(results)
def test_a_result_round_trips(result: Result) -> None:
    assert wire.result_in(through_wire(wire.result_out(result))) == result


@FUZZ
@given(leases)
def test_a_lease_round_trips(lease: Lease) -> None:
    assert wire.lease_in(through_wire(wire.lease_out(lease))) == lease


@FUZZ
@given(statuses)
def test_a_status_round_trips(status: JobStatus) -> None:
    assert wire.status_in(through_wire(wire.status_out(status))) == status


@FUZZ
@given(workers)
def test_a_worker_round_trips(info: WorkerInfo) -> None:
    assert wire.worker_in(through_wire(wire.worker_out(info))) == info


@FUZZ
@given(st.integers(0, 2**62), st.binary(min_size=1, max_size=16), text,
       st.dictionaries(text, values, max_size=3), st.booleans())
def test_a_request_round_trips(req_id: int, client: bytes, method: str,
                               args: dict[str, Any], repeat: bool) -> None:
    frame = wire.pack([req_id, client, method, args, *([True] if repeat else [])])
    assert wire.request_in(frame) == (req_id, client, method, args, repeat)


@FUZZ
@given(st.sampled_from([wire.OK, wire.ERR, wire.PUSH]), st.integers(0, 2**62), values, text)
def test_a_reply_round_trips(kind: str, req_id: int, value: Any, boot: str) -> None:
    assert wire.reply_in(wire.pack([kind, req_id, value, boot])) == (kind, req_id, value, boot)


# -- garbage ---------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200))
def test_garbage_bytes_are_refused_clearly(frame: bytes) -> None:
    for decode in (wire.unpack, wire.request_in, wire.reply_in):
        decodes_or_refuses(decode, frame)


@FUZZ
@given(values, st.data())
def test_a_truncated_frame_is_refused(message: Any, data: st.DataObject) -> None:
    frame = wire.pack([1, b"c", "ping", {"x": message}])
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(wire.MalformedMessage):
        wire.request_in(frame[:cut])


@FUZZ
@given(st.sampled_from([b"\xc6", b"\xdb", b"\xdd", b"\xdf", b"\xc9\x00"]),
       st.integers(2**20, 2**32 - 1), st.binary(max_size=16))
def test_a_huge_length_is_refused_at_once(header: bytes, length: int, tail: bytes) -> None:
    """bin32/str32/array32/map32/ext32 claiming up to 4 GiB in a short frame: refused,
    nothing of that size allocated or waited for."""
    frame = header[:1] + struct.pack(">I", length) + header[1:] + tail
    for decode in (wire.unpack, wire.request_in, wire.reply_in):
        with pytest.raises(wire.MalformedMessage):
            decode(frame)


@FUZZ
@given(values)
def test_a_well_formed_message_of_any_shape_is_a_request_or_refused(message: Any) -> None:
    frame = wire.pack(message)
    got = decodes_or_refuses(wire.request_in, frame)
    if got is not None:
        req_id, client, method, args, _ = got
        assert isinstance(req_id, int) and isinstance(client, bytes)
        assert isinstance(method, str) and all(isinstance(k, str) for k in args)
    decodes_or_refuses(wire.reply_in, frame)


@FUZZ
@given(st.sampled_from(sorted(DECODERS)), records | values)
def test_a_record_of_wrong_types_is_refused(what: str, record: Any) -> None:
    decoded = decodes_or_refuses(DECODERS[what], record)
    if decoded is not None and what == "job":  # what the coordinator stores: whole again
        assert wire.job_in(through_wire(decoded.to_dict(binary=True))) == decoded


@FUZZ
@given(st.sampled_from(sorted(DECODERS)), st.data())
def test_one_field_of_a_good_record_changed_is_decoded_or_refused(
        what: str, data: st.DataObject) -> None:
    good = {"job": jobs.map(lambda j: j.to_dict(binary=True)), "lease": leases.map(wire.lease_out),
            "result": results.map(wire.result_out), "status": statuses.map(wire.status_out),
            "worker": workers.map(wire.worker_out)}[what]
    record = dict(data.draw(good))
    key = data.draw(st.sampled_from(sorted(record)))
    record[key] = data.draw(values)
    decodes_or_refuses(DECODERS[what], through_wire(record))


ERROR_NAMES = ["ShoalError", "UsageError", "MalformedJob", "JobFailed", "NoSuchQueue",
               "AuthenticationFailed", "DependencyError", "MalformedMessage", "ValueError",
               "KeyboardInterrupt", "SystemExit", "__class__", "errors", "os_error_line"]


@FUZZ
@given(values | st.dictionaries(st.sampled_from(["type", "message"]),
                                values | text | st.sampled_from(ERROR_NAMES)))
def test_any_error_record_gives_a_shoal_error(record: Any) -> None:
    assert isinstance(wire.error_in(record), ShoalError)


def test_an_error_record_names_its_shoal_error() -> None:
    error = wire.error_in(wire.error_out(wire.MalformedMessage("bad frame")))
    assert type(error) is wire.MalformedMessage and str(error) == "bad frame"


def test_fixed_request_shapes_are_refused_with_the_reason() -> None:
    """Found by the fuzzer: a request whose method was a list stopped the coordinator
    (`method in MUTATING` raised TypeError outside its handler's try); args with
    non-string keys failed in the `**args` call and were logged as a bug."""
    for message in ([1, b"c", ["ping"], {}], [1, b"c", "ping", {1: 2}], [1, b"c", "ping"]):
        with pytest.raises(wire.MalformedMessage, match="request"):
            wire.request_in(wire.pack(message))
    with pytest.raises(wire.MalformedMessage, match="not a msgpack message"):
        wire.unpack(msgpack.packb([1, 2]) + b"\x00")  # extra data after the message
    with pytest.raises(wire.MalformedMessage, match="not a msgpack message"):
        wire.unpack(b"\x91" * 100_000)  # arrays nested past msgpack's stack limit
    with pytest.raises(wire.MalformedMessage, match="id is int"):
        wire.job_in({"id": 5, "name": "x", "kind": "command"})
    with pytest.raises(wire.MalformedMessage, match="needs holds a str"):  # claims compare them
        wire.job_in({"id": "a", "name": "x", "kind": "command", "needs": {"cpus": "x"}})
