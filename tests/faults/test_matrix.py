"""The fault matrix of RELIABILITY.md 5.2, one test per row, on every backend it applies to.

Each case runs ITERATIONS fresh queues (see tests/faults/__init__.py), injects its fault
at random points and checks the history: nothing lost, nothing recorded twice, nothing
unexpected, every failure with a reason.
"""

from __future__ import annotations

import os
import signal

import pytest

from shoal.job import State
from tests.faults.backends import LEASE_S
from tests.faults.conftest import ITERATIONS
from tests.faults.harness import Run, skewed_clock
from tests.faults.history import Report

pytestmark = pytest.mark.timeout(240 * ITERATIONS)

JOBS = 24
SKEW_LEASE_S = 4.0  # row 9 (see test_worker_clock_skew)


def start(run: Run) -> None:
    """JOBS jobs and two workers of 2 slots."""
    run.submit(JOBS)
    run.work("--slots", "2")
    run.work("--slots", "2")


def test_worker_sigkill_mid_job(rows, backend):
    """Row 1: workers SIGKILLed at random points; replaced, their jobs re-run elsewhere."""
    kills = 2

    def scenario(run: Run) -> Report:
        start(run)
        for _ in range(kills):
            run.at_random_point(1.0)
            run.kill_worker()
            run.work("--slots", "2")
        report = run.finish()
        if report.executions_max > 1 + kills:
            report.row_problems.append(f"a job ran {report.executions_max} times, {kills} kills")
        return report

    rows.run(backend, "1 worker SIGKILL", scenario)


def test_worker_sigstop_past_its_lease(rows, backend):
    """Row 2: a worker frozen for 3 leases beside a live one; resumed, its late results are
    not recorded and its stale attempts die."""

    def scenario(run: Run) -> Report:
        run.submit(JOBS)
        frozen = run.work("--slots", "2")
        run.work("--slots", "2")
        run.at_random_point(1.0)
        os.kill(frozen.pid, signal.SIGSTOP)
        run.hold(3 * LEASE_S)
        os.kill(frozen.pid, signal.SIGCONT)
        report = run.finish()
        if report.executions_max > 2:
            report.row_problems.append(f"a job ran {report.executions_max} times, one fault")
        return report

    rows.run(backend, "2 worker SIGSTOP > lease", scenario)


def test_all_workers_and_the_submitter_killed_and_restarted(rows, backend):
    """Every worker and the submitting process SIGKILLed at once mid-run, then all started
    again (the submitter resubmits everything: known ids change nothing)."""

    def scenario(run: Run) -> Report:
        submitter = run.submitter(JOBS)
        run.work("--slots", "2")
        run.work("--slots", "2")
        run.until(lambda: run.submits()[0], "the first acknowledged submit")
        run.ids = set(run.submits()[1])
        run.hold(run.rng.uniform(0.0, 1.5), poll=False)
        os.killpg(submitter.pid, signal.SIGKILL)
        submitter.wait(timeout=30)
        run.ids = set(run.submits()[1])
        run.fault_now()
        while run.workers:
            run.kill_worker()
        acknowledged, _ = run.submits()
        again = run.submitter(JOBS)
        run.work("--slots", "2")
        run.work("--slots", "2")
        assert again.wait(timeout=120) == 0
        _, attempted = run.submits()
        run.ids = attempted
        return run.finish(acknowledged, attempted=attempted)

    rows.run(backend, "all workers + submitter SIGKILL", scenario)


def test_poison_job_fails_with_a_reason_after_max_attempts(rows, backend):
    """Row 1b: a job that kills its worker each time ends failed with a reason; the others
    run, on workers restarted as a supervisor would."""

    def scenario(run: Run) -> Report:
        pill = run.submit(1, "kill -9 $PPID; sleep 5;", max_attempts=2, name="pill")
        run.submit(JOBS)
        run.work("--slots", "2")
        report = run.finish(may_fail=pill)
        (result,) = [r for r in run.queue.results() if r.job_id in pill]
        assert result.state is State.FAILED and "2 time(s)" in result.reason, result
        return report

    rows.run(backend, "1b poison job", scenario)


@pytest.mark.parametrize("backend", ["tcp"])
def test_coordinator_sigkill_and_restart(rows, backend):
    """Row 3: the coordinator SIGKILLed at a random point and restarted on its database;
    workers reconnect and nothing acknowledged is lost."""

    def scenario(run: Run) -> Report:
        start(run)
        run.at_random_point(1.5)
        run.backend.kill_coordinator()
        run.hold(run.rng.uniform(0.0, 2 * LEASE_S), poll=False)
        run.backend.start_coordinator()
        return run.finish()

    rows.run(backend, "3 coordinator SIGKILL + restart", scenario)


@pytest.mark.parametrize("backend", ["tcp", "redis"])
def test_server_paused_past_the_lease(rows, backend):
    """The coordinator (or redis-server) SIGSTOPped for 3 leases, then SIGCONT: nothing is
    lost or recorded twice (jobs may run again)."""

    def scenario(run: Run) -> Report:
        start(run)
        run.at_random_point(1.5)
        run.backend.signal_server(signal.SIGSTOP)
        run.hold(3 * LEASE_S, poll=False)
        run.backend.signal_server(signal.SIGCONT)
        return run.finish()

    rows.run(backend, "3/4 server SIGSTOP > lease", scenario)


@pytest.mark.parametrize("backend", ["redis"])
def test_redis_server_sigkill_and_restart(rows, backend):
    """Row 4: redis-server (appendonly, fsync always) SIGKILLed and restarted on its dir."""

    def scenario(run: Run) -> Report:
        start(run)
        run.at_random_point(1.5)
        run.backend.server.kill()
        run.hold(run.rng.uniform(0.0, 2 * LEASE_S), poll=False)
        run.backend.server.start()
        return run.finish()

    rows.run(backend, "4 redis-server SIGKILL + restart", scenario)


@pytest.mark.parametrize("backend", ["tcp", "redis"])
def test_network_partition_of_a_worker(rows, backend):
    """Row 2b: one worker reaches the queue through a proxy that goes silent for 3 leases
    (SIGSTOP of the proxy), the other directly; after healing nothing ran twice as a
    recorded result."""

    def scenario(run: Run) -> Report:
        run.submit(JOBS)
        target, proxy = run.backend.proxied_target()
        run.work("--slots", "2", target=target)
        run.work("--slots", "2")
        run.at_random_point(1.0)
        proxy.partition()
        run.hold(3 * LEASE_S)
        proxy.heal()
        report = run.finish()
        if report.executions_max > 2:
            report.row_problems.append(f"a job ran {report.executions_max} times, one fault")
        return report

    rows.run(backend, "2b network partition", scenario)


# Row 5 (disk full) is tests/test_disk_full.py: a real tmpfs filled under folder, sqlite and
# tcp workers (a mount of its own, so not one of these fresh-queue iterations).


@pytest.mark.parametrize("backend", ["folder", "tcp", "redis"])  # sqlite: see below
@pytest.mark.parametrize("skew", ["+600s", "-600s"])
def test_worker_clock_skew(rows, backend, skew):
    """Row 9: one worker's wall clock 10 minutes ahead or behind (libfaketime; its monotonic
    clock true) beside a true one: no job lost or recorded twice, and no live worker's job
    taken from it (each job runs once).

    Not sqlite://: it is one machine's queue (it refuses network filesystems), so its workers
    share one clock; per-process skew exists only under libfaketime (there a worker behind
    sees its own leases expired, one ahead takes live jobs: the leases compare wall clocks
    of processes, a known gap). The coordinator's own clock jumping:
    tests/test_lease_pause_coordinator.py."""

    def scenario(run: Run) -> Report:
        run.submit(JOBS)
        skewed = run.work("--slots", "2", env=skewed_clock(skew))
        # Under libfaketime a worker's SIGTERM exit sometimes hangs in a timed wait (seen with
        # -600s and +600s, 1 in ~5 runs): a tool artifact, not what this row tests.
        run.killed_at_end.add(skewed.pid)
        run.work("--slots", "2")
        report = run.finish()
        if report.executions_max != 1:
            report.row_problems.append(f"a live worker (clock {skew}) lost its jobs")
        return report

    # A lease of 4 s, not 1: 600 s of skew shows on any lease, while a 1 s lease on a loaded
    # machine can expire for load alone (a missed beat), which is row 2, not this row.
    rows.run(backend, f"9 worker clock {skew}", scenario, lease_s=SKEW_LEASE_S)
