"""Fuzzed `shoal run` words (parallel_args.py) and the inputs they read (templates.py):
options and their values, command templates with replacement strings, `:::`/`::::`
sources, `-a` files, standard input and `--table` files (CSV, JSON) of any content.
Parsing and expanding give command lines or one UsageError line, never another error.

Long mode (1500 examples per property, see tests/fuzzing.py):
`SHOAL_FUZZ_LONG=1 python -m pytest -q tests/test_fuzz_run_words.py`.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal import joblog
from shoal.errors import UsageError
from shoal.job import Job, Result, State
from shoal.parallel_args import parse_run_words
from shoal.templates import expand_command_line, expand_table
from tests.fuzzing import TIMEOUT, scaled

pytestmark = TIMEOUT

OPTIONS = ["-j", "--jobs", "-k", "--tag", "--tagstring", "--dry-run", "--halt", "--joblog",
           "--resume", "--resume-failed", "--retries", "--timeout", "--colsep", "-C", "-N", "-n",
           "--link", "-q", "-0", "-a", "--slots", "--table", "--max-attempts", "--fresh",
           "--priority", "--serve", "--sshlogin", "-X", "--plus", "-kq", "-j2", "--jobs=3",
           "--halt=now,fail=1", "-N2", "--colsep=,", "--bogus", "-"]
VALUES = ["0", "1", "2", "-1", "+1", "50%", "x", "", "1e9", "inf", "now,fail=1",
          "soon,success=50%", "never", ",", "[", "(", "\\t", "{}", "{1}", "{#}", "{%}", "1s",
          "2m", "1h", "99999999999999999999"]
TEMPLATES = ["echo", "{}", "{1}", "{2}", "{-1}", "{0}", "{.}", "{/}", "{//}", "{/.}", "{#}",
             "{%}", "{1.}", "{2/}", "{=}", "{ }", "{", "}", "{{}}", "{99999999999}", "'{}'",
             "a|b", "$X", "{name}", "{col}"]
SOURCES = [":::", ":::+", "::::", "::::+"]
INPUT_NAMES = ["in.txt", "empty.txt", "table.csv", "table.json", "missing.txt", "sub"]
line_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
                    max_size=12)
words = st.lists(st.sampled_from(OPTIONS + VALUES + TEMPLATES + SOURCES + INPUT_NAMES)
                 | line_text, max_size=10)


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("run")


def inputs_folder(place: Path, content: bytes, table: bytes) -> Path:
    """A folder with the input files the words may name, holding the drawn bytes."""
    folder = Path(tempfile.mkdtemp(dir=place))
    (folder / "in.txt").write_bytes(content)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "table.csv").write_bytes(table)
    (folder / "table.json").write_bytes(table)
    (folder / "sub").mkdir()
    return folder


def one_line(exc: UsageError, typed: Sequence[str] = ()) -> None:
    """One line, but for newlines in what the user typed that it quotes as typed."""
    message = str(exc)
    for word in sorted(typed, key=len, reverse=True):
        message = message.replace(word, "")
    assert str(exc) and "\n" not in message.strip(), str(exc)


@scaled(1.0)
@given(words, st.binary(max_size=60), st.binary(max_size=80), line_text)
def test_run_words_parse_and_expand_or_are_refused(
        place: Path, monkeypatch: pytest.MonkeyPatch, typed: list[str], content: bytes,
        table: bytes, stdin: str) -> None:
    folder = inputs_folder(place, content, table)
    monkeypatch.chdir(folder)  # relative input names are found here
    try:
        args = parse_run_words(typed)
        lines = args.expand(stdin=io.StringIO(stdin), base_dir=folder)
    except UsageError as exc:
        one_line(exc, typed)
        return
    for line in lines or ():
        assert isinstance(line.command, str) and line.seq >= 1


@scaled(1.0)
@given(st.lists(st.sampled_from(TEMPLATES) | line_text, min_size=1, max_size=4),
       st.lists(st.lists(line_text, min_size=1, max_size=3), min_size=1, max_size=3))
def test_a_template_expands_or_is_refused(template: list[str],
                                          sources: list[list[str]]) -> None:
    typed = list(template)
    for source in sources:
        typed += [":::", *source]
    try:
        lines = expand_command_line(typed)
    except UsageError as exc:
        one_line(exc, typed)
        return
    assert [line.seq for line in lines] == list(range(1, len(lines) + 1))


@scaled(1.0)
@given(st.sampled_from(["t.csv", "t.json", "t.tsv", "t"]),
       st.binary(max_size=120) | st.sampled_from([
           b"a,b\n1,2\n", b'[{"a": 1}, {"a": [1]}]', b'{"a": 1}', b"[]", b"a\n", b"a,a\n1,2\n",
           b'[{"after": "2", "priority": "x"}]', b"after,mem\n1-9,1G\n", b"\xff\xfe",
           b"priority\n99999999999999999999999\n", b'[{"cpus": 1e400}]', b"[" * 100_000]),
       st.lists(st.sampled_from(TEMPLATES) | line_text, min_size=1, max_size=3))
def test_a_table_of_anything_expands_or_is_refused(place: Path, name: str, table: bytes,
                                                   template: list[str]) -> None:
    path = Path(tempfile.mkdtemp(dir=place)) / name
    path.write_bytes(table)
    try:
        rows = expand_table(template, path)
    except UsageError as exc:
        one_line(exc)
        return
    assert all(isinstance(row.command, str) for row in rows)


def test_a_json_table_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    """Found by the fuzzer: json recursed past the stack, a RecursionError out of
    `shoal run --table`."""
    path = tmp_path / "t.json"
    path.write_text("[" * 100_000)
    with pytest.raises(UsageError, match=f"^{path}: malformed JSON .nested too deeply.$"):
        expand_table(["echo", "{a}"], path)


@scaled(0.5)
@given(st.data())
def test_joblog_lines_read_back_as_written(place: Path, data: st.DataObject) -> None:
    """What `--joblog` writes, `--resume` reads: each seq, done when any line of it was.
    Found by the fuzzer: a command holding "\x1e" or "\r" (line breaks to splitlines)
    made the joblog unreadable to --resume."""
    lines, expected = [], {}
    for seq in data.draw(st.lists(st.integers(1, 10**6), max_size=6)):
        command = data.draw(line_text | st.lists(line_text, max_size=3).map(tuple))
        job = Job.command_job(command or "true")
        code = data.draw(st.none() | st.integers(-64, 255))
        state = State.DONE if code == 0 else State.FAILED
        result = Result(job.id, state, exit_code=code, host=data.draw(st.sampled_from(["", "h"])),
                        started=data.draw(st.none() | st.floats(0, 2e9)), ended=None)
        lines.append(joblog.line(seq, job, result, data.draw(st.integers(0, 10**6))))
        expected[seq] = expected.get(seq, False) or code == 0
    path = Path(tempfile.mkdtemp(dir=place)) / "joblog"
    path.write_text("Seq\tHost\tStarttime\n" + "".join(lines))
    assert joblog.read(str(path)) == expected


@scaled(0.5)
@given(st.binary(max_size=200) | st.lists(
    st.lists(st.sampled_from(["1", ":", "0", "-1", "0", "x", "", "1.5", "99999"]), min_size=1,
             max_size=10).map("\t".join), max_size=5).map("\n".join).map(str.encode))
def test_a_joblog_of_anything_is_read_or_refused(place: Path, blob: bytes) -> None:
    """`--resume` reads a joblog a person may have edited."""
    path = Path(tempfile.mkdtemp(dir=place)) / "joblog"
    path.write_bytes(blob)
    try:
        seen = joblog.read(str(path))
    except joblog.JoblogError as exc:
        one_line(exc)
        return
    assert all(isinstance(seq, int) and isinstance(ok, bool) for seq, ok in seen.items())
