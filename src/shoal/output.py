"""What `shoal run` prints: each job's output as GNU parallel prints it, its stdout on our
stdout and its stderr on our stderr.

Grouped (parallel's default): a job's whole log when it ends, never mixed with another's,
then its stderr. `keep_order` holds both until every job before it in input order is out.
`tags` prefix each line (of either stream) with the job's tag and a TAB. `line_buffer`
prints complete stdout lines while the job runs (the caller feeds them through `stream`);
the rest, and the whole stderr, come when it ends (parallel interleaves stderr lines too).
The log holds stdout only for jobs whose stderr the worker keeps apart (Job.stderr_apart,
which `shoal run` sets); for other jobs, and from a network store, which ships one log,
stderr comes inside the log, on stdout.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

Write = Callable[[bytes], None]
#: a finished job's log: its bytes, a function that reads them, or None (nothing to print)
Log = bytes | Callable[[], bytes | None] | None


class _Gone:
    """The streams whose reader went away (a pipe's reader exited): shared by every writer
    of a run (the jobs' outputs, `--joblog -`), so `shoal run ... | head` lets the jobs
    go on."""

    streams: set[str] = set()


_FDS = {"stdout": 1, "stderr": 2}


def write_stdout(data: bytes) -> None:
    """Write raw bytes to stdout, also while the live bar shows; once its reader is gone,
    nothing (the jobs go on, unprinted).

    The bar's display library swaps sys.stdout for a proxy (it has `rich_proxied_file`)
    that prints above the bar on its console, which is stderr. When stdout is a terminal
    that is where the text belongs; when it is a file or a pipe it must go to that file,
    not to the terminal.
    """
    _write_to("stdout", data)


def write_stderr(data: bytes) -> None:
    """Write raw bytes to stderr as `write_stdout` writes to stdout (above the live bar)."""
    _write_to("stderr", data)


def _write_to(name: str, data: bytes) -> None:
    if name in _Gone.streams:
        return
    try:
        _write(getattr(sys, name), data)
    except BrokenPipeError:
        _Gone.streams.add(name)
        with contextlib.suppress(OSError):  # so the exit's flush of the stream is quiet
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, _FDS[name])
            os.close(devnull)


def _write(out: Any, data: bytes) -> None:
    real = getattr(out, "rich_proxied_file", None)
    if real is not None and real.isatty():
        text = data.decode(errors="replace")
        out.write(text if text.endswith("\n") else text + "\n")  # the proxy prints lines
        return
    if real is not None:
        out = real
    buffer: IO[bytes] | None = getattr(out, "buffer", None)
    if buffer is None:
        out.write(data.decode(errors="replace"))
        out.flush()
        return
    out.flush()
    buffer.write(data)
    buffer.flush()


def tagged(data: bytes, tag: str | None) -> bytes:
    """Each line (a last one without newline too) prefixed with `tag` and a TAB."""
    if not tag or not data:
        return data
    prefix = tag.encode() + b"\t"
    lines = data.split(b"\n")  # as parallel: a \r (a job's own progress line) splits nothing
    rest = lines.pop()  # after the last newline: b"" when the log ends with one
    return b"".join(prefix + line + b"\n" for line in lines) + (prefix + rest if rest else b"")


class JobOutput:
    """Prints the outputs of one run's jobs; see the module docstring.

    `order` is the run's job ids in input order. The caller reports each job once:
    `ended(id, attempt, log, err)` (log None: print nothing, e.g. a job killed by --halt
    now; err: its stderr kept apart, if any); with `line_buffer`, `stream(id, attempt,
    new_bytes)` while it runs. `write` prints on stdout, `write_err` on stderr.
    """

    def __init__(self, order: Sequence[str], *, keep_order: bool = False,
                 line_buffer: bool = False, tags: Mapping[str, str] | None = None,
                 write: Write = write_stdout, write_err: Write = write_stderr) -> None:
        self.keep_order = keep_order
        self.line_buffer = line_buffer
        self._order = list(order)
        self._tags = tags or {}
        self._write = write
        self._write_err = write_err
        self._next = 0  # keep_order: index in `order` of the first job not yet out
        # ended, waiting for their turn: (attempt, log, stderr)
        self._held: dict[str, tuple[int, Log, Log]] = {}
        self._streamed: dict[str, tuple[int, int]] = {}  # job -> (attempt, bytes printed)

    # -- line buffering ------------------------------------------------------------

    def wants_stream(self, job_id: str) -> bool:
        """Whether a running job's new lines should be printed now (with keep_order, only
        the first job not yet out streams; the others come whole at their turn)."""
        if not self.line_buffer:
            return False
        return not self.keep_order or self._head() == job_id

    def stream_offset(self, job_id: str, attempt: int) -> int:
        """How many bytes of this attempt's log are out already (read on from there)."""
        seen = self._streamed.get(job_id)
        return seen[1] if seen is not None and seen[0] == attempt else 0

    def stream(self, job_id: str, attempt: int, new: bytes) -> None:
        """New bytes of a running attempt's log, from `stream_offset`: the complete lines
        among them are printed (a partial line waits for its end)."""
        end = new.rfind(b"\n") + 1
        if end == 0:
            return
        self._emit(job_id, new[:end])
        self._streamed[job_id] = (attempt, self.stream_offset(job_id, attempt) + end)

    # -- endings --------------------------------------------------------------------

    def ended(self, job_id: str, attempt: int, log: Log, err: Log = None) -> None:
        """The job is final: print what of its log is not out yet, then its stderr `err`,
        now or at its turn (given as functions, they are read then: -k keeps no waiting
        output in memory)."""
        if not self.keep_order:
            self._print_end(job_id, attempt, log, err)
            return
        self._held[job_id] = (attempt, log, err)
        while (head := self._head()) is not None and head in self._held:
            self._print_end(head, *self._held.pop(head))
            self._next += 1

    def _head(self) -> str | None:
        return self._order[self._next] if self._next < len(self._order) else None

    def _print_end(self, job_id: str, attempt: int, log: Log, err: Log) -> None:
        data = log() if callable(log) else log
        if data is not None and job_id in self._streamed:
            data = data[self.stream_offset(job_id, attempt):]
        self._streamed.pop(job_id, None)
        if data:
            self._emit(job_id, data)
        data = err() if callable(err) else err
        if data:
            self._write_err(tagged(data, self._tags.get(job_id)))

    def _emit(self, job_id: str, data: bytes) -> None:
        self._write(tagged(data, self._tags.get(job_id)))
