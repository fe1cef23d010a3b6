"""Leases over the network behave as they do locally: real worker processes on tcp://.

SIGKILL and SIGSTOP of a worker mid-job: tests/conformance/test_worker_faults.py.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from shoal.job import Job, State
from shoal.queue import open_queue
from tests.conftest import wait_for
from tests.procs import executions, marker_job

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def served(procs, tmp_path: Path):
    """A coordinator process (lease 1 s) and a client of it."""
    status = tmp_path / "status"
    procs.shoal("serve", f"sqlite://{tmp_path / 'q.sqlite'}", "--status", str(status),
                "--lease", "1")
    wait_for(lambda: (status / "status.json").exists(), message="the coordinator")
    queue = open_queue(str(status))
    out = tmp_path / "out"
    out.mkdir()
    yield queue, status, out
    queue.close()


def test_a_job_log_travels_to_the_coordinator_with_its_result(served, procs):
    queue, status, _ = served
    job = Job.command_job("echo out-line; echo err-line >&2")
    queue.submit([job])
    worker = procs.shoal("work", str(status), "--drain")
    assert worker.wait(timeout=60) == 0, procs.output(worker)
    (result,) = list(queue.results())
    text = queue.files.read_log(queue.get(job.id))
    assert text is not None and b"out-line" in text and b"err-line" in text
    assert result.log and Path(result.log).read_bytes() == text  # kept where it is served


def test_a_stopped_worker_leaves_no_job_leased_behind(served, procs):
    queue, status, out = served
    jobs = [Job.command_job(marker_job(out, "sleep 0.3;"), params={"i": i}) for i in range(20)]
    queue.submit(jobs)
    worker = procs.shoal("work", str(status), "--slots", "2")
    wait_for(lambda: len(list(out.iterdir())) >= 2, 20, message="a few jobs to finish")
    worker.send_signal(signal.SIGTERM)  # finishes its running jobs, claims no more
    assert worker.wait(timeout=30) == 0, procs.output(worker)
    statuses = list(queue.jobs())
    assert [s for s in statuses if s.state is State.RUNNING] == []
    pending = [s for s in statuses if s.state is State.PENDING]
    assert pending and {s.attempt for s in pending} == {1}  # handed back untouched
    assert len(executions(out)) + len(pending) == 20
