"""`shoal run` shows what its jobs print and ends like GNU parallel: grouped output (a
job's stdout on stdout, its stderr on stderr), -k, --tag, --line-buffer, output into a
file (also under the live bar), --halt, --fresh, the exit status and the failure summary.
Every run is a real `shoal` process running real jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import redis_queue_url, wait_for

pytestmark = pytest.mark.timeout(120)

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}

# A `shoal run` whose options are given as a RunPlan (the words that set them are parsed
# elsewhere): argv[1] is JSON with the queue, the commands and RunPlan's fields.
DRIVER = """
import json, sys
from shoal.job import Job
from shoal.runwatch import run_plan
from shoal.queue import open_queue
from shoal.runplan import Halt, RunPlan
spec = json.loads(sys.argv[1])
cwd = spec.pop("cwd")
apart = spec.pop("stderr_apart", False)
jobs = [Job.command_job(c, cwd=cwd, stderr_apart=apart) for c in spec.pop("commands")]
tags = dict(zip((j.id for j in jobs), spec.pop("tags", [])))
halt = Halt(**spec.pop("halt", {}))
queue = open_queue(spec.pop("queue"))
sys.exit(run_plan(queue, RunPlan(jobs, halt=halt, tags=tags, **spec)))
"""


def plan_argv(tmp_path: Path, commands: list[str], **fields: object) -> list[str]:
    spec = {"queue": str(tmp_path / "q"), "cwd": str(tmp_path), "commands": commands,
            "show_progress": False, **fields}
    return [sys.executable, "-c", DRIVER, json.dumps(spec)]


def run(tmp_path: Path, commands: list[str], **fields: object) -> subprocess.CompletedProcess:
    """Run the plan to its end; stdout and stderr apart, as text."""
    return subprocess.run(plan_argv(tmp_path, commands, **fields), capture_output=True,
                          text=True, timeout=90, env=ENV, cwd=tmp_path)


def shoal(tmp_path: Path, *args: str, **options: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                          text=True, timeout=90, env=ENV, cwd=tmp_path, **options)


@contextlib.contextmanager
def shoal_run_in_background(tmp_path: Path, *words: str) -> Iterator[subprocess.Popen[str]]:
    """`shoal run --no-progress WORDS` in its own session; killed by its group at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "run", "--no-progress", *words],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=tmp_path, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def blocks(out: str) -> list[str]:
    """The job each output line belongs to (its first word), runs of one job merged."""
    owners = [line.split("-")[0] for line in out.splitlines()]
    return [o for i, o in enumerate(owners) if i == 0 or owners[i - 1] != o]


CHATTY = "for i in $(seq 1 30); do echo {}-$i; sleep 0.01; done"


def test_outputs_are_printed_whole_never_interleaved_with_two_slots(tmp_path):
    done = shoal(tmp_path, "run", "--no-progress", "-j", "2", CHATTY, ":::", "a", "b", "c")
    assert done.returncode == 0, done.stderr
    assert sorted(blocks(done.stdout)) == ["a", "b", "c"], done.stdout
    for job in "abc":
        assert [line for line in done.stdout.splitlines() if line.startswith(job)] == \
            [f"{job}-{i}" for i in range(1, 31)]
    assert "3 jobs: 3 done" in done.stderr and "a-1" not in done.stderr


def test_output_redirected_to_a_file_holds_every_jobs_stdout_and_stderr_goes_to_stderr(
        tmp_path):
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        done = subprocess.run([sys.executable, "-m", "shoal", "run", "--no-progress", "-j", "2",
                               "echo out-{}; echo err-{} >&2; echo more-err-{} >&2", ":::",
                               "1", "2", "3"],
                              stdout=out, stderr=err, text=True, env=ENV, cwd=tmp_path,
                              timeout=90)
    errors = (tmp_path / "err.txt").read_text()
    assert done.returncode == 0, errors
    assert sorted((tmp_path / "out.txt").read_text().splitlines()) == ["out-1", "out-2",
                                                                       "out-3"]
    lines = errors.splitlines()
    assert sorted(line for line in lines if "err-" in line) == sorted(
        f"{s}-{n}" for s in ("err", "more-err") for n in "123")
    for n in "123":  # each job's stderr grouped: its two lines together
        assert lines.index(f"more-err-{n}") - lines.index(f"err-{n}") == 1
    assert "3 jobs: 3 done" in errors


def test_keep_order_and_tag_apply_to_stdout_and_stderr_alike(tmp_path):
    # c ends first, a last: -k prints both streams in input order all the same
    command = ("until [ -e {}.go ]; do sleep 0.02; done; echo out {}; echo err {} >&2; "
               "case {} in c) touch b.go;; b) touch a.go;; esac")
    (tmp_path / "c.go").touch()
    done = shoal(tmp_path, "run", "--no-progress", "-j", "3", "-k", "--tag", command,
                 ":::", "a", "b", "c")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a\tout a\nb\tout b\nc\tout c\n"
    assert [line for line in done.stderr.splitlines() if "\terr " in line] == [
        "a\terr a", "b\terr b", "c\terr c"]


def test_shoal_logs_and_output_show_a_run_jobs_stdout_and_its_stderr_apart(tmp_path):
    done = shoal(tmp_path, "run", "--no-progress", "echo out-{}; echo err-{} >&2; exit 1",
                 ":::", "a")
    assert done.returncode == 1 and done.stdout == "out-a\n", done.stderr
    assert done.stderr.startswith("err-a\n")  # the job's stderr, then the summary
    failed = [line for line in done.stderr.splitlines() if line.startswith("  failed:")]
    assert failed[0].endswith("exit status 1: err-a")  # its stderr's last line says why
    logs = shoal(tmp_path, "logs", ".shoal-run", "#1")
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, "out-a\n", "err-a\n")
    output = shoal(tmp_path, "output", ".shoal-run")
    assert (output.returncode, output.stdout, output.stderr) == (0, "out-a\n", "err-a\n")


def test_each_attempt_keeps_its_own_stderr(tmp_path):
    done = shoal(tmp_path, "run", "--no-progress", "--retries", "2",
                 "echo out-$SHOAL_ATTEMPT; echo err-$SHOAL_ATTEMPT >&2; exit 1", ":::", "z")
    assert done.returncode == 1 and done.stdout == "out-2\n", done.stderr
    for attempt in ("1", "2"):
        logs = shoal(tmp_path, "logs", ".shoal-run", "#1", "--attempt", attempt)
        assert (logs.returncode, logs.stdout, logs.stderr) == (
            0, f"out-{attempt}\n", f"err-{attempt}\n")
    assert shoal(tmp_path, "clean", ".shoal-run").returncode == 0
    assert not list(tmp_path.glob(".shoal-run/**/*.err"))  # gone with their logs


def test_a_network_store_keeps_one_log_stdout_then_stderr(tmp_path, procs):
    # the known gap: a shipped log holds both streams, so both come on stdout
    url = redis_queue_url()
    proc = subprocess.Popen(plan_argv(tmp_path, ["echo out; echo err >&2"], queue=url,
                                      slots=0, stderr_apart=True),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            cwd=tmp_path, start_new_session=True)
    try:
        procs.shoal("work", url, "--slots", "1", cwd=tmp_path)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out == b"out\nerr\n"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_line_buffer_prints_stderr_when_the_job_ends(tmp_path):
    done = shoal(tmp_path, "run", "--no-progress", "--line-buffer", "--tag",
                 "echo out {}; echo err {} >&2", ":::", "a")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a\tout a\n" and "a\terr a\n" in done.stderr


def test_the_same_command_again_prints_the_outputs_without_running_again(tmp_path):
    first = shoal(tmp_path, "run", "--no-progress", "echo {}; echo ran >> runs.txt",
                  ":::", "x", "y")
    again = shoal(tmp_path, "run", "--no-progress", "echo {}; echo ran >> runs.txt",
                  ":::", "x", "y")
    assert sorted(first.stdout.split()) == sorted(again.stdout.split()) == ["x", "y"]
    assert "2 done (2 already before)" in again.stderr
    assert (tmp_path / "runs.txt").read_text().count("ran") == 2


def with_pty(argv: list[str], *, stdout_file: Path | None, timeout_s: float = 60) -> tuple[
        int, str]:
    """Run `argv` with stderr (and stdout unless `stdout_file`) on a terminal, so the live
    bar shows; return its exit status and what the terminal received."""
    primary, secondary = pty.openpty()
    out = open(stdout_file, "wb") if stdout_file else secondary  # noqa: SIM115
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=secondary,
                                env={**ENV, "COLUMNS": "120"}, start_new_session=True)
    finally:
        os.close(secondary)
        if stdout_file:
            out.close()  # type: ignore[union-attr]
    seen = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed: every writer exited
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(primary)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=30), seen.decode(errors="replace")


def test_under_the_live_bar_stdout_to_a_file_still_gets_the_outputs(tmp_path):
    argv = plan_argv(tmp_path, [f"echo line-{n}" for n in range(5)], show_progress=True)
    code, terminal = with_pty(argv, stdout_file=tmp_path / "out.txt")
    assert code == 0, terminal
    assert sorted((tmp_path / "out.txt").read_text().split()) == [f"line-{n}" for n in range(5)]
    assert "line-" not in terminal and "5 jobs: 5 done" in terminal


def test_under_the_live_bar_a_terminal_stdout_shows_the_outputs(tmp_path):
    argv = plan_argv(tmp_path, [f"echo line-{n}" for n in range(5)], show_progress=True)
    code, terminal = with_pty(argv, stdout_file=None)
    assert code == 0, terminal
    assert all(f"line-{n}" in terminal for n in range(5)), terminal


def test_keep_order_prints_in_input_order_jobs_that_end_in_reverse(tmp_path):
    # b waits for c to end and a for b: they can only end in the reverse of input order
    commands = ["until [ -e b.done ]; do sleep 0.02; done; echo a; touch a.done",
                "until [ -e c.done ]; do sleep 0.02; done; echo b; touch b.done",
                "echo c; touch c.done"]
    done = run(tmp_path, commands, slots=3, keep_order=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a\nb\nc\n"


def test_tags_prefix_every_line_with_the_tag_and_a_tab(tmp_path):
    done = run(tmp_path, ["printf 'x\\ny\\n'", "printf 'z'"], tags=["first", "second"],
               keep_order=True, slots=1)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "first\tx\nfirst\ty\nsecond\tz"  # no newline added, as parallel


def test_line_buffer_prints_a_line_before_its_job_ends(tmp_path):
    # The job ends only after the test saw its first line on shoal's stdout.
    command = "echo first; until [ -e go ]; do sleep 0.02; done; echo second"
    proc = subprocess.Popen(plan_argv(tmp_path, [command], line_buffer=True),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            cwd=tmp_path, start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no line within 60 s"
        assert proc.stdout.readline() == b"first\n"  # type: ignore[union-attr]
        assert not (tmp_path / "go").exists()
        (tmp_path / "go").touch()
        rest, err = proc.communicate(timeout=60)
        assert rest == b"second\n" and proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_another_workers_jobs_print_from_their_shipped_logs_line_buffer_too(tmp_path, procs):
    url = redis_queue_url()
    commands = ["echo first; until [ -e go ]; do sleep 0.02; done; echo second",
                "echo remote-a", "echo remote-b"]
    proc = subprocess.Popen(plan_argv(tmp_path, commands, queue=url, slots=0, line_buffer=True),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            cwd=tmp_path, start_new_session=True)
    try:
        procs.shoal("work", url, "--slots", "3", "--lease", "2", cwd=tmp_path)
        seen = []
        while "first" not in seen:  # from the beats' log tails: the job is still running
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, f"only {seen} within 60 s"
            seen.append(proc.stdout.readline().decode().strip())  # type: ignore[union-attr]
        assert not (tmp_path / "go").exists()
        (tmp_path / "go").touch()
        rest, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert sorted(seen + rest.decode().split()) == ["first", "remote-a", "remote-b",
                                                         "second"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_halt_now_fail_1_kills_running_jobs_starts_no_more_and_exits_with_its_status(
        tmp_path):
    # memory:// hands jobs out in input order: the sleeper and the failing job run first
    commands = ["echo $$ > sleeper.pid; echo sleeper; exec sleep 60",
                "until [ -e sleeper.pid ]; do sleep 0.02; done; echo failing; exit 7",
                *[f"echo later-{n}; sleep 60" for n in range(5)]]
    started = time.monotonic()
    done = run(tmp_path, commands, slots=2, halt={"when": "now", "fail": 1},
               queue="memory://")
    assert done.returncode == 7, done.stderr
    assert time.monotonic() - started < 45  # not the sleepers' 60 s
    assert done.stdout == "failing\n"  # killed jobs print nothing, as in parallel
    assert "--halt now,fail=1 reached" in done.stderr
    assert "0 done, 1 failed, 6 stopped by --halt" in done.stderr
    pid = int((tmp_path / "sleeper.pid").read_text())
    wait_for(lambda: not alive(pid), 30, message="the running job killed")


def test_halt_soon_lets_running_jobs_finish_and_starts_no_more(tmp_path):
    # a later job lasts 3 s: the halt comes long before the freed slot could take a third
    commands = ["touch sleeper.started; sleep 3; echo sleeper-finished",
                "until [ -e sleeper.started ]; do sleep 0.02; done; exit 3",
                *[f"sleep 3; echo later-{n}" for n in range(20)]]
    done = run(tmp_path, commands, slots=2, halt={"when": "soon", "fail": 1},
               queue="memory://")
    assert "sleeper-finished" in done.stdout.splitlines()
    later = [line for line in done.stdout.splitlines() if line.startswith("later-")]
    assert len(later) <= 2, done.stdout  # what the freed slot took before the halt
    assert done.returncode == 3, done.stderr
    assert f"{20 - len(later)} stopped by --halt" in done.stderr


def test_halt_now_with_one_slot_starts_no_job_after_the_failing_one(tmp_path):
    # parallel -j1 --halt now,fail=1 'echo {}; exit 1' ::: a b c d e f prints only `a`
    done = shoal(tmp_path, "run", "--no-progress", "-j1", "--halt", "now,fail=1",
                 "echo {}; exit 1", ":::", *"abcdef")
    assert done.stdout == "a\n", done.stderr
    assert done.returncode == 1, done.stderr
    assert "0 done, 1 failed, 5 stopped by --halt" in done.stderr


def test_halt_soon_on_a_share_with_one_slot_exits_like_parallel(tmp_path):
    # parallel: the second failure is 20% of 10 jobs; no job starts after it: exit 20
    done = shoal(tmp_path, "run", "--no-progress", "-j1", "--halt", "soon,fail=20%",
                 "echo {#}; exit {}", ":::", *"0111000000")
    assert done.returncode == 20, done.stderr
    assert done.stdout.split() == ["1", "2", "3"], done.stderr
    assert "1 done, 2 failed, 7 stopped by --halt" in done.stderr


def test_halt_on_a_share_of_failures_exits_with_that_percentage(tmp_path):
    commands = ["exit 1", "exit 2", *[f"echo ok-{n}" for n in range(8)]]
    done = run(tmp_path, commands, slots=1, queue="memory://",
               halt={"when": "now", "fail_pct": 20})
    assert done.returncode == 20, done.stderr  # 2 of 10 failed, as parallel: 20
    assert "--halt now,fail=20% reached" in done.stderr


def test_halt_on_successes_exits_0_and_runs_no_more(tmp_path):
    commands = ["exit 1", "echo ok-1", "exit 1", "echo ok-2",
                *[f"sleep 3; echo ok-{n}" for n in range(3, 9)]]
    done = run(tmp_path, commands, slots=1, queue="memory://",
               halt={"when": "soon", "success": 2})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["ok-1", "ok-2"]
    assert done.stdout.split() == ["ok-1", "ok-2"], done.stdout  # none starts after it


def test_exit_status_is_the_number_of_failed_jobs(tmp_path):
    done = shoal(tmp_path, "run", "--no-progress", "exit {}", ":::", "0", "3", "4", "5")
    assert done.returncode == 3, done.stderr
    assert "1 done, 3 failed" in done.stderr


def test_exit_status_is_capped_at_101_like_parallel(tmp_path):
    done = run(tmp_path, [f"exit {n % 5 + 1}" for n in range(5)] +
               [f"false {n}" for n in range(100)], queue="memory://", slots=4)
    assert done.returncode == 101, done.stderr
    assert "105 failed" in done.stderr


def test_summary_lists_failures_in_input_order_with_their_last_log_line(tmp_path):
    done = shoal(tmp_path, "run", "--no-progress", "-j", "2",
                 "echo about to fail {}; nonexistent-cmd-{}", ":::", "b", "a")
    assert done.returncode == 2, done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("  failed:")]
    assert len(failed) == 2
    assert "nonexistent-cmd-b" in failed[0] and "nonexistent-cmd-a" in failed[1]
    assert all("exit status 127" in line and "not found" in line for line in failed)
    assert "shoal logs" in done.stderr
    assert {"about to fail a", "about to fail b"} <= set(done.stdout.splitlines())


def test_summary_keeps_a_short_last_line_found_inside_the_reason(tmp_path):
    # "a" is inside "exit status 1": the last line is still shown
    done = shoal(tmp_path, "run", "--no-progress", "echo {}; exit 1", ":::", "a")
    failed = [line for line in done.stderr.splitlines() if line.startswith("  failed:")]
    assert len(failed) == 1 and failed[0].endswith("exit status 1: a"), done.stderr


def test_a_local_worker_that_dies_ends_the_run_with_one_line_and_exit_2(tmp_path):
    # a real fault: the queue's folder moved away mid-run
    with shoal_run_in_background(tmp_path, "-j2", "touch started-{}; sleep 0.3", ":::",
                                 *map(str, range(60))) as proc:
        wait_for(lambda: list(tmp_path.glob("started-*")), 60, message="a job running")
        os.rename(tmp_path / ".shoal-run", tmp_path / "moved-away")
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 2, err
    said = [line for line in err.splitlines() if line.startswith("shoal run:")]
    assert len(said) == 1 and said[0].startswith("shoal run: the local worker stopped: "), err
    assert "Traceback" not in err
    assert len(list(tmp_path.glob("started-*"))) < 60  # it stopped, it did not go on


def test_failed_attempts_are_hinted_with_shoal_logs_attempt(tmp_path):
    done = shoal(tmp_path, "run", "--no-progress", "--retries", "2", "echo try; exit 1",
                 ":::", "x")
    assert done.returncode == 1, done.stderr
    assert "(its earlier attempts: --attempt 1..1)" in done.stderr


def test_fresh_runs_done_jobs_again(tmp_path):
    command = "echo ran >> runs.txt; echo ok"
    assert run(tmp_path, [command]).returncode == 0
    again = run(tmp_path, [command], fresh=True)
    assert again.returncode == 0 and again.stdout == "ok\n", again.stderr
    assert (tmp_path / "runs.txt").read_text() == "ran\nran\n"


def test_ctrl_c_ends_the_run_with_130_and_says_how_to_resume(tmp_path):
    with shoal_run_in_background(tmp_path, "echo $$ > job-{}.pid; exec sleep 60", ":::",
                                 "x") as proc:
        wait_for(lambda: (tmp_path / "job-x.pid").exists() and
                 (tmp_path / "job-x.pid").read_text().strip(), 60, message="the job running")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; run the same command again to resume" in err
    pid = int((tmp_path / "job-x.pid").read_text())
    wait_for(lambda: not alive(pid), 30, message="the job killed")
