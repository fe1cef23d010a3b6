"""GNU parallel invocations run with both `parallel` and `shoal run`: same commands, same output.

Each case is the words after `parallel` (options first, as a user types them). Two checks:
the command lines (`--dry-run`, needs only the argument parser) and the real run (stdout,
the jobs' stderr and exit status; compared in order when the case asks for -k, else as a
multiset of lines). The job slot `{%}` is known only when a job runs, so its cases compare
the set of slots used, and the dry run prints `${SHOAL_SLOT}` where parallel prints one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

# Files the cases read (`::::`, -a), written into each test's working directory.
INPUT_FILES = {
    "lines.txt": "l1\nl 2\nit's\n",
    "two.txt": "x\ny\n",
    "t.tsv": "a\tb\nc\td\n",
    "cmds.txt": "echo one\necho two  three\n",
}

# (id, words after `parallel` / `shoal run`, standard input or None)
CASES: list[tuple[str, list[str], str | None]] = [
    ("append", ["echo", ":::", "a", "b", "c"], None),
    ("braces", ["echo", "{}", ":::", "x y", "z"], None),
    ("no-ext", ["echo", "{.}", ":::", "a.txt", "b.tar.gz", "noext"], None),
    ("basename", ["echo", "{/}", ":::", "/a/b.c", "d/e"], None),
    ("dirname", ["echo", "{//}", ":::", "/a/b.c", "d/e", "f"], None),
    ("basename-no-ext", ["echo", "{/.}", ":::", "/a/b.c", "x.y.z"], None),
    ("seq", ["-k", "echo", "{#}", "{}", ":::", "a", "b", "c"], None),
    ("positional", ["echo", "{2}", "{1}", ":::", "a", "b", ":::", "x", "y"], None),
    ("positional-mods", ["echo", "{1.}", "{2/}", ":::", "a.b", ":::", "c/d"], None),
    ("cross-3", ["echo", ":::", "1", "2", ":::", "a", "b", ":::", "x", "y"], None),
    ("linked", ["echo", ":::", "a", "b", "c", ":::+", "1", "2", "3"], None),
    ("linked-shorter", ["echo", ":::", "a", "b", "c", ":::+", "1", "2"], None),
    ("file", ["echo", "{#}:{}", "::::", "lines.txt"], None),
    ("file-linked", ["echo", ":::", "a", "b", "::::+", "two.txt"], None),
    ("two-files", ["echo", "::::", "two.txt", "lines.txt"], None),
    ("arg-file", ["-a", "two.txt", "echo", "{}", ":::", "p", "q"], None),
    ("arg-file-long", ["--arg-file", "lines.txt", "echo"], None),
    ("stdin", ["echo"], "1\n2\n3\n"),
    ("stdin-braces", ["echo", "x{}y"], "a b\nc\n"),
    ("stdin-null", ["-0", "echo"], "a b\0c\nd\0"),
    ("stdin-as-file", ["echo", "::::", "-", ":::", "z"], "p\nq\n"),
    ("command-is-arg", ["{}", ":::", "echo a", "echo b  c"], None),
    ("commands-from-file", ["{}", "::::", "cmds.txt"], None),
    ("no-command", [":::", "echo hi", "echo there"], None),
    ("colsep", ["--colsep", ",", "echo", "{2}", "{1}", ":::", "a,b", "c,d"], None),
    ("colsep-tsv", ["--colsep", "\t", "echo", "{2}-{1}", "::::", "t.tsv"], None),
    ("colsep-missing", ["-C", ",", "echo", "{3}", "{1}", ":::", "a,b"], None),
    ("colsep-trim", ["--colsep", ",", "echo", ":::", "a, b", " c ,d"], None),
    ("colsep-two-sources", ["--colsep", "-", "echo", "{4}{3}{2}{1}", ":::", "A-B", ":::", "e-f"],
     None),
    ("max-replace-args", ["-N2", "echo", "{1}-{2}", ":::", "a", "b", "c"], None),
    ("max-replace-context", ["-N", "2", "echo", "x{}y", ":::", "a", "b", "c"], None),
    ("max-replace-zero", ["-N0", "echo", "hi", ":::", "1", "2"], None),
    ("max-args", ["-n", "2", "echo", ":::", "a", "b", "c"], None),
    ("link", ["--link", "echo", ":::", "1", "2", ":::", "a", "b", "c"], None),
    ("xapply", ["--xapply", "echo", "{1}{2}{3}", ":::", "1", ":::", "a", "b", ":::", "X"],
     None),
    ("keep-order", ["-k", "-j", "3", "sleep 0.{}; echo {}", ":::", "3", "2", "1"], None),
    ("keep-order-bundled", ["-kj1", "echo", ":::", "b", "a", "c"], None),
    ("tag", ["--tag", "echo", "x", ":::", "a", "b c"], None),
    ("tag-two-sources", ["-k", "--tag", "echo", ":::", "a", "b", ":::", "1"], None),
    ("tagstring", ["--tagstring", "<{}>{#}", "echo", ":::", "a"], None),
    ("quoting", ["echo", ":::", "it's", "$HOME", "a  b", "*", "`id`", ""], None),
    ("quote-option", ["-q", "printf", "[%s]\\n", "a  b", "{}", ":::", "x  y"], None),
    ("pipeline", ["echo {} | tr a-z A-Z", ":::", "ab", "c d"], None),
    ("repeated-args", ["echo", ":::", "a", "a", "b"], None),
    ("exit-0", ["true", ":::", "1", "2"], None),
    ("exit-failures", ["exit", "{}", ":::", "0", "1", "2", "0"], None),
    ("exit-with-output", ["echo {}; exit {}", ":::", "0", "3"], None),
    ("not-found", ["no-such-command-xyz", ":::", "a"], None),
    ("dry-run", ["--dry-run", "echo", ":::", "a", "b c"], None),
    ("dry-run-tag", ["--dry-run", "--tag", "echo", ":::", "a"], None),
    ("timeout-retries", ["--timeout", "30", "--retries", "2", "echo", ":::", "a"], None),
    ("halt-soon", ["-j1", "-k", "--halt", "soon,fail=1", "echo {}; exit {}", ":::", "0", "1",
                   "0"], None),
    ("eta-bar", ["--eta", "--bar", "echo", ":::", "a"], None),
    ("stderr", ["echo out {}; echo err {} >&2; echo more {} >&2", ":::", "a", "b c"], None),
    ("stderr-tag-keep-order", ["-k", "--tag", "echo out {}; echo err {} >&2; exit {#}", ":::",
                               "a", "b"], None),
    ("stderr-only", ["-j1", "echo {} >&2", ":::", "x", "y"], None),
    ("slot-j1", ["-j1", "echo", "{%}", ":::", "a", "b", "c"], None),
    ("slot-j2", ["-j2", "sleep 0.{}; echo {%}", ":::", "3", "1", "2", "1"], None),
    ("slot-quoted", ["-j1", "-q", "sh", "-c", "echo slot {%} {}", ":::", "a"], None),
]
IDS = [case[0] for case in CASES]

# Differences from parallel found by these cases and not mended yet (the run's side, not the
# words'): such a case fails as expected (xfail) and passes once they are mended.
KNOWN_GAPS: dict[str, str] = {}
# Cases whose output lines are job slots: the set of slots used must be within these (which
# slot runs which job is up to the scheduler, in parallel as in shoal).
SLOTS = {"slot-j2": {"1", "2"}}
# Cases whose jobs write on stderr: what they wrote is compared too (in other cases
# parallel's stderr holds its own words: --bar, --halt's "This job failed").
STDERR = {"not-found", "stderr", "stderr-tag-keep-order", "stderr-only"}


def _parallel() -> str:
    """GNU parallel's path; skip with the reason (fail on CI, which installs it)."""
    path = shutil.which("parallel") or "/usr/bin/parallel"
    if os.path.exists(path):
        probe = subprocess.run([path, "--will-cite", "--version"], capture_output=True,
                               text=True, check=False, stdin=subprocess.DEVNULL)
        if "GNU parallel" in probe.stdout:
            return path
    reason = "GNU parallel is not installed (apt-get install parallel)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; CI must install it")
    pytest.skip(reason)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    for name, text in INPUT_FILES.items():
        (folder / name).write_text(text)
    return folder


def _env(workdir: Path) -> dict[str, str]:
    home = workdir.parent / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home), SHELL="/bin/sh", PARALLEL_HOME=str(home / ".par"))
    env.pop("PARALLEL", None)  # a user's default options must not change the reference
    return env


def run_parallel(words: list[str], stdin: str | None,
                 workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_parallel(), "--will-cite", *words], cwd=workdir, env=_env(workdir),
                          input=(stdin or "").encode(), capture_output=True, timeout=120)


def run_shoal(words: list[str], stdin: str | None, workdir: Path,
              *shoal_options: str) -> subprocess.CompletedProcess:
    queue = workdir.parent / "queue"
    return subprocess.run(
        [sys.executable, "-m", "shoal", "run", "--queue", str(queue), *shoal_options, *words],
        cwd=workdir, env=_env(workdir), input=(stdin or "").encode(), capture_output=True,
        timeout=240)


def _lines(out: bytes, ordered: bool) -> list[str]:
    lines = out.decode("utf-8", "surrogateescape").splitlines()
    return lines if ordered else sorted(lines)


def _ordered(words: list[str]) -> bool:
    options = words[: next((i for i, w in enumerate(words) if not w.startswith("-")), 0)]
    return any(w in ("-k", "--keep-order") or (w.startswith("-k") and w[1] != "-")
               for w in options)


def _with_dry_run(words: list[str]) -> list[str]:
    return words if "--dry-run" in words else ["--dry-run", *words]


@pytest.mark.parametrize(("case", "words", "stdin"), CASES, ids=IDS)
def test_dry_run_prints_the_commands_parallel_prints(case: str, words: list[str],
                                                     stdin: str | None, workdir: Path) -> None:
    expected = run_parallel(_with_dry_run(words), stdin, workdir)
    got = run_shoal(_with_dry_run(words), stdin, workdir)
    assert got.returncode == expected.returncode == 0, got.stderr.decode()
    ordered = _ordered(words)  # parallel prints in input order only with -k; shoal always
    if "{%}" in " ".join(words):  # parallel prints the slot it would use, shoal the variable
        assert _slots_match(_lines(got.stdout, ordered), _lines(expected.stdout, ordered))
        return
    assert _lines(got.stdout, ordered) == _lines(expected.stdout, ordered)


def _slots_match(ours: list[str], theirs: list[str]) -> bool:
    """Each of parallel's dry-run lines is one of ours with a slot number for the variable
    (quoted apart from the word around it when -q quotes the word)."""
    patterns = []
    for line in ours:
        pattern = re.escape(line)
        for ref in ("'\"${SHOAL_SLOT}\"'", '"${SHOAL_SLOT}"', "${SHOAL_SLOT}"):
            pattern = pattern.replace(re.escape(ref), "[0-9]+")
        patterns.append(re.compile(pattern))
    for line in theirs:
        found = next((p for p in patterns if p.fullmatch(line)), None)
        if found is None:
            return False
        patterns.remove(found)
    return not patterns
    assert not (workdir.parent / "queue").exists(), "--dry-run created the queue"


def _run_plan_merged() -> bool:
    import importlib

    return hasattr(importlib.import_module("shoal.runwatch"), "run_plan")


@pytest.mark.parametrize(("case", "words", "stdin"), CASES, ids=IDS)
def test_output_and_exit_status_are_parallels(case: str, words: list[str], stdin: str | None,
                                              workdir: Path) -> None:
    if not _run_plan_merged():
        pytest.skip("printing job output is progress.run_plan (the run-output branch), "
                    "not merged here yet")
    expected = run_parallel(words, stdin, workdir)
    got = run_shoal(words, stdin, workdir, "--no-progress")
    ordered = _ordered(words)
    try:
        if case in SLOTS:
            assert set(_lines(got.stdout, False)) <= SLOTS[case], got.stderr.decode()
            assert set(_lines(expected.stdout, False)) <= SLOTS[case]
            assert len(_lines(got.stdout, False)) == len(_lines(expected.stdout, False))
        else:
            assert _lines(got.stdout, ordered) == _lines(expected.stdout, ordered), \
                got.stderr.decode()
        if case in STDERR:
            assert _job_stderr(got.stderr, ordered, shoal=True) == _job_stderr(
                expected.stderr, ordered, shoal=False), got.stderr.decode()
        assert got.returncode == expected.returncode, got.stderr.decode()
    except AssertionError:
        if case in KNOWN_GAPS:
            pytest.xfail(KNOWN_GAPS[case])
        raise


# A shell's word for a missing command differs (`sh: 1: x: not found`, `bash: line 1: x:
# command not found`): compared as `x: not found`.
_NOT_FOUND = re.compile(r"^.*?([^\s:]+): (?:command )?not found$")


def _job_stderr(err: bytes, ordered: bool, *, shoal: bool) -> list[str]:
    """What the jobs wrote on stderr: without shoal's own lines (its summary: `shoal run:`
    and the indented lines under it), shells' not-found messages in one wording."""
    lines = _lines(err, ordered)
    if shoal:
        lines = [line for line in lines
                 if not line.startswith(("shoal run:", "  failed:", "  a failed job's log:",
                                         "  ... and "))]
    return [_NOT_FOUND.sub(r"\1: not found", line) for line in lines]
