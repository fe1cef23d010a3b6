"""What `shoal results`, `logs`, `status`, `workers` and `work` show a user, on folder and
sqlite queues: order, width, filters, lookup, earlier attempts, following, watching."""

from __future__ import annotations

import csv
import json
import os
import pty
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal.cli import main
from shoal.job import Job, State
from shoal.queue import open_queue
from shoal.queue.sqlite import SqliteQueue
from shoal.serve.coordinator import Coordinator
from tests.conftest import wait_for
from tests.procs import run_shoal

pytestmark = pytest.mark.timeout(180)
T = 60.0  # generous: the machine is shared and loaded


@pytest.fixture(params=["folder", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "folder":
        return str(tmp_path / "q")
    return f"sqlite://{tmp_path / 'q.sqlite'}"


def cli(*args: str, columns: int | None = None) -> object:
    """`shoal ...` in-process; COLUMNS as a terminal of that width would set it."""
    env = {"COLUMNS": str(columns)} if columns else {}
    return CliRunner().invoke(main, list(args), env=env)


def shoal(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    return run_shoal(*args, check=check, timeout=T)


def json_rows(url: str, *more: str) -> list[dict]:
    return [json.loads(line) for line in cli("results", url, "--format", "json",
                                             *more).output.splitlines()]


def numbered(url: str) -> bool:
    """Whether this backend fills JobStatus.seq yet (the queue engineer's part of issue 14)."""
    with open_queue(url) as queue:
        return all(status.seq > 0 for status in queue.jobs())


def drain(url: str) -> subprocess.CompletedProcess:
    return shoal("work", url, "--drain", "--slots", "2")


# -- results ----------------------------------------------------------------------------

def test_results_in_submission_order_filtered_with_reasons(url):
    cli("submit", url, "exit $(( {} % 3 ))", ":::", *[str(n) for n in range(12)])
    drain(url)
    rows = json_rows(url)
    assert len(rows) == 12
    if numbered(url):  # 10 does not come before 2, as names sorted as strings did
        assert [row["seq"] for row in rows] == list(range(1, 13))
        assert [row["params"]["1"] for row in rows] == [str(n) for n in range(12)]
    failed = json_rows(url, "--state", "failed")
    assert len(failed) == 8 and {row["state"] for row in failed} == {"failed"}
    assert {row["reason"] for row in failed} == {"exit status 1", "exit status 2"}
    assert len(json_rows(url, "--state", "failed,done", "--limit", "5")) == 5
    table = cli("results", url, "--state", "failed").output
    assert "reason" in table.splitlines()[0] and table.count("exit status 2") == 4
    assert " done " not in table


def test_a_bad_state_is_one_line_naming_the_option(url):
    cli("submit", url, "true", ":::", "a")
    done = shoal("results", url, "--state", "finished", check=2)
    assert done.stderr.startswith("shoal: error: --state: 'finished' is not a state")
    assert len(done.stderr.splitlines()) == 1


def test_csv_has_a_column_per_parameter(url, tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("x,name\n1,alpha\n2,beta\n")
    cli("submit", "--table", str(table), url, "echo {x} {name}")
    drain(url)
    lines = list(csv.reader(cli("results", url, "--format", "csv").output.splitlines()))
    header = lines[0]
    assert header[:3] == ["seq", "id", "name"]
    assert header[-2:] in (["x", "param.name"], ["param.name", "x"])
    by_x = {line[header.index("x")]: line for line in lines[1:]}
    assert by_x["2"][header.index("param.name")] == "beta"
    assert by_x["1"][header.index("state")] == "done"
    assert json.loads(by_x["1"][header.index("params")]) == {"x": "1", "name": "alpha"}


def test_the_table_fits_the_terminal(url):
    long_word = "w" * 150
    cli("submit", url, f"echo {long_word} {{}}", ":::", "a", "b")
    drain(url)
    narrow = cli("results", url, columns=80).output.splitlines()
    assert len(narrow) == 3 and all(len(line) <= 80 for line in narrow)
    assert narrow[0].split()[:4] == ["#", "name", "state", "exit"]
    assert all("…" in line and " done " in line for line in narrow[1:])
    wide = cli("results", url, columns=400).output.splitlines()
    assert "log" in wide[0] and "…" not in "\n".join(wide)
    assert max(len(line) for line in wide) > 200  # not cut to a fixed 160
    piped = shoal("results", url).stdout  # a pipe: whole lines, whatever the width
    assert "…" not in piped and all(row["name"] in piped for row in json_rows(url))


# -- lookup -----------------------------------------------------------------------------

def test_lookup_by_number_id_name_and_candidates(url):
    with open_queue(url) as queue:
        queue.submit([Job.command_job(f"echo job {n}", name="twin" if n in (3, 4) else
                                      f"job{n}") for n in range(1, 13)])
        ids = {s.job.name: s.job.id for s in queue.jobs() if s.job.name != "twin"}
        twins = [s.job.id for s in queue.jobs() if s.job.name == "twin"]
    drain(url)
    assert cli("logs", url, "job7").output == "job 7\n"
    assert cli("logs", url, ids["job11"]).output == "job 11\n"
    assert cli("logs", url, ids["job11"][:6]).output == "job 11\n"
    ambiguous = shoal("logs", url, "twin", check=2).stderr
    assert "2 jobs are named 'twin'" in ambiguous
    assert all(twin in ambiguous for twin in twins) and "done" in ambiguous
    one = shoal("logs", url, "1", check=2).stderr  # never "the id that starts with 1"
    assert "no job matching '1'" in one and "#1" in one
    assert "at least 6 characters" in shoal("logs", url, ids["job5"][:3], check=2).stderr
    if numbered(url):
        assert cli("logs", url, "#10").output == "job 10\n"
        assert "no job #13" in shoal("logs", url, "#13", check=2).stderr


# -- logs -------------------------------------------------------------------------------

def test_logs_of_earlier_attempts(url, tmp_path):
    mark = tmp_path / "tried"
    cli("submit", "--retries", "2", url,
        f": {{}}; if [ -e {mark} ]; then echo second; else touch {mark}; echo first; exit 3; fi",
        ":::", "x")
    drain(url)
    (row,) = json_rows(url)
    assert (row["state"], row["attempts"]) == ("done", 2)
    assert cli("logs", url, row["id"], "--attempt", "1").output == "first\n"
    assert cli("logs", url, row["id"], "--attempt", "2").output == "second\n"
    assert cli("logs", url, row["id"]).output == "second\n"
    missing = shoal("logs", url, row["id"], "--attempt", "3", check=2).stderr
    assert "no attempt 3 (its attempts: 1, 2)" in missing


def test_logs_follow_prints_a_running_log_until_the_job_ends(url, tmp_path, procs):
    gate = tmp_path / "gate"
    cli("submit", url, f"echo one; while [ ! -e {gate} ]; do sleep 0.1; done; echo two {{}}",
        ":::", "x")
    (row,) = json_rows(url)
    procs.shoal("work", url, "--drain", "--slots", "1", apart=True)
    wait_for(lambda: json_rows(url)[0]["state"] == "running", T, message="the job to start")
    follower = procs.shoal("logs", url, row["id"], "--follow", apart=True)
    wait_for(lambda: procs.output(follower) == "one\n", T, message="the log so far")
    assert follower.poll() is None  # still following
    gate.touch()
    assert follower.wait(timeout=T) == 0, procs.errors(follower)
    assert procs.output(follower) == "one\ntwo x\n"


def test_logs_follow_a_job_on_a_remote_queue(tmp_path, procs):
    """Over TCP the log so far comes with the worker's beats: follow prints it, then the
    rest once the job ends (read through queue.files, as for any queue)."""
    gate = tmp_path / "gate"
    coordinator = Coordinator(SqliteQueue(tmp_path / "served.db", lease_s=2.0),
                              status_dir=tmp_path / "status").start()
    try:
        url = str(tmp_path / "status")
        cli("submit", url, f"echo one; while [ ! -e {gate} ]; do sleep 0.1; done; echo {{}}",
            ":::", "two")
        (row,) = json_rows(url)
        procs.shoal("work", url, "--drain", "--slots", "1", apart=True)
        follower = procs.shoal("logs", url, row["id"], "--follow", apart=True)
        wait_for(lambda: procs.output(follower) == "one\n", T, message="the shipped log so far")
        gate.touch()
        assert follower.wait(timeout=T) == 0, procs.errors(follower)
        assert procs.output(follower) == "one\ntwo\n"
    finally:
        coordinator.stop()


def test_logs_follow_waits_for_a_pending_job(url, procs):
    cli("submit", url, "echo late {}", ":::", "x")
    (row,) = json_rows(url)
    follower = procs.shoal("logs", url, row["id"], "-f", apart=True)
    wait_for(lambda: "pending" in procs.errors(follower), T, message="a note that it waits")
    procs.shoal("work", url, "--drain", apart=True)
    assert follower.wait(timeout=T) == 0, procs.errors(follower)
    assert procs.output(follower) == "late x\n"


# -- status and workers -----------------------------------------------------------------

def test_status_says_why_jobs_failed_and_speaks_json(url):
    cli("submit", url, "exit $(( {} / 10 ))", ":::", "0", "30", "31", "40")
    drain(url)
    text = cli("status", url).output
    assert "1 done, 3 failed" in text
    assert "2 x exit status 3" in text and "1 x exit status 4" in text
    data = json.loads(cli("status", url, "--format", "json").output)
    assert data["counts"] == {"waiting": 0, "pending": 0, "running": 0, "done": 1, "failed": 3,
                              "cancelled": 0}
    assert data["total"] == 4 and data["workers"] == {"alive": 0, "slots": 0, "lost": 0}
    assert data["failures"][0]["reason"] == "exit status 3"
    assert data["failures"][0]["count"] == 2


def test_status_watch_prints_changes_until_interrupted(url, procs):
    cli("submit", url, "true", ":::", "a")
    watcher = procs.shoal("status", url, "--watch", apart=True)
    wait_for(lambda: "1 pending" in procs.output(watcher), T, message="the first status")
    cli("submit", url, "true", ":::", "b", "c")
    wait_for(lambda: "3 pending" in procs.output(watcher), T, message="the status after a submit")
    assert "\x1b[" not in procs.output(watcher)  # not a terminal: plain lines, no redrawing
    watcher.send_signal(signal.SIGINT)
    assert watcher.wait(timeout=T) == 0


def test_status_watch_redraws_in_place_on_a_terminal(url):
    cli("submit", url, "true", ":::", "a")
    controller, terminal = pty.openpty()
    watcher = subprocess.Popen([sys.executable, "-m", "shoal", "status", url, "--watch"],
                               stdin=terminal, stdout=terminal, stderr=terminal,
                               start_new_session=True, env={**os.environ, "COLUMNS": "100"})
    os.close(terminal)
    seen = b""
    try:
        def more() -> bool:
            nonlocal seen
            if select.select([controller], [], [], 0.2)[0]:
                seen += os.read(controller, 65536)
            return seen.count(b"1 pending") >= 2
        wait_for(more, T, interval_s=0, message="two drawings of the status")
        assert b"\x1b[" in seen and b"Ctrl-C to stop" in seen
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=T) == 0
    finally:
        if watcher.poll() is None:
            os.killpg(watcher.pid, signal.SIGKILL)
            watcher.wait(timeout=10)
        os.close(controller)


def test_workers_json_lists_a_running_worker(url, procs):
    cli("submit", url, "sleep 30", ":::", "a")
    assert json.loads(cli("workers", url, "--format", "json").output) == []
    worker = procs.shoal("work", url, "--slots", "3", apart=True)
    rows = wait_for(lambda: json.loads(cli("workers", url, "--format", "json").output), T,
                    message="the worker to register")
    assert [(row["slots"], row["pid"], row["state"]) for row in rows] == [
        (3, worker.pid, rows[0]["state"])]
    assert rows[0]["state"] in ("working", "idle")
    worker.send_signal(signal.SIGTERM)


# -- shoal work ---------------------------------------------------------------------------

def test_work_prints_a_line_per_ended_job_unless_quiet(url):
    cli("submit", "--retries", "2", url, "sleep 0.{}; exit {}", ":::", "0", "3")
    rows = {row["params"]["1"]: row for row in json_rows(url)}
    err = drain(url).stderr.splitlines()
    ok, bad = (f"#{rows[n]['seq']} {rows[n]['id']}  " for n in "03")  # as `shoal logs` takes
    assert (rows["0"]["seq"], rows["3"]["seq"]) == (1, 2)
    assert any(line.startswith(f"done   {ok}") and line.endswith(" s)") for line in err), err
    assert any(line.startswith(f"retry  {bad}") and "exit status 3" in line for line in err), err
    assert any(line.startswith(f"failed {bad}") and "exit status 3" in line for line in err), err
    assert cli("logs", url, f"#{rows['3']['seq']}").exit_code == 0
    cli("retry", url, "--failed")
    quiet = shoal("work", url, "--drain", "-q")
    assert quiet.stderr == "" and json_rows(url, "--state", "failed")


def test_a_cancelled_job_is_found_by_number_and_state(url):
    cli("submit", url, "true", ":::", "a", "b")
    first = json_rows(url)[0]
    assert "1 job(s) cancelled" in cli("cancel", url, first["id"]).output
    assert [row["id"] for row in json_rows(url, "--state", "cancelled")] == [first["id"]]
    assert "0 failed, 1 cancelled" in cli("status", url).output
    assert State.CANCELLED.value in shoal("logs", url, first["id"], check=2).stderr


def test_a_cancelled_running_job_keeps_its_partial_log(url, procs):
    cli("submit", url, "echo partial {}; sleep 60", ":::", "x")
    (row,) = json_rows(url)
    worker = procs.shoal("work", url, "--slots", "1", "--lease", "2", apart=True)
    wait_for(lambda: cli("logs", url, row["id"]).output == "partial x\n", T,
             message="the running job's first line")
    assert "1 job(s) cancelled" in cli("cancel", url, row["id"]).output
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=T) == 0
    shown = cli("logs", url, row["id"])
    assert (shown.exit_code, shown.output) == (0, "partial x\n")


def test_output_prints_every_finished_jobs_output_in_submission_order(url: str):
    """`shoal output Q`: the sweep's output again, in input order, from the queue alone."""
    done = shoal("run", "--queue", url, "--no-progress", "-j", "2",
                 "echo out {}; [ {} != 3 ]", ":::", *map(str, range(1, 7)), check=None)
    assert done.returncode == 1, done.stderr  # job 3 failed
    printed = shoal("output", url).stdout
    assert printed.splitlines() == [f"out {i}" for i in range(1, 7)]
    only_failed = shoal("output", url, "--state", "failed").stdout
    assert only_failed == "out 3\n"


def test_an_id_prefix_of_six_digits_names_its_job(tmp_path):
    """One id in 17 starts with six digits: such a prefix, copied from `shoal results`, must
    work (a bare short number never does: it suggests #N)."""
    queue = open_queue(str(tmp_path / "q"))
    job = next(Job.command_job("true", params={"i": i}) for i in range(10_000)
               if Job.command_job("true", params={"i": i}).id[:6].isdigit())
    queue.submit([job, Job.command_job("echo other")])
    assert cli("cancel", str(tmp_path / "q"), job.id[:6]).output == "1 job(s) cancelled\n"
    assert "'#1'" in shoal("logs", str(tmp_path / "q"), "1", check=2).stderr
