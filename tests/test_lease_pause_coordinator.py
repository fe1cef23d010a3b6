"""The coordinator judges leases on its own monotonic clock (issue 19, case 3): a pause
of `shoal serve` (SIGSTOP past the lease) or a jump of its wall clock takes no lease
from a live worker, so no finished result is refused and nothing runs twice.

Real processes: `shoal serve` over sqlite, `shoal work` workers, shell jobs that leave
one marker file per execution (tests.procs.marker_job). The wall-clock jump uses
libfaketime (the pip package `libfaketime`, which ships the library; Debian's 0.9.10
fails Python's sleep with EINVAL when only the wall clock is faked), moved at run
time through its timestamp file.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from shoal.job import Job, State
from shoal.queue import open_queue
from tests import faketime
from tests.conftest import shoal_processes, wait_for
from tests.procs import Procs, executions, marker_job

pytestmark = pytest.mark.timeout(180)

LEASE_S = 3.0


def serve(procs: Procs, tmp_path: Path, env: dict[str, str] | None = None):
    status = tmp_path / "status"
    server = procs.shoal("serve", f"sqlite://{tmp_path / 'q.db'}", "--status", str(status),
                         "--lease", str(LEASE_S), env=env)
    wait_for(lambda: (status / "status.json").exists(), 30, message="the coordinator")
    return server, str(status)


def submit(target: str, out: Path, n: int, seconds: float) -> list[str]:
    with open_queue(target) as queue:
        return queue.submit([Job.command_job(marker_job(out, f"sleep {seconds};"),
                                             params={"i": i}) for i in range(n)])


def assert_each_ran_once(target: str, out: Path, ids: list[str]) -> None:
    """Every job done by its first attempt, and executed exactly once."""
    with open_queue(target) as queue:
        results = {r.job_id: r for r in queue.results()}
    assert set(results) == set(ids)
    assert {(r.state, r.attempt) for r in results.values()} == {(State.DONE, 1)}
    ran = sorted(job_id for job_id, _, _ in executions(out))
    assert ran == sorted(ids), "a job ran more than once"


def running(target: str) -> int:
    with open_queue(target) as queue:
        return queue.counts()[State.RUNNING]


def test_a_paused_coordinator_accepts_the_results_finished_meanwhile(procs, tmp_path):
    """SIGSTOP of `shoal serve` for 3 leases while 2 jobs run (they finish during the
    pause): after SIGCONT their results are recorded, not refused and run again."""
    out = tmp_path / "out"
    out.mkdir()
    server, target = serve(procs, tmp_path)
    ids = submit(target, out, 6, LEASE_S / 2)
    worker = procs.shoal("work", target, "--slots", "2", "--drain")
    wait_for(lambda: running(target) == 2, 30, message="two jobs to run")
    os.kill(server.pid, signal.SIGSTOP)
    time.sleep(3 * LEASE_S)  # the fault itself: a pause of three leases
    os.kill(server.pid, signal.SIGCONT)
    assert worker.wait(timeout=90) == 0, procs.output(worker)
    assert "not recorded" not in procs.output(worker)
    assert_each_ran_once(target, out, ids)
    assert "coordinator paused for" in procs.output(server)


def test_a_forward_jump_of_the_coordinators_clock_reaps_no_live_worker(procs, tmp_path):
    """The coordinator's wall clock jumps 10 minutes ahead while three workers run
    jobs: none of their leases is taken back, every job runs once."""
    out = tmp_path / "out"
    out.mkdir()
    control = tmp_path / "faketime"
    server, target = serve(procs, tmp_path, env=faketime.controlled(control))
    ids = submit(target, out, 6, 2 * LEASE_S)
    workers = [procs.shoal("work", target, "--slots", "1", "--drain") for _ in range(3)]
    wait_for(lambda: running(target) == 3, 30, message="three jobs to run")
    time.sleep(LEASE_S / 2)  # well inside the leases: a reap now could only be wrong
    faketime.jump(control, "+600s")
    for worker in workers:
        assert worker.wait(timeout=90) == 0, procs.output(worker)
        assert "lost lease" not in procs.output(worker)
    assert_each_ran_once(target, out, ids)
    assert "wall clock jumped by +6" in procs.output(server)


def test_a_backward_jump_of_the_coordinators_clock_still_reaps_a_dead_worker(procs, tmp_path):
    """A worker dies (SIGKILL), then the coordinator's wall clock jumps 10 minutes back:
    its lease still runs out after a lease (and the grace), not 10 minutes later, and a
    worker on the same host runs the job and kills what the dead one left running."""
    out = tmp_path / "out"
    out.mkdir()
    control = tmp_path / "faketime"
    server, target = serve(procs, tmp_path, env=faketime.controlled(control))
    with open_queue(target) as queue:
        (job_id,) = queue.submit([Job.command_job(
            marker_job(out, 'if [ -n "$VICTIM" ]; then sleep 60; fi;'))])
    victim = procs.shoal("work", target, "--slots", "1", env={"VICTIM": "1"})
    wait_for(lambda: shoal_processes(job=job_id), 30, message="the job to start")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    faketime.jump(control, "-600s")
    rescuer = procs.shoal("work", target, "--slots", "1", "--drain")
    assert rescuer.wait(timeout=90) == 0, procs.output(rescuer)
    with open_queue(target) as queue:
        (result,) = list(queue.results())
    assert (result.state, result.attempt) == (State.DONE, 2)
    wait_for(lambda: shoal_processes(job=job_id) == [], 20,
             message="the dead worker's job to be killed on its host")
    assert "wall clock jumped by -6" in procs.output(server)
