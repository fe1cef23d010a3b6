"""Submitting a stream of jobs in batches: how every backend's `submit` takes 10^6 jobs
without holding them all.

`submit` reads its iterable lazily, `size` jobs at a time, and stores each batch all or
nothing, in order. A batch that fails ends the call: the batches before it are in the
queue (their jobs will run), those after it were never read. The error is the one the
batch raised (a full disk is still `NoSpace`), its message saying how many jobs of this
call went in before it, and it carries that number as `submitted` and their new ids as
`new_ids`: submitting the same jobs again (ids are content) adds only the rest.

A list or tuple whose jobs name others (`after`) goes as one batch: its dependencies are
checked over the whole submission, whatever their order, as before streaming.
"""

from __future__ import annotations

import queue as threads_queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

from ..errors import ShoalError
from ..job import Job

T = TypeVar("T")


def in_batches(jobs: Iterable[Job], size: int) -> Iterator[list[Job]]:
    """`jobs` as lists of at most `size`, read as they are needed (see the module)."""
    if isinstance(jobs, Sequence) and any(job.after for job in jobs):
        if jobs:
            yield list(jobs)
        return
    stream = iter(jobs)
    while batch := list(islice(stream, size)):
        yield batch


def submit_in_batches(jobs: Iterable[Job], size: int,
                      store: Callable[[list[Job]], list[str]]) -> list[str]:
    """`store` each batch in turn; the new ids of all of them (see the module for a batch
    that fails)."""
    new: list[str] = []
    submitted = 0
    for batch in in_batches(jobs, size):
        try:
            new += store(batch)
        except ShoalError as exc:
            raise _partly(exc, submitted, new) from None
        submitted += len(batch)
    return new


def submit_pipelined(jobs: Iterable[Job], size: int, encode: Callable[[list[Job]], T],
                     send: Callable[[list[Job], T], list[str]]) -> list[str]:
    """`submit_in_batches` for a remote queue: a thread sends each encoded batch while
    this one reads and encodes the next (at most one waiting), in order, so the client's
    encoding and the server's storing overlap; a failed batch stops the sending of the
    later ones (see the module)."""
    ready: threads_queue.Queue[tuple[list[Job], T] | None] = threads_queue.Queue(maxsize=1)
    outcome: dict[str, Any] = {"new": [], "submitted": 0, "error": None}
    failed = threading.Event()

    def sender() -> None:
        while (item := ready.get()) is not None:
            if failed.is_set():
                continue  # drain what was queued; nothing more goes out
            batch, encoded = item
            try:
                outcome["new"] += send(batch, encoded)
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc
                failed.set()
                continue
            outcome["submitted"] += len(batch)

    thread = threading.Thread(target=sender, name="shoal-submit", daemon=True)
    thread.start()
    try:
        for batch in in_batches(jobs, size):
            if failed.is_set():
                break
            ready.put((batch, encode(batch)))
    finally:
        ready.put(None)
        thread.join()
    error = outcome["error"]
    if isinstance(error, ShoalError):
        raise _partly(error, outcome["submitted"], outcome["new"]) from None
    if error is not None:
        raise error
    return outcome["new"]


def _partly(exc: ShoalError, submitted: int, new: list[str]) -> ShoalError:
    """`exc` saying how many jobs of the call went in before it (none: as it was)."""
    exc.submitted = submitted  # type: ignore[attr-defined]
    exc.new_ids = new  # type: ignore[attr-defined]
    if submitted and exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]} ({submitted} job(s) of this submission were stored "
                    f"before it, {len(new)} of them new; the rest were not)", *exc.args[1:])
    return exc
