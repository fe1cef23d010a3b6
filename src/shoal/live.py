"""The live line of `shoal run` on a terminal: a bar with counts and ETA, and the keys
(Enter: workers, q: quit) read while it shows."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from .job import State
from .queue.base import Queue

WORKERS_EVERY_S = 2.0  # how often the live line counts the workers of a shared queue
MIN_BAR, MAX_BAR = 10, 40  # the bar's width in cells: narrower is dropped, wider is noise
KEY_POLL_S = 0.2  # how often the key reader looks whether it is still in the foreground

Poll = Callable[[Queue, list[str]], tuple[dict[str, State], float]]


def watch_live(queue: Queue, ids: list[str], interrupted: threading.Event, *, poll: Poll,
               all_final: Callable[[dict[str, State], list[str]], bool]) -> dict[str, State]:
    """Show the bar until every job in `ids` is final or the run is interrupted.

    It is drawn only while we are in the terminal's foreground: from the background
    (`shoal run ... &`, or bg after Ctrl-Z) it would be drawn over the shell's prompt and
    whatever the user types there; the summary still comes at the end."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    screen = sys.stderr.fileno()
    first = line_columns(console.width, len(ids), "", "")
    with Progress(*first, console=console, auto_refresh=False,
                  disable=not in_foreground(screen)) as bar, \
            _keys(bar, queue, interrupted) as hint:
        task = bar.add_task("jobs", total=len(ids))
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
            bar.columns = line_columns(bar.console.width, len(ids), extra, hint)
            bar.update(task, completed=finished)
            if in_foreground(screen):
                bar.refresh()
            if interrupted.is_set() or all_final(states, ids):
                return states
            interrupted.wait(tick_s)


def line_columns(width: int, total: int, extra: str, hint: str) -> tuple[Any, ...]:
    """The bar's columns that fit in `width`: `done/total` and the ETA always; then the
    label, the extras (failed, running, workers), a bar of at least MIN_BAR, the time
    elapsed and the key hint while they fit; the bar takes what is left (up to MAX_BAR).
    One line, so a narrow terminal never wraps it (a wrapped line is redrawn as garbage)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    clock = len("0:00:00")
    # +1: the space rich puts between columns; -1: never the last cell (it wraps).
    free = width - 1 - (2 * len(str(total)) + 1 + len("ETA") + clock + 2)
    wanted = {"label": len("shoal run") + 1, "extra": len(extra) + 1, "bar": MIN_BAR + 1,
              "elapsed": clock + 1, "hint": len(hint) + 1 if hint else 0}
    shown = set()
    for part, cells in wanted.items():  # in the order they are given up last
        if cells and cells <= free:
            shown.add(part)
            free -= cells
    columns: list[Any] = [TextColumn("shoal run")] if "label" in shown else []
    if "bar" in shown:
        columns.append(BarColumn(bar_width=min(MAX_BAR, MIN_BAR + free)))
    columns.append(MofNCompleteColumn())
    if "extra" in shown or "hint" in shown:
        text = (extra if "extra" in shown else "") + (hint if "hint" in shown else "")
        columns.append(TextColumn(text.removeprefix(" · ").replace("[", r"\[")))
    if "elapsed" in shown:
        columns.append(TimeElapsedColumn())
    columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return tuple(columns)


def in_foreground(fd: int) -> bool:
    """Whether we own terminal `fd` now: touching it from the background would stop us
    (SIGTTIN on a read, SIGTTOU on a mode change)."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:  # not a terminal, or no controlling terminal
        return False


@contextlib.contextmanager
def _keys(bar: Any, queue: Queue, interrupted: threading.Event) -> Iterator[str]:
    """Enter shows the workers and what they run; q stops like Ctrl-C (rerun to resume).

    Only when stdin is the terminal and we are in its foreground process group
    (`shoal run ... &` must not stop itself); it is put in cbreak mode and restored after,
    unless we were moved to the background meanwhile (Ctrl-Z, bg): then the shell owns
    the terminal and its modes."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not sys.stdin.isatty() or not in_foreground(fd):
        yield ""
        return
    import termios
    import tty

    with _blocked(signal.SIGTTOU):  # moved to the background right after the check
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
    threading.Thread(target=_read_keys, args=(fd, bar, queue, interrupted),
                     name="shoal-keys", daemon=True).start()
    try:
        yield " · Enter: workers, q: quit"
    finally:
        # SIGTTOU blocked: were we moved to the background right after the check, the
        # restore goes through instead of stopping us.
        with _blocked(signal.SIGTTOU):
            if in_foreground(fd):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _read_keys(fd: int, bar: Any, queue: Queue, interrupted: threading.Event) -> None:
    """The key reader's thread. A read from the background would stop the whole process
    (SIGTTIN), so it reads only in the foreground, with SIGTTIN blocked in this thread
    (a read that races a move to the background then fails with EIO instead). Back in
    the foreground (fg after Ctrl-Z: the shell hands the terminal back in its own,
    line-by-line mode), cbreak mode is set again."""
    import select
    import termios
    import tty

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTIN, signal.SIGTTOU})
    while not interrupted.is_set():
        if not in_foreground(fd):
            interrupted.wait(KEY_POLL_S)
            continue
        with contextlib.suppress(OSError, termios.error):
            if termios.tcgetattr(fd)[3] & termios.ICANON:
                tty.setcbreak(fd, termios.TCSANOW)  # keys typed meanwhile are kept
        if not select.select([fd], [], [], KEY_POLL_S)[0]:
            continue
        try:
            key = os.read(fd, 1)
        except OSError:  # EIO: moved to the background between the check and the read
            continue
        if key in (b"q", b"Q", b""):
            bar.console.print("shoal run: q pressed: finishing running jobs, then stopping")
            interrupted.set()
        elif key in (b"\n", b"\r"):
            bar.console.print(_workers_table(queue))


@contextlib.contextmanager
def _blocked(signum: int) -> Iterator[None]:
    """Block `signum` in this thread for the duration."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _workers_table(queue: Queue) -> Any:
    from rich.table import Table

    table = Table("worker", "host", "slots", "state", "done", "running", "seen", box=None)
    for w in sorted(queue.workers(), key=lambda w: w.id):
        table.add_row(w.id, w.host, str(w.slots), "lost" if w.lost else w.state, str(w.done),
                      ", ".join(w.running[:3]) + (" ..." if len(w.running) > 3 else ""),
                      f"{w.age_s:.0f} s ago" if w.age_s is not None else "")
    return table


