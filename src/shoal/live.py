"""The live line of `shoal run` on a terminal: a bar with counts and ETA, and the keys
(Enter: workers, q: quit) read while it shows."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from .job import State
from .queue.base import Queue

WORKERS_EVERY_S = 2.0  # how often the live line counts the workers of a shared queue

Poll = Callable[[Queue, list[str]], tuple[dict[str, State], float]]


def watch_live(queue: Queue, ids: list[str], interrupted: threading.Event, *, poll: Poll,
               all_final: Callable[[dict[str, State], list[str]], bool]) -> dict[str, State]:
    """Show the bar until every job in `ids` is final or the run is interrupted."""
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
            states, tick_s = poll(queue, ids)
            if queue.cross_host and time.monotonic() >= next_workers:
                workers = sum(1 for w in queue.workers() if not w.lost)
                next_workers = time.monotonic() + WORKERS_EVERY_S
            counts = Counter(states.values())
            finished = sum(counts[s] for s in State if s.final)
            extra = f"failed {counts[State.FAILED]} · running {counts[State.RUNNING]}"
            if queue.cross_host:
                extra += f" · workers {workers}"
            bar.update(task, completed=finished, extra=extra + hint)
            if interrupted.is_set() or all_final(states, ids):
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


