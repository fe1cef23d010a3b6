"""`shoal run`: submit in input order, work locally, print each job's output as it ends
(output.py: its stdout on stdout, its stderr on stderr), keep the joblog (joblog.py),
halt when asked and end with GNU parallel's exit status (ending.py), show the live bar
(live.py), sum up on stderr."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence

from . import joblog
from .ending import INTERRUPTED, HaltWatch
from .job import Job, JobStatus, Lease, Result, State
from .output import JobOutput, write_stdout
from .queue.base import Queue, WatchSet
from .queue.files import CUT_MARK
from .runplan import RunPlan
from .worker import Worker

TICK_S = 0.2  # progress refresh; grows when listing a big queue takes longer
WAIT_S = 0.5  # without the bar: longest wait for a job to end (a Ctrl-C is seen after it)
# Jobs submitted before local work starts: the rest go in while it runs, so the first
# job starts after ~256 job writes, not after all of them (2000 took 0.5 s on a quiet
# local disk, 12 s on a busy one).
SUBMIT_FIRST = 256
SUBMIT_CHUNK = 2_000
SHOW_FAILED = 10  # failed jobs listed in the summary
WORKER_FAILED = 2  # the local worker died (a broken queue folder...): the run cannot go on


def run_and_watch(queue: Queue, jobs: Sequence[Job], *, slots: int | None,
                  show_progress: bool) -> int:
    """Run `jobs` to completion on `queue` with parallel's defaults; return the exit status."""
    return run_plan(queue, RunPlan(list(jobs), slots=slots, show_progress=show_progress))


def run_plan(queue: Queue, plan: RunPlan) -> int:
    """Carry out one `shoal run` on `queue`; return its exit status (ending.py)."""
    return _Run(queue, plan).go()


class _Run:
    """One run: its jobs in input order, what ended, what was printed, the halt."""

    def __init__(self, queue: Queue, plan: RunPlan) -> None:
        self.queue, self.plan = queue, plan
        self.seqs: dict[str, int] = {}  # job id -> place in the input (parallel's Seq)
        self.jobs: dict[str, Job] = {}
        for seq, job in enumerate(plan.jobs, 1):
            self.seqs.setdefault(job.id, seq)
            self.jobs.setdefault(job.id, job)
        logged = joblog.read(plan.joblog) if plan.joblog and (
            plan.resume or plan.resume_failed) else {}
        # --resume skips what the joblog lists; --resume-failed only what succeeded there
        self.skipped = {i for i, seq in self.seqs.items()
                        if seq in logged and (logged[seq] or not plan.resume_failed)}
        self.ids = [i for i in self.seqs if i not in self.skipped]
        self.rerun_done = set(self.ids) if plan.fresh else {
            i for i in self.ids if self.seqs[i] in logged}
        self.watched = WatchSet(self.ids)  # not final yet, as far as we heard
        self.output = JobOutput(self.ids, keep_order=plan.keep_order,
                                line_buffer=plan.line_buffer, tags=plan.tags)
        self.joblog = joblog.JoblogWriter(
            plan.joblog, append=plan.resume or plan.resume_failed,
            stdout=write_stdout) if plan.joblog else None
        self.halt = HaltWatch(plan.halt, len(self.ids))
        # the local worker's own count: it stops claiming the moment the halt is met, before
        # the watch below hears of the result (parallel starts no job after it)
        self.worker_halt = HaltWatch(plan.halt, len(self.ids))
        self.worker_halt_lock = threading.Lock()
        self.worker_error: BaseException | None = None  # what ended the local worker early
        self.results: dict[str, Result] = {}
        self.last_lines: dict[str, str] = {}  # failed job -> last non-empty line of its log
        self.halt_cancelled: set[str] = set()  # killed or never started because of --halt
        self.already = 0
        self.stop = threading.Event()  # Ctrl-C, SIGTERM, or q on the live bar
        self.worker: Worker | None = None
        self.thread: threading.Thread | None = None
        self.next_look = 0.0  # line buffering / halt soon: when to look at states again

    # -- the run --------------------------------------------------------------------

    def go(self) -> int:
        started = time.monotonic()
        jobs = [job for job in self.plan.jobs if job.id not in self.skipped]
        try:
            self._prepare(jobs[:SUBMIT_FIRST])
            if self.plan.slots != 0:
                self.worker = Worker(self.queue, slots=self.plan.slots, drain=False,
                                     after_result=self._worker_goes_on)
                self.thread = threading.Thread(target=self._work, name="shoal-run-worker",
                                               daemon=True)
                self.thread.start()
            with self._signals_stop():
                for first in range(SUBMIT_FIRST, len(jobs), SUBMIT_CHUNK):
                    self.queue.submit(jobs[first:first + SUBMIT_CHUNK])
                if self.worker is not None:
                    self.worker.drain = True  # from now on it may exit when the queue is empty
                self._watch(self.plan.show_progress and sys.stderr.isatty())
        finally:
            if self.worker is not None and self.thread is not None:
                self.worker.stop()
                self.thread.join()
            if self.joblog is not None:
                self.joblog.close()
        if self.worker_error is not None:
            echo(f"shoal run: the local worker stopped: {describe(self.worker_error)}")
            return WORKER_FAILED
        return self._summarise(time.monotonic() - started)

    def _work(self) -> None:
        """The local worker's thread: what ends it early is kept for the watch to report."""
        assert self.worker is not None
        try:
            reason = self.worker.run()
        except Exception as exc:  # reported once, as one line, by go()
            self.worker_error = exc
            self.stop.set()
            return
        if reason not in ("drained", "stopped"):  # e.g. "coordinator gone": jobs left undone
            self.worker_error = RuntimeError(reason)
            self.stop.set()

    def _worker_goes_on(self, result: Result) -> bool:
        """The worker's after_result hook: False once --halt is met (claim no more)."""
        if result.job_id not in self.watched:
            return True  # not one of this run's jobs
        with self.worker_halt_lock:
            return not (self.worker_halt.observe(result) or self.worker_halt.reached)

    def _prepare(self, first: list[Job]) -> None:
        """Submit the first jobs (the rest come while the worker runs); jobs that failed
        before run again, done ones too where asked (--fresh, --resume-failed)."""
        before = self.queue.states(self.ids)
        force = [i for i in self.rerun_done if before.get(i) is State.DONE]
        self.already = sum(1 for s in before.values() if s is State.DONE) - len(force)
        self.queue.submit(first)
        self.queue.retry([i for i, s in before.items() if s in (State.FAILED, State.CANCELLED)])
        if force:
            self.queue.retry(force, force=True)

    @contextlib.contextmanager
    def _signals_stop(self) -> Iterator[None]:
        """SIGINT/SIGTERM end the run (the second one kills running jobs at once)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(_signum: int, _frame: object) -> None:
            if self.worker is not None:
                self.worker.stop(now=self.stop.is_set())
            self.stop.set()

        saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in saved.items():
                signal.signal(sig, old)

    def _watch(self, live: bool) -> None:
        """Until every job ended (or a stop): print, log and count each job that ends."""
        if live:
            from .live import watch_live

            watch_live(self.queue, self.ids, self.stop, poll=self._poll_live,
                       all_final=lambda _states, _ids: not self.watched)
            return
        wait_s = TICK_S if self.plan.line_buffer or self.halt.reached else WAIT_S
        while self.watched and not self.stop.is_set():
            began = time.monotonic()
            self._take(self.queue.watch(self.watched, wait_s))
            self._look()
            if not self.watched:
                break  # the last one ended: no pause before the summary
            # at most one look per TICK_S, as the bar: a backend without a journal of
            # finals scans every watched id per look
            self.stop.wait(TICK_S - (time.monotonic() - began))

    def _poll_live(self, queue: Queue, ids: list[str]) -> tuple[dict[str, State], float]:
        """The bar's poll: first take what ended, then count the states it shows."""
        self._take(queue.watch(self.watched, 0))
        self._look()
        return _poll(queue, ids)

    # -- jobs that end ------------------------------------------------------------------

    def _take(self, results: list[Result]) -> None:
        for result in sorted(results, key=lambda r: self.seqs.get(r.job_id, 0)):
            if result.job_id in self.watched:
                self.watched.discard(result.job_id)
                self._ended(result)

    def _ended(self, result: Result) -> None:
        job_id = result.job_id
        self.results[job_id] = result
        log = err = None
        if result.state is State.CANCELLED:  # nothing to print, nothing to log
            self.output.ended(job_id, result.attempt, None)
            if job_id in self.halt_cancelled:
                return  # parallel neither counts nor logs the jobs its --halt killed
        elif self.plan.keep_order:  # read at its turn: no waiting output kept in memory
            self.output.ended(job_id, result.attempt, functools.partial(self._read_log, result),
                              functools.partial(self._read_err, result))
            if not result.ok or self.joblog is not None:
                log, err = self._read_log(result), self._read_err(result)
        else:
            log, err = self._read_log(result), self._read_err(result)
            self.output.ended(job_id, result.attempt, log, err)
        if not result.ok:  # why it failed is usually the last line it wrote on stderr
            self.last_lines[job_id] = last_line(err) or last_line(log)
        if self.joblog is not None and result.state is not State.CANCELLED:
            self.joblog.write(self.seqs[job_id], self.jobs[job_id], result,
                              len(log or b"") + len(err or b""))
        if self.halt.observe(result):
            self._halt()

    def _read_log(self, result: Result) -> bytes | None:
        try:
            return self.queue.files.read_log(self._status(result))
        except OSError:
            return None

    def _read_err(self, result: Result) -> bytes | None:
        """The job's stderr where it is kept apart from its log (Job.stderr_apart)."""
        if not self.jobs[result.job_id].stderr_apart:
            return None
        try:
            return self.queue.files.read_stderr(self._status(result))
        except OSError:
            return None

    def _status(self, result: Result) -> JobStatus:
        return JobStatus(self.jobs[result.job_id], result.state, attempt=result.attempt,
                         worker=result.worker or None, result=result)

    # -- while jobs run: line buffering, halting soon -------------------------------------

    def _look(self) -> None:
        """Print new lines of running jobs (--line-buffer) and keep pending jobs from
        starting after a --halt soon; paced so a look costs at most a fifth of the time."""
        halting = self.halt.reached and self.plan.halt.when == "soon"
        if not (self.plan.line_buffer or halting) or time.monotonic() < self.next_look:
            return
        began = time.monotonic()
        wanted = [i for i in self.watched if halting or self.output.wants_stream(i)]
        states = self.queue.states(wanted)
        if halting:
            self._cancel([i for i, s in states.items() if s is State.PENDING])
        for job_id in sorted(wanted, key=self.seqs.__getitem__):
            if states.get(job_id) is State.RUNNING and self.output.wants_stream(job_id):
                self._stream(job_id)
        self.next_look = time.monotonic() + max(TICK_S, 4 * (time.monotonic() - began))

    def _stream(self, job_id: str) -> None:
        status = self.queue.get(job_id)
        if status is None or status.state is not State.RUNNING or not status.worker:
            return
        offset = self.output.stream_offset(job_id, status.attempt)
        self.output.stream(job_id, status.attempt, self._running_log(status, offset))

    def _running_log(self, status: JobStatus, offset: int) -> bytes:
        """A running attempt's log from `offset`: the file itself where this machine sees
        it (our own worker's, a shared folder's), else the tail its worker's beats ship."""
        assert status.worker is not None
        path = self.queue.files.attempt_log(Lease(status.job, status.attempt, status.worker,
                                                  ""))
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read()
        except FileNotFoundError:
            pass
        except OSError:
            return b""
        data = self.queue.files.read_log(status) or b""
        return b"" if data.startswith(CUT_MARK) else data[offset:]

    # -- halting ----------------------------------------------------------------------------

    def _halt(self) -> None:
        """--halt's condition is met: `now` kills running jobs, `soon` lets them finish;
        either way no job starts any more (pending ones are cancelled)."""
        now = self.plan.halt.when == "now"
        echo(f"shoal run: --halt {self.halt.describe()} reached: "
             f"{'killing running jobs' if now else 'waiting for running jobs'}, "
             "starting no more")
        if self.worker is not None and self.thread is not None:
            if now or not self.worker_halt.reached:  # else the worker already stopped
                self.worker.stop(now=now)  # a release puts them back to pending: cancelled
            if now:
                self.thread.join()
        if now:
            self._cancel(list(self.watched))
        self.next_look = 0.0

    def _cancel(self, ids: list[str]) -> None:
        if ids:
            self.halt_cancelled.update(self.queue.cancel(ids))

    # -- the end ------------------------------------------------------------------------

    def _summarise(self, seconds: float) -> int:
        url = self.queue.url
        counts = Counter(r.state for r in self.results.values())
        killed = sum(1 for i in self.halt_cancelled if i in self.results)
        parts = [f"{counts[State.DONE]} done"]
        if self.already:
            parts[0] += f" ({self.already} already before)"
        parts += [f"{counts[State.FAILED]} failed"] if counts[State.FAILED] else []
        if counts[State.CANCELLED] - killed:
            parts.append(f"{counts[State.CANCELLED] - killed} cancelled")
        parts += [f"{killed} stopped by --halt"] if killed else []
        unfinished = len(self.ids) - len(self.results)
        parts += [f"{unfinished} unfinished"] if unfinished else []
        parts += [f"{len(self.skipped)} skipped (in the joblog)"] if self.skipped else []
        echo(f"shoal run: {len(self.seqs)} jobs: {', '.join(parts)} in {seconds:.1f} s "
             f"(queue {url})")
        self._list_failures()
        if self.stop.is_set() and self.watched:
            echo("shoal run: interrupted; run the same command again to resume")
            return INTERRUPTED
        return self.halt.exit_status()

    def _list_failures(self) -> None:
        """The failed jobs in input order, each with its log's last line."""
        failed = sorted((r for r in self.results.values()
                         if not r.ok and r.job_id not in self.halt_cancelled),
                        key=lambda r: self.seqs[r.job_id])
        for result in failed[:SHOW_FAILED]:
            last = self.last_lines.get(result.job_id, "")
            echo(f"  failed: {result.name}: {result.reason}"
                 + (f": {last}" if last and not result.reason.endswith(last) else ""))
        if len(failed) > SHOW_FAILED:
            echo(f"  ... and {len(failed) - SHOW_FAILED} more: shoal results {self.queue.url}")
        if failed:
            first = failed[0]
            hint = f"  a failed job's log: shoal logs {self.queue.url} {first.job_id}"
            if first.attempt > 1:
                hint += f" (its earlier attempts: --attempt 1..{first.attempt - 1})"
            echo(hint)


def describe(error: BaseException) -> str:
    """An exception as one line: its message, or its type when it has none."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def echo(line: str) -> None:
    """A line on stderr; while the live bar shows, through its stand-in for sys.stderr,
    which prints above the bar (click.echo would write over it)."""
    print(line, file=sys.stderr, flush=True)


def last_line(log: bytes | None, most: int = 200) -> str:
    """The last non-empty line of a log (what usually says why a job failed), shortened."""
    for row in reversed((log or b"").splitlines()):
        text = row.decode(errors="replace").strip()
        if text:
            return text if len(text) <= most else text[:most - 3] + "..."
    return ""


def _poll(queue: Queue, ids: list[str]) -> tuple[dict[str, State], float]:
    """The jobs' states, and how long to wait before asking again (5x the cost, >= TICK_S),
    so watching 100,000 jobs does not eat a core."""
    started = time.monotonic()
    states = queue.states(ids)
    return states, max(TICK_S, 5 * (time.monotonic() - started))

