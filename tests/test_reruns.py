"""Reruns that do what they say (issue 14, point 3): options make a job, `shoal retry`
runs done jobs again when asked, `shoal clean` starts a sweep afresh. Real processes."""

from __future__ import annotations

import signal

import pytest

from shoal.job import State
from shoal.queue.folder import FolderQueue
from tests.conftest import wait_for
from tests.test_cli import cli, shoal

pytestmark = pytest.mark.timeout(180)


def test_a_rerun_with_another_timeout_runs_the_job_again(tmp_path):
    first = shoal("run", "--no-progress", "--timeout", "1", "sleep 2; echo {}", ":::", "a",
                  cwd=tmp_path, check=None)
    assert first.returncode != 0
    again = shoal("run", "--no-progress", "--timeout", "10", "sleep 2; echo {}", ":::", "a",
                  cwd=tmp_path, check=0)
    assert "timed out" not in again.stderr
    states = sorted(s.state.value for s in FolderQueue(tmp_path / ".shoal-run").jobs())
    assert states == ["done", "failed"]  # two jobs: the timed-out one is kept as it was


def test_retry_runs_done_jobs_only_when_forced(tmp_path):
    shoal("run", "--no-progress", "echo {} >> out-{}", ":::", "a", "b", cwd=tmp_path)
    queue = str(tmp_path / ".shoal-run")
    job_a = next(s.job for s in FolderQueue(queue).jobs() if "out-a" in s.job.name)
    named = cli("retry", queue, job_a.id)
    assert named.exit_code == 0
    assert "0 job(s) back to pending" in named.output and "--force" in named.output
    every = cli("retry", queue, "--all")
    assert "0 job(s) back to pending" in every.output
    assert "2 done job(s)" in every.output and "--force" in every.output
    assert "1 job(s) back to pending" in cli("retry", queue, job_a.id, "--force").output
    assert FolderQueue(queue).get(job_a.id).state is State.PENDING
    shoal("work", queue, "--drain")
    assert (tmp_path / "out-a").read_text() == "a\na\n"
    assert "2 job(s) back to pending" in cli("retry", queue, "--all", "--force").output
    shoal("work", queue, "--drain")
    assert (tmp_path / "out-a").read_text() == "a\na\na\n"
    assert (tmp_path / "out-b").read_text() == "b\nb\n"


def test_retry_without_a_choice_is_a_usage_error(tmp_path):
    shoal("submit", str(tmp_path / "q"), "echo {}", ":::", "a")
    refused = shoal("retry", str(tmp_path / "q"), check=2)
    assert "--all" in refused.stderr and "Traceback" not in refused.stderr


def test_clean_starts_a_sweep_afresh_and_keeps_job_files(tmp_path, procs):
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "a.py").write_text('print("a ran")\n')
    shoal("submit", str(folder), "echo {}", ":::", "x", "y")
    shoal("work", str(folder), "--drain")
    assert (folder / "a.py.log").read_text() == "a ran\n"
    assert FolderQueue(folder).counts()[State.DONE] == 3

    worker = procs.shoal("work", str(folder), "--slots", "1")
    wait_for(lambda: FolderQueue(folder).workers(), 20, message="the worker to start")
    refused = shoal("clean", str(folder), check=2)
    assert "worker" in refused.stderr and "--force" in refused.stderr
    assert FolderQueue(folder).counts()[State.DONE] == 3  # refused: nothing removed
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=20) == 0

    cleaned = shoal("clean", str(folder))
    assert "3 job(s) removed" in cleaned.stdout
    assert (folder / "a.py").exists() and not (folder / "a.py.log").exists()
    assert sum(FolderQueue(folder).counts().values()) == 0
    shoal("work", str(folder), "--drain")  # the job file is picked up and runs again
    assert (folder / "a.py.log").read_text() == "a ran\n"
