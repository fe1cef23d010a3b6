"""The `shoal` command as a user types it: drop-in folders, submit, run, inspect, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal.cli import main
from shoal.job import State
from shoal.queue import open_queue
from shoal.queue.folder import FolderQueue
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)


def shoal(*args: str, cwd: Path | None = None,
          check: int | None = 0) -> subprocess.CompletedProcess:
    """Run the real `shoal` command in a subprocess, as a user would."""
    done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=90)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


def cli(*args: str) -> object:
    """Run `shoal` in-process (fast) with click's runner."""
    return CliRunner().invoke(main, list(args))


def make_dropins(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "a.py").write_text('print("python job")\n')
    (folder / "b.sh").write_text('echo "shell job $SHOAL_JOB_NAME"\nexit 4\n')
    (folder / "reader.py.txt").write_text("not a job")
    (folder / "c.ini").write_text(
        "[control]\nexecutable = python3 -c 'import sys; print(open(sys.argv[-1]).read())'\n"
        "[params]\nx = 5\n")
    (folder / "d.toml").write_text(
        '[control]\nexecutable = ["sh", "-c", "echo toml $SHOAL_PARAM_y"]\n[params]\ny = 2\n')
    (folder / "e.ini").write_text("[control\nbroken")


def test_drop_in_folder_runs_every_kind_and_marks_bad_files_failed(tmp_path):
    folder = tmp_path / "jobs"
    make_dropins(folder)
    shoal("work", str(folder), "--drain", "--slots", "2")
    assert (folder / "a.py.log").read_text() == "python job\n"
    assert not (folder / "b.sh.log").exists()  # a failed job's log is not "done" beside it
    assert shoal("logs", str(folder), "b.sh").stdout == "shell job b.sh\n"
    assert "x = 5" in (folder / "c.ini.log").read_text()
    assert (folder / "d.toml.log").read_text() == "toml 2\n"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        ["a.py", "a.py.log", "b.sh", "c.ini", "c.ini.log", "d.toml",
         "d.toml.log", "e.ini", "reader.py.txt"])
    rows = {row["name"]: row for row in map(json.loads, shoal(
        "results", str(folder), "--format", "json").stdout.splitlines())}
    assert {name: row["state"] for name, row in rows.items()} == {
        "a.py": "done", "b.sh": "failed", "c.ini": "done", "d.toml": "done", "e.ini": "failed"}
    assert rows["b.sh"]["exit_code"] == 4 and rows["b.sh"]["reason"] == "exit status 4"
    assert "e.ini" in rows["e.ini"]["reason"] and "malformed" in rows["e.ini"]["reason"]
    # Running again skips what is done: no job runs twice (a deleted log makes its job
    # run again: tests/test_folder_dropins.py).
    shoal("work", str(folder), "--drain")
    assert (folder / "a.py.log").read_text() == "python job\n"
    assert shoal("logs", str(folder), "e.ini").stdout.startswith("shoal: malformed: ")


def test_jobs_dropped_while_a_worker_runs_are_picked_up(tmp_path, procs):
    folder = tmp_path / "jobs"
    folder.mkdir()
    worker = procs.shoal("work", str(folder), "--slots", "1")
    wait_for(lambda: (folder / ".shoal" / "workers").is_dir() and FolderQueue(folder).workers(),
             20, message="the worker to start")
    (folder / ".late.py.tmp").write_text('print("late")\n')
    os.rename(folder / ".late.py.tmp", folder / "late.py")  # how a careful writer drops one
    wait_for(lambda: (folder / "late.py.log").exists(), 20, message="the late job to run")
    assert (folder / "late.py.log").read_text() == "late\n"
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=20) == 0


def test_a_partial_log_never_counts_as_done(tmp_path, procs):
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "slow.sh").write_text(
        'echo start\nif [ -n "$VICTIM" ]; then sleep 60; fi\necho end\n')
    victim = procs.shoal("work", str(folder), "--lease", "1", env={"VICTIM": "1"})
    queue = FolderQueue(folder)
    wait_for(lambda: queue.counts()[State.RUNNING] == 1, 20, message="the job to start")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (folder / "slow.sh.log").exists()
    assert queue.counts()[State.DONE] == 0
    shoal("work", str(folder), "--drain", "--lease", "1")
    assert (folder / "slow.sh.log").read_text() == "start\nend\n"
    (result,) = list(queue.results())
    assert (result.state, result.attempt) == (State.DONE, 2)


def test_submit_copies_job_files_under_unique_names(tmp_path):
    queue, src = tmp_path / "q", tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text("print(1)\n")
    assert "1 new" in cli("submit", str(queue), str(src / "job.py")).output
    assert "0 new" in cli("submit", str(queue), str(src / "job.py")).output
    (src / "job.py").write_text("print(2)\n")
    assert "1 new" in cli("submit", str(queue), str(src / "job.py")).output
    names = sorted(p.name for p in queue.iterdir() if p.suffix == ".py")
    assert len(names) == 2 and "job.py" in names
    shoal("work", str(queue), "--drain")
    logs = sorted((queue / f"{name}.log").read_text() for name in names)
    assert logs == ["1\n", "2\n"]


def test_run_like_gnu_parallel_resumes_and_reports(tmp_path):
    out = shoal("run", "--no-progress", "-j", "2", "echo {} > out-{}", ":::", "a", "b", "c",
                cwd=tmp_path)
    assert "3 jobs: 3 done" in out.stderr
    assert sorted(p.read_text() for p in tmp_path.glob("out-*")) == ["a\n", "b\n", "c\n"]
    for path in tmp_path.glob("out-*"):
        path.unlink()
    again = shoal("run", "--no-progress", "echo {} > out-{}", ":::", "a", "b", "c",
                  cwd=tmp_path)
    assert "3 done (3 already before)" in again.stderr
    assert list(tmp_path.glob("out-*")) == []


def test_run_exit_status_says_whether_every_job_succeeded(tmp_path):
    failed = shoal("run", "--no-progress", "exit {}", ":::", "0", "3", cwd=tmp_path, check=1)
    assert "1 done, 1 failed" in failed.stderr and "exit status 3" in failed.stderr
    csv_out = shoal("results", ".shoal-run", "--format", "csv", cwd=tmp_path).stdout
    assert csv_out.splitlines()[0].startswith("seq,id,name,params,state,exit_code,attempts,host")
    assert len(csv_out.splitlines()) == 3


def test_logs_cancel_and_retry(tmp_path):
    queue = tmp_path / "q"
    cli("submit", str(queue), "echo {}", ":::", "hello", "later")
    jobs = {s.job.name: s.job.id for s in FolderQueue(queue).jobs()}
    later = next(job_id for name, job_id in jobs.items() if "later" in name)
    assert "1 job(s) cancelled" in cli("cancel", str(queue), later[:6]).output
    shoal("work", str(queue), "--drain")
    hello = next(name for name in jobs if "hello" in name)
    assert cli("logs", str(queue), hello).output == "hello\n"
    assert "1 job(s) back" in cli("retry", str(queue), "--cancelled").output
    shoal("work", str(queue), "--drain")
    assert cli("logs", str(queue), later).output == "later\n"


@pytest.mark.parametrize("args, message", [
    (["status", "nowhere"], "nowhere: no such queue"),
    (["work", "nowhere"], "no such folder"),
    (["status", "redis2://x"], "unknown queue scheme"),
    (["run", "no-such-file.py"], "not a job file"),
    (["submit", "q", "echo {3}", ":::", "a", ":::", "b"], "{3}"),
    (["logs", "q", "nope"], "no job matching"),
])
def test_bad_input_gets_one_clear_line_and_exit_2(tmp_path, args, message):
    open_queue(str(tmp_path / "q"))  # an empty queue
    done = shoal(*args, cwd=tmp_path, check=2)
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
