"""First run serves, later runs work: one script for every machine of a sweep.

    with shoal.session("sweep") as ex:          # on every machine, the same script
        results = list(ex.map(simulate, seeds))

The first process to start becomes the coordinator: it serves a SQLite queue over
TCP, writes the status file (~/.shoal/sessions/NAME/status.json), works with its
own cores and runs the body. The same script started on another machine (with
the status file there: a shared home, or a copy) finds the live coordinator,
works for it, and exits when the coordinator says the session is over; the body
does not run there. A status file left by a dead coordinator is not trusted.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ShoalError
from .executor import Executor
from .queue import open_queue
from .queue.base import STOP, Queue
from .worker import Worker

if TYPE_CHECKING:
    from .serve.coordinator import Coordinator

log = logging.getLogger("shoal.session")

SESSIONS = Path("~/.shoal/sessions")
SESSION_DIR_ENV = "SHOAL_SESSION_DIR"
GOODBYE_S = 15.0  # how long the coordinator waits for remote workers to leave at the end


def session_dir(name: str, where: str | Path | None = None) -> Path:
    """The status directory of session `name` (given, $SHOAL_SESSION_DIR/NAME, or ~)."""
    if where is not None:
        return Path(os.path.expanduser(where)).absolute()  # "~nobody" stays as written
    base = os.environ.get(SESSION_DIR_ENV)
    return Path(os.path.expanduser(base or SESSIONS)).absolute() / name


@contextmanager
def session(name: str = "default", *, where: str | Path | None = None,
            bind: str | None = None, advertise: str | None = None,
            workers: int | None = None, progress: bool | None = None,
            **executor_options: object) -> Iterator[Executor]:
    """An Executor on the session's coordinator, which this process becomes if none lives.

    bind: where a new coordinator listens (default: this machine only; give
        "tcp://0.0.0.0:PORT" or set SHOAL_BIND so other machines can join).
    workers: local slots (default: CPU count), on the coordinator and on workers.
    progress: live progress on stderr (default: when stderr is a terminal).
    In a worker process the body never runs: the process works, then exits(0).
    """
    folder = session_dir(name, where)
    coordinator = lead(folder, name, bind=bind, advertise=advertise)
    if coordinator is None:
        work_for(folder, workers)
        raise SystemExit(0)
    show = sys.stderr.isatty() if progress is None else progress
    # Our own client, so it is still open to dismiss the workers after the Executor
    # shut down (an Executor closes the queues it opened itself).
    queue = open_queue(str(folder))
    try:
        executor = Executor(queue, workers=workers, progress=show,
                            **executor_options)  # type: ignore[arg-type]
        try:
            yield executor
            executor.shutdown(wait=True)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            dismiss_workers(queue)
    finally:
        queue.close()
        coordinator.stop()


def lead(folder: Path, name: str, *, bind: str | None = None,
         advertise: str | None = None) -> Coordinator | None:
    """Start serving the session from `folder`, or return None if a live coordinator does."""
    from .serve import locate

    if not locate.take_lead(folder):
        return None
    try:
        coordinator = locate.serve(locate.default_queue(folder), folder,
                                   bind=bind or os.environ.get("SHOAL_BIND"),
                                   advertise=advertise, checked=True).start()
    finally:
        locate.drop_lead(folder)
    _announce(name, folder, coordinator.address)
    return coordinator


def _announce(name: str, folder: Path, address: str) -> None:
    where = "this machine only" if "127.0.0.1" in address else "reachable from the network"
    print(f"shoal: session {name!r} served at {address} ({where})\n"
          f"       other machines: put {folder / 'status.json'} at the same path there "
          f"(it is private: it holds the key) and run the same script or command there",
          file=sys.stderr)


def work_for(folder: Path, slots: int | None) -> None:
    """Work for the session's coordinator until it ends the session (or disappears)."""
    queue = open_queue(str(folder))
    try:
        print(f"shoal: session coordinator found at {queue.url}; working for it",
              file=sys.stderr)
        worker = Worker(queue, slots=slots)
        reason = worker.run()
        print(f"shoal: session over ({reason}); {worker.done} job(s) done here",
              file=sys.stderr)
    finally:
        queue.close()


def dismiss_workers(queue: Queue) -> None:
    """Ask the session's workers still there to stop (ours stopped already), and give
    them time to leave."""
    try:
        others = [w.id for w in queue.workers() if not w.lost]
        for worker_id in others:
            queue.send_control(worker_id, STOP)
        deadline = time.monotonic() + GOODBYE_S
        while time.monotonic() < deadline and any(
                w.id in others and not w.lost for w in queue.workers()):
            time.sleep(0.1)
    except ShoalError as exc:
        log.warning("could not dismiss the session's workers: %s", exc)
