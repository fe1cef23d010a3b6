"""One fault run: a fresh queue, real workers kept alive, faults at random points, and the
history checked at the end (tests.faults.history).

Waiting is always on a condition with a generous deadline; the only fixed waits are the
fault's own timing (drawn from the seeded random generator) and its duration.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.job import Job, State
from tests import faketime
from tests.conftest import shoal_processes
from tests.faults.backends import Backend
from tests.faults.history import Report, check
from tests.procs import Procs, marker_job

FINISH_TIMEOUT_S = 180.0  # generous: 2 loaded cores shared with other test runs
POLL_S = 0.1

SUBMITTER = """
import sys
sys.path.insert(0, {root!r})
from shoal.job import Job
from shoal.queue import open_queue
from tests.procs import marker_job
target, out, log, n, body = sys.argv[1:6]
queue = open_queue(target)
with open(log, "a", buffering=1) as history:
    for first in range(0, int(n), 4):
        batch = [Job.command_job(marker_job(out, body), params={{"i": i}}, max_attempts=10)
                 for i in range(first, min(first + 4, int(n)))]
        history.write("".join(f"invoke {{job.id}}\\n" for job in batch))
        queue.submit(batch)
        history.write("".join(f"ok {{job.id}}\\n" for job in batch))
"""


def skewed_clock(offset: str) -> dict[str, str]:
    """The environment that runs a process with its wall clock moved by `offset` ("+600s")
    and its monotonic clock left true (tests/faketime.py)."""
    return faketime.fixed_offset(offset)


class Run:
    """One iteration on one backend: its queue, workers, history and recovery times."""

    def __init__(self, backend: Backend, procs: Procs, rng: random.Random) -> None:
        self.backend, self.procs, self.rng = backend, procs, rng
        self.queue = backend.open()
        self.out = backend.folder / "out"
        self.out.mkdir()
        self.ids: set[str] = set()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_args: dict[int, tuple[str | None, tuple[str, ...], dict[str, str]]] = {}
        self.recovery_s: list[float] = []
        self.killed_at_end: set[int] = set()  # workers stopped by SIGKILL, not SIGTERM
        self._watching: list[tuple[float, set[str]]] = []

    # -- jobs and workers --------------------------------------------------------

    def submit(self, n: int, body: str = "sleep 0.5;", **options: object) -> set[str]:
        jobs = [Job.command_job(marker_job(self.out, body), params={"i": i},
                                **{"max_attempts": 10, **options}) for i in range(n)]
        self.queue.submit(jobs)
        ids = {job.id for job in jobs}
        self.ids |= ids
        return ids

    def work(self, *args: str, target: str | None = None,
             env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a `shoal work` that `keep_alive` replaces (alike) if it dies."""
        proc = self.procs.shoal("work", target or self.backend.target, *args,
                                *self.backend.lease_args, env=env)
        self.workers.append(proc)
        self.worker_args[proc.pid] = (target, args, env or {})
        return proc

    def keep_alive(self) -> None:
        """Replace dead workers, as a supervisor (systemd, hire) would."""
        for proc in list(self.workers):
            if proc.poll() is not None:
                self.workers.remove(proc)
                target, args, env = self.worker_args.pop(proc.pid)
                self.work(*args, target=target, env=env)

    def kill_worker(self) -> subprocess.Popen[bytes]:
        """SIGKILL a random worker's whole process group."""
        victim = self.rng.choice(self.workers)
        self.workers.remove(victim)
        self.worker_args.pop(victim.pid)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        return victim

    def stop_workers(self) -> None:
        """SIGTERM every worker (SIGCONT first: a stopped one could not exit); each must
        exit cleanly (but those in `killed_at_end`)."""
        for proc in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                if proc.pid in self.killed_at_end:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            code = proc.wait(timeout=60)
            if proc.pid not in self.killed_at_end:
                assert code in (0, -signal.SIGTERM), (code, self.procs.output(proc)[-3000:])
        self.workers.clear()

    # -- waiting -----------------------------------------------------------------

    def states(self) -> dict[str, State]:
        return self.queue.states(self.ids)

    def running(self) -> set[str]:
        return {job_id for job_id, state in self.states().items() if state is State.RUNNING}

    def wait_running(self) -> None:
        """Until some job runs (so a fault lands mid-job)."""
        self.until(lambda: bool(self.running()), "a job to start running")

    def at_random_point(self, within_s: float) -> None:
        """Wait until a job runs, then a random while up to `within_s`; mark the fault."""
        self.wait_running()
        self.hold(self.rng.uniform(0.0, within_s))
        self.fault_now()

    def fault_now(self) -> None:
        """Mark a fault: the jobs running now must be final again; how long it takes is
        the recovery time."""
        running = self.running()
        if running:
            self._watching.append((time.monotonic(), running))

    def hold(self, seconds: float, *, poll: bool = True) -> None:
        """Let `seconds` pass (a fault's duration), noting recoveries meanwhile."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if poll:
                self._poll()
            time.sleep(min(POLL_S, max(left, 0)))

    def _poll(self) -> bool:
        """Note recoveries, replace dead workers; True when every job is final."""
        states = self.states()
        now = time.monotonic()
        for item in list(self._watching):
            started, ids = item
            if all(states.get(job_id, State.PENDING).final for job_id in ids):
                self.recovery_s.append(round(now - started, 2))
                self._watching.remove(item)
        self.keep_alive()
        return len(states) == len(self.ids) and all(s.final for s in states.values())

    def until(self, condition: Callable[[], object], what: str,
              timeout_s: float = FINISH_TIMEOUT_S) -> None:
        """Poll `condition`, keeping workers alive; fail naming `what` and the counts."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s}s waiting for {what} on "
                            f"{self.backend.name}: {dict(self.queue.counts())}")
            self.keep_alive()
            time.sleep(POLL_S)

    def finish(self, acknowledged: set[str] | None = None, *, attempted: set[str] = frozenset(),
               may_fail: set[str] = frozenset()) -> Report:
        """Wait until every job is final, stop the workers, check the history."""
        self.until(self._poll, "every job to end")
        self.stop_workers()
        report = check(self.ids if acknowledged is None else acknowledged,
                       self.queue.results(), self.out, attempted=attempted, may_fail=may_fail)
        report.recovery_s = self.recovery_s
        report.orphans = self.orphans()
        return report

    def orphans(self, timeout_s: float = 30.0) -> int:
        """How many jobs still have processes once every worker stopped (a dead worker's
        jobs are killed by the worker that takes its leases back, or end by themselves)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = [job_id for job_id in self.ids if shoal_processes(job=job_id)]
            if not left or time.monotonic() > deadline:
                return len(left)
            time.sleep(0.2)

    def close(self) -> None:
        for proc in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
                os.kill(proc.pid, signal.SIGCONT)
        self.queue.close()

    # -- a submitter process -----------------------------------------------------

    def submitter(self, n: int, body: str = "sleep 0.5;") -> subprocess.Popen[bytes]:
        """A process submitting `n` jobs in batches of 4, logging `invoke`/`ok` per job."""
        script = self.backend.folder / "submitter.py"
        script.write_text(SUBMITTER.format(root=str(Path(__file__).parents[2])))
        log = open(self.backend.folder / "submitter.out", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, str(script), self.backend.target, str(self.out),
             str(self.backend.folder / "submits.log"), str(n), body],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.started.append(proc)
        return proc

    def submits(self) -> tuple[set[str], set[str]]:
        """(acknowledged, attempted) ids from the submitters' history."""
        path = self.backend.folder / "submits.log"
        lines = path.read_text().splitlines() if path.exists() else []
        ok = {line[3:] for line in lines if line.startswith("ok ")}
        tried = {line[7:] for line in lines if line.startswith("invoke ")}
        return ok, tried
