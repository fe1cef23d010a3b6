"""`shoal.Executor`: a concurrent.futures.Executor over any shoal queue.

    caller thread              queue                 workers (here: N slots; elsewhere:
    -------------              -----                 `shoal work URL` on other machines)
    submit(fn, *a) ──► Job(call) ─► pending ─claim─► long-lived interpreter runs fn
    Future ◄── collector thread ◄── final results ◄─ finish (value or exception)

The collector waits on the queue (`wait_results`: a condition variable in memory, a
few stats on a folder) and resolves futures the moment a result lands. Futures are
touched only through set_running_or_notify_cancel / set_result / set_exception.
Cancelling a future cancels its job if no worker has started it yet.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import defaults
from .calls import call_job, describe_call, outcome
from .context import job_seed
from .job import Job, Result, State
from .queue import open_queue
from .queue.base import Queue
from .worker import Worker

log = logging.getLogger("shoal.executor")

COLLECT_WAIT_S = 0.2  # the collector re-checks for shutdown at least this often
RUNNING_CHECK_S = 0.5  # how often futures of started calls are marked running()
REMOTE_POLL_S = 0.25  # with local workers, how often results of other workers are looked for
# Where results are pushed, the oldest waiting futures are still looked up this often, so
# a push lost in a network blip (the client was reconnecting) costs a delay, not a hang.
PUSH_SWEEP_S = 2.0
PUSH_SWEEP_IDS = 2000


class ShoalFuture(futures.Future):
    """A Future whose cancel() also cancels the job, if no worker has started it."""

    def __init__(self, executor: Executor, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self._executor = executor

    def cancel(self) -> bool:
        if self.done() or self.running():
            return super().cancel()  # False, or True if it was cancelled already
        if not self._executor._cancel_job(self.job_id) or not super().cancel():
            return False
        # As an executor does when it meets a cancelled item: wait() and as_completed()
        # count a future as done only once it is CANCELLED_AND_NOTIFIED.
        self.set_running_or_notify_cancel()
        return True


class Executor(futures.Executor):
    """Run Python calls on a shoal queue: locally with `workers` slots, and anywhere else
    a `shoal work URL` joins the same queue.

    queue: a queue URL or Queue; None is an in-process queue (fastest, this machine only).
    workers: local slots for the Executor's life (default: CPU count; 0 = only workers
        started elsewhere with `shoal work`).
    timeout_s, retries, max_attempts: defaults for every call (see `with_options`).
    seed: the run's seed; shoal.random() in the n-th submitted call (or item i of the
        n-th map) is seeded from (seed, n[, i]), so a rerun of the same script draws the
        same numbers, whichever worker runs a call and however often it is retried.
    config: a TOML file kept with the queue as shared configuration (shoal.config()).
    progress: show a live progress bar of finished calls on stderr.
    """

    def __init__(self, queue: str | Path | Queue | None = None, *, workers: int | None = None,
                 timeout_s: float | None = None, retries: int = defaults.RETRIES,
                 max_attempts: int = defaults.MAX_ATTEMPTS, seed: int | str = 0,
                 config: str | Path | None = None, progress: bool = False) -> None:
        self.queue = open_queue(queue if queue is not None else "memory://")
        self.options = {"timeout_s": timeout_s, "retries": retries,
                        "max_attempts": max_attempts}
        self.seed = seed
        if config is not None:
            self.queue.set_config_file(config)
        self._futures: dict[str, ShoalFuture] = {}
        self._ids: list[str] = []
        self._sequence = itertools.count()
        self._maps = itertools.count()
        self._lock = threading.Condition()
        self._outbox_ready = threading.Condition(self._lock)  # wakes only the submitter
        self._shutdown = False
        self._outbox: list[Job] = []  # submitted in batches: one durable write per batch
        self._sending: set[str] = set()  # the batch being written to the queue now
        self._cancel_after_send: set[str] = set()  # cancelled while being written
        self._vetoes: set[str] = set()  # ...which our worker must not start if it claims them
        slots = (os.cpu_count() or 1) if workers is None else workers
        if slots == 0 and not self.queue.cross_host:
            raise ValueError(f"workers=0 on {self.queue.url}: no other worker can reach this "
                             "queue; give workers=N or a queue URL that `shoal work` can open")
        self._bar = _ProgressBar() if progress else None
        self._worker = None
        if slots > 0:
            self._worker = Worker(self.queue, slots=slots, veto=self._vetoed)
            self._worker_thread = threading.Thread(target=self._worker.run,
                                                   name="shoal-executor-worker", daemon=True)
            self._worker_thread.start()
        # Results recorded in this process are pushed to us; where the queue cannot push
        # the others (a folder other workers share), the collector polls for them too.
        self.queue.subscribe(self._on_result)
        self._pushed = self.queue.pushes_all_results
        self._collector = threading.Thread(target=self._collect, name="shoal-executor-collector",
                                           daemon=True)
        self._collector.start()
        self._submitter = threading.Thread(target=self._send, name="shoal-executor-submitter",
                                           daemon=True)
        self._submitter.start()

    # -- submitting ---------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ShoalFuture:
        return self._submit(fn, args, kwargs, self.options)

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any],
                options: dict[str, Any], *, seed_key: str | None = None,
                name: str | None = None) -> ShoalFuture:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            number = next(self._sequence)
        key = seed_key or f"call-{number}"
        job = call_job(fn, args, kwargs, meta={"seed": job_seed(self.seed, key)}, name=name,
                       **options)
        future = ShoalFuture(self, job.id)
        with self._lock:
            self._futures[job.id] = future
            self._ids.append(job.id)
            self._outbox.append(job)
            if len(self._outbox) == 1:
                self._outbox_ready.notify()
            if len(self._futures) == 1:
                self._lock.notify_all()  # the collector waits for a first future
        if self._bar is not None:
            self._bar.add(1)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like Executor.map; chunksize > 1 sends that many calls in one job."""
        return self._map(fn, iterables, timeout, chunksize, self.options)

    def _map(self, fn: Callable[..., Any], iterables: tuple, timeout: float | None,
             chunksize: int, options: dict[str, Any]) -> Iterator[Any]:
        """Executor.map semantics: everything submitted now, results lazily in order,
        closing the iterator cancels the rest. Item i of the n-th map draws shoal.random()
        from the key "map{n}-{i}", so its numbers do not depend on chunksize."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            number = next(self._maps)
        items = list(zip(*iterables, strict=False))
        keys = [f"map{number}-{i}" for i in range(len(items))]
        if chunksize == 1:
            fs = [self._submit(fn, args, {}, options, seed_key=key)
                  for args, key in zip(items, keys, strict=True)]
            return _in_order(fs, end_time, flatten=False)
        fs = [self._submit(_run_chunk, (fn, items[i:i + chunksize], self.seed,
                                        keys[i:i + chunksize]), {}, options,
                           name=f"{describe_call(fn, items[i], {})} and "
                                f"{len(items[i:i + chunksize]) - 1} more")
              for i in range(0, len(items), chunksize)]
        return _in_order(fs, end_time, flatten=True)

    def with_options(self, **options: Any) -> _OptionsView:
        """The same executor with other per-call options: timeout_s, retries, max_attempts."""
        unknown = set(options) - set(self.options)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return _OptionsView(self, {**self.options, **options})

    def _send(self) -> None:
        """Submit what callers queued up, a batch at a time, until shutdown empties it."""
        while True:
            with self._lock:
                while not self._outbox and not self._shutdown:
                    self._outbox_ready.wait()
                batch, self._outbox = self._outbox, []
                if not batch and self._shutdown:
                    return
                self._sending = {job.id for job in batch}
            try:
                self.queue.submit(batch)
            except Exception as exc:  # the calls cannot run: say so on their futures
                log.error("executor: submitting %d call(s) failed: %s", len(batch), exc)
                for job in batch:
                    self._fail_future(job.id, exc)
            finally:
                with self._lock:
                    self._sending = set()
                    late, self._cancel_after_send = self._cancel_after_send, set()
                if late:
                    self.queue.cancel(late)

    def _fail_future(self, job_id: str, exc: BaseException) -> None:
        with self._lock:
            future = self._futures.pop(job_id, None)
            self._lock.notify_all()
        if future is not None and future.set_running_or_notify_cancel():
            future.set_exception(exc)

    # -- results --------------------------------------------------------------------------

    def _vetoed(self, job_id: str) -> bool:
        return job_id in self._vetoes

    def _on_result(self, result: Result) -> None:
        if result.job_id in self._futures:
            self._resolve(result)

    def _collect(self) -> None:
        """Resolve futures as their results land; exit after shutdown once none is left."""
        next_running_check = 0.0
        next_sweep = time.monotonic() + PUSH_SWEEP_S
        while True:
            with self._lock:
                while not self._futures and not self._shutdown:
                    self._lock.wait()
                if not self._futures and self._shutdown:
                    return
                pushed = self._pushed
                waiting = list(self._futures)
            if pushed:  # every result arrives through _on_result...
                time.sleep(COLLECT_WAIT_S)
                if time.monotonic() >= next_sweep:  # ...unless a push was lost on the way
                    next_sweep = time.monotonic() + PUSH_SWEEP_S
                    for result in self.queue.wait_results(waiting[:PUSH_SWEEP_IDS], 0):
                        self._resolve(result)
            elif self._worker is not None:  # ours are pushed; look for the others' now and then
                time.sleep(REMOTE_POLL_S)
                for result in self.queue.wait_results(waiting, 0):
                    self._resolve(result)
            else:
                for result in self.queue.wait_results(waiting, COLLECT_WAIT_S):
                    self._resolve(result)
            if time.monotonic() >= next_running_check:
                self._mark_running()
                next_running_check = time.monotonic() + RUNNING_CHECK_S

    def _resolve(self, result: Result) -> None:
        with self._lock:
            future = self._futures.pop(result.job_id, None)
            if not self._futures:
                self._lock.notify_all()
            started = future is not None and self._start(future)
        if self._bar is not None:
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
                if state is State.RUNNING and future is not None and not future.done():
                    self._start(future)

    def _cancel_job(self, job_id: str) -> bool:
        """Cancel the job if no worker has started it; True if so."""
        with self._lock:
            future = self._futures.pop(job_id, None)  # a pushed CANCELLED result is ours
            if future is None:
                return False
            if any(job.id == job_id for job in self._outbox):  # not even submitted yet
                self._outbox = [job for job in self._outbox if job.id != job_id]
                return True
            if job_id in self._sending:  # being written: the submitter cancels it after,
                self._cancel_after_send.add(job_id)  # and our own worker will not run it
                self._vetoes.add(job_id)
                return True
        status = self.queue.get(job_id)
        if status is not None and status.state is State.PENDING and self.queue.cancel([job_id]):
            return True
        with self._lock:  # too late: it runs; put it back and catch a result we missed
            self._futures[job_id] = future
        status = self.queue.get(job_id)
        if status is not None and status.result is not None:
            self._resolve(status.result)
        return False

    def results(self) -> list[Result]:
        """The recorded results of this executor's calls, in submission order."""
        found = []
        for job_id in self._ids:
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

    # -- shutting down ----------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = list(self._futures.values())
            self._lock.notify_all()
            self._outbox_ready.notify_all()
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            self._submitter.join()
            futures.wait(pending)
            self._collector.join()
            self._stop_worker()
        else:
            threading.Thread(target=self._stop_when_done, args=(pending,), daemon=True).start()
        if self._bar is not None and wait:
            self._bar.close()

    def _stop_when_done(self, pending: list[ShoalFuture]) -> None:
        futures.wait(pending)
        self._stop_worker()

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker_thread.join()
            self._worker = None


class _OptionsView:
    """An Executor with other per-call options (see Executor.with_options)."""

    def __init__(self, executor: Executor, options: dict[str, Any]) -> None:
        self._executor = executor
        self._options = options

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ShoalFuture:
        return self._executor._submit(fn, args, kwargs, self._options)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        return self._executor._map(fn, iterables, timeout, chunksize, self._options)


def _in_order(fs: list[ShoalFuture], end_time: float | None, *,
              flatten: bool) -> Iterator[Any]:
    """Results in submission order, as the stdlib's map yields them."""
    try:
        fs.reverse()
        while fs:
            future = fs.pop()
            value = (future.result() if end_time is None
                     else future.result(end_time - time.monotonic()))
            if flatten:
                yield from value
            else:
                yield value
    finally:
        for future in fs:
            future.cancel()


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


class _ProgressBar:
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
