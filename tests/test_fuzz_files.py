"""Fuzzed files and names that shoal reads back: a coordinator's status file
(net/contact.py), its `serving.lock` (serve/locate.py), a session's directory
(sessions.py) and a folder queue's state file names (queue/folder/layout.py). Each
reader gives a value of the right type or its documented answer (UsageError, None,
"not stale"), never another exception; what a writer makes reads back the same.

Long mode (1500 examples per property, see tests/fuzzing.py):
`SHOAL_FUZZ_LONG=1 python -m pytest -q tests/test_fuzz_files.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import UsageError
from shoal.fsutil import HOST
from shoal.job import WorkerInfo, loads, loads_many
from shoal.net.contact import Contact, dead_here, load_keys, read_contact, write_contact
from shoal.queue.files import parse_progress
from shoal.queue.folder import FolderQueue
from shoal.queue.folder.layout import (
    Marker,
    is_lane,
    parse_marker,
    parse_pending,
    pending_name,
    spec_rank,
)
from shoal.queue.scheduling import FIRST
from shoal.serve import locate
from shoal.sessions import session_dir
from tests.fuzzing import FUZZ, TIMEOUT, scaled

z85 = zmq.utils.z85

pytestmark = TIMEOUT

text = st.text(max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8)
keys = st.binary(min_size=32, max_size=32).map(lambda raw: z85.encode(raw).decode())
endpoints = st.builds("tcp://{}:{}".format,
                      st.sampled_from(["127.0.0.1", "[::1]", "node-1.example", "0.0.0.0", "h_2"]),
                      st.integers(1, 65535))
contacts = st.builds(
    Contact, address=endpoints, server_public=keys, client_public=keys, client_secret=keys,
    host=text, pid=st.integers(1, 2**22), boot=text,
    started=st.floats(allow_nan=False, allow_infinity=False), queue=text,
    bound=st.just("") | endpoints)
FIELDS = [f.name for f in dataclasses.fields(Contact)]


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("files")


def fresh(place: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=place))


# -- status.json ---------------------------------------------------------------------------


@scaled(0.5)
@given(contacts, text)
def test_a_status_file_round_trips(place: Path, contact: Contact, secret: str) -> None:
    folder = fresh(place) / "status"
    write_contact(folder, contact, secret)
    assert read_contact(folder) == contact
    assert read_contact(folder / "status.json") == contact


def reads_or_refuses(path: Path) -> Contact | None:
    try:
        contact = read_contact(path)
    except UsageError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return None
    assert all(isinstance(getattr(contact, name), str) for name in FIELDS
               if name not in ("pid", "started"))
    assert isinstance(contact.pid, int) and contact.pid > 0
    dead_here(contact)  # what every reader of a contact asks first
    return contact


deep = st.integers(1, 20_000).map(lambda depth: "[" * depth)  # nested past any stack


@scaled(0.5)
@given(st.dictionaries(st.sampled_from(FIELDS) | text, json_values, max_size=12)
       | json_values | deep)
def test_a_status_file_of_any_json_is_read_or_refused(place: Path, data: Any) -> None:
    path = fresh(place) / "status.json"
    path.write_text(data if isinstance(data, str) and data.startswith("[") else json.dumps(data))
    reads_or_refuses(path)


@scaled(0.5)
@given(contacts, st.sampled_from(FIELDS), json_values | keys.map(lambda key: key[:-1] + "#"))
def test_a_status_file_with_one_field_changed_is_read_or_refused(
        place: Path, contact: Contact, key: str, value: Any) -> None:
    path = fresh(place) / "status.json"
    path.write_text(json.dumps({**dataclasses.asdict(contact), key: value}))
    reads_or_refuses(path)


@scaled(0.5)
@given(st.binary(max_size=200))
def test_a_status_file_of_any_bytes_is_read_or_refused(place: Path, blob: bytes) -> None:
    path = fresh(place) / "status.json"
    path.write_bytes(blob)
    reads_or_refuses(path)


def test_a_status_file_that_is_not_text_or_has_a_bad_pid_is_refused(tmp_path: Path) -> None:
    """Found by the fuzzer: a status file that is not UTF-8 was a UnicodeDecodeError,
    `"pid": "12"` was read, then broke the liveness check (os.kill) of every client, keys
    or an address ZeroMQ refuses were its ZMQError out of every client, and a field named
    with a newline made the message two lines."""
    path = tmp_path / "status.json"
    path.write_bytes(b"\xff{}")
    with pytest.raises(UsageError, match="not a shoal status file"):
        read_contact(path)
    good = dataclasses.asdict(Contact("tcp://h:1", "k", "k", "k", HOST, 1, "b", 0.0, "q"))
    key = z85.encode(bytes(32)).decode()
    good = {**good, "server_public": key, "client_public": key, "client_secret": key}
    for pid in ("12", -1, 0, 2**80, 1.5, True):
        path.write_text(json.dumps({**good, "pid": pid}))
        with pytest.raises(UsageError, match="pid"):
            read_contact(path)
    path.write_text("[" * 100_000)  # json recursed past the stack: a RecursionError
    with pytest.raises(UsageError, match="not a shoal status file"):
        read_contact(path)
    path.write_text(json.dumps({**good, "client_secret": "#" * 40}))  # ZeroMQ's EINVAL later
    with pytest.raises(UsageError, match="client_secret is not a CurveZMQ key"):
        read_contact(path)
    for address in ("nonsense", "tcp://h", "tcp://a b:1"):  # ZeroMQ's EINVAL later
        path.write_text(json.dumps({**good, "address": address}))
        with pytest.raises(UsageError, match=r"address .* is not tcp://HOST:PORT"):
            read_contact(path)
    path.write_text(json.dumps({**good, "\n": 1}))  # the message stays on one line
    with pytest.raises(UsageError, match=r"^[^\n]*unknown field '\\n'\)$"):
        read_contact(path)


@scaled(0.3)
@given(contacts, st.binary(max_size=60) | keys.map(str.encode))
def test_a_server_secret_of_anything_gives_keys_or_new_ones(place: Path, contact: Contact,
                                                           secret: bytes) -> None:
    """A restart reads the secret it left; garbage there means new keys, not a crash."""
    folder = fresh(place)
    write_contact(folder, contact, "x")
    (folder / "server.secret").write_bytes(secret)
    found = load_keys(folder)
    assert found is None or found.server_secret == secret.decode()


@FUZZ
@given(st.binary(max_size=80) | deep.map(str.encode)
       | st.dictionaries(text, json_values, max_size=3).map(lambda d: json.dumps(d).encode()))
def test_a_record_on_disk_is_an_object_or_refused(blob: bytes) -> None:
    """What folder and SQLite queues decode their job and result records with."""
    with contextlib.suppress(ValueError):  # its documented refusal: a corrupt record
        assert isinstance(loads(blob), dict)
    assert len(loads_many([blob, b"{}"])) == 2


def test_a_record_nested_too_deeply_is_refused() -> None:
    """Found by the fuzzer: json recursed past the stack (RecursionError, not ValueError)."""
    with pytest.raises(ValueError, match="nested too deeply"):
        loads(b"[" * 100_000)
    assert loads_many([b"[" * 100_000, b"{}"]) == [None, {}]


# -- serving.lock ------------------------------------------------------------------------------


@scaled(0.5)
@given(st.binary(max_size=60) | st.tuples(st.sampled_from([HOST, "elsewhere", ""]),
                                          st.integers(-(2**70), 2**70) | text)
       .map(lambda hp: f"{hp[0]} {hp[1]}\n".encode()))
def test_a_lock_file_of_anything_is_stale_or_not(place: Path, blob: bytes) -> None:
    """What `take_lead` asks of a lock it found; garbage (a half-written lock too) is not
    stale: its writer may still be writing it, and a lock left that way is reported by
    take_lead after its wait, naming the file."""
    lock = fresh(place) / locate.LOCK_FILE
    lock.write_bytes(blob)
    assert isinstance(locate._stale_lock(lock), bool)


def test_a_lock_file_of_a_bad_pid_is_not_stale(tmp_path: Path) -> None:
    """Found by the fuzzer: `HOST abc` was a ValueError and `HOST 2**70` an OverflowError
    out of take_lead; `HOST -1` asked os.kill about every process."""
    lock = tmp_path / locate.LOCK_FILE
    for pid in ("abc", str(2**70), "-1", "0"):
        lock.write_text(f"{HOST} {pid}\n")
        assert locate._stale_lock(lock) is False


@FUZZ
@given(text, st.none() | text)
def test_a_session_directory_is_a_path(name: str, where: str | None) -> None:
    if "\x00" in name or (where and "\x00" in where):
        return
    assert session_dir(name, where).is_absolute()


# -- folder queue state names ---------------------------------------------------------------

job_ids = st.text(st.characters(blacklist_characters="./\x00", blacklist_categories=["Cs"]),
                  min_size=1, max_size=20)


@FUZZ
@given(job_ids, st.integers(0, 10**6), st.integers(-(FIRST - 1), 10**12 - 1))
def test_a_pending_name_round_trips(job_id: str, attempt: int, rank: int) -> None:
    name = pending_name(job_id, attempt, rank)
    assert parse_pending(name) == Marker(job_id, attempt, rank)
    assert parse_pending(f"pdefault/{name}") == Marker(job_id, attempt, rank)


@FUZZ
@given(st.text(max_size=40) | st.lists(st.sampled_from(["-", "1", "٣", "²", ".", "/", "a", "0"]),
                                        max_size=12).map("".join))
def test_any_name_in_pending_is_a_marker_or_none(name: str) -> None:
    marker = parse_pending(name)
    assert marker is None or (isinstance(marker.attempt, int) and isinstance(marker.rank, int))
    assert isinstance(is_lane(name), bool)
    for kind in ("claimed", "committing"):  # a stray name there is None, never a crash
        parsed = parse_marker(kind, name)
        assert parsed is None or [type(part) for part in parsed] == [str, int, str]


@FUZZ
@given(st.binary(max_size=40) | st.tuples(st.floats(), st.none() | st.floats())
       .map(lambda pair: f"{pair[0]} {'' if pair[1] is None else pair[1]}\n".encode()))
def test_a_progress_file_is_a_finite_report_or_none(blob: bytes) -> None:
    """What a job wrote with shoal.progress(), read back; anything else is no report.
    Found by the fuzzer: "nan" and "inf" were reports (status showed them)."""
    report = parse_progress(blob)
    if report is not None:
        done, total = report
        assert math.isfinite(done) and (total is None or math.isfinite(total))
    assert parse_progress(b"nan") is None and parse_progress(b"1 inf") is None
    assert parse_progress(b"1.5 3\n") == (1.5, 3.0)


WORKER_FIELDS = ["id", "host", "pid", "slots", "state", "running", "done", "started", "labels"]


@scaled(0.3)
@given(st.binary(max_size=80) | st.dictionaries(st.sampled_from(WORKER_FIELDS) | text,
                                                json_values, max_size=9)
       .map(lambda d: json.dumps(d).encode()))
def test_a_worker_record_of_anything_leaves_the_others_listed(place: Path,
                                                              blob: bytes) -> None:
    """workers/WORKER.json on a shared folder is written by other hosts' workers."""
    queue = FolderQueue(fresh(place))
    try:
        queue.beat(WorkerInfo("good", HOST, 1, 1), [])
        (queue.dirs["workers"] / "other.json").write_bytes(blob)
        assert "good" in [info.id for info in queue.workers()]
    finally:
        queue.close()


def test_a_worker_record_missing_a_field_is_left_out(tmp_path: Path) -> None:
    """Found by the fuzzer: `{"id": "x"}` in workers/ was a TypeError out of `status`."""
    queue = FolderQueue(tmp_path)
    try:
        (queue.dirs["workers"] / "x.json").write_text('{"id": "x"}')
        assert queue.workers() == []
    finally:
        queue.close()


def test_a_pending_name_of_other_digits_is_not_a_marker() -> None:
    """Found by the fuzzer: `x.²` passed str.isdigit and failed int() with a ValueError,
    so a stray file of that name in pending/ broke every claim."""
    assert parse_pending("x.²") is None
    assert parse_pending("²1.x.1") is None
    assert parse_pending("000000000001.x.²") is None


@FUZZ
@given(st.dictionaries(st.sampled_from(["seq", "first", "id"]), json_values, max_size=3))
def test_a_spec_rank_is_a_number(spec: dict) -> None:
    """Found by the fuzzer: a spec whose seq was a list or text (a corrupt jobs/ID.json)
    was a TypeError or ValueError out of listings and claims; it ranks as one without."""
    assert isinstance(spec_rank(spec), int)
