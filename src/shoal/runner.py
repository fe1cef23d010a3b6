"""Running one job: a subprocess in its own process group, output to a log, a deadline.

A job runs in a new session, so Ctrl-C in the worker's terminal does not reach it
and the whole tree it starts can be killed at once (timeout, lease loss, stop).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from . import defaults
from .errors import MalformedJob
from .job import Job, Kind, Lease, Reaped

# A command string made only of these characters, whose first word is a program on
# PATH, runs without a shell: same result, half the start-up cost.
_SIMPLE_COMMAND = re.compile(r"[\w\-+./:,@%= ]+")


@dataclass(frozen=True)
class Launch:
    """Everything needed to start a job's process."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    log: Path
    timeout_s: float | None
    retries: int


@lru_cache(maxsize=256)
def _which(program: str) -> str | None:
    return shutil.which(program)


def _on_path(program: str) -> bool:
    return _which(program) is not None


@lru_cache(maxsize=1)
def _base_environment() -> dict[str, str]:
    """Our environment, decoded once: copying os.environ per job costs ~100 us."""
    return dict(os.environ)


@lru_cache(maxsize=1024)
def _ensure_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)


def shell_argv(command: str) -> list[str]:
    """How a command string runs: directly when it is plain words, else through /bin/sh."""
    words = command.split()
    if (words and _SIMPLE_COMMAND.fullmatch(command) and "=" not in words[0]
            and _on_path(words[0])):
        return words
    return ["/bin/sh", "-c", command]


def job_environment(lease: Lease, queue_url: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The job's environment: ours, the job's own, and the SHOAL_* variables."""
    env = dict(_base_environment())
    env.update(extra)
    env.update({
        "SHOAL_JOB_ID": lease.job_id,
        "SHOAL_JOB_NAME": lease.job.name,
        "SHOAL_ATTEMPT": str(lease.attempt),
        "SHOAL_QUEUE": queue_url,
        "SHOAL_WORKER": lease.worker,
    })
    return env


def prepare(lease: Lease, *, queue_url: str, root: Path, interpreters: Mapping[str, list[str]],
            worker_dir: Path, attempt_log: Path,
            extra_env: Mapping[str, str] | None = None) -> Launch:
    """Turn a leased job into a Launch; MalformedJob (naming the file) if it cannot run."""
    job = lease.job
    env = job_environment(lease, queue_url, {**(extra_env or {}), **job.env})
    if job.kind is Kind.COMMAND:
        if not job.command:
            raise MalformedJob(f"job {job.id}: empty command")
        argv = shell_argv(job.command) if isinstance(job.command, str) else list(job.command)
        return Launch(argv, job.cwd or str(worker_dir), env, attempt_log, job.timeout_s,
                      job.retries)
    if job.kind is Kind.FILE:
        return _prepare_file(job, env, root, interpreters, worker_dir, attempt_log)
    raise MalformedJob(f"job {job.id}: kind {job.kind.value!r} cannot run as a process")


def _prepare_file(job: Job, env: dict[str, str], root: Path,
                  interpreters: Mapping[str, list[str]], worker_dir: Path,
                  attempt_log: Path) -> Launch:
    from .jobfiles import load_job_file

    assert job.path is not None
    spec = load_job_file(root / job.path, interpreters=interpreters, worker_dir=worker_dir)
    env.update({f"SHOAL_PARAM_{key}": value if isinstance(value, str) else json.dumps(value)
                for key, value in spec.params.items() if str(key).isidentifier()})
    timeout_s = job.timeout_s if job.timeout_s is not None else spec.timeout_s
    retries = spec.retries if spec.retries is not None else job.retries
    log = Path(spec.log) if spec.log else attempt_log
    return Launch(list(spec.command), spec.cwd, env, log, timeout_s, retries)


class JobProcess(Protocol):
    """A started job: its pid (also its process group) and a blocking wait."""

    pid: int

    def wait(self) -> int: ...


class _Spawned:
    """A process started with posix_spawn; `wait` returns what Popen.wait would."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def start(launch: Launch) -> JobProcess:
    """Start the job's process in a new session with stdout+stderr going to its log.

    posix_spawn (vfork-like, half the Python cost of Popen) when the job runs in our
    own directory, since it cannot change directory; Popen otherwise.
    """
    _ensure_dir(launch.log.parent)
    fd = os.open(launch.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        program = _which(launch.argv[0]) if "/" not in launch.argv[0] else launch.argv[0]
        if program and launch.cwd == os.getcwd() and hasattr(os, "posix_spawn"):
            actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)]
            return _Spawned(os.posix_spawn(program, launch.argv, launch.env,
                                           file_actions=actions, setsid=True))
        return subprocess.Popen(
            launch.argv, cwd=launch.cwd, env=launch.env, stdin=subprocess.DEVNULL,
            stdout=fd, stderr=subprocess.STDOUT, start_new_session=True,
        )
    finally:
        os.close(fd)


def kill_group(pid: int, sig: int) -> None:
    """Signal a job's whole process group (the job leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def describe_exit(returncode: int) -> str:
    """A person's words for a process's exit status."""
    if returncode == 0:
        return ""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class Deadlines:
    """Kills process groups whose deadline passed: SIGTERM, then SIGKILL after a grace.

    One thread serves every slot of a worker, so a job without a deadline pays nothing.
    Entries are keyed by ticket, not pid, so a reused pid is never signalled.
    """

    def __init__(self, grace_s: float = defaults.KILL_GRACE_S) -> None:
        self.grace_s = grace_s
        self._heap: list[tuple[float, int, int, int]] = []  # when, ticket, pid, signal
        self._live: set[int] = set()
        self._tickets = 0
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="shoal-deadlines", daemon=True)
        self._thread.start()

    def kill_at(self, pid: int, when: float) -> int:
        """SIGTERM the group at monotonic time `when`, SIGKILL it `grace_s` later."""
        with self._cond:
            self._tickets += 1
            ticket = self._tickets
            self._live.add(ticket)
            heapq.heappush(self._heap, (when, ticket, pid, signal.SIGTERM))
            heapq.heappush(self._heap, (when + self.grace_s, ticket, pid, signal.SIGKILL))
            self._cond.notify()
            return ticket

    def kill_now(self, pid: int) -> int:
        return self.kill_at(pid, time.monotonic())

    def close(self) -> None:
        """Stop the thread: signals already due still fire, later ones are dropped (a
        worker closes this once its jobs' processes have ended), so nothing lingers."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def forget(self, ticket: int) -> None:
        """The process exited: its pending signals must not fire."""
        with self._cond:
            self._live.discard(ticket)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._closing:
                    now = time.monotonic()
                    self._heap = [entry for entry in self._heap if entry[0] <= now]
                    heapq.heapify(self._heap)
                while not self._heap:
                    if self._closing:
                        return
                    self._cond.wait()
                when, ticket, pid, sig = self._heap[0]
                delay = when - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                if ticket not in self._live:
                    continue
            kill_group(pid, sig)


def _environ_of(pid: str) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs
            if k.startswith(b"SHOAL_")}


def kill_orphans(reaped: Iterable[Reaped]) -> int:
    """Kill job processes on this host left running by dead workers; return how many groups.

    A job is recognised by its SHOAL_JOB_ID, SHOAL_WORKER and SHOAL_ATTEMPT environment,
    never by pid alone, so a reused pid, or a newer attempt of the same job, is never hit.
    Linux only (/proc); elsewhere nothing happens.
    """
    wanted = {(r.job_id, r.worker, str(r.attempt)) for r in reaped}
    dead_workers = {worker for _, worker, _ in wanted}
    if not wanted or not Path("/proc/self/environ").exists():
        return 0
    groups = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        env = _environ_of(entry)
        # A call interpreter's /proc environ keeps the job id of its first call only,
        # so it is recognised by its dead worker alone.
        callhost = env.get("SHOAL_CALLHOST") == "1" and env.get("SHOAL_WORKER") in dead_workers
        job = (env.get("SHOAL_JOB_ID"), env.get("SHOAL_WORKER"), env.get("SHOAL_ATTEMPT"))
        if callhost or job in wanted:
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(int(entry)))
    groups.discard(os.getpgid(0))
    for group in groups:
        kill_group(group, signal.SIGKILL)
    return len(groups)
