"""Fuzzed job files: whatever a `.ini`, `.toml` or script holds, `load_job_file` returns a
spec or raises `MalformedJob` naming the file, and a drop-in folder of such files (any
names, any bytes) scans without an error.

Long mode (1500 examples per property, see tests/fuzzing.py):
`SHOAL_FUZZ_LONG=1 python -m pytest -q tests/test_fuzz_jobfiles.py`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal import defaults
from shoal.dropins import DropIns
from shoal.errors import MalformedJob
from shoal.jobfiles import CONTROL_KEYS, JobFileSpec, check_job_files, load_job_file
from tests.fuzzing import TIMEOUT, scaled

pytestmark = TIMEOUT

INTERPRETERS = {ext: list(argv) for ext, argv in defaults.INTERPRETERS.items()}
KEYS = [key for key in CONTROL_KEYS if key != "resource.NAME"] + [
    "resource.license", "resource.", "Executable", "timout", "x"]
SECTIONS = ["control", "fjd", "params", "resources", "DEFAULT", "Control", "other"]
# Values a person might write, right and wrong, and anything else.
WORDS = ["python3 sim.py", "./run.sh", "'unclosed", "", " ", "90", "2.5", "-1", "0", "inf",
         "nan", "1e999", "16G", "512M", "1.5T", "-3G", "x", "true", "*.ini", "a.ini, b.ini",
         "0123456789abcdef", "~", "~nobody/x", "../..", "/", "a\x00b", "%(x)s", "; c", "# c",
         "[", "]", "=", "\\", '"', "é", "\ufeff"]
line_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
                    max_size=20)
ini_values = st.sampled_from(WORDS) | line_text


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("jobfiles")


def fresh(place: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=place))


def loads_or_refuses(path: Path, **options: Any) -> JobFileSpec | None:
    """The property: a spec whose argv ends with the file, or MalformedJob naming it."""
    try:
        spec = load_job_file(path, interpreters=INTERPRETERS, worker_dir=path.parent, **options)
    except MalformedJob as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message, message
        return None
    assert spec.command and spec.command[-1] == str(path.absolute())
    assert all(isinstance(word, str) for word in spec.command)
    assert spec.timeout_s is None or spec.timeout_s > 0
    assert spec.retries is None or spec.retries >= 0
    assert all(isinstance(amount, float) and amount >= 0 for amount in spec.needs.values())
    return spec


@st.composite
def ini_texts(draw: st.DrawFn) -> str:
    """INI text built from headers, known and unknown keys, and odd lines."""
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["header", "key", "key", "key", "odd"]))
        if kind == "header":
            lines.append(f"[{draw(st.sampled_from(SECTIONS) | line_text)}]")
        elif kind == "key":
            separator = draw(st.sampled_from([" = ", "=", ": ", " : "]))
            lines.append(f"{draw(st.sampled_from(KEYS))}{separator}{draw(ini_values)}")
        else:
            lines.append(draw(line_text | st.sampled_from(["  continued", "; note", "#", ""])))
    return "\n".join(lines)


def toml_value(draw: st.DrawFn, depth: int = 0) -> str:
    """One TOML value as text: typed scalars, strings, arrays and inline tables."""
    kind = draw(st.sampled_from(["int", "float", "bool", "str", "str", "array", "table", "deep"]
                                if depth < 2 else ["int", "str"]))
    if kind == "deep":  # nested past the parser's stack
        return "[" * draw(st.integers(1, 5000))
    if kind == "int":
        return str(draw(st.integers(-(2**70), 2**70)))
    if kind == "float":
        return draw(st.sampled_from(["1.5", "inf", "-inf", "nan", "1e400", "0.0", "-0.5"]))
    if kind == "bool":
        return draw(st.sampled_from(["true", "false"]))
    if kind == "str":
        return json.dumps(draw(st.sampled_from(WORDS) | line_text))
    items = [toml_value(draw, depth + 1) for _ in range(draw(st.integers(0, 3)))]
    if kind == "array":
        return f"[{', '.join(items)}]"
    return "{" + ", ".join(f"k{i} = {item}" for i, item in enumerate(items)) + "}"


@st.composite
def toml_texts(draw: st.DrawFn) -> str:
    """TOML text: [control]/[params]/[resources] tables (or dotted keys) and typed values."""
    lines = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["table", "key", "key", "key", "dotted", "odd"]))
        if kind == "table":
            lines.append(f"[{draw(st.sampled_from(['control', 'params', 'resources', 'x']))}]")
        elif kind == "key":
            key = draw(st.sampled_from(KEYS))
            lines.append(f"{json.dumps(key) if '.' in key else key} = {toml_value(draw)}")
        elif kind == "dotted":
            table = draw(st.sampled_from(["control", "params", "resources", "resource"]))
            lines.append(f"{table}.{draw(st.sampled_from(KEYS[:5]))} = {toml_value(draw)}")
        else:
            lines.append(draw(line_text))
    return "\n".join(lines)


@scaled(1.0)
@given(ini_texts(), st.booleans())
def test_an_ini_job_file_loads_or_is_refused(place: Path, text: str, scheduling: bool) -> None:
    path = fresh(place) / "job.ini"
    path.write_text(text, encoding="utf-8")
    loads_or_refuses(path, scheduling=scheduling)


@scaled(1.0)
@given(toml_texts(), st.booleans())
def test_a_toml_job_file_loads_or_is_refused(place: Path, text: str, scheduling: bool) -> None:
    path = fresh(place) / "job.toml"
    path.write_text(text, encoding="utf-8")
    loads_or_refuses(path, scheduling=scheduling)


@scaled(1.0)
@given(st.sampled_from(["job.ini", "job.toml", "job.sh", "job.py", "job.R", "job.xyz", "job"]),
       st.binary(max_size=300))
def test_any_bytes_in_a_job_file_load_or_are_refused(place: Path, name: str,
                                                     blob: bytes) -> None:
    path = fresh(place) / name
    path.write_bytes(blob)
    loads_or_refuses(path)
    try:
        check_job_files([str(path)], INTERPRETERS, worker_dir=path.parent)
    except MalformedJob as exc:
        assert str(path) in str(exc)


@scaled(1.0)
@given(st.sampled_from(["job.ini", "job.toml"]), st.data())
def test_a_valid_job_file_with_one_line_changed_loads_or_is_refused(
        place: Path, name: str, data: st.DataObject) -> None:
    folder = fresh(place)
    (folder / "prepare.ini").write_text("[control]\nexecutable = true\n")
    base = {"job.ini": "[control]\nexecutable = python3 sim.py\ntimeout = 90\nretries = 2\n"
                       "after = prepare.ini\nmem = 1G\ncpus = 2\nrequires = big\n"
                       "[params]\nseed = 1\n",
            "job.toml": '[control]\nexecutable = ["python3", "sim.py"]\ntimeout = 90\n'
                        'retries = 2\nafter = ["prepare.ini"]\nmem = "1G"\ncpus = 2\n'
                        '[params]\nseed = 1\n'}[name]
    lines = base.splitlines()
    spot = data.draw(st.integers(0, len(lines) - 1))
    lines[spot] = data.draw(line_text | st.sampled_from(lines).map(lambda line: line + "x"))
    path = folder / name
    path.write_text("\n".join(lines), encoding="utf-8")
    loads_or_refuses(path)


names = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"),
                min_size=1, max_size=30).filter(lambda n: n not in (".", "..")
                                                and len(n.encode()) < 200)
suffixes = st.sampled_from([".ini", ".toml", ".sh", ".py", ".log", ".ini.log", "", ".tmp"])


@scaled(0.5)
@given(st.lists(st.tuples(names, suffixes, st.sampled_from(["ini", "toml", "bytes", "dir"]),
                          st.data()), max_size=6),
       st.sampled_from([defaults.LOG_NAME, defaults.OLD_LOG_NAME, "{stem}.out.log"]))
def test_a_drop_in_folder_of_anything_scans(place: Path, files: list, log_name: str) -> None:
    """Any names and contents: a scan submits job files and never raises."""
    folder = fresh(place)
    for stem, suffix, kind, data in files:
        path = folder / f"{stem}{suffix}"
        if path.exists():
            continue
        if kind == "dir":
            path.mkdir()
            continue
        content = {"ini": ini_texts, "toml": toml_texts}.get(kind)
        blob = (data.draw(content()).encode() if content is not None
                else data.draw(st.binary(max_size=100)))
        path.write_bytes(blob)
    drops = DropIns(folder, INTERPRETERS, log_name)
    scan = drops.scan()
    for job in scan.fresh:
        assert job.path and (folder / job.path).is_file()
    assert not drops.scan().fresh  # seen once: never submitted again


def test_a_toml_job_file_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    """Found by the fuzzer: tomllib recursed past the stack on `executable = [[[...`, a
    RecursionError out of submit and of the worker that ran the file."""
    path = tmp_path / "job.toml"
    path.write_text("[control]\nexecutable = " + "[" * 5000 + "\n")
    with pytest.raises(MalformedJob, match=f"^{path}: TOML syntax error: .* nested too deeply"):
        load_job_file(path, interpreters=INTERPRETERS, worker_dir=tmp_path)


def test_a_job_file_whose_name_is_not_utf8_loads(place: Path) -> None:
    folder = fresh(place)
    path = folder / "j\udcff.ini"  # a name that is not UTF-8 on disk
    path.write_text("[control]\nexecutable = true\n")
    assert loads_or_refuses(path) is not None
    assert os.path.exists(path)
