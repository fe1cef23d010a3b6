"""The worker loop: N slots, each a loop of claim -> run -> finish; one steering loop beside.
At most N jobs run at once, and only while their needs fit what the worker has (ledger.py).

    steering loop (caller's thread)          slot threads (N)
    ------------------------------          -------------------------------
    beat: register, renew leases,            take a lease (idle slots share one
      take control commands (stop...)          claim: handout.py; it fits: ledger.py)
    reap (kill orphans of dead workers)      the runner of its kind runs it
    look for drop-in job files                 (processes.py, calls.py)
    kill jobs over their mem (memwatch.py)
                                             finish (+ claim the next) /
    decide to exit (drained, stopped)          release (failed: to try again)
                                             (lease lost -> result refused)

Stopping: a first stop (SIGINT/SIGTERM or `shoal fire`) claims nothing more and
lets running jobs finish (on_stop="finish", the default) or releases them back
to the queue at once (on_stop="release"); a second stop, or `stop(now=True)`,
always releases. A job killed by the very signal that stopped the worker (Slurm
signals both at once) is released too, not failed (stops.py). A worker lent until
a known time (`until`) claims only jobs expected to end by then and leaves when
none does (walltime.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .. import defaults
from ..errors import CoordinatorUnreachable, LeaseLost, QueueFull, no_space
from ..fsutil import HOST
from ..job import Beat, Kind, Lease, Reaped, Result, State, WorkerInfo
from ..queue import STOP, STOP_NOW, Queue
from ..queue.scheduling import MEM
from .calls import CallRunner
from .fullqueue import FullQueue
from .handout import Handout
from .kill import Deadlines, kill_orphans
from .ledger import Ledger
from .memwatch import SAMPLE_S, over_reason, rss_of_sessions
from .processes import ProcessRunner
from .resources import Resources
from .slot import Runner, Slot
from .stops import StopSignals
from .walltime import Walltime

log = logging.getLogger("shoal.worker")
# One line per job that ended here (`shoal work` prints them on stderr; -q silences them).
job_lines = logging.getLogger("shoal.jobs")


def new_worker_id() -> str:
    """host-pid-random: unique across hosts and restarts, safe in file names."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", HOST)[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


def job_line(lease: Lease, result: Result, *, retrying: bool = False) -> str:
    """`done   #7 ID  NAME (3.2 s)`, `failed #8 ID  NAME: reason (0.1 s)`; `retry` when
    the failed attempt runs again. The id and `#SEQ` (the job's place in submission order,
    left out where the queue did not say) are what `shoal logs Q ...` takes."""
    took = result.duration_s
    timing = f" ({took:.1f} s)" if took is not None else ""
    word = "retry" if retrying else result.state.value
    why = f": {' '.join(result.reason.split())}" if result.reason else ""
    again = f"; attempt {lease.attempt + 1} next" if retrying else ""
    number = f"#{lease.seq} " if lease.seq else ""
    return f"{word:<6} {number}{lease.job_id}  {lease.job.name}{why}{timing}{again}"


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
        cancelled_by_owner: Callable[[str], bool] | None = None,
        after_result: Callable[[Result], bool] | None = None,
        resources: Resources | None = None,
        idle_timeout_s: float | None = None,
        until: float | None = None,
    ) -> None:
        """`slots`: how many jobs may run at once (default: the cpus of `resources`).
        `resources`: what the worker has (default: this machine's, with `slots` cpus);
        its jobs run while their needs fit in it (`Ledger`).
        `cancelled_by_owner(job_id)`: whether the worker's owner (an Executor) cancelled
        the job but could not stop it in the queue in time, so it is not run if claimed.
        `after_result(result)`: told each final result before the slot claims again; False
        makes the worker claim nothing more (`shoal run --halt`: no job starts after it).
        `idle_timeout_s`: exit after this long with no job running (an autoscaled worker
        gives its allocation back).
        `until`: when the machine must be handed back (seconds since the epoch): only
        jobs expected to end before then are run (`Walltime`)."""
        if on_stop not in ("finish", "release"):
            raise ValueError("on_stop must be 'finish' or 'release'")
        self.queue = queue
        self.resources = resources or Resources.detect(slots=slots)
        self.slots = slots or self.resources.cpus
        self.drain = drain
        self.on_stop = on_stop
        self.heartbeat_s = heartbeat_s or min(defaults.HEARTBEAT_S, queue.settings.lease_s / 4)
        self.scan_s = scan_s
        self.max_jobs = max_jobs
        self.id = worker_id or new_worker_id()
        self.worker_dir = Path(worker_dir or Path.cwd()).absolute()
        self.log_path = log_path
        self.cancelled_by_owner = cancelled_by_owner
        self.after_result = after_result
        self.deadlines = Deadlines(kill_grace_s)
        processes = ProcessRunner(queue, self.deadlines, self.worker_dir)
        self._runners: dict[Kind, Runner] = {
            Kind.COMMAND: processes,
            Kind.FILE: processes,
            Kind.CALL: CallRunner(queue, self.deadlines, self.worker_dir),
        }
        self.done = 0
        self.exit_reason = ""
        self._running: dict[str, Slot] = {}
        self._reaps_heard: set[Reaped] = set()  # what the last reap() reported
        self._handout = Handout()  # leases claimed for idle slots in one claim
        self._ledger = Ledger(self.resources)  # what the leased jobs hold of `resources`
        self._next_sample = 0.0  # when the memory of jobs with a mem need is sampled next
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stops = StopSignals()  # the signals that stopped us (a job's death by one)
        self.walltime = Walltime(until) if until is not None else None
        self._wake = threading.Event()
        self._started = time.time()
        self.idle_timeout_s = idle_timeout_s
        self._idle_since = time.monotonic()
        self._done_seen = 0  # `done` when last looked at: a job may start and end between
        self._full = FullQueue(self.id, queue.settings.lease_s)  # a full disk: wait it out

    # -- steering -----------------------------------------------------------------

    def run(self) -> str:
        """Work until a way out is reached; return it ("drained", "stopped", "max jobs")."""
        try:
            self._beat()
        except QueueFull as exc:  # a full disk: the steering loop keeps trying
            self._full.refused(exc)
        log.info("worker %s: started on %s with %d slots", self.id, self.queue.url, self.slots)
        if self.walltime is not None:
            log.info("worker %s: starts only jobs expected to end by %s", self.id,
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.walltime.end)))
        threads = [threading.Thread(target=self._slot_loop, args=(i,), name=f"shoal-slot-{i}",
                                    daemon=True) for i in range(self.slots)]
        for thread in threads:
            thread.start()
        try:
            self._heartbeat_loop()
        except CoordinatorUnreachable as exc:
            self._stop_unreachable(exc)
        finally:
            self._stopping.set()
            for thread in threads:
                thread.join()
            for unrun in self._handout.take_all():  # claimed for a slot that stopped first
                self._give_back(unrun)
            for runner in set(self._runners.values()):
                runner.close()
            with contextlib.suppress(CoordinatorUnreachable, QueueFull):
                self.queue.flush()
                self.queue.unregister(self.id)
            self.deadlines.close()
        log.info("worker %s: exiting (%s) after %d jobs", self.id, self.exit_reason, self.done)
        return self.exit_reason

    def _heartbeat_loop(self) -> None:
        """Until stopped: beat (and reap) every heartbeat_s, scan for drop-ins every scan_s."""
        next_beat = next_scan = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                if now >= next_scan:
                    next_scan = now + self.scan_s
                    self.queue.refresh()
                if now >= next_beat:
                    next_beat = now + self.heartbeat_s
                    self._heartbeat()
                self._watch_memory(now)
                if self._should_exit():
                    break
            except QueueFull as exc:  # a full disk: said once; tried again next time round
                self._full.refused(exc)
            self._wake.wait(min(self.heartbeat_s, self.scan_s, 0.25))
            self._wake.clear()
        self._wait_for_slots()

    def _stop_unreachable(self, exc: CoordinatorUnreachable) -> None:
        """The queue's coordinator stopped answering: stop, and kill running jobs (their
        leases lapse there, so the jobs run again elsewhere)."""
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
        if self.walltime is not None and self.walltime.over():
            self._stop_claiming("walltime")
            return True
        if self.drain and not self._running and self.queue.is_drained():
            # One more reap before leaving: it may bring news of the reap that freed our
            # last jobs (orphans to kill here), or take leases back (then not drained).
            self._kill_orphans(self.queue.reap())
            if self.queue.is_drained():
                self.exit_reason = "drained"
                return True
        if self.idle_timeout_s is not None and self._idle_for() >= self.idle_timeout_s:
            self.exit_reason = "idle"
            return True
        return False

    def _idle_for(self) -> float:
        """Seconds since this worker last had a job running."""
        now = time.monotonic()
        if self._running or self.done != self._done_seen:
            self._idle_since, self._done_seen = now, self.done
        return now - self._idle_since

    def _wait_for_slots(self) -> None:
        """After a stop: let running jobs finish (or release them), renewing meanwhile."""
        with self._lock:  # a slot registering its job now either sees the stop or is seen
            self._stopping.set()
        if self.on_stop == "release":
            self._release_all()
        next_beat = 0.0
        while self._running:  # look often, beat (two round trips) once per heartbeat_s
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + self.heartbeat_s
            self._watch_memory(time.monotonic())
            time.sleep(min(self.heartbeat_s, 0.1))

    def stop(self, *, now: bool = False, signum: int | None = None) -> None:
        """Claim nothing more; with `now` (or on_stop="release") release running jobs.
        `signum`: the signal that asked (a job that dies of it is released, not failed)."""
        if signum is not None:
            self._stops.heard(signum)
        if not self.exit_reason:
            self.exit_reason = "stopped"
        if self._stopping.is_set() or now:
            self.on_stop = "release"
            self._release_all()
        self._stopping.set()
        self._wake.set()

    def _stop_claiming(self, reason: str) -> None:
        """Claim nothing more and leave once running jobs end (not a stop: a later one
        is still the first, which lets them finish)."""
        with self._lock:
            if not self.exit_reason:
                self.exit_reason = reason
                log.info("worker %s: %s: claiming no more, leaving once running jobs end",
                         self.id, reason)
        self._stopping.set()
        self._wake.set()

    def _release_all(self) -> None:
        with self._lock:
            slots = list(self._running.values())
        for slot in slots:
            slot.releasing = True
            self._runners[slot.lease.job.kind].kill(slot)

    def _obey_control(self, commands: tuple[str, ...]) -> None:
        for command in commands:
            log.info("worker %s: control command %r", self.id, command)
            if command == STOP:
                self.stop()
            elif command == STOP_NOW:
                self.stop(now=True)

    def _heartbeat(self) -> None:
        """One heartbeat: a beat that brings what a reap reports (`Queue.heartbeat`: one
        round trip on a network queue). A queue that refuses the beat (a full disk) does
        not reap: our own leases must not look dead to us; the next heartbeat tries again."""
        try:
            beat = self._beat(reap=True)
            self._full.went_through()
            self._kill_orphans(list(beat.reaped))
        except QueueFull as exc:
            self._full.refused(exc)

    def _kill_orphans(self, reaped: list[Reaped]) -> None:
        """Kill the attempts dead workers left running on this host.

        `reap` reports every recent reap each time: each is acted on once. A reap of one
        of our own leases (we were paused past it) is left to `_lease_lost`, which kills that
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

    def _lease_lost(self, lease: Lease) -> None:
        """The queue took this lease back: kill its job, whose result would be refused."""
        if self._handout.forget(lease):  # still spare: nothing runs it, its share is free
            self._ledger.give_back(lease)
        slot = self._running.get(lease.job_id)
        if slot is None or slot.lost or slot.settling:
            return
        if slot.lease.token != lease.token:
            # A beat sent before a failed attempt was released came back after this worker
            # claimed the job's next attempt: that lease is ours and alive.
            return
        slot.lost = True
        log.warning("worker %s: lost lease on job %s (attempt %d); killing it",
                    self.id, lease.job_id, lease.attempt)
        self._runners[lease.job.kind].kill(slot)

    def _watch_memory(self, now: float) -> None:
        """Every SAMPLE_S while a job that asked for mem runs: kill those using more
        (their result says so). Nothing at all while no such job runs."""
        if now < self._next_sample or not self._ledger.holds(MEM):
            return
        self._next_sample = now + SAMPLE_S
        with self._lock:
            watched = {slot.process.pid: (slot, slot.share.needs[MEM])
                       for slot in self._running.values()
                       if slot.process is not None and slot.share is not None
                       and MEM in slot.lease.job.needs and not slot.overused}
        for pid, used in rss_of_sessions(watched).items():
            slot, limit = watched[pid]
            if used > limit:
                slot.overused = over_reason(used, limit)
                log.warning("worker %s: job %s %s; killing it", self.id, slot.lease.job_id,
                            slot.overused)
                self._runners[slot.lease.job.kind].kill(slot)

    def _state(self) -> str:
        if self._stopping.is_set():
            return "draining"
        return "working" if self._running else "idle"

    def _beat(self, *, reap: bool = False) -> Beat:
        """Tell the queue we live and what we run; kill what we lost, obey commands. With
        `reap`, the beat is a whole heartbeat (`Queue.heartbeat`): its `reaped` is filled."""
        with self._lock:
            running = [slot.lease for slot in self._running.values()]
        leases = running + self._handout.spare()
        info = WorkerInfo(
            self.id, HOST, os.getpid(), self.slots, state=self._state(),
            running=tuple(lease.job_id for lease in running), done=self.done,
            started=self._started, log=self.log_path, resources=self._ledger.totals,
            labels=tuple(sorted(self.resources.labels)),
        )
        beat = self.queue.heartbeat(info, leases) if reap else self.queue.beat(info, leases)
        for lease in beat.lost:
            self._lease_lost(lease)
        self._obey_control(beat.commands)
        return beat

    # -- slots ----------------------------------------------------------------------

    def _slot_loop(self, index: int) -> None:
        wait_s = 0.1 if self.queue.blocking_claim else 0.0
        idle_s = defaults.POLL_MIN_S  # this slot's backoff while a polled queue is empty
        next_lease: Lease | None = None  # handed out with the last finish
        while not self._stopping.is_set():
            if next_lease is None and not self._ledger.room() and not self._handout.spare():
                # the jobs held fill the worker: wait for one to end
                self._ledger.wait_for_room(defaults.POLL_MAX_S)
                continue
            try:
                lease = next_lease or self._handout.next(
                    lambda n: self._claim(n, wait_s), self._unclaimed(), self._stopping)
                next_lease = None
            except CoordinatorUnreachable as exc:
                self._stop_unreachable(exc)
                return
            except QueueFull as exc:  # a full disk: wait, claim again
                self._stopping.wait(self._full.refused(exc))
                continue
            if lease is None:
                if not self.queue.blocking_claim:
                    self._stopping.wait(idle_s)
                    idle_s = min(idle_s * 2, defaults.POLL_MAX_S)
                self._wake.set()  # the steering loop may decide the queue is drained
                continue
            idle_s = defaults.POLL_MIN_S
            next_lease = self._run_one(lease, index)
            if self.max_jobs is not None and self.done >= self.max_jobs:
                self._wake.set()
                break
        if next_lease is not None:  # stopped with its next job in hand: give it back untouched
            self._give_back(next_lease)

    def _unclaimed(self) -> int:
        """How many more jobs this worker may claim: its idle slots, as many as have a
        cpu free, within max_jobs."""
        with self._lock:
            busy = len(self._running)
        most = min(self.slots - busy, self._ledger.room())
        if self.max_jobs is None:
            return most
        return min(most, self.max_jobs - self.done - busy)

    def _claim(self, n: int, wait_s: float) -> list[Lease]:
        """Up to n jobs that fit in what is free now (and in the time left)."""
        def claim(k: int) -> list[Lease]:
            return self.queue.claim(self.id, k, wait_s=wait_s, fit=self._ledger.capacity())

        if self.walltime is None:
            return self._hold(claim(n))
        leases, none_fits = self.walltime.claim(claim, n, self._give_back)
        if none_fits:
            self._stop_claiming("walltime")
        return self._hold(leases)

    def _hold(self, leases: list[Lease]) -> list[Lease]:
        """The leases whose share the ledger could hold; the others (another slot's claim
        took the room meanwhile) go back to the queue untouched."""
        held = [lease for lease in leases if self._ledger.take(lease)]
        if len(held) < len(leases):
            for lease in leases:
                if lease not in held:
                    self._fenced(Slot(lease), lambda unfit=lease: self.queue.release(unfit))
        return held

    def _give_back(self, lease: Lease) -> None:
        """A lease this worker will not run: to the queue untouched, its share freed."""
        self._ledger.give_back(lease)
        self._fenced(Slot(lease), lambda: self.queue.release(lease))

    def _run_one(self, lease: Lease, index: int = 0) -> Lease | None:
        """Run one job and record it; return the next lease if the queue handed one out."""
        slot = Slot(lease, index, share=self._ledger.share(lease))
        next_lease: Lease | None = None
        with self._lock:  # with the stop's check: _wait_for_slots sees this job, or it never runs
            stopping = self._stopping.is_set()
            if not stopping:
                self._running[lease.job_id] = slot
        if stopping:  # the stop (or a way out) came while we were claiming
            self._give_back(lease)
            return None
        try:
            if self.cancelled_by_owner is not None and self.cancelled_by_owner(lease.job_id):
                result = slot.result(State.CANCELLED, "cancelled by user")
            else:
                result = self._runners[lease.job.kind].run(slot)
            if slot.overused and result.state is State.FAILED:
                result = dataclasses.replace(result, reason=slot.overused)
            if self._stopped_with_us(slot, result):
                slot.releasing = True
            next_lease = self._record(slot, result)
        except Exception as exc:  # a bug must not kill the slot, nor loop on one job
            full = no_space(exc, self.worker_dir)
            if full is not None:  # not the job's fault: back to the queue, after a wait
                time.sleep(self._full.refused(full))
                self._fenced(slot, lambda: self.queue.release(lease))
                return None
            # One line for the user; the traceback with -vv (a CLI prints none by default).
            log.error("worker %s: unexpected error on job %s: %r", self.id, lease.job_id, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            failed = slot.result(State.FAILED, f"shoal internal error: {exc!r}")
            self._fenced(slot, lambda: self.queue.finish(lease, failed))
        finally:
            with self._lock:
                self._running.pop(lease.job_id, None)
            self._ledger.give_back(lease)
        return next_lease

    def _stopped_with_us(self, slot: Slot, result: Result) -> bool:
        """Whether the run died of the signal that stopped this worker (not of a kill
        of ours: a deadline, the memory watch, a lost lease, a release)."""
        if (result.state is not State.FAILED or slot.lost or slot.releasing
                or slot.overused or result.reason.startswith("timed out")
                or slot.timed_out(slot.lease.job.timeout_s)):
            return False
        if not self._stops.stopped_with_worker(result.exit_code):
            return False
        log.warning("worker %s: job %s was stopped with the worker (%s); giving it back "
                    "to the queue", self.id, slot.lease.job_id, result.reason)
        return True

    def _record(self, slot: Slot, result: Result) -> Lease | None:
        """Record the result and, when this slot will run another job, take the next one
        in the same step (`finish(..., then_claim=1)`: one round trip on a network queue)."""
        lease = slot.lease
        if slot.releasing:
            self._fenced(slot, lambda: self.queue.release(lease))
            return None
        if slot.lost:
            log.warning("worker %s: result of job %s attempt %d not recorded (lease lost)",
                        self.id, lease.job_id, lease.attempt)
            try:  # a cancel of this attempt keeps its log so far (Queue.keep_log)
                self.queue.keep_log(lease, result)
            except CoordinatorUnreachable as exc:
                self._stop_unreachable(exc)
            return None
        if result.state is State.FAILED and lease.attempt <= slot.retries:
            job_lines.info("%s", job_line(lease, result, retrying=True))
            self._fenced(slot, lambda: self.queue.release(lease, failed=result))
            return None
        go_on = self.after_result is None or self.after_result(result)
        next_leases: list[Lease] = []
        more = go_on and not self._stopping.is_set() and (
            self.max_jobs is None or self.done + 1 < self.max_jobs)
        then_claim = 1 if more and self._ledger.room(lease) else 0
        fit = self._ledger.capacity(lease) if then_claim else None
        if self._fenced(slot, lambda: next_leases.extend(
                self.queue.finish(lease, result, then_claim=then_claim, fit=fit))):
            self.done += 1
            job_lines.info("%s", job_line(lease, result))
        self._ledger.give_back(lease)
        if self.walltime is not None:
            self.walltime.learn(lease.job, result)
            next_leases = self.walltime.keep(next_leases, self._give_back)
        held = self._hold(next_leases)
        if not go_on and not self._stopping.is_set():  # a second stop would release all
            self.stop()
        return held[0] if held else None

    def _fenced(self, slot: Slot, action: Callable[[], None]) -> bool:
        """Run a queue call that needs the slot's lease; False if the lease was refused or
        the coordinator is gone (the job then runs again elsewhere). A full queue (disk)
        is tried again, the lease kept meanwhile by the beats, until the call goes
        through or the worker leaves (`_gives_up`: then the lease lapses)."""
        slot.settling = True
        while True:
            try:
                action()
                self._full.went_through()
                return True
            except LeaseLost as exc:
                log.warning("worker %s: %s; result not recorded", self.id, exc)
                return False
            except CoordinatorUnreachable as exc:  # its lease lapses there; the job runs again
                self._stop_unreachable(exc)
                return False
            except QueueFull as exc:
                wait_s = self._full.refused(exc)
                if self._gives_up():
                    log.warning("worker %s: job %s attempt %d left to its lease, which "
                                "lapses (the queue still refuses writes)", self.id,
                                slot.lease.job_id, slot.lease.attempt)
                    return False
                time.sleep(wait_s)

    def _gives_up(self) -> bool:
        """Whether to stop trying a refused write: on a stop that releases (a second
        stop), or a stop while the queue has refused writes for longer than a lease."""
        return self._stopping.is_set() and (
            self.on_stop == "release" or self._full.lasted() > self.queue.settings.lease_s)
