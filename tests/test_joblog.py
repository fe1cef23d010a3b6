"""--joblog as GNU parallel writes it, --resume and --resume-failed as parallel reads it:
compared with a real `parallel` run of the same commands, and each side reading the
other's joblog."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shoal import joblog
from shoal.errors import UsageError
from tests.test_run_output import ENV, plan_argv, run

pytestmark = pytest.mark.timeout(120)

# Output only on stdout: parallel's Receive counts stdout, shoal's the log (stdout+stderr).
COMMANDS = ["echo a; exit 0", "echo bb; exit 3", "echo ccc; kill -9 $$", 'printf "x\\ny"']


def parallel() -> str:
    found = shutil.which("parallel")
    if found is None:
        pytest.skip("GNU parallel is not installed: nothing to compare with")
    return found


def rows(path: Path) -> tuple[str, dict[int, list[str]]]:
    """The header and the lines by Seq."""
    header, *lines = path.read_text().splitlines(keepends=True)
    return header, {int(line.split("\t")[0]): line.rstrip("\n").split("\t") for line in lines}


def test_joblog_has_parallels_columns_for_the_same_commands(tmp_path):
    subprocess.run([parallel(), "--will-cite", "-j1", "--joblog", "parallel.log", ":::",
                    *COMMANDS], cwd=tmp_path, capture_output=True, timeout=60)
    done = run(tmp_path, COMMANDS, slots=1, joblog=str(tmp_path / "shoal.log"))
    assert done.returncode == 2, done.stderr  # two failed: exit 3 and the kill, as parallel
    ours_header, ours = rows(tmp_path / "shoal.log")
    theirs_header, theirs = rows(tmp_path / "parallel.log")
    assert ours_header == theirs_header
    assert sorted(ours) == sorted(theirs) == [1, 2, 3, 4]
    for seq, theirs_row in theirs.items():
        row = ours[seq]
        assert len(row) == len(theirs_row) == 9
        # Host, Send, Receive, Exitval, Signal, Command
        assert [row[1], *row[4:]] == [theirs_row[1], *theirs_row[4:]], (row, theirs_row)
        assert re.fullmatch(r"\d{10}\.\d{3}", row[2]), row  # Starttime
        assert re.fullmatch(r" *\d+\.\d{3}", row[3]) and len(row[3]) == 10, row  # runtime


def resumable(tmp_path: Path) -> list[str]:
    """Commands that record each run in ran.txt; the second one fails."""
    return [f"echo {name} >> ran.txt; exit {code}" for name, code in
            (("one", 0), ("two", 5), ("three", 0))]


def ran(tmp_path: Path) -> list[str]:
    path = tmp_path / "ran.txt"
    return path.read_text().split() if path.exists() else []


def test_resume_skips_what_the_joblog_lists_whatever_its_exit(tmp_path):
    log = str(tmp_path / "jobs.log")
    first = run(tmp_path, resumable(tmp_path), slots=1, joblog=log)
    assert first.returncode == 1 and sorted(ran(tmp_path)) == ["one", "three", "two"]
    again = run(tmp_path, resumable(tmp_path), slots=1, joblog=log, resume=True)
    assert again.returncode == 0, again.stderr
    assert sorted(ran(tmp_path)) == ["one", "three", "two"]  # the failed one too: not rerun
    assert "3 skipped (in the joblog)" in again.stderr
    assert len(rows(Path(log))[1]) == 3


def test_resume_failed_reruns_only_what_failed_in_the_joblog(tmp_path):
    log = str(tmp_path / "jobs.log")
    run(tmp_path, resumable(tmp_path), slots=1, joblog=log)
    # a new queue: only the joblog tells what ran, as with parallel
    again = run(tmp_path, resumable(tmp_path), slots=1, joblog=log, resume_failed=True,
                queue=str(tmp_path / "other-queue"))
    assert again.returncode == 1, again.stderr  # it fails again
    assert sorted(ran(tmp_path)) == ["one", "three", "two", "two"]
    assert "2 skipped (in the joblog)" in again.stderr
    lines = Path(log).read_text().splitlines()
    assert lines[0].startswith("Seq\t") and len(lines) == 5  # appended, one header


def test_parallel_resumes_from_shoals_joblog_and_shoal_from_parallels(tmp_path):
    commands = resumable(tmp_path)
    log = str(tmp_path / "shoal.log")
    run(tmp_path, commands, slots=1, joblog=log)
    subprocess.run([parallel(), "--will-cite", "-j1", "--resume-failed", "--joblog", log,
                    ":::", *commands], cwd=tmp_path, capture_output=True, timeout=60)
    assert sorted(ran(tmp_path)) == ["one", "three", "two", "two"]  # parallel reran seq 2
    (tmp_path / "ran.txt").unlink()
    theirs = str(tmp_path / "parallel.log")
    subprocess.run([parallel(), "--will-cite", "-j1", "--joblog", theirs, ":::",
                    *commands], cwd=tmp_path, capture_output=True, timeout=60)
    (tmp_path / "ran.txt").unlink()
    done = run(tmp_path, commands, slots=1, joblog=theirs, resume_failed=True,
               queue=str(tmp_path / "fresh-queue"))
    assert ran(tmp_path) == ["two"], done.stderr


def test_joblog_plus_file_appends_and_dash_is_stdout(tmp_path):
    log = tmp_path / "jobs.log"
    log.write_text(joblog.HEADER + "7\t:\t1.000\t     0.000\t0\t0\t0\t0\told\n")
    run(tmp_path, ["echo new"], joblog=f"+{log}")
    assert [r[-1] for r in rows(log)[1].values()] == ["old", "echo new"]
    done = run(tmp_path, ["echo to-stdout"], joblog="-")
    assert done.stdout.startswith(joblog.HEADER) and "\techo to-stdout\n" in done.stdout


def test_joblog_dash_into_a_closed_pipe_lets_every_job_run(tmp_path):
    # the reader takes the header and goes away; later joblog lines meet a closed pipe
    commands = [f"touch ran-{n}; sleep 0.1" for n in range(6)]
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen(plan_argv(tmp_path, commands, slots=1, joblog="-"),
                                stdout=subprocess.PIPE, stderr=err, env=ENV, cwd=tmp_path)
        assert proc.stdout is not None
        assert proc.stdout.readline().decode() == joblog.HEADER
        proc.stdout.close()
        assert proc.wait(timeout=90) == 0, (tmp_path / "err.txt").read_text()
    assert "6 jobs: 6 done" in (tmp_path / "err.txt").read_text()
    assert sorted(p.name for p in tmp_path.glob("ran-*")) == [f"ran-{n}" for n in range(6)]


def test_a_joblog_not_in_parallels_format_is_refused_naming_file_and_line(tmp_path):
    log = tmp_path / "jobs.log"
    log.write_text(joblog.HEADER + "1\t:\t1.0\t0.0\t0\t0\t0\t0\tok\nnot a joblog line\n")
    with pytest.raises(UsageError, match=r"jobs\.log, line 3: not a joblog line"):
        joblog.read(str(log))


def test_a_command_with_a_newline_keeps_its_joblog_line_whole(tmp_path):
    log = tmp_path / "jobs.log"
    run(tmp_path, ["echo a\necho b"], joblog=str(log))
    _, by_seq = rows(log)
    assert by_seq[1][-1] == "echo a\0echo b"


def test_a_rerun_lists_the_jobs_done_before_in_its_new_joblog(tmp_path):
    log = tmp_path / "jobs.log"
    commands = ["echo a", "echo b"]
    run(tmp_path, commands, joblog=str(log))
    first = rows(log)[1]
    again = run(tmp_path, commands, joblog=str(log))
    assert "2 done (2 already before)" in again.stderr
    assert rows(log)[1] == first  # written afresh, with the results they had
