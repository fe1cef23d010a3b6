"""`shoal run`: submit, work locally, show live progress, wait for this run's jobs, sum up."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import click

from .job import Job, State
from .queue.base import Queue
from .worker import Worker

TICK_S = 0.2  # progress refresh; grows when listing a big queue takes longer
SUBMIT_FIRST = 10_000  # jobs submitted before local work starts (~1 s on a local disk)
SUBMIT_CHUNK = 2_000
WORKERS_EVERY_S = 2.0  # how often the live line counts the workers of a shared queue


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
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("shoal run"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar, \
            _keys(bar, queue, interrupted) as hint:
        task = bar.add_task("jobs", total=len(ids), extra="")
        workers, next_workers = 0, 0.0
        while True:
            states, tick_s = _poll(queue, ids)
            if queue.cross_host and time.monotonic() >= next_workers:
                workers = sum(1 for w in queue.workers() if not w.lost)
                next_workers = time.monotonic() + WORKERS_EVERY_S
            counts = Counter(states.values())
            finished = sum(counts[s] for s in State if s.final)
            extra = f"failed {counts[State.FAILED]} · running {counts[State.RUNNING]}"
            if queue.cross_host:
                extra += f" · workers {workers}"
            bar.update(task, completed=finished, extra=extra + hint)
            if interrupted.is_set() or _all_final(states, ids):
                return states
            interrupted.wait(tick_s)


@contextlib.contextmanager
def _keys(bar: Any, queue: Queue, interrupted: threading.Event) -> Iterator[str]:
    """Enter shows the workers and what they run; q stops like Ctrl-C (rerun to resume).

    Only when stdin is a terminal; it is put in cbreak mode and restored after."""
    if not sys.stdin.isatty():
        yield ""
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read() -> None:
        while not interrupted.is_set():
            key = os.read(fd, 1)
            if key in (b"q", b"Q", b""):
                bar.console.print("shoal run: q pressed: finishing running jobs, then stopping")
                interrupted.set()
            elif key in (b"\n", b"\r"):
                bar.console.print(_workers_table(queue))

    threading.Thread(target=read, name="shoal-keys", daemon=True).start()
    try:
        yield " · Enter: workers, q: quit"
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _workers_table(queue: Queue) -> Any:
    from rich.table import Table

    table = Table("worker", "host", "slots", "state", "done", "running", "seen", box=None)
    for w in sorted(queue.workers(), key=lambda w: w.id):
        table.add_row(w.id, w.host, str(w.slots), "lost" if w.lost else w.state, str(w.done),
                      ", ".join(w.running[:3]) + (" ..." if len(w.running) > 3 else ""),
                      f"{w.age_s:.0f} s ago" if w.age_s is not None else "")
    return table


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
