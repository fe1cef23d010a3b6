"""Fuzzed settings and addresses a user types: a folder queue's queue.toml (and its
`log_name`), queue URLs (`open_queue`, `redis_url.parse_url`) and `--mem`/needs values.
Each gives a value of the right type or a `UsageError` (one line, naming where); what a
writer makes (`RedisAddress.safe_url`, `needs.size_text`) reads back as the same.

Long mode (1500 examples per property, see tests/fuzzing.py):
`SHOAL_FUZZ_LONG=1 python -m pytest -q tests/test_fuzz_settings.py`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils import z85

from shoal import needs
from shoal.errors import UsageError
from shoal.queue import open_queue
from shoal.queue.files import check_log_name, log_names
from shoal.queue.folder import FolderQueue
from shoal.queue.redis_url import parse_url
from tests.fuzzing import FUZZ, TIMEOUT, scaled
from tests.test_cli import shoal

pytestmark = TIMEOUT

line_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
                    max_size=20)
SETTING_KEYS = ["lease_s", "seed", "interpreters", "log_cap_bytes", "log_name", "fsync", "x"]
toml_scalars = st.sampled_from(
    ["1", "0", "-1", "2.5", "inf", "nan", "true", "false", '"x"', '"{stem}.log"',
     '"{name}.log"', '"{stem[2]}.log"', '"{name!r}.log"', '"{0}.log"', '"{stem"', "[]",
     '["python3"]', "[1, 2]", '{".py" = ["python3"]}', '{".py" = "python3"}',
     '{".py" = [1]}', "1979-05-27", "99999999999999999999", "[" * 5000]) \
    | line_text.map(json.dumps)


def one_line_usage_error(exc: UsageError, where: str) -> None:
    message = str(exc)
    assert where in message and "\n" not in message, message


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("settings")


# -- queue.toml ----------------------------------------------------------------------------


@scaled(0.5)
@given(st.lists(st.tuples(st.sampled_from(SETTING_KEYS), toml_scalars), max_size=5)
       | st.binary(max_size=100))
def test_a_queue_toml_of_anything_opens_or_is_refused(place: Path, content: Any) -> None:
    root = Path(tempfile.mkdtemp(dir=place))
    FolderQueue(root).close()
    config = root / ".shoal" / "queue.toml"
    if isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text("\n".join(f"{key} = {value}" for key, value in dict(content).items()))
    try:
        queue = FolderQueue(root, create=False)
    except UsageError as exc:
        one_line_usage_error(exc, str(config))
        return
    try:
        settings = queue.settings
        assert isinstance(settings.lease_s, float) and 0 < settings.lease_s < math.inf
        assert isinstance(settings.seed, (int, str))
        assert all(isinstance(word, str) for argv in settings.interpreters.values()
                   for word in argv)
        assert settings.log_cap_bytes is None or settings.log_cap_bytes >= 1
        assert isinstance(queue.fsync, bool)
        log_names(settings.log_name, "a.py")
    finally:
        queue.close()


@FUZZ
@given(line_text | st.sampled_from(["{stem}.log", "{name}.log", "{stem[2]}.log", "{name[0]}.log",
                                    "{stem.real}.log", "{name:>3}.log", "{name!s}.log",
                                    "{{name}}.log", "{}.log", "{0}.log"]),
       st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"),
               min_size=1, max_size=12))
def test_a_log_name_that_is_accepted_works_for_every_file(pattern: str, file_name: str) -> None:
    try:
        check_log_name(pattern, "queue.toml")
    except UsageError as exc:
        one_line_usage_error(exc, "queue.toml")
        return
    names = log_names(pattern, file_name)
    assert names and all("/" not in name and name.endswith(".log") for name in names)


def test_a_log_name_that_indexes_a_name_is_refused() -> None:
    """Found by the fuzzer: `{stem[2]}.log` passed the check (job.py has a third letter)
    and then failed every scan of a folder holding a.py, with an IndexError."""
    with pytest.raises(UsageError, match=r"queue.toml: log_name '\{stem\[2\]\}.log'"):
        check_log_name("{stem[2]}.log", "queue.toml")


def test_a_queue_toml_of_wrong_types_is_one_clear_line(tmp_path: Path) -> None:
    """Found by the fuzzer: lease_s = "x" was a ValueError, interpreters = 5 a TypeError,
    a value nested 5000 deep a RecursionError, from every command that opened the queue."""
    FolderQueue(tmp_path).close()
    config = tmp_path / ".shoal" / "queue.toml"
    for line, problem in (('lease_s = "x"', "lease_s = 'x': give a number of seconds"),
                          ("interpreters = 5", "interpreters = 5: give a table"),
                          ("log_cap_bytes = 0.5", "log_cap_bytes = 0.5: give a whole number"),
                          ('fsync = "no"', "fsync = 'no': give true or false"),
                          ("seed = " + "[" * 5000, "arrays or tables nested too deeply")):
        config.write_text(line + "\n")
        with pytest.raises(UsageError, match=f"^{config}: {problem}"):
            FolderQueue(tmp_path, create=False)


# -- queue URLs ------------------------------------------------------------------------------

# Schemes whose opening reaches no server: tcp:// finds no status file for its address
# (HOME is an empty folder here), redis:// URLs are parsed below instead.
LOCAL_SCHEMES = ["memory", "sqlite", "dir", "file", "", "ftp", "Memory", "tcp", "tcp+x", "s3"]


@scaled(0.5)
@given(st.sampled_from(LOCAL_SCHEMES),
       (line_text | st.lists(st.sampled_from(["~", "~0", "/", ".", "..", ".shoal", "status.json",
                                              "x.json", "a", ":", "127.0.0.1:1"]), max_size=4)
        .map("/".join)).filter(lambda t: "\x00" not in t))
def test_a_queue_url_opens_or_is_refused(place: Path, monkeypatch: pytest.MonkeyPatch,
                                         scheme: str, rest: str) -> None:
    """A read-only open (create=False) of any local URL: a queue, or UsageError."""
    url = f"{scheme}://{rest}" if scheme else rest
    here = Path(tempfile.mkdtemp(dir=place))
    (here / "x.json").write_text("{}")
    monkeypatch.setenv("HOME", str(here))
    monkeypatch.delenv("SHOAL_STATUS", raising=False)
    before = os.getcwd()
    os.chdir(here)  # relative paths land in a folder of their own
    try:
        open_queue(url, create=False).close()
    except UsageError as exc:  # naming the URL, or the file it led to (made absolute)
        one_line_usage_error(exc, "")
    finally:
        os.chdir(before)


def test_odd_paths_in_urls_are_one_clear_line(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the fuzzer: a path of an unknown user (`~0`) was a RuntimeError from any
    command given it as a queue; a password_file with a NUL (%00) in its name, or one that
    is not text, was a ValueError."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="~0"):
        open_queue("~0", create=False)
    for option, problem in (("password_file=a%00b", "embedded null byte"),
                            ("password_file=/bin/true", "can be read by others")):
        with pytest.raises(UsageError, match=problem):
            parse_url(f"redis://h:1/0?{option}")
    binary = tmp_path / "secret"
    binary.write_bytes(b"\xff\xfe")
    binary.chmod(0o600)
    with pytest.raises(UsageError, match=r"password_file=.*can.t decode"):
        parse_url(f"redis://h:1/0?password_file={binary}")


hosts = st.sampled_from(["localhost", "127.0.0.1", "::1", "redis.example", "h-1"])
queue_names = st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)


URL_PIECES = ["h", ":6379", ":0", ":99999", ":x", ",", "[::1]", "@", "u:p@", "/", "/0", "/x",
              "/m/2", "?", "&", "#", "queue=", "cluster=1", "cluster=0", "durable=strict",
              "ca=", "password_file=", "%00", "%ff", "~0", "/bin/true", "/etc", "x=1", "="]


@FUZZ
@given(st.sampled_from(["redis", "rediss", "redis+sentinel", "rediss+sentinel", "REDIS", "x"]),
       line_text | st.lists(st.sampled_from(URL_PIECES) | line_text, max_size=8).map("".join))
def test_a_redis_url_parses_or_is_refused(scheme: str, rest: str) -> None:
    url = f"{scheme}://{rest}"
    try:
        address = parse_url(url)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert address.hosts and all(0 < port < 65536 for _, port in address.hosts)
    assert parse_url(address.safe_url).safe_url == address.safe_url


@FUZZ
@given(st.sampled_from(["redis", "rediss", "redis+sentinel"]),
       st.lists(st.tuples(hosts, st.integers(1, 65535)), min_size=1, max_size=3),
       st.integers(0, 15), queue_names, st.sampled_from([None, True, False]),
       st.sampled_from(["normal", "strict"]), st.from_regex(r"[a-z]{1,8}", fullmatch=True))
def test_a_redis_address_round_trips(scheme: str, where: list, db: int, queue: str,
                                     cluster: bool | None, durable: str, master: str) -> None:
    sentinel = "sentinel" in scheme
    if sentinel or len(where) > 1:
        cluster = None if sentinel else cluster or None
    if cluster:
        db = 0
    host_text = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in where)
    path = f"/{master}/{db}" if sentinel else f"/{db}"
    query = f"?queue={queue}&durable={durable}"
    if cluster is not None:
        query += f"&cluster={int(cluster)}"
    address = parse_url(f"{scheme}://{host_text}{path}{query}")
    assert (address.hosts, address.db, address.queue, address.durable, address.cluster) == \
        (tuple(where), db, queue, durable, cluster)
    assert address.service == (master if sentinel else None)
    again = parse_url(address.safe_url)
    assert (again.hosts, again.db, again.queue, again.service, again.cluster, again.tls) == \
        (address.hosts, address.db, address.queue, address.service, address.cluster, address.tls)


# -- --mem and needs -------------------------------------------------------------------------

amounts = (line_text | st.sampled_from(["16G", "512m", "1.5T", "2048", "0", "-1G", "1e9", "inf",
                                        " 3 ", ".5K", "5.", "1GB", "1GiB", "nan", "", "G"])
           | st.integers(-10, 10**15) | st.floats() | st.booleans() | st.none()
           | st.lists(st.integers(), max_size=2))


@FUZZ
@given(st.sampled_from(["cpus", "gpus", "mem", "license"]), amounts)
def test_a_needed_amount_parses_or_is_refused(name: str, value: Any) -> None:
    try:
        amount = needs.resource_amount("--" + name, name, value)
    except UsageError as exc:
        one_line_usage_error(exc, "--" + name)
        return
    assert isinstance(amount, float) and math.isfinite(amount) and amount >= 0


@FUZZ
@given(line_text | st.sampled_from(["license=1", "mem=16G", "x=", "=1", "a b=1", "gpus=1.5"]))
def test_a_resource_option_parses_or_is_refused(text: str) -> None:
    try:
        name, amount = needs.parse_resource("--resource", text)
    except UsageError as exc:
        one_line_usage_error(exc, "--resource")
        return
    assert name and math.isfinite(amount) and amount >= 0


@FUZZ
@given(amounts | st.integers())
def test_a_priority_parses_or_is_refused(value: Any) -> None:
    try:
        assert isinstance(needs.parse_priority("--priority", value), int)
    except UsageError as exc:
        one_line_usage_error(exc, "--priority")


@FUZZ
@given(st.integers(1, 2**50) | st.floats(999.4, 1000).map(lambda k: int(k * 1024)))
def test_a_memory_size_reads_back_within_its_shown_digits(size: int) -> None:
    """Found by the long run: 999.6K was shown as "1e+03K", which --mem refuses."""
    shown = needs.size_text(float(size))
    assert math.isclose(needs.parse_mem("--mem", shown), size, rel_tol=6e-3, abs_tol=1)
    assert needs.size_text(999.6 * 1024) == "1000K"


@FUZZ
@given(st.lists(line_text, max_size=4) | line_text)
def test_a_list_splits_into_words(value: Any) -> None:
    words = needs.split_list(value)
    assert all(word and word == word.strip() for word in words)


# -- as a user meets them ----------------------------------------------------------------------


def bad_inputs(folder: Path) -> None:
    """Files like those the fuzzers found to end in a traceback."""
    FolderQueue(folder / "q").close()
    (folder / "q" / ".shoal" / "queue.toml").write_text('lease_s = "x"\n')
    (folder / "status").mkdir()
    key = z85.encode(bytes(32)).decode()
    (folder / "status" / "status.json").write_text(json.dumps({
        "address": "nonsense", "server_public": key, "client_public": key, "client_secret": key,
        "host": "elsewhere", "pid": 1, "boot": "b", "started": 0.0, "queue": "q"}))
    (folder / "deep.json").write_text("[" * 100_000)
    (folder / "job.toml").write_text("[control]\nexecutable = " + "[" * 5000 + "\n")


@pytest.mark.parametrize("args, message", [
    (["status", "~0"], "~0: no such queue"),
    (["status", "q"], "queue.toml: lease_s = 'x'"),
    (["status", "status"], "status.json: not a shoal status file (address 'nonsense'"),
    (["run", "--table", "deep.json", "echo", "{a}"], "deep.json: malformed JSON"),
    (["submit", "q2", "job.toml"], "job.toml: TOML syntax error"),
])
def test_what_the_fuzzers_found_is_one_clear_line_and_exit_2(tmp_path: Path, args: list[str],
                                                             message: str) -> None:
    bad_inputs(tmp_path)
    done = shoal(*args, cwd=tmp_path, check=2)
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
