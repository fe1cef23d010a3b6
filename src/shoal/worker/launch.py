"""What a job starts with: its argv, directory, environment, log and context; and its
process, started in a session of its own.

A job runs in a new session, so Ctrl-C in the worker's terminal does not reach it
and the whole tree it starts can be killed at once (timeout, lease loss, stop).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..context import JobContext, job_seed
from ..errors import MalformedJob
from ..fsutil import make_dir, open_new
from ..job import Job, Kind, Lease
from ..queue.files import stderr_file
from ..trust import Trust, check_job_file, check_named_files

if TYPE_CHECKING:
    from ..queue import Queue

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
    stderr_apart: bool = False  # fd 2 to stderr_file(log), not to the log (Job.stderr_apart)


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
    make_dir(folder)


def shell_argv(command: str) -> list[str]:
    """How a command string runs: directly when it is plain words, else through /bin/sh."""
    words = command.split()
    if (words and _SIMPLE_COMMAND.fullmatch(command) and "=" not in words[0]
            and _on_path(words[0])):
        return words
    return ["/bin/sh", "-c", command]


def job_environment(lease: Lease, queue_url: str, extra: Mapping[str, str],
                    slot: int = 1) -> dict[str, str]:
    """The job's environment: ours, the job's own, and the SHOAL_* variables;
    SHOAL_SLOT is the worker's slot running it (1..slots, GNU parallel's `{%}`)."""
    env = dict(_base_environment())
    env.update(extra)
    env.update({
        "SHOAL_JOB_ID": lease.job_id,
        "SHOAL_JOB_NAME": lease.job.name,
        "SHOAL_ATTEMPT": str(lease.attempt),
        "SHOAL_QUEUE": queue_url,
        "SHOAL_WORKER": lease.worker,
        "SHOAL_SLOT": str(slot),
    })
    return env


def job_context(queue: Queue, lease: Lease) -> JobContext:
    """What the job will see through shoal.random(), shoal.config(), shoal.progress()."""
    job = lease.job
    seed = job.meta.get("seed")
    config = queue.files.config_file()
    return JobContext(
        job_id=job.id, attempt=lease.attempt, queue=queue.url, worker=lease.worker,
        seed=int(seed) if seed is not None else job_seed(queue.settings.seed, job.id),
        progress_file=str(queue.files.progress_file(lease)),
        config_file=str(config) if config else None,
    )


def prepare(lease: Lease, *, queue_url: str, root: Path, interpreters: Mapping[str, list[str]],
            worker_dir: Path, attempt_log: Path,
            extra_env: Mapping[str, str] | None = None, slot: int = 1,
            trust: Trust | None = None) -> Launch:
    """Turn a leased job into a Launch; MalformedJob (naming the file) if it cannot run,
    JobRefused if `trust` (default: your own files only) does not let it.
    `slot`: the worker's slot (1-based) that runs it, exported as SHOAL_SLOT."""
    job = lease.job
    env = job_environment(lease, queue_url, {**(extra_env or {}), **job.env}, slot)
    if job.kind is Kind.COMMAND:
        if not job.command:
            raise MalformedJob(f"job {job.id}: empty command")
        argv = shell_argv(job.command) if isinstance(job.command, str) else list(job.command)
        return Launch(argv, job.cwd or str(worker_dir), env, attempt_log, job.timeout_s,
                      job.retries, job.stderr_apart)
    if job.kind is Kind.FILE:
        return _prepare_file(job, env, root, interpreters, worker_dir, attempt_log,
                             trust or Trust())
    raise MalformedJob(f"job {job.id}: kind {job.kind.value!r} cannot run as a process")


def _prepare_file(job: Job, env: dict[str, str], root: Path,
                  interpreters: Mapping[str, list[str]], worker_dir: Path,
                  attempt_log: Path, trust: Trust) -> Launch:
    from ..jobfiles import load_job_file

    assert job.path is not None
    check_job_file(root, job.path, trust)
    # The job carries the `after` it was submitted with (a finished dependency's file may be
    # gone by now); one submitted without (a drop-in whose `after` named no file there) is
    # read whole, so such a file fails as malformed, naming what is missing.
    spec = load_job_file(root / job.path, interpreters=interpreters, worker_dir=worker_dir,
                         scheduling=not job.after, log_dirs=trust.log_dirs)
    check_named_files(root, job.path, spec.command, spec.cwd, trust)
    env.update({f"SHOAL_PARAM_{key}": value if isinstance(value, str) else json.dumps(value)
                for key, value in spec.params.items() if str(key).isidentifier()})
    timeout_s = job.timeout_s if job.timeout_s is not None else spec.timeout_s
    retries = spec.retries if spec.retries is not None else job.retries
    # A `logfile` the job file names is where queue.files places the log on success.
    return Launch(list(spec.command), spec.cwd, env, attempt_log, timeout_s, retries)


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
    """Start the job's process in a new session with stdout+stderr going to its log
    (stderr to `stderr_file(log)` when `launch.stderr_apart`).

    posix_spawn (vfork-like, half the Python cost of Popen) when the job runs in our
    own directory, since it cannot change directory; Popen otherwise.
    """
    _ensure_dir(launch.log.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = open_new(launch.log, flags)  # private, or group-shared (fsutil)
    err_fd = fd
    try:
        if launch.stderr_apart:
            err_fd = open_new(stderr_file(launch.log), flags)
        program = _which(launch.argv[0]) if "/" not in launch.argv[0] else launch.argv[0]
        if program and launch.cwd == os.getcwd() and hasattr(os, "posix_spawn"):
            actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, err_fd, 2)]
            return _Spawned(os.posix_spawn(program, launch.argv, launch.env,
                                           file_actions=actions, setsid=True))
        return subprocess.Popen(
            launch.argv, cwd=launch.cwd, env=launch.env, stdin=subprocess.DEVNULL,
            stdout=fd, stderr=subprocess.STDOUT if err_fd == fd else err_fd,
            start_new_session=True,
        )
    finally:
        os.close(fd)
        if err_fd != fd:
            os.close(err_fd)


def pin_process(pid: int, cores: tuple[int, ...]) -> None:
    """Keep a process on `cores` (`shoal work --pin`): every thread of it, since a
    thread's affinity is its own; what it starts from then on inherits it. Cores the
    kernel refuses (another cpuset) leave the process where it was."""
    try:
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        threads = [pid]
    for tid in threads:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cores)


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
