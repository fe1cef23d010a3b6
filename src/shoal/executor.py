"""`shoal.Executor`: a concurrent.futures.Executor over any shoal queue.

    caller thread              queue                 workers (here: N slots; elsewhere:
    -------------              -----                 `shoal work URL` on other machines)
    submit(fn, *a) ──► outbox ─► pending ─claim─► long-lived interpreter runs fn
    Future ◄── collector thread ◄── final results ◄─ finish (value or exception)

The Executor the user holds is a thin front; the threads (submitter, collector, the
local worker) run over an `_Engine` that never refers back to it, so an Executor
dropped without `shutdown()` is garbage-collected and its engine shuts down as the
stdlib's pools do: the calls already submitted still run, then threads and
interpreters stop.

The submitter writes the outbox to the queue in batches (one durable write per
batch). Nothing submitted is lost when the program exits: an exit hook, run before
the interpreter joins its threads (the hook concurrent.futures uses), sends what is
left in the outbox; with local workers it then waits for the pending futures, as
the stdlib does; with `workers=0` the calls stay pending in the queue for the
workers of other machines. Futures are touched only through
set_running_or_notify_cancel / set_result / set_exception. Cancelling a future
cancels its job if no worker has started it yet.

A future passed as an argument (or one level inside a list, tuple or dict argument)
makes the call a job `after` that future's job, and the call receives its return
value (calls.DependencyValue marks the place); the queue holds the call back until
then, and ends it without running if the dependency failed or was cancelled.
Per-call settings (priority, resources, timeouts) go through `Executor.options(...)`,
a light view of the same executor (call_options.py checks them).
"""

from __future__ import annotations

import atexit
import functools
import itertools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import defaults
from .call_options import job_fields, merged
from .calls import (
    DependencyValue,
    call_job,
    check_call_setup,
    describe_call,
    outcome,
    swap_arguments,
)
from .context import job_seed
from .errors import JobFailed
from .job import Job, Result, State
from .queue import open_queue
from .queue.base import Queue, WatchSet
from .queue.scheduling import dependency_reason
from .worker import Worker

log = logging.getLogger("shoal.executor")

COLLECT_WAIT_S = 0.2  # the collector re-checks for shutdown at least this often
RUNNING_CHECK_S = 0.5  # how often futures of started calls are marked running()
# Arguments that are, or may hold, a future (see Executor._take_futures).
_MAY_HOLD_FUTURES = (futures.Future, list, tuple, dict)
# While more calls are in flight, the collector lets results gather this long between
# looks: one wake per few results, not per result (a thread hand-off costs the slots
# GIL time); a lone call's result is never held back.
GATHER_S = 0.002
# At program exit, a wait for pending calls longer than this is announced on stderr.
EXIT_NOTICE_S = 2.0


class ShoalFuture(futures.Future):
    """A Future whose cancel() also cancels the job, if no worker has started it."""

    # no bigger instance dict: a map holds 10^5 of these
    __slots__ = ("_engine", "job_id", "never_sent")

    def __init__(self, engine: _Engine, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self._engine = engine
        self.never_sent = False  # cancelled before it reached the queue

    def __reduce_ex__(self, protocol: object) -> Any:
        """A future deeper inside an argument cannot travel: say where one can be."""
        raise TypeError(f"a shoal future (call {self.job_id}) can be passed to a call only "
                        "as an argument or one level inside a list, tuple or dict argument "
                        "(and not to map with chunksize > 1)")

    def cancel(self) -> bool:
        if self.done() or self.running():
            return super().cancel()  # False, or True if it was cancelled already
        if not self._engine.cancel_job(self.job_id) or not super().cancel():
            return False
        # As an executor does when it meets a cancelled item: wait() and as_completed()
        # count a future as done only once it is CANCELLED_AND_NOTIFIED.
        self.set_running_or_notify_cancel()
        return True


class Executor(futures.Executor):
    """Run Python calls on a shoal queue: locally with `workers` slots, and anywhere else
    a `shoal work URL` joins the same queue.

    queue: a queue URL or Queue; None is an in-process queue (fastest, this machine only).
        A queue opened from a URL is closed by shutdown(); a Queue passed in stays open.
    workers: local slots for the Executor's life (default: CPU count; 0 = only workers
        started elsewhere with `shoal work`; the calls then outlive this program).
    timeout_s, retries, max_attempts: defaults for every call (see `options`).
    seed: the run's seed; shoal.random() in the n-th submitted call (or item i of the
        n-th map) is seeded from (seed, n[, i]), so a rerun of the same script draws the
        same numbers, whichever worker runs a call and however often it is retried.
    config: a TOML file kept with the queue as shared configuration (shoal.config()).
    progress: show a live progress bar of finished calls on stderr.
    initializer, initargs: `initializer(*initargs)` runs once in each interpreter that
        runs this executor's calls, before the first of them (as in ProcessPoolExecutor).
    max_tasks_per_child: a worker replaces an interpreter after it ran this many calls.
    """

    def __init__(self, queue: str | Path | Queue | None = None, *, workers: int | None = None,
                 timeout_s: float | None = None, retries: int = defaults.RETRIES,
                 max_attempts: int = defaults.MAX_ATTEMPTS, seed: int | str = 0,
                 config: str | Path | None = None, progress: bool = False,
                 initializer: Callable[..., Any] | None = None, initargs: tuple = (),
                 max_tasks_per_child: int | None = None) -> None:
        if workers is not None and workers < 0:
            raise ValueError(f"workers must be 0 or more, not {workers}")
        check_call_setup(initializer, max_tasks_per_child)  # at once, as the stdlib does
        # One object for every call, so its pickle is made once (see calls.call_job).
        setup = (functools.partial(initializer, *initargs)
                 if initializer is not None and initargs else initializer)
        self._setup = {"initializer": setup, "max_tasks_per_child": max_tasks_per_child}
        opened = open_queue(queue if queue is not None else "memory://")
        owns_queue = opened is not queue
        slots = (os.cpu_count() or 1) if workers is None else workers
        if slots == 0 and opened.in_process:
            if owns_queue:
                opened.close()
            raise ValueError(f"workers=0 on {opened.url}: no other worker can reach this "
                             "queue; give workers=N or a queue URL that `shoal work` can open")
        self.queue = opened
        #: the Job fields every call gets (`options` views add to them)
        self.call_options: dict[str, Any] = {"timeout_s": timeout_s, "retries": retries,
                                             "max_attempts": max_attempts}
        self.seed = seed
        if config is not None:
            self.queue.files.set_config_file(config)
        self._sequence = itertools.count()
        self._maps = itertools.count()
        self._engine = _Engine(opened, owns_queue=owns_queue, slots=slots, progress=progress)
        # Dropped without shutdown(): shut down without waiting (the calls still finish).
        finalizer = weakref.finalize(self, self._engine.shutdown, wait=False)
        finalizer.atexit = False  # at exit, the engine's own exit hook decides

    # -- submitting ---------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ShoalFuture:
        """Run `fn(*args, **kwargs)`. A future of this executor among the arguments (or
        one level inside a list, tuple or dict argument) is replaced by its call's return
        value; the call runs once they are all done, and fails without running if one of
        them failed or was cancelled."""
        return self._submit(fn, args, kwargs, self.call_options)

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any],
                options: dict[str, Any], *, seed_key: str | None = None,
                name: str | None = None) -> ShoalFuture:
        self._engine.check_open()
        key = seed_key or f"call-{next(self._sequence)}"
        args, kwargs, deps = self._take_futures(args, kwargs)
        if deps:
            options = {**options, "after": tuple(deps)}
        job = call_job(fn, args, kwargs, meta={"seed": job_seed(self.seed, key)}, name=name,
                       **self._setup, **options)
        return self._engine.add(job, after=deps.values())

    def _take_futures(self, args: tuple, kwargs: dict[str, Any]
                      ) -> tuple[tuple, dict[str, Any], dict[str, ShoalFuture]]:
        """The arguments with each future of this executor replaced by a placeholder for
        its value, and those futures by job id (in the order met)."""
        deps: dict[str, ShoalFuture] = {}
        if not _may_hold_futures(args, kwargs):
            return args, kwargs, deps  # most calls: nothing to look into

        def swap(item: Any) -> Any:
            if not isinstance(item, futures.Future):
                return item
            if not isinstance(item, ShoalFuture) or item._engine is not self._engine:
                where = (f"another shoal Executor (on {item._engine.queue.url})"
                         if isinstance(item, ShoalFuture)
                         else f"{type(item).__module__}.{type(item).__qualname__}")
                raise TypeError(f"a call can take as arguments only futures of the executor "
                                f"it is submitted to, not a future of {where}: pass its "
                                f"result() instead")
            deps.setdefault(item.job_id, item)
            return DependencyValue(item.job_id)

        args, kwargs = swap_arguments(args, kwargs, swap)
        return args, kwargs, deps

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like Executor.map; chunksize > 1 sends that many calls in one job."""
        return self._map(fn, iterables, timeout, chunksize, self.call_options)

    def _map(self, fn: Callable[..., Any], iterables: tuple, timeout: float | None,
             chunksize: int, options: dict[str, Any]) -> Iterator[Any]:
        """Executor.map semantics: everything submitted now, results lazily in order,
        closing the iterator cancels the rest. Item i of the n-th map draws shoal.random()
        from the key "map{n}-{i}", so its numbers do not depend on chunksize."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else time.monotonic() + timeout
        number = next(self._maps)
        if chunksize == 1:
            fs = [self._submit(fn, args, {}, options, seed_key=f"map{number}-{i}")
                  for i, args in enumerate(zip(*iterables, strict=False))]
            return _in_order(fs, end_time, flatten=False)
        fs = []
        items = zip(*iterables, strict=False)
        for start in itertools.count(0, chunksize):
            chunk = list(itertools.islice(items, chunksize))
            if not chunk:
                break
            keys = [f"map{number}-{start + i}" for i in range(len(chunk))]
            fs.append(self._submit(_run_chunk, (fn, chunk, self.seed, keys), {}, options,
                                   name=f"{describe_call(fn, chunk[0], {})} and "
                                        f"{len(chunk) - 1} more"))
        return _in_order(fs, end_time, flatten=True)

    def options(self, **options: Any) -> _OptionsView:
        """The same executor for calls with other settings, e.g.
        `ex.options(priority=5, cpus=2, gpus=1, mem="4G", requires=["gpu"]).submit(f, x)`.

        priority: higher runs first among pending calls (default 0; within a priority,
            submission order). cpus, gpus, mem (bytes, or "512M", "4G"), resources (a
            dict of named amounts, e.g. {"license": 1}): what the call takes from a
            worker while it runs (a call asks for 1 cpu unless told). requires: labels
            the worker must have (`shoal work --label`). timeout_s, retries,
            max_attempts: as for the Executor. A view's options() adds to its own.
        """
        return _OptionsView(self, merged(self.call_options, job_fields(options)))

    def with_options(self, **options: Any) -> _OptionsView:
        """The older name of `options` (which takes the same options)."""
        return self.options(**options)

    # -- results --------------------------------------------------------------------------

    def results(self) -> list[Result]:
        """The recorded results of this executor's calls, in submission order."""
        found = []
        for job_id in self._engine.submitted_ids():
            status = self.queue.get(job_id)
            if status is not None and status.result is not None:
                found.append(status.result)
        return found

    def results_frame(self) -> Any:
        """results() as a pandas DataFrame (needs pandas: pip install shoal[pandas])."""
        try:
            import pandas
        except ImportError as exc:
            raise ImportError("results_frame() needs pandas: pip install 'shoal[pandas]'") from exc
        from .views import result_row

        return pandas.DataFrame([result_row(r) for r in self.results()])

    def report(self, path: str | Path) -> int:
        """Write `shoal report`'s self-contained HTML file about this executor's queue to
        `path` (counts, timeline, durations, failures by reason, results; no web extra
        needed), to keep or mail after the run. Returns how many jobs it covers."""
        from .web.report import write_report

        return write_report(self.queue, Path(path))

    # -- shutting down ----------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._engine.shutdown(wait=wait, cancel_futures=cancel_futures)


class _OptionsView:
    """An Executor with other per-call options (see Executor.options)."""

    def __init__(self, executor: Executor, options: dict[str, Any]) -> None:
        self._executor = executor
        self._options = options

    def options(self, **options: Any) -> _OptionsView:
        """This view with more options on top (see Executor.options)."""
        return _OptionsView(self._executor, merged(self._options, job_fields(options)))

    with_options = options

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ShoalFuture:
        return self._executor._submit(fn, args, kwargs, self._options)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        return self._executor._map(fn, iterables, timeout, chunksize, self._options)


class _Engine:
    """The executor's moving parts: the outbox and its submitter thread, the futures and
    the collector thread, the local worker. Holds no reference to the Executor."""

    def __init__(self, queue: Queue, *, owns_queue: bool, slots: int, progress: bool) -> None:
        self.queue = queue
        self._owns_queue = owns_queue
        self._futures: dict[str, ShoalFuture] = {}
        # What the collector watches: ids go in once submitted (so a tcp queue has asked
        # for their pushes with the submit), and a watch already waiting sees them.
        self._watched = WatchSet()
        self._ids: list[str] = []  # every call submitted, for results()
        self._lock = threading.Condition()
        self._outbox_ready = threading.Condition(self._lock)  # wakes only the submitter
        self._shutdown = False
        self._closed = False
        self._close_lock = threading.Lock()
        self._outbox: dict[str, Job] = {}  # submitted in batches: one durable write per batch
        self._sending: set[str] = set()  # the batch being written to the queue now
        self._cancel_after_send: set[str] = set()  # cancelled while being written
        self._awaited: set[str] = set()  # calls in the outbox that other calls wait for
        self._cancelled_here: set[str] = set()  # our worker must not start these
        # Calls whose cancel is asking the queue: their futures stay in `_futures` (so
        # shutdown waits for them and the collector goes on), and a result that lands
        # meanwhile waits here for cancel_job to decide what it means.
        self._cancelling: dict[str, Result | None] = {}
        self._bar = _CallsBar() if progress else None
        self._worker: Worker | None = None
        if slots > 0:
            self._worker = Worker(queue, slots=slots, cancelled_by_owner=self._was_cancelled_here)
            self._worker_thread = threading.Thread(target=self._worker.run,
                                                   name="shoal-executor-worker", daemon=True)
            self._worker_thread.start()
        self._collector = threading.Thread(target=self._collect, name="shoal-executor-collector",
                                           daemon=True)
        self._collector.start()
        self._submitter = threading.Thread(target=self._send, name="shoal-executor-submitter",
                                           daemon=True)
        self._submitter.start()
        _watch_at_exit(self)

    # -- submitting ---------------------------------------------------------------------

    def check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def add(self, job: Job, *, after: Collection[ShoalFuture] = ()) -> ShoalFuture:
        """A future for `job`, which goes to the queue with the next batch (after the
        calls it takes values of: they were added before it). If one of those was
        cancelled before it was sent, the queue cannot end this one: it ends here."""
        future = ShoalFuture(self, job.id)
        with self._lock:
            self.check_open()
            dropped = next((dep for dep in after if dep.never_sent), None) if after else None
            if dropped is None:
                if after:
                    self._awaited.update(dep.job_id for dep in after
                                         if dep.job_id in self._outbox)
                self._add(job, future)
            else:
                future.never_sent = True
        if dropped is not None:  # (outside the lock: done-callbacks run here)
            future.set_running_or_notify_cancel()
            future.set_exception(JobFailed(
                f"job {job.id} ({job.name}): "
                f"{dependency_reason(dropped.job_id, '', State.CANCELLED)}"))
            return future
        if self._bar is not None:
            self._bar.add(1)
        return future

    def _add(self, job: Job, future: ShoalFuture) -> None:
        """Put the job in the outbox (with the lock held)."""
        self._futures[job.id] = future
        self._ids.append(job.id)
        self._outbox[job.id] = job
        if len(self._outbox) == 1:
            self._outbox_ready.notify()

    def submitted_ids(self) -> list[str]:
        with self._lock:
            return list(self._ids)

    def _send(self) -> None:
        """Submit what callers queued up, a batch at a time, until shutdown empties it."""
        while True:
            with self._lock:
                while not self._outbox and not self._shutdown:
                    self._outbox_ready.wait()
                batch, self._outbox = list(self._outbox.values()), {}
                if not batch and self._shutdown:
                    return
                self._sending = {job.id for job in batch}
            try:
                self.queue.submit(batch)
                self._watched.update(job.id for job in batch)
            except Exception as exc:  # the calls cannot run: say so on their futures
                log.error("executor: submitting %d call(s) failed: %s", len(batch), exc)
                for job in batch:
                    self._fail_future(job.id, exc)
            finally:
                del batch  # the jobs (and their arguments) now live in the queue only
                with self._lock:
                    late = self._cancel_after_send & self._sending  # (others: in the outbox)
                    self._cancel_after_send -= late
                    self._awaited -= self._sending  # sent: a cancel goes to the queue now
                    self._sending = set()
                if late:
                    self._cancel_sent(late)

    def _cancel_sent(self, job_ids: set[str]) -> None:
        """Cancel in the queue the calls cancelled while being written; a queue that
        fails here must not end the submitter, the only way in for later calls."""
        try:
            self.queue.cancel(job_ids)
        except Exception as exc:  # their futures are cancelled; our worker skips them
            log.error("executor: cannot cancel %d call(s) in %s (%s): other workers may "
                      "run them; `shoal cancel` can stop them", len(job_ids), self.queue.url,
                      exc)

    def _fail_future(self, job_id: str, exc: BaseException) -> None:
        with self._lock:
            future = self._futures.pop(job_id, None)
            self._lock.notify_all()
        if future is not None and future.set_running_or_notify_cancel():
            future.set_exception(exc)

    # -- results --------------------------------------------------------------------------

    def _was_cancelled_here(self, job_id: str) -> bool:
        return job_id in self._cancelled_here

    def _collect(self) -> None:
        """Resolve futures as their results land, whoever ran the call: one loop over
        `queue.watch`, with a WatchSet so each look costs what changed, not one read per
        waiting future. Exits after shutdown once no future is left (within
        COLLECT_WAIT_S). A queue that fails a look is asked again (a coordinator
        restarting, a file server's hiccup): this thread is the futures' only way out."""
        next_running_check = 0.0
        failing = False
        while True:
            with self._lock:
                if self._closed or (not self._futures and self._shutdown):
                    return
            try:
                self._collect_once()
                if time.monotonic() >= next_running_check:
                    self._mark_running()
                    next_running_check = time.monotonic() + RUNNING_CHECK_S
            except Exception as exc:
                if not failing:
                    log.error("executor: cannot read results from %s (trying again every "
                              "%.1f s): %s", self.queue.url, COLLECT_WAIT_S, exc)
                failing = True
                time.sleep(COLLECT_WAIT_S)
                continue
            if failing:
                log.warning("executor: reading results from %s again", self.queue.url)
                failing = False

    def _collect_once(self) -> None:
        """Wait up to COLLECT_WAIT_S for results and resolve the futures of those found."""
        watched = self._watched
        with self._lock:
            if len(watched) > 2 * len(self._futures) + 1000:  # cancelled ones linger
                watched.intersection_update(self._futures)
        # Also while nothing is watched: ids added meanwhile are seen by this very
        # watch, so a call's result wakes one thread, not two.
        results = self.queue.watch(watched, COLLECT_WAIT_S)
        for result in results:
            watched.discard(result.job_id)
            self._resolve(result)
        if results and self._futures:
            time.sleep(GATHER_S)

    def _resolve(self, result: Result) -> None:
        with self._lock:
            if result.job_id in self._cancelling:  # cancel_job resolves it, or not
                self._cancelling[result.job_id] = result
                return
            future = self._futures.pop(result.job_id, None)
            if not self._futures:
                self._lock.notify_all()
            started = future is not None and self._start(future)
        if self._bar is not None and future is not None:
            self._bar.advance(failed=result.state is not State.DONE)
        if not started:
            return
        try:
            future.set_result(outcome(result))
        except BaseException as exc:  # the remote exception, or why the job failed
            future.set_exception(exc)

    def _start(self, future: ShoalFuture) -> bool:
        """Mark a future running (once; call with the lock held); False if it was cancelled."""
        return future.running() or future.set_running_or_notify_cancel()

    def _mark_running(self) -> None:
        """Futures whose call a worker has started report running() (oldest 256 checked)."""
        with self._lock:
            waiting = [job_id for job_id, f in itertools.islice(self._futures.items(), 256)
                       if not f.running()]
        if not waiting:
            return
        states = self.queue.states(waiting)
        with self._lock:
            for job_id, state in states.items():
                future = self._futures.get(job_id)
                if state is State.RUNNING and future is not None and not future.done() \
                        and job_id not in self._cancelling:
                    self._start(future)

    def cancel_job(self, job_id: str) -> bool:
        """Cancel the job if no worker has started it; True if so (its future then
        leaves `_futures`, and the caller cancels it)."""
        with self._lock:
            future = self._futures.get(job_id)
            if future is None or future.running() or job_id in self._cancelling:
                return False  # resolved, started, or another thread is cancelling it
            if job_id in self._outbox and job_id not in self._awaited:
                del self._outbox[job_id]  # not even submitted yet
                future.never_sent = True
                self._forget(job_id)
                return True
            # Being written, or a call waits for it (the queue ends that one too): the
            # submitter cancels it once sent, and our own worker will not run it.
            if job_id in self._sending or job_id in self._outbox:
                self._cancel_after_send.add(job_id)
                self._cancelled_here.add(job_id)
                self._forget(job_id)
                return True
            self._cancelling[job_id] = None
        cancelled = False
        try:
            cancelled = self._cancel_in_queue(job_id)
        finally:
            with self._lock:
                landed = self._cancelling.pop(job_id)
                if cancelled:
                    self._forget(job_id)  # a CANCELLED result that landed is ours
        if landed is not None and not cancelled:
            self._resolve(landed)  # too late: it ran, and its result came meanwhile
        return cancelled

    def _cancel_in_queue(self, job_id: str) -> bool:
        """Cancel a submitted job if it is still pending or waiting; False if the queue
        cannot be asked (the call goes on, and its future resolves as any other)."""
        try:
            status = self.queue.get(job_id)
            return status is not None and status.state in (State.PENDING, State.WAITING) \
                and bool(self.queue.cancel([job_id]))
        except Exception as exc:
            log.warning("executor: cannot cancel %s: %s", job_id, exc)
            return False

    def _forget(self, job_id: str) -> None:
        """Drop a cancelled call's future (with the lock held)."""
        self._futures.pop(job_id, None)
        if not self._futures:
            self._lock.notify_all()

    # -- shutting down ----------------------------------------------------------------------

    def _stop_accepting(self) -> list[ShoalFuture]:
        """No new calls from now on; the futures still waiting."""
        with self._lock:
            self._shutdown = True
            self._lock.notify_all()
            self._outbox_ready.notify_all()
            return list(self._futures.values())

    def shutdown(self, *, wait: bool, cancel_futures: bool = False) -> None:
        pending = self._stop_accepting()
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            self._close_when_done(pending)
        else:
            threading.Thread(target=self._close_when_done, args=(pending,),
                             name="shoal-executor-closer", daemon=True).start()

    def _close_when_done(self, pending: list[ShoalFuture]) -> None:
        self._submitter.join()
        futures.wait(pending)
        self._close()

    def at_exit(self) -> None:
        """The program is ending: send the outbox; with local workers, let pending calls
        finish (as the stdlib does); with none, leave them pending for other machines."""
        pending = self._stop_accepting()
        self._submitter.join()
        if self._worker is None:
            left = sum(not future.done() for future in pending)
            if left:
                print(f"shoal: {left} call(s) left pending on {self.queue.url} for other "
                      f"workers (`shoal work {self.queue.url}`)", file=sys.stderr)
        else:
            self._wait_at_exit(pending)
        self._close()

    def _wait_at_exit(self, pending: list[ShoalFuture]) -> None:
        _, not_done = futures.wait(pending, timeout=EXIT_NOTICE_S)
        if not not_done:
            return
        print(f"shoal: waiting for {len(not_done)} call(s) to finish before exiting "
              "(Ctrl-C to stop waiting)", file=sys.stderr)
        try:
            futures.wait(not_done)
        except KeyboardInterrupt:  # running calls go back to the queue (if it is durable)
            print("shoal: not waiting; running calls are given back to the queue",
                  file=sys.stderr)
            if self._worker is not None:
                self._worker.stop(now=True)

    def _close(self) -> None:
        """Stop the worker and the threads and close the queue we opened (once)."""
        with self._close_lock:
            if self._closed:
                return
            with self._lock:
                self._closed = True
                self._lock.notify_all()
            if self._worker is not None:
                self._worker.stop()
                self._worker_thread.join()
            if threading.current_thread() is not self._collector:
                self._collector.join()
            if self._bar is not None:
                self._bar.close()
            if self._owns_queue:
                self.queue.close()
            _live_engines.discard(self)


# Engines still running; the exit hook visits them (weakly held: a closed engine goes).
_live_engines: weakref.WeakSet[_Engine] = weakref.WeakSet()
_exit_hook_lock = threading.Lock()
_exit_hook = False


def _watch_at_exit(engine: _Engine) -> None:
    """Have `_at_exit` run before the interpreter joins its threads (as concurrent.futures
    does), while daemon threads still run; plain atexit where that hook is missing."""
    global _exit_hook
    with _exit_hook_lock:
        _live_engines.add(engine)
        if _exit_hook:
            return
        try:
            threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # old Python, or already shutting down
            atexit.register(_at_exit)
        _exit_hook = True


def _at_exit() -> None:
    for engine in list(_live_engines):
        try:
            engine.at_exit()
        except Exception:  # one broken queue must not keep the others' calls from flushing
            log.exception("executor: at exit, %s", engine.queue.url)


def _may_hold_futures(args: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether an argument is, or may hold, a future (a quick look before a closer one)."""
    for arg in args:
        if isinstance(arg, _MAY_HOLD_FUTURES):
            return True
    return any(isinstance(arg, _MAY_HOLD_FUTURES) for arg in kwargs.values()) if kwargs \
        else False


def _in_order(fs: list[ShoalFuture], end_time: float | None, *,
              flatten: bool) -> Iterator[Any]:
    """Results in submission order, as the stdlib's map yields them: nothing is held
    across a yield, and an item whose wait times out is cancelled (as since 3.11)."""
    try:
        fs.reverse()
        while fs:
            if flatten:
                yield from _result_or_cancel(fs.pop(), end_time)
            else:
                yield _result_or_cancel(fs.pop(), end_time)
    finally:
        for future in fs:
            future.cancel()


def _result_or_cancel(future: ShoalFuture, end_time: float | None) -> Any:
    try:
        try:
            return (future.result() if end_time is None
                    else future.result(end_time - time.monotonic()))
        finally:
            future.cancel()
    finally:
        del future  # breaks the cycle future -> exception -> traceback -> this frame


def _run_chunk(fn: Callable[..., Any], chunk: list[tuple], seed: int | str,
               keys: list[str]) -> list[Any]:
    """Run a chunk of map items in one job, each with its own shoal.random() seed."""
    from . import context

    outer = context.current()
    results = []
    try:
        for args, key in zip(chunk, keys, strict=True):
            context.set_current(replace(outer, seed=job_seed(seed, key)))
            results.append(fn(*args))
    finally:
        context.set_current(outer)
    return results


class _CallsBar:
    """A rich progress bar of finished calls, on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._progress = Progress("shoal", BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), console=Console(stderr=True))
        self._task = self._progress.add_task("calls", total=0)
        self._progress.start()
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            total = self._progress.tasks[0].total or 0
            self._progress.update(self._task, total=total + n)

    def advance(self, *, failed: bool) -> None:
        with self._lock:
            self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()
