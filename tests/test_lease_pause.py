"""A worker paused past its lease must not kill its own retry (issue 19, case 1).

With real processes: `shoal serve` over sqlite, `shoal work` workers, SIGSTOP/SIGCONT,
and Executor calls. A worker back from a pause kills the attempt it lost, by its lease
token, never a newer attempt it claimed since; a worker that hears of another one's
reap kills that attempt's processes, and a call interpreter only once its worker is
dead (its interpreter runs one call after another: which attempt it runs now cannot
be told from outside).
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

import shoal
from shoal.fsutil import HOST
from shoal.job import Job, Reaped, State
from shoal.queue import open_queue
from shoal.worker.kill import kill_orphans
from tests import callfns
from tests.conftest import shoal_processes, wait_for
from tests.procs import Procs, alive, executions, marker_job

pytestmark = pytest.mark.timeout(180)

LEASE_S = 2.0
PAUSE_S = 3 * LEASE_S  # the fault: a worker stopped for three leases


def serve(procs: Procs, tmp_path: Path) -> str:
    status = tmp_path / "status"
    procs.shoal("serve", f"sqlite://{tmp_path / 'q.db'}", "--status", str(status),
                "--lease", str(LEASE_S))
    wait_for(lambda: (status / "status.json").exists(), 30, message="the coordinator")
    return str(status)


def pause(proc, seconds: float = PAUSE_S) -> None:
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(seconds)  # the fault itself, not a wait for a condition
    os.kill(proc.pid, signal.SIGCONT)


def running(target: str) -> int:
    with open_queue(target) as queue:
        return queue.counts()[State.RUNNING]


def test_a_paused_worker_runs_its_retry_to_the_end(procs, tmp_path):
    """One worker, SIGSTOP for three leases mid-job: it claims the job again and that
    new attempt is not killed by the news of the reap of the old one."""
    out = tmp_path / "out"
    out.mkdir()
    target = serve(procs, tmp_path)
    with open_queue(target) as queue:
        ids = queue.submit([Job.command_job(marker_job(out, "sleep 1;"), params={"i": i})
                            for i in range(4)])
    worker = procs.shoal("work", target, "--slots", "1", "--drain")
    wait_for(lambda: running(target) == 1, 30, message="the first job to run")
    pause(worker)
    assert worker.wait(timeout=90) == 0, procs.output(worker)
    with open_queue(target) as queue:
        results = list(queue.results())
    assert sorted(r.job_id for r in results) == sorted(ids)
    assert {r.state for r in results} == {State.DONE}, [r.reason for r in results]
    assert max(r.attempt for r in results) == 2  # the paused one ran again, and finished
    ran = [job_id for job_id, _, _ in executions(out)]
    assert all(ran.count(i) <= 2 for i in ids)
    assert "killed by SIGKILL" not in procs.output(worker)


def test_executor_calls_survive_a_paused_worker(procs, tmp_path):
    """Executor over tcp, its calls run by a `shoal work` that is SIGSTOPped for three
    leases: every call returns its value. The paused call's function keeps on through
    SIGTERM, so its interpreter outlives the lost attempt and runs the retry: the
    SIGKILL that followed the SIGTERM must not reach that newer call."""
    target = serve(procs, tmp_path)
    worker = procs.shoal("work", target, "--slots", "1", "--grace", "2")
    long_s = PAUSE_S + 2  # still running when the worker wakes up
    with shoal.Executor(target, workers=0) as ex:
        first = ex.submit(callfns.sleep_ignoring_sigterm, long_s, "first")
        wait_for(lambda: running(target) == 1, 30, message="the first call to run")
        time.sleep(1)
        rest = [ex.submit(callfns.sleep_ignoring_sigterm, 1, i) for i in range(2)]
        pause(worker)
        assert first.result(timeout=120) == "first"
        assert [f.result(timeout=60) for f in rest] == [0, 1]
    assert "killed by SIGKILL" not in procs.output(worker)
    assert "lost lease" in procs.output(worker)


def worker_id(target: str) -> str:
    with open_queue(target) as queue:
        (worker,) = queue.workers()
    return worker.id


def gated_call(ex: shoal.Executor, tmp_path: Path, value: str) -> tuple[Future, Path, int]:
    """A call that blocks until its gate file exists, once it runs: its future, its gate
    and the pid of the call interpreter running it."""
    started, gate = tmp_path / f"started-{value}", tmp_path / f"gate-{value}"
    future = ex.submit(callfns.wait_gate, str(gate), value, str(started))
    wait_for(started.exists, 30, message="the call to start")
    return future, gate, int(started.read_text())


def test_a_reap_of_an_older_attempt_spares_a_live_workers_interpreter(procs, tmp_path):
    """Another worker on this host hears that an older attempt of this worker was
    reaped (it was paused, and is back): it must not kill the call interpreter, which
    now runs a newer call of the live worker."""
    target = serve(procs, tmp_path)
    procs.shoal("work", target, "--slots", "1")
    with shoal.Executor(target, workers=0) as ex:
        future, gate, interpreter = gated_call(ex, tmp_path, "newer")
        worker = worker_id(target)
        # What a worker on this host does with the reap record of the older attempt.
        kill_orphans([Reaped("job-of-the-older-attempt", worker, 1, HOST)])
        time.sleep(0.2)  # a kill would have landed by now: signals are immediate
        assert alive(interpreter), "the live worker's interpreter was killed"
        gate.touch()
        assert future.result(timeout=60) == "newer"


def test_the_interpreter_of_a_dead_worker_is_killed_on_its_host(procs, tmp_path):
    """SIGKILL of a worker mid-call leaves its call interpreter running; a worker on the
    same host hears of the reap and kills it, and runs the call again."""
    target = serve(procs, tmp_path)
    victim = procs.shoal("work", target, "--slots", "1")
    with shoal.Executor(target, workers=0) as ex:
        future, gate, orphan = gated_call(ex, tmp_path, "again")
        dead = worker_id(target)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        assert alive(orphan)  # in a session of its own: the worker's death left it
        procs.shoal("work", target, "--slots", "1")
        wait_for(lambda: not alive(orphan), 30, message="the orphaned interpreter to die")
        assert shoal_processes(worker=dead) == []
        gate.touch()
        assert future.result(timeout=60) == "again"
