"""Drop-in folders as people (and the old job-folder tools) leave them: real folders,
real `shoal work` processes, logs checked as files beside the jobs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.job import State
from shoal.queue.folder import FolderQueue
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(180)

# A job that says it ran (in ran.txt beside it) and prints one line.
COUNTING = 'echo "$SHOAL_JOB_NAME" >> ran.txt\necho "out $SHOAL_JOB_NAME"\n'
def shoal(*args: str, check: int | None = 0,
          cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


def ran(folder: Path) -> list[str]:
    path = folder / "ran.txt"
    return path.read_text().split() if path.exists() else []


def drop(folder: Path, name: str, text: str = COUNTING) -> Path:
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_text(text)
    tmp.rename(folder / name)  # whole, as a careful writer drops it
    return folder / name


def test_an_old_folder_keeps_its_meaning(tmp_path: Path) -> None:
    """j5.log beside j5.sh (the old tools' rule) and j6.sh.log (shoal's) mean done."""
    folder = tmp_path / "sweep"
    drop(folder, "j5.sh")
    (folder / "j5.log").write_text("old output\n")
    drop(folder, "j6.sh")
    (folder / "j6.sh.log").write_text("earlier output\n")
    drop(folder, "j7.sh")
    shoal("work", str(folder), "--drain", "--slots", "2")
    assert ran(folder) == ["j7.sh"]
    assert (folder / "j5.log").read_text() == "old output\n"
    assert (folder / "j6.sh.log").read_text() == "earlier output\n"
    assert (folder / "j7.sh.log").read_text() == "out j7.sh\n"
    assert not (folder / "j5.sh.log").exists()
    shoal("work", str(folder), "--drain")  # a new worker's first scan: still nothing to do
    assert ran(folder) == ["j7.sh"]


def test_log_name_setting_writes_old_style_logs(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    FolderQueue(folder)
    (folder / ".shoal" / "queue.toml").write_text('log_name = "{stem}.log"\n')
    drop(folder, "a.sh")
    (folder / "b.sh.log").write_text("done by shoal's default naming\n")
    drop(folder, "b.sh")
    shoal("work", str(folder), "--drain")
    assert (folder / "a.log").read_text() == "out a.sh\n"
    assert not (folder / "a.sh.log").exists()
    assert ran(folder) == ["a.sh"]  # NAME.EXT.log still means done


@pytest.mark.parametrize("setting", ['"{stem}.txt"', '"{nme}.log"', '"logs/{stem}.log"',
                                     '"fixed.log"', "3"])
def test_a_bad_log_name_is_one_line_naming_the_setting(tmp_path: Path, setting: str) -> None:
    folder = tmp_path / "sweep"
    FolderQueue(folder)
    (folder / ".shoal" / "queue.toml").write_text(f"log_name = {setting}\n")
    done = shoal("status", str(folder), check=2)
    assert done.stderr.count("\n") == 1, done.stderr
    assert "queue.toml: log_name" in done.stderr


def test_an_existing_log_is_never_overwritten(tmp_path: Path, procs: object) -> None:
    """A log that appears while the job runs stays; the job's output is still readable."""
    folder = tmp_path / "sweep"
    drop(folder, "w.sh", 'while [ ! -e go ]; do sleep 0.05; done\necho "new output"\n')
    worker = procs.shoal("work", str(folder), "--drain")  # type: ignore[attr-defined]
    queue = FolderQueue(folder)
    wait_for(lambda: queue.counts()[State.RUNNING] == 1, 60, message="the job to start")
    (folder / "w.sh.log").write_text("precious\n")
    (folder / "go").touch()
    assert worker.wait(timeout=120) == 0
    assert (folder / "w.sh.log").read_text() == "precious\n"
    (status,) = queue.jobs()
    assert status.state is State.DONE
    assert shoal("logs", str(folder), "w.sh").stdout == "new output\n"


def test_a_failed_job_leaves_no_log_beside_it_and_each_attempt_keeps_its_own(
        tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    drop(folder, "f.ini", "[control]\nexecutable = bash -c 'echo try $SHOAL_ATTEMPT; exit 3'\n"
                          "retries = 1   ; one more try\n")
    shoal("work", str(folder), "--drain")
    assert not (folder / "f.ini.log").exists()
    (status,) = FolderQueue(folder).jobs()
    assert (status.state, status.attempt) == (State.FAILED, 2)
    assert shoal("logs", str(folder), "f.ini").stdout == "try 2\n"
    (first,) = status.attempts
    assert first.log and Path(first.log).read_text() == "try 1\n"
    shoal("work", str(folder), "--drain")  # failed is not done, and is not run again
    (status,) = FolderQueue(folder).jobs()
    assert (status.state, status.attempt) == (State.FAILED, 2)


def test_deleting_an_old_style_log_runs_the_job(tmp_path: Path, procs: object) -> None:
    folder = tmp_path / "sweep"
    drop(folder, "j5.sh")
    (folder / "j5.log").write_text("old output\n")
    drop(folder, "j8.sh")
    procs.shoal("work", str(folder), "--slots", "1")  # type: ignore[attr-defined]
    # The scan that found j8.sh saw j5.sh with its log: done, not submitted.
    wait_for(lambda: (folder / "j8.sh.log").exists(), 60, message="j8.sh to run")
    assert [status.job.name for status in FolderQueue(folder).jobs()] == ["j8.sh"]
    (folder / "j5.log").unlink()
    wait_for(lambda: (folder / "j5.sh.log").exists(), 60, message="j5.sh to run")
    assert ran(folder) == ["j8.sh", "j5.sh"]
    assert (folder / "j5.sh.log").read_text() == "out j5.sh\n"


def test_deleting_a_log_runs_the_done_job_again(tmp_path: Path, procs: object) -> None:
    folder = tmp_path / "sweep"
    drop(folder, "a.sh")
    procs.shoal("work", str(folder), "--slots", "1")  # type: ignore[attr-defined]
    wait_for(lambda: (folder / "a.sh.log").exists(), 60, message="a.sh to run")
    (folder / "a.sh.log").unlink()
    wait_for(lambda: (folder / "a.sh.log").exists(), 60, message="a.sh to run again")
    assert ran(folder) == ["a.sh", "a.sh"]
    (status,) = FolderQueue(folder).jobs()
    assert status.state is State.DONE


def test_a_log_deleted_while_no_worker_runs_is_seen_by_the_next(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    drop(folder, "a.sh")
    drop(folder, "b.sh")
    shoal("work", str(folder), "--drain")
    (folder / "b.sh.log").unlink()
    shoal("work", str(folder), "--drain")
    assert sorted(ran(folder)) == ["a.sh", "b.sh", "b.sh"]
    assert (folder / "b.sh.log").read_text() == "out b.sh\n"


def test_a_malformed_drop_in_fails_with_its_reason_everywhere(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    drop(folder, "bad.ini", "[control]\nexecutable = true\ntimeout = ten\n")
    drop(folder, "good.sh")
    shoal("work", str(folder), "--drain")
    why = "bad.ini:3: timeout: 'ten' is not a number"
    status = shoal("status", str(folder)).stdout
    assert "1 x malformed: " in status and why in status, status  # whole, never cut
    assert why in shoal("logs", str(folder), "bad.ini").stdout
    rows = [json.loads(line) for line in
            shoal("results", str(folder), "--format", "json").stdout.splitlines()]
    assert {row["name"]: row["state"] for row in rows} == {"bad.ini": "failed", "good.sh": "done"}
    assert why in next(row["reason"] for row in rows if row["name"] == "bad.ini")
    assert not (folder / "bad.ini.log").exists()
    assert ran(folder) == ["good.sh"]


def test_a_named_logfile_is_placed_on_success_and_never_over_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    drop(folder, "n.ini", "[control]\nexecutable = bash -c 'echo named run'\n"
                          "logfile = out/n-run.log   ; beside, in out/\n")
    drop(folder, "m.ini", "[control]\nexecutable = bash -c 'echo second run'\n"
                          "logfile = kept.log\n")
    (folder / "kept.log").write_text("precious\n")
    shoal("work", str(folder), "--drain")
    assert (folder / "out" / "n-run.log").read_text() == "named run\n"
    assert (folder / "kept.log").read_text() == "precious\n"
    assert shoal("logs", str(folder), "m.ini").stdout == "second run\n"
    assert {s.job.name: s.state for s in FolderQueue(folder).jobs()} == {
        "n.ini": State.DONE, "m.ini": State.DONE}


# --- the scanner and the queue's refresh, in process ------------------------------------


def test_the_scanner_reports_each_change_once(tmp_path: Path) -> None:
    from shoal.defaults import INTERPRETERS
    from shoal.dropins import DropIns

    folder = tmp_path / "sweep"
    drop(folder, "a.sh")
    drop(folder, "b.sh")
    (folder / "b.log").write_text("old\n")
    scanner = DropIns(folder, INTERPRETERS)
    first = scanner.scan()
    assert [job.name for job in first.fresh] == ["a.sh"] and not first.unlogged
    assert [job.name for job in first.waiting.values()] == ["a.sh"]
    (folder / "a.sh.log").write_text("out\n")
    second = scanner.scan()
    assert (second.fresh, second.unlogged, second.waiting) == ([], [], {})
    (folder / "a.sh.log").unlink()
    (folder / "b.log").unlink()
    third = scanner.scan()
    assert sorted(job.name for job in third.unlogged) == ["a.sh", "b.sh"]
    assert scanner.scan().unlogged == []
    (folder / "a.sh").unlink()
    assert sorted(job.name for job in scanner.scan().waiting.values()) == ["b.sh"]
    drop(folder, "a.sh")  # dropped again: looked at afresh
    assert [job.name for job in scanner.scan().fresh] == ["a.sh"]


def finish_one(queue: FolderQueue) -> None:
    """What a worker does with a job that succeeds (its log placed beside the file)."""
    from shoal.job import Result

    (lease,) = queue.claim("w1")
    log = queue.files.attempt_log(lease)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("out\n")
    queue.finish(lease, Result(lease.job_id, State.DONE, log=str(log)))


def test_a_log_placed_and_deleted_between_two_scans_is_noticed(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    drop(folder, "a.sh")
    queue = FolderQueue(folder)
    queue.refresh()
    finish_one(queue)
    assert (folder / "a.sh.log").read_text() == "out\n"
    (folder / "a.sh.log").unlink()  # before the scanner ever saw it
    queue.refresh()
    (status,) = queue.jobs()
    assert status.state is State.PENDING


def test_a_done_job_whose_log_went_elsewhere_is_not_run_again(tmp_path: Path) -> None:
    """Its name was taken when it finished: the log stays in .shoal/logs, and counts."""
    folder = tmp_path / "sweep"
    drop(folder, "a.sh")
    queue = FolderQueue(folder)
    queue.refresh()
    (folder / "a.sh.log").write_text("someone else's\n")
    finish_one(queue)
    (folder / "a.sh.log").unlink()
    for view in (queue, FolderQueue(folder)):  # this scanner, and a new worker's
        view.refresh()
        view.refresh()
    (status,) = queue.jobs()
    assert status.state is State.DONE and status.result is not None
    assert Path(status.result.log or "").read_text() == "out\n"


def test_a_forced_retry_places_the_new_runs_log_beside_the_job(tmp_path: Path) -> None:
    """`retry --force` of a done job file: its new output replaces the old beside it (the
    old log moved into .shoal/logs), so NAME.EXT.log never shows the earlier run."""
    folder = tmp_path / "sweep"
    drop(folder, "a.sh", "echo first run\n")
    shoal("work", str(folder), "--drain")
    assert (folder / "a.sh.log").read_text() == "first run\n"
    drop(folder, "a.sh", "echo second run\n")
    assert "1 job(s) back to pending" in shoal("retry", str(folder), "a.sh", "--force").stdout
    shoal("work", str(folder), "--drain")
    assert (folder / "a.sh.log").read_text() == "second run\n"
    assert shoal("logs", str(folder), "a.sh").stdout == "second run\n"


def test_reading_commands_on_a_folder_with_only_worker_logs_say_no_queue(
        tmp_path: Path) -> None:
    """`shoal hire` makes .shoal/worker-logs before any job: that is no queue yet."""
    (tmp_path / "half" / ".shoal" / "worker-logs").mkdir(parents=True)
    for command in ("status", "results", "workers"):
        done = shoal(command, str(tmp_path / "half"), check=2)
        assert done.stderr.count("\n") == 1 and "holds no queue yet" in done.stderr, \
            done.stderr
