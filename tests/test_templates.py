"""Tests for shoal.templates: the expansion must print what GNU parallel's --dry-run prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shoal.errors import UsageError
from shoal.templates import (
    Expanded,
    InputOptions,
    expand_command_line,
    expand_table,
    parse_command_line,
    shell_quote,
)

# Files that `::::` cases read; written into each test's temporary directory.
INPUT_FILES = {
    "lines.txt": "l1\n\nl 3\r\nit's $x\n*.txt\nno-newline-at-end",
    "two.txt": "x\ny\n",
    "paths.txt": "/srv/data/run.1.csv\nrel/dir/\nplain\n",
}

# (id, words after `parallel --will-cite -k --dry-run`)
PARITY_CASES: list[tuple[str, list[str]]] = [
    ("append", ["echo", ":::", "a", "b", "c"]),
    ("braces", ["echo", "{}", ":::", "a", "b"]),
    ("no-ext", ["echo", "{.}", ":::", "a.txt", "b.tar.gz", ".bashrc", "noext", "d.x/f", "a."]),
    ("basename", ["echo", "{/}", ":::", "/a/b/c.txt", "c.txt", "dir/", "a//b"]),
    (
        "dirname",
        ["echo", "{//}", ":::", "/a/b/c.txt", "c.txt", "a/b/", "/", "", "//a", "a//b", "a/b//"],
    ),
    ("dirname-dots", ["echo", "{//}", ":::", ".", "..", "a/..", "./x", "///", "/.x"]),
    ("basename-no-ext", ["echo", "{/.}", ":::", "/a/b/c.txt", "x.tar.gz", "d.e/f", "g/.h"]),
    ("seq", ["echo", "{#}", "{}", ":::", "a", "b", "c"]),
    ("seq-only-no-append", ["echo", "job", "{#}", ":::", "a", "b"]),
    ("cross-3", ["echo", ":::", "a", "b", ":::", "x", "y", ":::", "1", "2"]),
    ("positional", ["echo", "{2}", "{1}", "{2}", ":::", "a", "b", ":::", "x", "y"]),
    (
        "positional-mods",
        ["echo", "{1.}", "{1/}", "{1//}", "{1/.}", "{2}", ":::", "d/a.b", ":::", "e/f.g"],
    ),
    ("negative-positions", ["echo", "{-1}", "{-2/}", ":::", "d/a", ":::", "e/f"]),
    ("ten-inputs", ["echo", "{10}", "{1}"] + [w for i in range(1, 11) for w in (":::", str(i))]),
    ("braces-several-inputs", ["echo", "{}", "{.}", ":::", "a b.c", ":::", "d.e"]),
    ("linked", ["echo", ":::", "a", "b", "c", ":::+", "1", "2", "3"]),
    ("linked-shorter", ["echo", ":::", "a", "b", "c", ":::+", "1", "2"]),
    ("linked-longer", ["echo", ":::", "a", ":::+", "1", "2", "3"]),
    (
        "linked-after-cross",
        ["echo", "{1}-{2}-{3}", ":::", "a", "b", ":::", "x", "y", "z", ":::+", "1", "2"],
    ),
    ("linked-chain", ["echo", ":::", "a", "b", "c", ":::+", "1", "2", "3", ":::+", "X", "Y"]),
    ("linked-first", ["echo", ":::+", "a", "b"]),
    ("file", ["echo", "{#}", "{}", "::::", "lines.txt"]),
    ("two-files-cross", ["echo", "::::", "two.txt", "lines.txt"]),
    ("file-linked", ["echo", ":::", "a", "b", "c", "::::+", "two.txt"]),
    ("file-linked-two", ["echo", ":::", "a", "b", "c", "::::+", "two.txt", "two.txt"]),
    ("file-mixed", ["echo", ":::", "p", "q", "::::", "two.txt", ":::", "r"]),
    ("file-path-mods", ["echo", "{/}", "{//}", "{.}", "{/.}", "::::", "paths.txt"]),
    ("spaces-quotes", ["echo", ":::", "a b", "it's", '"dq"', "'", "''", "'x", "x'", ""]),
    ("shell-meta", ["echo", ":::", "$HOME", "*.txt", "`id`", "$(id)", "\\", ";", "&&", "|", "~"]),
    ("punctuation", ["echo", ":::", "a=b", "a,b", "a:b", "@", "%", "!", "#", "[x]", "a\tb"]),
    ("safe-unquoted", ["echo", ":::", "A-Z_.+/09", "-n", "+x", "/", "."]),
    ("unicode", ["echo", "{}", ":::", "ü", "é x", "日本語", "🙂", "ß"]),
    ("pipe-template", ["echo {} | tr a-z A-Z", ":::", "x", "y z"]),
    ("words-joined-raw", ["echo", "a  b", "", "{}", ";", "echo", "done", ":::", "x"]),
    ("embedded", ["echo", "foo{}bar", "x{1}y{1.}", ":::", "a b.c"]),
    ("inside-double-quotes", ['echo "{}"', ":::", "a b", "$x"]),
    ("trailing-space-template", ["echo ", ":::", "a"]),
    ("literal-braces", ["echo", "{a}", "{..}", "{}}", "{{}}", "{ }", ":::", "v.w"]),
    ("newline-in-arg", ["echo", "{#}", "{}", ":::", "a\nb", "c", "d\n"]),
    ("append-several", ["printf", "%s\\n", ":::", "a b", ":::", "c"]),
    ("no-command", [":::", "echo hi", "ls  -l x"]),
    ("no-command-two-inputs", [":::", "echo", ":::", "a b"]),
    ("blank-template", ["", " ", ":::", "a", "b c"]),
    ("command-is-arg", ["{}", ":::", "echo a", "ls  x"]),
    ("first-word-token", ["{1}", "x", "{2}", ":::", "echo a", ":::", "c d"]),
    ("first-word-holds-token", ["my_{}", "{}", ":::", "a b"]),
    ("leading-space-token", [" {}", ":::", "a b"]),
    ("assignment-quoted", ["V={}", "echo", "{}", ":::", "a b"]),
    ("seq-first", ["{#}", "{}", ":::", "a b"]),
]


def _parallel() -> str:
    """Path of GNU parallel; skip (or fail on CI, which installs it) when it is missing."""
    path = shutil.which("parallel")
    version = ""
    if path:
        probe = subprocess.run(
            [path, "--will-cite", "--version"], capture_output=True, text=True, check=False
        )
        version = probe.stdout
    if "GNU parallel" in version:
        return path
    reason = "GNU parallel is not installed (apt-get install parallel)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; CI must install it")
    pytest.skip(reason)


def _run_parallel(options: list[str], words: list[str], cwd: Path) -> str:
    env = dict(os.environ, SHELL="/bin/sh", PARALLEL_HOME=str(cwd / ".parallel-home"))
    env.pop("PARALLEL", None)  # a user's default options must not change the reference
    result = subprocess.run(
        [_parallel(), "--will-cite", "-k", *options, *words],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return result.stdout.decode("utf-8", "surrogateescape")


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    for name, text in INPUT_FILES.items():
        (tmp_path / name).write_bytes(text.encode())
    return tmp_path


@pytest.mark.parametrize("words", [w for _, w in PARITY_CASES], ids=[i for i, _ in PARITY_CASES])
def test_matches_parallel_dry_run(words: list[str], inputs: Path) -> None:
    expected = _run_parallel(["--dry-run"], words, inputs)
    jobs = expand_command_line(words, base_dir=inputs)
    assert "".join(job.command + "\n" for job in jobs) == expected
    assert [job.seq for job in jobs] == list(range(1, len(jobs) + 1))


SHELL_CASES: list[tuple[str, list[str]]] = [
    ("printf-tricky", ["printf", "'[%s]\\n'", ":::", "a b", "it's", "$HOME", "*", "`id`", "", "'"]),
    ("pipeline", ["echo {} | tr a-z A-Z", ":::", "x", "it's  two", "ü"]),
    (
        "positional",
        ["printf", "'%s|%s|%s\\n'", "{2}", "{1/.}", "{#}", ":::", "d/a b.c", ":::", "$y"],
    ),
    ("file", ["printf", "'<%s>\\n'", "::::", "lines.txt", ":::", "*"]),
]


@pytest.mark.parametrize("words", [w for _, w in SHELL_CASES], ids=[i for i, _ in SHELL_CASES])
def test_running_commands_prints_what_parallel_prints(words: list[str], inputs: Path) -> None:
    expected = _run_parallel([], words, inputs)
    env = dict(os.environ, HOME="/home/of-nobody", y="SHOULD-NOT-EXPAND")
    outputs = [
        subprocess.run(
            ["/bin/sh", "-c", job.command],
            cwd=inputs,
            env=env,
            capture_output=True,
            check=True,
        ).stdout.decode("utf-8", "surrogateescape")
        for job in expand_command_line(words, base_dir=inputs)
    ]
    assert "".join(outputs) == expected
    assert "SHOULD-NOT-EXPAND" not in expected


# ------------------------------------------------------------------ no parallel needed


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("", "''"),
        ("abc-_.+/09", "abc-_.+/09"),
        ("a b", "'a b'"),
        ("it's", "'it'\"'\"'s'"),
        ("'", '"\'"'),
        ("'a", "\"'\"'a'"),
        ("$x", "'$x'"),
    ],
)
def test_shell_quote(value: str, quoted: str) -> None:
    assert shell_quote(value) == quoted


def test_parse_command_line_shape(inputs: Path) -> None:
    words = ["cmd", "-v", ":::", "a", "b", ":::+", "1", "2", "::::", "two.txt"]
    template, groups, linked = parse_command_line(words, base_dir=inputs)
    assert template == ["cmd", "-v"]
    assert groups == [["a", "b"], ["1", "2"], ["x", "y"]]
    assert linked == [False, True, False]


def test_params_seq_and_tag() -> None:
    options = InputOptions(tagstring="<{1}>{#}")
    jobs = expand_command_line(["run", ":::", "a b", ":::", "x"], options=options)
    assert [(j.command, j.tag) for j in jobs] == [("run 'a b' x", "<a b>1")]


def test_params_and_seq() -> None:
    jobs = expand_command_line(["run", "{1}", "{2}", ":::", "a", "b", ":::", "x"])
    assert jobs == [
        Expanded(command="run a x", params={"1": "a", "2": "x"}, seq=1),
        Expanded(command="run b x", params={"1": "b", "2": "x"}, seq=2),
    ]


def test_relative_file_uses_cwd_without_base_dir(inputs: Path, monkeypatch) -> None:
    monkeypatch.chdir(inputs)
    assert [j.command for j in expand_command_line(["echo", "::::", "two.txt"])] == [
        "echo x",
        "echo y",
    ]


def test_file_from_stdin(monkeypatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("s1\ns 2\n"))
    jobs = expand_command_line(["echo", "::::", "-", ":::", "z"])
    assert [j.command for j in jobs] == ["echo s1 z", "echo 's 2' z"]


@pytest.mark.parametrize(
    ("words", "fragment"),
    [
        (["echo", ":::"], "':::' is followed by no arguments"),
        (["echo", ":::", "a", ":::"], "empty input source"),
        (["echo", "::::"], "no file names"),
        (["echo", "{}"], "no input"),
        (["echo", "{3}", ":::", "a", ":::", "b"], "'{3}' refers to input source 3"),
        (["echo", "{-2}", ":::", "a"], "only 1 input source"),
        (["echo", "{0}", ":::", "a"], "start at 1"),

        (["echo", "{= $_ =}", ":::", "a"], "perl"),
    ],
)
def test_usage_errors(words: list[str], fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        expand_command_line(words)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        expand_command_line(["echo", "::::", "nope.txt"], base_dir=tmp_path)
    assert str(tmp_path / "nope.txt") in str(info.value)


def test_empty_file_names_path(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UsageError) as info:
        expand_command_line(["echo", "::::", "empty.txt"], base_dir=tmp_path)
    assert str(tmp_path / "empty.txt") in str(info.value)


# ------------------------------------------------------------------------ tables


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_table(tmp_path: Path) -> None:
    table = _write(tmp_path / "sweep.csv", 'lr, batch,name\n0.1, 32,plain\n0.01,64,"a b"\n')
    jobs = expand_table(["train", "--lr", "{lr}", "--batch={batch}", "-o", "out{#}/{name}"], table)
    assert jobs == [
        Expanded(
            command="train --lr 0.1 --batch=32 -o out1/plain",
            params={"lr": "0.1", "batch": "32", "name": "plain"},
            seq=1,
        ),
        Expanded(
            command="train --lr 0.01 --batch=64 -o out2/'a b'",
            params={"lr": "0.01", "batch": "64", "name": "a b"},
            seq=2,
        ),
    ]


def test_json_table_value_types(tmp_path: Path) -> None:
    rows = [{"x": 1, "y": 2.5, "flag": True, "none": None, "s": "it's"}]
    table = _write(tmp_path / "grid.json", json.dumps(rows))
    (job,) = expand_table(["run {x} {y} {flag} {none} {s}"], table)
    assert job.command == "run 1 2.5 true '' 'it'\"'\"'s'"
    assert job.params == {"x": "1", "y": "2.5", "flag": "true", "none": "", "s": "it's"}


def test_table_values_are_quoted_for_the_shell(tmp_path: Path) -> None:
    values = ["a b", "it's", "$HOME", "*", "`id`", "ü", "", '"q"']
    rows = [{"v": v} for v in values]
    table = _write(tmp_path / "t.json", json.dumps(rows))
    outputs = [
        subprocess.run(
            ["/bin/sh", "-c", job.command], cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout
        for job in expand_table(["printf", "'[%s]\\n'", "{v}"], table)
    ]
    assert outputs == [f"[{v}]\n" for v in values]


def test_table_leaves_shell_braces_alone(tmp_path: Path) -> None:
    table = _write(tmp_path / "t.csv", "f\nin.txt\n")
    (job,) = expand_table(["awk '{print $1}' {f} > ${HOME}/x"], table)
    assert job.command == "awk '{print $1}' in.txt > ${HOME}/x"


def test_table_bad_column_names_column_and_file(tmp_path: Path) -> None:
    table = _write(tmp_path / "t.csv", "alpha,beta\n1,2\n")
    with pytest.raises(UsageError) as info:
        expand_table(["run", "{gamma}"], table)
    assert "gamma" in str(info.value)
    assert str(table) in str(info.value)


def test_table_malformed_json_names_file(tmp_path: Path) -> None:
    table = _write(tmp_path / "bad.json", '[{"a": 1},')
    with pytest.raises(UsageError) as info:
        expand_table(["run", "{a}"], table)
    assert str(table) in str(info.value)
    assert "JSON" in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "template", "fragment"),
    [
        ("t.csv", "a\n1\n", ["run", "{}"], "cannot be used with a table"),
        ("t.csv", "a\n1\n", ["run", "{1}"], "cannot be used with a table"),
        ("t.csv", "a\n1\n", ["run", "{.}"], "cannot be used with a table"),
        ("t.csv", "a\n1\n", ["run"], "uses no column"),
        ("t.csv", "a\n1\n", [" "], "no command"),
        ("t.csv", "a,b\n1\n", ["run", "{a}"], "1 fields, but the header has 2"),
        ("t.csv", "a,a\n1,2\n", ["run", "{a}"], "repeated column"),
        ("t.csv", "", ["run", "{a}"], "no header"),
        ("t.csv", "a\n", ["run", "{a}"], "no rows"),
        ("t.json", "[]", ["run", "{a}"], "no rows"),
        ("t.json", '{"a": 1}', ["run", "{a}"], "list of objects"),
        ("t.json", '[{"a": [1]}]', ["run", "{a}"], "list or object"),
        ("t.json", '[{"a": 1}, {"b": 2}]', ["run", "{a}"], "row 2 has no value for column 'a'"),
    ],
)
def test_table_errors(name: str, text: str, template: list[str], fragment: str, tmp_path) -> None:
    table = _write(tmp_path / name, text)
    with pytest.raises(UsageError) as info:
        expand_table(template, table)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        expand_table(["run", "{a}"], tmp_path / "absent.csv")
    assert str(tmp_path / "absent.csv") in str(info.value)


def test_table_format_sniffed_and_tsv(tmp_path: Path) -> None:
    sniffed = _write(tmp_path / "params", '[{"k": "v w"}]')
    assert [j.command for j in expand_table(["echo", "{k}"], sniffed)] == ["echo 'v w'"]
    tsv = _write(tmp_path / "p.tsv", "k\tn\nv w\t2\n")
    assert [j.command for j in expand_table(["echo", "{k}", "{n}"], tsv)] == ["echo 'v w' 2"]


def test_table_column_with_space_and_unicode(tmp_path: Path) -> None:
    table = _write(tmp_path / "t.csv", "\ufefflearning rate,größe\n0.1,x\n")
    (job,) = expand_table(["run", "{learning rate}", "{größe}"], table)
    assert job.command == "run 0.1 x"


# ------------------------------------------------------------------- {%}: the job slot


def _shell(command: str, slot: str) -> str:
    """What /bin/sh prints for a command line when the worker's slot is `slot`."""
    env = {**os.environ, "SHOAL_SLOT": slot}
    return subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.parametrize(
    ("words", "options", "printed"),
    [
        (["echo", "{%}-{}", ":::", "a"], InputOptions(), "2-a\n"),
        (["echo", "'x y'", "{%}", ":::", "a"], InputOptions(), "x y 2\n"),
        (["echo", "x{%} y", ":::", "a b"], InputOptions(quote=True), "x2 y\n"),
        (["sh", "-c", "echo slot {%} {}", ":::", "a"], InputOptions(quote=True), "slot 2 a\n"),
    ],
)
def test_job_slot_is_the_workers_slot_when_the_job_runs(
        words: list[str], options: InputOptions, printed: str) -> None:
    (job,) = expand_command_line(words, options=options)
    assert "${SHOAL_SLOT}" in job.command  # known only when it runs
    assert _shell(job.command, "2") == printed


def test_job_slot_in_a_tagstring_is_refused() -> None:
    with pytest.raises(UsageError) as info:
        expand_command_line(["echo", ":::", "a"], options=InputOptions(tagstring="{%}"))
    assert "--tagstring" in str(info.value) and "slot" in str(info.value)


def test_job_slot_in_a_table_template(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("x\nhello\n")
    (job,) = expand_table(["echo", "{x}", "{%}"], table)
    assert _shell(job.command, "3") == "hello 3\n"
