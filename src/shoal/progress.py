"""`shoal run`: submit, work locally, show live progress, wait for this run's jobs, sum up."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence

import click

from .job import Job, State
from .queue.base import Queue
from .worker import Worker

TICK_S = 0.2  # progress refresh; grows when listing a big queue takes longer
SUBMIT_FIRST = 10_000  # jobs submitted before local work starts (~1 s on a local disk)
SUBMIT_CHUNK = 2_000


def run_and_watch(queue: Queue, jobs: Sequence[Job], *, slots: int | None,
                  show_progress: bool) -> int:
    """Run `jobs` to completion on `queue`; return the exit status (0: all succeeded)."""
    started = time.monotonic()
    ids = list(dict.fromkeys(job.id for job in jobs))
    before = queue.states(ids)
    already = sum(1 for s in before.values() if s is State.DONE)
    worker = thread = None
    # Submitting competes with the worker for the queue's directories, so a list that
    # is quick to submit goes in first; a long one starts working after its first chunk.
    queue.submit(jobs[:SUBMIT_FIRST])
    if slots != 0:
        worker = Worker(queue, slots=slots, drain=False)
        thread = threading.Thread(target=worker.run, name="shoal-run-worker", daemon=True)
        thread.start()
    interrupted = _stop_on_signals(worker)
    try:
        for first in range(SUBMIT_FIRST, len(jobs), SUBMIT_CHUNK):
            queue.submit(jobs[first:first + SUBMIT_CHUNK])
        queue.retry([i for i, s in before.items() if s in (State.FAILED, State.CANCELLED)])
        if worker is not None:
            worker.drain = True  # from now on it may exit when the queue is empty
        states = _watch(queue, ids, interrupted, show_progress and sys.stderr.isatty())
    finally:
        if worker is not None and thread is not None:
            worker.stop()
            thread.join()
    return _summarise(queue, ids, states, already, time.monotonic() - started,
                      interrupted.is_set())


def _stop_on_signals(worker: Worker | None) -> threading.Event:
    interrupted = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        if worker is not None:
            worker.stop(now=interrupted.is_set())
        interrupted.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return interrupted


def _watch(queue: Queue, ids: list[str], interrupted: threading.Event,
           live: bool) -> dict[str, State]:
    if not live:
        while True:
            states, tick_s = _poll(queue, ids)
            if interrupted.is_set() or _all_final(states, ids):
                return states
            interrupted.wait(tick_s)
    from .live import watch_live

    return watch_live(queue, ids, interrupted, poll=_poll, all_final=_all_final)


def _poll(queue: Queue, ids: list[str]) -> tuple[dict[str, State], float]:
    """The jobs' states, and how long to wait before asking again (5x the cost, >= TICK_S),
    so watching 100,000 jobs does not eat a core."""
    started = time.monotonic()
    states = queue.states(ids)
    return states, max(TICK_S, 5 * (time.monotonic() - started))


def _all_final(states: dict[str, State], ids: list[str]) -> bool:
    return len(states) == len(ids) and all(s.final for s in states.values())


def _summarise(queue: Queue, ids: list[str], states: dict[str, State], already: int,
               seconds: float, interrupted: bool) -> int:
    counts = Counter(states.values())
    parts = [f"{counts[State.DONE]} done"]
    if already:
        parts[0] += f" ({already} already before)"
    parts += [f"{counts[s]} {s.value}" for s in (State.FAILED, State.CANCELLED,
                                                  State.RUNNING, State.PENDING) if counts[s]]
    click.echo(f"shoal run: {len(ids)} jobs: {', '.join(parts)} in {seconds:.1f} s "
               f"(queue {queue.url})", err=True)
    failed = [r for r in queue.results() if r.state is State.FAILED and r.job_id in states]
    for result in failed[:10]:
        click.echo(f"  failed: {result.name}: {result.reason} (log: {result.log})", err=True)
    if len(failed) > 10:
        click.echo(f"  ... and {len(failed) - 10} more: shoal results {queue.url}", err=True)
    if interrupted:
        click.echo("shoal run: interrupted; run the same command again to resume", err=True)
        return 130
    return 0 if counts[State.DONE] == len(ids) else 1
