"""A reap names the attempt it took, on every backend, so the worker that hears of it
kills that attempt's processes and never a newer attempt of the same job (issue 19).

The test plays a worker ("w-paused", registered on this host) that was paused past its
lease and, back, claimed the job again: it starts the processes each attempt would run
(with the SHOAL_* environment a worker gives them) and a call interpreter of its own.
Then a real `Worker` on this host runs its heartbeats (beat, reap, kill orphans) until
the old attempt is gone: the new attempt and the interpreter of the live worker must
be alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from shoal.fsutil import HOST
from shoal.job import Job, Lease, State, WorkerInfo
from shoal.queue.base import Queue
from shoal.worker import Worker
from tests.conformance.test_reaps import reap_until_taken_back, served_factory  # noqa: F401
from tests.conftest import wait_for
from tests.procs import alive

PAUSED = "w-paused"


def attempt_process(lease: Lease, **more: str) -> subprocess.Popen[bytes]:
    """A process as the worker `lease.worker` starts it for this attempt."""
    env = {**os.environ, "SHOAL_JOB_ID": lease.job_id, "SHOAL_WORKER": lease.worker,
           "SHOAL_ATTEMPT": str(lease.attempt), **more}
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env,
                            start_new_session=True)


@contextlib.contextmanager
def stopped_at_exit(*processes: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def working(view: Queue, worker_id: str) -> Iterator[Worker]:
    """A real worker on `view`, heartbeating in a thread (the queue has no job for it)."""
    worker = Worker(view, slots=1, worker_id=worker_id)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(now=True)
        thread.join(timeout=30)


@contextlib.contextmanager
def beating(view: Queue, lease: Lease) -> Iterator[None]:
    """The paused worker, back: it renews its new lease (a quarter lease apart)."""
    stop = threading.Event()
    info = WorkerInfo(PAUSED, HOST, os.getpid(), 1, state="working")

    def beat() -> None:
        while not stop.wait(view.settings.lease_s / 4):
            view.beat(info, [lease])

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def paused_and_back(reaper: Queue, paused: Queue) -> tuple[Lease, Lease]:
    """The paused worker's lease of a job, reaped; then its claim of the job again."""
    paused.submit([Job.command_job("sleep 100")])
    (old,) = paused.claim(PAUSED, 1)
    paused.beat(WorkerInfo(PAUSED, HOST, os.getpid(), 1, state="working"), [old])
    reap_until_taken_back(reaper, old.job_id)
    # Back: its overdue heartbeat goes first (a folder queue judges a silent worker dead
    # and takes all its leases), then it claims the job again.
    paused.beat(WorkerInfo(PAUSED, HOST, os.getpid(), 1, state="working"), [])
    (new,) = paused.claim(PAUSED, 1)
    assert (new.job_id, new.attempt) == (old.job_id, old.attempt + 1)
    return old, new


def test_a_worker_on_the_host_kills_the_reaped_attempt_and_spares_the_newer_one(
        served_factory):  # noqa: F811
    reaper, paused, other = served_factory(), served_factory(), served_factory()
    old, new = paused_and_back(reaper, paused)
    stale, fresh = attempt_process(old), attempt_process(new)
    # Its call interpreter, started (as a worker does) by the live worker: this process.
    interpreter = attempt_process(new, SHOAL_CALLHOST="1", SHOAL_WORKER_PID=str(os.getpid()))
    with stopped_at_exit(stale, fresh, interpreter), beating(paused, new), \
            working(other, "w-other"):
        wait_for(lambda: stale.poll() is not None, 20,
                 message="the reaped attempt to be killed on its host")
        time.sleep(0.2)  # the same kill would have reached the others by now
        assert alive(fresh.pid), "the newer attempt of the same job was killed"
        assert alive(interpreter.pid), "the live worker's call interpreter was killed"
        assert paused.get(new.job_id).state is State.RUNNING


def test_the_paused_worker_itself_keeps_its_newer_attempt(served_factory, caplog):  # noqa: F811
    """The paused worker hears the reap of its own old lease at its next heartbeat: the
    attempt it runs now is not the one that record names."""
    reaper, paused = served_factory(), served_factory()
    old, new = paused_and_back(reaper, paused)
    fresh = attempt_process(new)
    caplog.set_level(logging.WARNING, logger="shoal.worker")
    with stopped_at_exit(fresh), beating(paused, new), working(served_factory(), PAUSED):
        wait_for(lambda: f"{old.job_id} (attempt {old.attempt}) from {PAUSED}" in caplog.text,
                 20, message="the worker to hear of the reap of its old lease")
        assert alive(fresh.pid), "the worker killed its own newer attempt"
        assert paused.get(new.job_id).state is State.RUNNING
