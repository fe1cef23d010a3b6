"""`shoal run`'s words read as GNU parallel reads them: refused options, -q, stdin, `{}` alone,
`::::` files, --retries; and the RunPlan they give."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal.cli import main
from shoal.errors import UsageError
from shoal.job import State
from shoal.parallel_args import RunArgs, jobs_to_slots, parse_duration, parse_halt, parse_run_words
from shoal.queue import open_queue
from shoal.runplan import Halt
from shoal.submission import jobs_from_expanded

pytestmark = pytest.mark.timeout(120)


def run_cli(tmp_path: Path, *words: str, stdin: str = "") -> object:
    """`shoal run WORDS` in-process, in tmp_path, with `stdin` as standard input."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        return CliRunner().invoke(main, ["run", *words], input=stdin)
    finally:
        os.chdir(cwd)


def shoal(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """The real `shoal` command in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "shoal", *args], cwd=tmp_path, input=stdin,
                          capture_output=True, text=True, timeout=90)


# ----------------------------------------------------------------- refused options

REFUSED = [
    (["--sshlogin", "host", "echo", ":::", "a"], "--sshlogin", "shoal hire"),
    (["-S", "host", "echo", ":::", "a"], "-S", "shoal hire"),
    (["--results", "out", "echo", ":::", "a"], "--results", "shoal results"),
    (["--pipe", "wc"], "--pipe", "one job per argument"),
    (["-u", "echo", ":::", "a"], "-u", "--line-buffer"),
    (["--shuf", "echo", ":::", "a"], "--shuf", "input order"),
    (["-X", "echo", ":::", "a"], "-X", "-N"),
    (["--verbose", "echo", ":::", "a"], "--verbose", "--dry-run"),
    (["-I", "XX", "echo", "XX", ":::", "a"], "-I", "replacement strings"),
    (["--no-such-option", "echo", ":::", "a"], "--no-such-option", "not supported"),
    (["-kx", "echo", ":::", "a"], "-x", "not supported"),
    (["--timeout", "200%", "echo", ":::", "a"], "'--timeout': '200%'", "median"),
    (["--timeout", "-1", "echo", ":::", "a"], "'--timeout': '-1'", "seconds"),
    (["--timeout", "1e999", "echo", ":::", "a"], "'--timeout': '1e999'", "seconds"),
    (["--timeout", "nan", "echo", ":::", "a"], "'--timeout': 'nan'", "seconds"),
    (["--retries", "0", "echo", ":::", "a"], "--retries 0", "forever"),
    (["--halt", "soon,done=1", "echo", ":::", "a"], "'--halt'", "done="),
    (["--halt", "3", "echo", ":::", "a"], "'--halt': '3'", "never"),
    (["--resume", "echo", ":::", "a"], "--resume", "--joblog"),
    (["-j", "procfile", "echo", ":::", "a"], "'-j': 'procfile'", "N%"),
    (["--colsep", "(", "echo", ":::", "a"], "--colsep", "regular expression"),
    (["-N", "two", "echo", ":::", "a"], "'-N': 'two'", "whole number"),
    (["--jobs"], "--jobs", "needs a value"),
    (["--tagstring", "s{%}", "echo", ":::", "a"], "'--tagstring'", "slot"),
]


@pytest.mark.parametrize(("words", "names", "pointer"), REFUSED,
                         ids=[" ".join(w[:2]) for w, _, _ in REFUSED])
def test_a_refused_option_is_one_line_exit_2_and_runs_nothing(
        tmp_path: Path, words: list[str], names: str, pointer: str) -> None:
    queue = tmp_path / "q"
    shoal(tmp_path, "submit", str(queue), "echo", ":::", "kept")  # a queue that exists
    before = sorted(p.name for p in tmp_path.iterdir())
    done = run_cli(tmp_path, "--queue", str(queue), *words)
    assert done.exit_code == 2, done.output
    message = done.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert names in message and pointer in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no folder named after a word
    assert [s.job.name for s in open_queue(str(queue)).jobs()] == ["1: echo kept"]


def test_a_refused_option_fails_the_real_command_with_one_line(tmp_path: Path) -> None:
    done = shoal(tmp_path, "run", "--sshlogin", "host", "echo", ":::", "a")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "shoal: error: --sshlogin is not supported by shoal run; use `shoal hire` (or "
        "`shoal work QUEUE` on the other machines) (see shoal run --help)"]
    assert list(tmp_path.iterdir()) == [] and done.stdout == ""


def test_help_lists_the_options_and_runs_nothing(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--help")
    assert done.exit_code == 0
    for name in ("--keep-order", "--tagstring", "--halt", "--joblog", "--queue", "--fresh",
                 "-q, --quote"):
        assert name in done.output
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------- what words mean


def test_q_quotes_like_parallel_and_is_not_a_queue(tmp_path: Path) -> None:
    args = parse_run_words(["-q", "echo", "a b", "{}", ":::", "x"])
    assert args.inputs.quote and args.queue_url == ".shoal-run"
    done = run_cli(tmp_path, "-q", "--dry-run", "echo", "a b", "{}", ":::", "x  y")
    assert done.exit_code == 0
    assert done.output == "echo 'a b' 'x  y'\n"
    assert list(tmp_path.iterdir()) == []  # no folder named `echo`, no .shoal-run


def test_options_stop_at_the_command(tmp_path: Path) -> None:
    args = parse_run_words(["-k", "grep", "-q", "--tag", "{}", ":::", "a", "--dry-run"])
    assert args.keep_order and not args.inputs.quote and not args.tag and not args.dry_run
    assert args.words == ["grep", "-q", "--tag", "{}", ":::", "a", "--dry-run"]
    assert parse_run_words(["--", "-x", ":::", "a"]).words == ["-x", ":::", "a"]


def test_double_dash_ends_the_options(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--dry-run", "-k", "--", "-x", "{}", ":::", "a")
    assert (done.exit_code, done.output) == (0, "-x a\n")


def test_a_table_tags_with_its_values_and_refuses_input_options(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n1,x y\n")
    done = run_cli(tmp_path, "--dry-run", "--tag", "--table", "t.csv", "echo", "{b}")
    assert done.output == "1 x y\techo 'x y'\n"
    refused = run_cli(tmp_path, "--dry-run", "--colsep", ",", "--table", "t.csv", "echo", "{a}")
    assert refused.exit_code == 2 and "--table cannot go with --colsep" in refused.output


def test_values_attached_or_apart_and_bundled_flags() -> None:
    for words in (["-kj4"], ["-k", "-j", "4"], ["--keep-order", "--jobs=4"], ["-kP4"]):
        args = parse_run_words([*words, "echo"])
        assert args.keep_order and args.jobs_spec == "4", words


def test_dry_run_of_the_argument_as_command_and_of_stdin(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "--dry-run", "{}", ":::", "echo a", "ls  -l").output == \
        "echo a\nls  -l\n"
    assert run_cli(tmp_path, "--dry-run", "echo", stdin="1\n2 3\n").output == \
        "echo 1\necho '2 3'\n"
    assert run_cli(tmp_path, "--dry-run", "-0", "echo", stdin="a\nb\0c\0").output == \
        "echo 'a\nb'\necho c\n"
    (tmp_path / "cmds.txt").write_text("echo one\necho two\n")
    assert run_cli(tmp_path, "--dry-run", "{}", "::::", "cmds.txt").output == \
        "echo one\necho two\n"
    assert run_cli(tmp_path, "--dry-run", "-a", "cmds.txt", "-a", "cmds.txt", "{2}").output \
        == "echo one\necho two\necho one\necho two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmds.txt"]


def test_job_files_when_stdin_brings_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    assert run_cli(tmp_path, "--dry-run", "a.py").output == "a.py\n"
    assert run_cli(tmp_path, "--dry-run", "a.py", stdin="x\n").output == "a.py x\n"
    missing = run_cli(tmp_path, "--dry-run", "echo")
    assert missing.exit_code == 2
    assert "echo: not a job file, and standard input gave no arguments" in missing.output


def test_tag_with_job_files_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    for option in (["--tag"], ["--tagstring", "x"]):
        refused = shoal(tmp_path, "run", *option, "a.py")
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip().splitlines() == [
            "shoal: error: --tag/--tagstring: job files have no arguments to tag; tags go "
            "with a command and its ::: arguments"]
        assert not (tmp_path / ".shoal-run").exists()


def test_missing_input_file_names_it(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "echo", "::::", "nope.txt")
    assert done.exit_code == 2 and str(tmp_path / "nope.txt") in done.output
    assert list(tmp_path.iterdir()) == []


def _run_jobs(tmp_path: Path, words: list[str], stdin: str = "") -> list:
    """Jobs as `shoal run WORDS` builds them, run to the end by a real `shoal work`."""
    import io

    args = parse_run_words(words)
    expanded = args.expand(io.StringIO(stdin), base_dir=tmp_path)
    assert expanded is not None
    jobs = jobs_from_expanded(expanded, cwd=str(tmp_path), **args.job_options())
    queue = open_queue(str(tmp_path / "q"))
    queue.submit(jobs)
    worker = shoal(tmp_path, "work", str(tmp_path / "q"), "--drain", "--slots", "2")
    assert worker.returncode == 0, worker.stderr
    results = {r.job_id: r for r in queue.results()}
    return [results[job.id] for job in jobs]


def test_the_argument_runs_as_the_command(tmp_path: Path) -> None:
    results = _run_jobs(tmp_path, ["{}", ":::", "echo a > a.out", "echo b  c > b.out"])
    assert [r.state for r in results] == [State.DONE, State.DONE]
    assert (tmp_path / "a.out").read_text() == "a\n"
    assert (tmp_path / "b.out").read_text() == "b c\n"


def test_stdin_arguments_run(tmp_path: Path) -> None:
    results = _run_jobs(tmp_path, ["touch"], stdin="f1\nf 2\n")
    assert [r.state for r in results] == [State.DONE, State.DONE]
    assert (tmp_path / "f1").exists() and (tmp_path / "f 2").exists()


def test_repeated_arguments_run_as_often_as_given(tmp_path: Path) -> None:
    results = _run_jobs(tmp_path, ["echo x >> count; :", ":::", "a", "a", "a"])
    assert len({r.job_id for r in results}) == 3
    assert (tmp_path / "count").read_text() == "x\nx\nx\n"


def test_retries_3_means_3_attempts_at_most(tmp_path: Path) -> None:
    (result,) = _run_jobs(tmp_path, ["--retries", "3", "echo x >> tries; exit 1; :", ":::", "a"])
    assert result.state is State.FAILED
    assert (tmp_path / "tries").read_text() == "x\nx\nx\n"
    (ok,) = _run_jobs(tmp_path, ["--retries", "3", "echo y >> once; :", ":::", "b"])
    assert ok.state is State.DONE and (tmp_path / "once").read_text() == "y\n"


# --------------------------------------------------------------------- the RunPlan


def test_plan_carries_what_was_asked() -> None:
    args = parse_run_words(["-k", "--lb", "--tagstring", "<{}>", "--halt", "now,fail=10%",
                            "--joblog", "log.tsv", "--resume-failed", "-j", "3", "--timeout",
                            "1m", "--retries", "2", "--max-attempts", "5", "--no-progress",
                            "echo", ":::", "a", "b"])
    expanded = args.expand()
    jobs = jobs_from_expanded(expanded, **args.job_options())
    plan = args.plan(jobs, expanded)
    assert [j.command for j in plan.jobs] == ["echo a", "echo b"]
    assert plan.keep_order and plan.line_buffer and not plan.show_progress
    assert plan.tags == {jobs[0].id: "<a>", jobs[1].id: "<b>"}
    assert plan.halt == Halt(when="now", fail_pct=10.0)
    assert plan.joblog == "log.tsv" and plan.resume and plan.resume_failed
    assert plan.slots == 3 and not plan.fresh
    assert (jobs[0].timeout_s, jobs[0].retries, jobs[0].max_attempts) == (60.0, 1, 5)


def test_fresh_slots_and_no_tags_by_default() -> None:
    args = parse_run_words(["--fresh", "--slots", "0", "echo", ":::", "a"])
    plan = args.plan(jobs_from_expanded(args.expand()), args.expand())
    assert plan.fresh and plan.slots == 0 and plan.tags == {}
    assert RunArgs().job_options() == {"max_attempts": 3}


@pytest.mark.parametrize(("value", "halt"), [
    ("never", Halt()), ("0", Halt()),
    ("1", Halt(when="soon", fail=1)), ("2", Halt(when="now", fail=1)),
    ("-1", Halt(when="soon", success=1)), ("-2", Halt(when="now", success=1)),
    ("20%", Halt(when="soon", fail_pct=20.0)),
    ("now,fail=3", Halt(when="now", fail=3)), ("soon,success=2", Halt(when="soon", success=2)),
])
def test_halt_values(value: str, halt: Halt) -> None:
    assert parse_halt(value) == halt


@pytest.mark.parametrize("value", ["now", "fail=1", "now,fail=0", "now,fail=150%", "soon,x=1",
                                   "now,success=50%"])
def test_bad_halt_values(value: str) -> None:
    with pytest.raises(UsageError, match="--halt"):
        parse_halt(value)


def test_durations_and_job_slots() -> None:
    assert parse_duration("--timeout", "90") == 90
    assert parse_duration("--timeout", "1d3.5h16.6m4s") == pytest.approx(100000, abs=1)
    cpus = os.cpu_count() or 1
    assert jobs_to_slots("4", 10) == 4
    assert jobs_to_slots("0", 7) == 7 and jobs_to_slots("0", 10**6) == 250
    assert jobs_to_slots("+2", 1) == cpus + 2 and jobs_to_slots("-100", 1) == 1
    assert jobs_to_slots("200%", 1) == 2 * cpus
