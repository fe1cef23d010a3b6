"""GNU parallel's --joblog: one TAB-separated line per finished job, and reading it back
for --resume / --resume-failed.

The columns are parallel's: Seq (the job's place in the input, from 1), Host (`:` for
this machine), Starttime (epoch seconds), JobRuntime, Send, Receive (bytes of output),
Exitval, Signal, Command. A job killed by a signal has Exitval 0 and that Signal, as in
parallel; one that never got an exit status (could not start, its workers kept dying)
has Exitval -1.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import UsageError
from .fsutil import HOST
from .job import Job, Kind, Result

HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


class JoblogError(UsageError):
    """A --joblog file that cannot be read or written, or is not in parallel's format."""


def command_of(job: Job) -> str:
    """What the joblog's Command column shows for a job (newlines as NUL, as parallel)."""
    if isinstance(job.command, str):
        text = job.command
    elif job.command:
        text = shlex.join(job.command)
    elif job.kind is Kind.FILE and job.path:
        text = job.path
    else:
        text = job.name
    return text.replace("\n", "\0")


def exit_columns(result: Result) -> tuple[int, int]:
    """(Exitval, Signal) of a result, as parallel fills them."""
    code = result.exit_code
    if code is None:
        return -1, 0
    if code < 0:
        return 0, -code
    return code, 0


def line(seq: int, job: Job, result: Result, received: int) -> str:
    """One joblog line for a final result."""
    host = ":" if result.host in ("", HOST) else result.host
    started = result.started if result.started is not None else 0.0
    runtime = result.duration_s or 0.0
    exitval, signal = exit_columns(result)
    return (f"{seq}\t{host}\t{started:.3f}\t{runtime:10.3f}\t0\t{received}\t{exitval}\t"
            f"{signal}\t{command_of(job)}\n")


def read(path: str) -> dict[int, bool]:
    """Seq -> whether it succeeded (exit 0, no signal, on any of its lines), from a
    joblog; {} if there is none yet. A line not in parallel's format is an error."""
    file = Path(path.removeprefix("+"))
    try:
        text = file.read_bytes().decode(errors="replace")  # no newline translation: "\r" stays
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise JoblogError(f"--joblog {file}: cannot read it: {exc.strerror}") from None
    seen: dict[int, bool] = {}
    # Lines end at "\n" only: splitlines() would also cut at "\r", "\x1e", "\u2028"...,
    # which a command (the last column) may hold (found by the fuzzer)
    for number, row in enumerate(text.split("\n"), 1):
        if (number == 1 and row.startswith("Seq\t")) or not row.strip():
            continue
        fields = row.split("\t")
        try:
            seq, exitval, signal = int(fields[0]), int(fields[6]), int(fields[7])
        except (ValueError, IndexError):
            raise JoblogError(f"--joblog {file}, line {number}: not a joblog line "
                              "(Seq Host Starttime JobRuntime Send Receive Exitval Signal "
                              "Command, TAB-separated)") from None
        seen[seq] = seen.get(seq, False) or (exitval == 0 and signal == 0)
    return seen


class JoblogWriter:
    """Appends lines to a joblog as jobs end; with `append` False it starts the file
    afresh (parallel's --joblog without --resume); `+FILE` always appends. `-` is stdout."""

    def __init__(self, path: str, *, append: bool,
                 stdout: Callable[[bytes], None] | None = None) -> None:
        self._stdout = stdout
        self._file: IO[str] | None = None
        if path == "-":
            self._put(HEADER)
            return
        append = append or path.startswith("+")
        file = Path(path.removeprefix("+"))
        try:
            self._file = open(file, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
            if self._file.tell() == 0:
                self._put(HEADER)
        except OSError as exc:
            raise JoblogError(f"--joblog {file}: cannot write it: {exc.strerror}") from None

    def write(self, seq: int, job: Job, result: Result, received: int) -> None:
        self._put(line(seq, job, result, received))

    def _put(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text)
            self._file.flush()
        elif self._stdout is not None:
            self._stdout(text.encode())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
