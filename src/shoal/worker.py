"""The worker: N slots, each a loop of claim -> run -> finish; one steering loop beside them.

    steering loop (caller's thread)          slot threads (N)
    ------------------------------          -------------------------------
    beat: register, renew leases,            claim 1 job (lease)
      take control commands (stop...)        prepare + start its process group
    reap (kill orphans of dead workers)      wait; finish (+ claim the next) /
    look for drop-in job files                 release (failed: to try again)
    decide to exit (drained, stopped)        (lease lost -> result refused)

Stopping: a first stop (SIGINT/SIGTERM or `shoal fire`) claims nothing more and
lets running jobs finish (on_stop="finish", the default) or releases them back
to the queue at once (on_stop="release"); a second stop, or `stop(now=True)`,
always releases.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import defaults
from .callhost import CallHost
from .calls import check_runtime
from .context import JobContext, job_seed
from .errors import CoordinatorUnreachable, IncompatibleJob, LeaseLost, MalformedJob
from .fsutil import HOST
from .job import Job, Kind, Lease, Reaped, Result, State, WorkerInfo
from .queue import STOP, STOP_NOW, Queue
from .runner import (
    Deadlines,
    JobProcess,
    Launch,
    describe_exit,
    job_environment,
    kill_orphans,
    prepare,
    start,
)

log = logging.getLogger("shoal.worker")


def new_worker_id() -> str:
    """host-pid-random: unique across hosts and restarts, safe in file names."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", HOST)[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass
class _Slot:
    """What one slot is running now."""

    lease: Lease
    process: JobProcess | None = None
    ticket: int | None = None
    lost: bool = False
    releasing: bool = False
    settling: bool = False  # finish/release under way: the fence decides now
    timed_out: bool = False
    retries: int = 0  # failed runs are tried again while attempt <= retries
    started: float = field(default_factory=time.time)


class Worker:
    """Runs jobs from a queue until stopped, drained, or `max_jobs` are done."""

    def __init__(
        self,
        queue: Queue,
        *,
        slots: int | None = None,
        drain: bool = False,
        on_stop: str = "finish",
        heartbeat_s: float | None = None,
        scan_s: float = defaults.SCAN_S,
        max_jobs: int | None = None,
        worker_id: str | None = None,
        worker_dir: str | Path | None = None,
        kill_grace_s: float = defaults.KILL_GRACE_S,
        log_path: str | None = None,
        veto: Callable[[str], bool] | None = None,
    ) -> None:
        if on_stop not in ("finish", "release"):
            raise ValueError("on_stop must be 'finish' or 'release'")
        self.queue = queue
        self.slots = slots or os.cpu_count() or 1
        self.drain = drain
        self.on_stop = on_stop
        self.heartbeat_s = heartbeat_s or min(defaults.HEARTBEAT_S, queue.settings.lease_s / 4)
        self.scan_s = scan_s
        self.max_jobs = max_jobs
        self.id = worker_id or new_worker_id()
        self.worker_dir = Path(worker_dir or Path.cwd()).absolute()
        self.log_path = log_path
        self.veto = veto  # job ids its owner cancelled but could not stop in the queue in time
        self.deadlines = Deadlines(kill_grace_s)
        self.done = 0
        self.exit_reason = ""
        self._running: dict[str, _Slot] = {}
        self._reaps_heard: set[Reaped] = set()  # what the last reap() reported
        self._hosts: dict[int, CallHost] = {}  # one long-lived interpreter per slot
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._started = time.time()

    # -- steering -----------------------------------------------------------------

    def run(self) -> str:
        """Work until a way out is reached; return it ("drained", "stopped", "max jobs")."""
        self._beat()
        log.info("worker %s: started on %s with %d slots", self.id, self.queue.url, self.slots)
        threads = [threading.Thread(target=self._slot_loop, args=(i,), name=f"shoal-slot-{i}",
                                    daemon=True) for i in range(self.slots)]
        for thread in threads:
            thread.start()
        try:
            self._steer()
        except CoordinatorUnreachable as exc:
            self._gone(exc)
        finally:
            self._stopping.set()
            for thread in threads:
                thread.join()
            for host in self._hosts.values():
                host.close()
            with contextlib.suppress(CoordinatorUnreachable):
                self.queue.flush()
                self.queue.unregister(self.id)
            self.deadlines.close()
        log.info("worker %s: exiting (%s) after %d jobs", self.id, self.exit_reason, self.done)
        return self.exit_reason

    def _steer(self) -> None:
        next_beat = next_scan = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_scan:
                self.queue.refresh()
                next_scan = now + self.scan_s
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + self.heartbeat_s
            if self._should_exit():
                break
            self._wake.wait(min(self.heartbeat_s, self.scan_s, 0.25))
            self._wake.clear()
        self._wait_for_slots()

    def _gone(self, exc: CoordinatorUnreachable) -> None:
        """The queue's coordinator stopped answering: stop; running jobs' leases lapse."""
        if not self._stopping.is_set():
            log.error("worker %s: %s; stopping", self.id, exc)
        self.exit_reason = "coordinator gone"
        self.on_stop = "release"
        self._release_all()
        self._stopping.set()
        self._wake.set()

    def _should_exit(self) -> bool:
        if self.max_jobs is not None and self.done >= self.max_jobs:
            self.exit_reason = "max jobs"
            return True
        if self.drain and not self._running and self.queue.is_drained():
            # One more reap before leaving: it may bring news of the reap that freed our
            # last jobs (orphans to kill here), or take leases back (then not drained).
            self._kill_orphans(self.queue.reap())
            if self.queue.is_drained():
                self.exit_reason = "drained"
                return True
        return False

    def _wait_for_slots(self) -> None:
        """After a stop: let running jobs finish (or release them), renewing meanwhile."""
        self._stopping.set()
        if self.on_stop == "release":
            self._release_all()
        while self._running:
            self._heartbeat()
            time.sleep(min(self.heartbeat_s, 0.1))

    def stop(self, *, now: bool = False) -> None:
        """Claim nothing more; with `now` (or on_stop="release") release running jobs."""
        if not self.exit_reason:
            self.exit_reason = "stopped"
        if self._stopping.is_set() or now:
            self.on_stop = "release"
            self._release_all()
        self._stopping.set()
        self._wake.set()

    def _release_all(self) -> None:
        with self._lock:
            slots = list(self._running.values())
        for slot in slots:
            slot.releasing = True
            if slot.process is not None:
                self.deadlines.kill_now(slot.process.pid)

    def _obey_control(self, commands: tuple[str, ...]) -> None:
        for command in commands:
            log.info("worker %s: control command %r", self.id, command)
            if command == STOP:
                self.stop()
            elif command == STOP_NOW:
                self.stop(now=True)

    def _heartbeat(self) -> None:
        """One heartbeat: a beat, then a reap (two round trips on a network queue)."""
        self._beat()
        self._kill_orphans(self.queue.reap())

    def _kill_orphans(self, reaped: list[Reaped]) -> None:
        """Kill the attempts dead workers left running on this host.

        `reap` reports every recent reap each time: each is acted on once. A reap of one
        of our own leases (we were paused past it) is left to `_lose`, which kills that
        attempt when the beat reports it lost; the record names the attempt, so a newer
        attempt of the same job is never hit.
        """
        fresh = [record for record in reaped if record not in self._reaps_heard]
        self._reaps_heard = set(reaped)
        if not fresh:
            return
        log.warning("worker %s: %d lease(s) of dead workers were taken back: %s", self.id,
                    len(fresh), ", ".join(f"{r.job_id} (attempt {r.attempt}) from {r.worker}"
                                          for r in fresh))
        here = [r for r in fresh if r.host in (HOST, "") and r.worker != self.id]
        if here:
            kill_orphans(here)

    def _lose(self, lease: Lease) -> None:
        slot = self._running.get(lease.job_id)
        if slot is None or slot.lost or slot.settling:
            return
        slot.lost = True
        log.warning("worker %s: lost lease on job %s (attempt %d); killing it",
                    self.id, lease.job_id, lease.attempt)
        if slot.process is not None:
            self.deadlines.kill_now(slot.process.pid)

    def _state(self) -> str:
        if self._stopping.is_set():
            return "draining"
        return "working" if self._running else "idle"

    def _beat(self) -> None:
        """Tell the queue we live and what we run; kill what we lost, obey commands."""
        with self._lock:
            leases = [slot.lease for slot in self._running.values()]
        info = WorkerInfo(
            self.id, HOST, os.getpid(), self.slots, state=self._state(),
            running=tuple(lease.job_id for lease in leases), done=self.done,
            started=self._started, log=self.log_path,
        )
        beat = self.queue.beat(info, leases)
        for lease in beat.lost:
            self._lose(lease)
        self._obey_control(beat.commands)

    # -- slots ----------------------------------------------------------------------

    def _slot_loop(self, index: int) -> None:
        wait_s = 0.1 if self.queue.blocking_claim else 0.0
        idle_s = defaults.POLL_MIN_S  # this slot's backoff while a polled queue is empty
        next_lease: Lease | None = None  # handed out with the last finish
        while not self._stopping.is_set():
            try:
                leases = [next_lease] if next_lease else self.queue.claim(self.id, 1,
                                                                          wait_s=wait_s)
                next_lease = None
            except CoordinatorUnreachable as exc:
                self._gone(exc)
                return
            if not leases:
                if not self.queue.blocking_claim:
                    self._stopping.wait(idle_s)
                    idle_s = min(idle_s * 2, defaults.POLL_MAX_S)
                self._wake.set()  # the steering loop may decide the queue is drained
                continue
            idle_s = defaults.POLL_MIN_S
            if self._stopping.is_set():  # the stop came while we were claiming
                self._settle(_Slot(leases[0]), lambda lease=leases[0]: self.queue.release(lease))
                return
            next_lease = self._run_one(leases[0], index)
            if self.max_jobs is not None and self.done >= self.max_jobs:
                self._wake.set()
                break
        if next_lease is not None:  # stopped with its next job in hand: give it back untouched
            unrun = next_lease
            self._settle(_Slot(unrun), lambda: self.queue.release(unrun))

    def _run_one(self, lease: Lease, index: int = 0) -> Lease | None:
        """Run one job and record it; return the next lease if the queue handed one out."""
        slot = _Slot(lease)
        next_lease: Lease | None = None
        with self._lock:
            self._running[lease.job_id] = slot
        try:
            if self.veto is not None and self.veto(lease.job_id):
                result = self._result(slot, State.CANCELLED, None, "cancelled by user", None)
            elif lease.job.kind is Kind.CALL:
                result = self._execute_call(slot, index)
            else:
                result = self._execute(slot)
            next_lease = self._record(slot, result)
        except Exception as exc:  # a bug must not kill the slot, nor loop on one job
            log.exception("worker %s: unexpected error on job %s", self.id, lease.job_id)
            failed = self._result(slot, State.FAILED, None, f"shoal internal error: {exc!r}",
                                  None)
            self._settle(slot, lambda: self.queue.finish(lease, failed))
        finally:
            with self._lock:
                self._running.pop(lease.job_id, None)
        return next_lease

    def _context(self, lease: Lease) -> JobContext:
        """What the job will see through shoal.random(), shoal.config(), shoal.progress()."""
        job = lease.job
        seed = job.meta.get("seed")
        config = self.queue.files.config_file()
        return JobContext(
            job_id=job.id, attempt=lease.attempt, queue=self.queue.url, worker=self.id,
            seed=int(seed) if seed is not None else job_seed(self.queue.settings.seed, job.id),
            progress_file=str(self.queue.files.progress_file(lease)),
            config_file=str(config) if config else None,
        )

    def _execute(self, slot: _Slot) -> Result:
        lease = slot.lease
        attempt_log = self.queue.files.attempt_log(lease)
        try:
            launch = prepare(lease, queue_url=self.queue.url, root=self.queue.settings.root,
                             interpreters=self.queue.settings.interpreters,
                             worker_dir=self.worker_dir, attempt_log=attempt_log,
                             extra_env=self._context(lease).environment())
        except MalformedJob as exc:
            return self._result(slot, State.FAILED, None, f"malformed: {exc}", None)
        slot.started = time.time()
        try:
            slot.process = start(launch)
        except OSError as exc:
            launch.log.write_text(f"shoal: cannot start {launch.argv!r}: {exc}\n")
            return self._result(slot, State.FAILED, None, f"cannot start: {exc}",
                                str(launch.log))
        return self._wait(slot, launch)

    def _wait(self, slot: _Slot, launch: Launch) -> Result:
        assert slot.process is not None
        if slot.releasing or slot.lost:  # stop or loss arrived while starting
            self.deadlines.kill_now(slot.process.pid)
        if launch.timeout_s is not None:
            slot.ticket = self.deadlines.kill_at(slot.process.pid,
                                                 time.monotonic() + launch.timeout_s)
        returncode = slot.process.wait()
        if slot.ticket is not None:
            self.deadlines.forget(slot.ticket)
            assert launch.timeout_s is not None
            slot.timed_out = time.time() - slot.started >= launch.timeout_s
        reason = describe_exit(returncode)
        if slot.timed_out and returncode != 0:
            reason = f"timed out after {launch.timeout_s:g} s ({reason})"
        state = State.DONE if returncode == 0 else State.FAILED
        slot.retries = launch.retries
        return self._result(slot, state, returncode, reason, str(launch.log))

    def _execute_call(self, slot: _Slot, index: int) -> Result:
        """Run a Python call in this slot's long-lived interpreter."""
        lease = slot.lease
        log_path = str(self.queue.files.attempt_log(lease))
        try:
            check_runtime(lease.job)
        except IncompatibleJob as exc:
            return self._result(slot, State.FAILED, None, str(exc), None)
        host = self._hosts.get(index)
        if host is None:
            host = self._hosts[index] = CallHost(
                job_environment(lease, self.queue.url, {}), str(self.worker_dir))
        if not host.ensure_started():  # its start-up (imports) is no part of the call's time
            return self._result(slot, State.FAILED, None, host.exit_reason(), None)
        context = self._context(lease)
        request = {"payload": lease.job.payload, "fn": lease.job.meta.get("fn"),
                   "init": lease.job.meta.get("init"), "log": log_path,
                   "context": vars(context),
                   "env": {**context.environment(), "SHOAL_JOB_ID": lease.job_id,
                           "SHOAL_ATTEMPT": str(lease.attempt)}}
        try:
            request["blobs"] = self._blobs(lease.job, host.known)
        except MalformedJob as exc:
            return self._result(slot, State.FAILED, None, f"malformed: {exc}", None)
        reply = self._call(slot, host, request)
        del request
        slot.retries = lease.job.retries
        self._retire_if_spent(host, lease.job.meta.get("max_tasks_per_child"))
        if reply is None:
            timeout_s = lease.job.timeout_s
            timed_out = timeout_s is not None and time.time() - slot.started >= timeout_s
            reason = f"timed out after {timeout_s:g} s" if timed_out else host.exit_reason()
            partial = log_path if os.path.exists(log_path) else None  # what it printed first
            return self._result(slot, State.FAILED, None, reason, partial)
        state = State.DONE if reply["ok"] else State.FAILED
        return self._result(slot, state, None, "" if reply["ok"] else reply["summary"],
                            reply["log"],
                            value=reply["summary"] if reply["ok"] else None,
                            payload=reply["payload"])

    def _blobs(self, job: Job, known: set[str]) -> dict[str, bytes]:
        """The function blobs of `job` that its interpreter does not keep yet."""
        found = {}
        for digest in job.blob_refs:
            if digest in known:
                continue
            blob = job.blobs.get(digest) or self.queue.get_blob(digest)
            if blob is None:
                raise MalformedJob(f"job {job.id}: function blob {digest} is not in the queue")
            found[digest] = blob
        return found

    def _call(self, slot: _Slot, host: CallHost, request: dict[str, Any]) -> dict | None:
        """Send the call to the ready interpreter under the job's deadline."""
        slot.process = host.process
        slot.started = time.time()
        timeout_s = slot.lease.job.timeout_s
        if slot.releasing or slot.lost:
            self.deadlines.kill_now(host.pid)
        if timeout_s is not None:
            slot.ticket = self.deadlines.kill_at(host.pid, time.monotonic() + timeout_s)
        reply = host.call(request)
        if slot.ticket is not None:
            self.deadlines.forget(slot.ticket)
        return reply

    def _retire_if_spent(self, host: CallHost, max_tasks: int | None) -> None:
        """Like ProcessPoolExecutor's max_tasks_per_child: a fresh interpreter after that
        many calls which carry the limit (the next call starts it)."""
        if not max_tasks or host.process is None:
            return
        host.tasks += 1
        if host.tasks >= max_tasks:
            host.close()

    def _result(self, slot: _Slot, state: State, exit_code: int | None, reason: str,
                log_path: str | None, **extra: Any) -> Result:
        lease = slot.lease
        return Result(
            lease.job_id, state, name=lease.job.name, params=lease.job.params,
            exit_code=exit_code, reason=reason, attempt=lease.attempt, worker=self.id,
            host=HOST, started=slot.started, ended=time.time(), log=log_path, **extra,
        )

    def _record(self, slot: _Slot, result: Result) -> Lease | None:
        """Record the result and, when this slot will run another job, take the next one
        in the same step (`finish(..., then_claim=1)`: one round trip on a network queue)."""
        lease = slot.lease
        if slot.releasing:
            self._settle(slot, lambda: self.queue.release(lease))
            return None
        if slot.lost:
            log.warning("worker %s: result of job %s attempt %d not recorded (lease lost)",
                        self.id, lease.job_id, lease.attempt)
            return None
        if result.state is State.FAILED and lease.attempt <= slot.retries:
            log.info("worker %s: job %s failed (%s); retrying", self.id, lease.job_id,
                     result.reason)
            self._settle(slot, lambda: self.queue.release(lease, failed=result))
            return None
        next_leases: list[Lease] = []
        more = not self._stopping.is_set() and (
            self.max_jobs is None or self.done + 1 < self.max_jobs)
        if self._settle(slot, lambda: next_leases.extend(
                self.queue.finish(lease, result, then_claim=1 if more else 0))):
            self.done += 1
        return next_leases[0] if next_leases else None

    def _settle(self, slot: _Slot, action: Callable[[], None]) -> bool:
        slot.settling = True
        try:
            action()
            return True
        except LeaseLost as exc:
            log.warning("worker %s: %s; result not recorded", self.id, exc)
            return False
        except CoordinatorUnreachable as exc:  # its lease lapses there; the job runs again
            self._gone(exc)
            return False
