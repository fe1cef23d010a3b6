"""The Slurm provider: N shoal workers as one job array, found again by name and comment.

One Slurm job is one worker that drains many shoal jobs (Slurm starts jobs in waves,
every 1-3 s, so a Slurm job per task would be slow). Each array task runs
`shoal.providers.slurm_work`, which sizes `shoal work` to its allocation. Every job we
submit is named `shoal-worker` and carries a comment derived from the queue (a hash: a
queue URL may hold a password, and squeue shows comments to everyone), so `shoal fire`
finds this queue's jobs without any file of ours.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..job import WorkerInfo
from . import Handle

JOB_NAME = "shoal-worker"
COMMAND_TIMEOUT_S = 60.0
PROVIDER = "slurm"
# The label a Slurm worker gives itself, so `shoal workers` shows its Slurm job id.
LABEL_PREFIX = "slurm-"
# Slurm signals the worker (the batch shell's process, B:) this long before its time
# limit; the worker gives its running jobs back to the queue and leaves.
WARNING_LEAD_S = 60
WARNING_SIGNAL = f"--signal=B:USR1@{WARNING_LEAD_S}"
# How long a worker sent that warning by `stop` gets before its scancel.
STOP_GRACE_S = 15.0


class SlurmError(UsageError):
    """sbatch, squeue or scancel is missing or refused what we asked (one line)."""


@dataclass(frozen=True)
class SlurmOptions:
    """What the user asks of Slurm for each worker (sbatch's own flags)."""

    partition: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    gres: str | None = None
    account: str | None = None
    extra: tuple[str, ...] = ()  # --sbatch-arg: passed to sbatch as they are
    idle_timeout_s: float | None = None  # the worker leaves after this long without a job

    def sbatch_flags(self) -> list[str]:
        named = {"--partition": self.partition, "--time": self.time,
                 "--cpus-per-task": self.cpus_per_task, "--mem": self.mem,
                 "--gres": self.gres, "--account": self.account}
        flags = [f"{flag}={value}" for flag, value in named.items() if value is not None]
        if not any(arg.startswith("--signal") for arg in self.extra):
            flags.append(WARNING_SIGNAL)  # see slurm_work.leave_at_warning
        return flags + list(self.extra)

    def warning_lead_s(self) -> int:
        """Seconds between Slurm's warning and the time limit: the worker plans its last
        jobs to end before the warning (an --sbatch-arg --signal=...@N says N)."""
        for arg in self.extra:
            if arg.startswith("--signal") and "@" in arg and arg.rsplit("@", 1)[1].isdigit():
                return int(arg.rsplit("@", 1)[1])
        return WARNING_LEAD_S


def queue_tag(queue: str) -> str:
    """The comment on this queue's Slurm jobs: stable, short, and no secret in it."""
    return "shoal:" + hashlib.sha256(queue.encode()).hexdigest()[:16]


def batch_script(queue: str, log_dir: str, python: str,
                 idle_timeout_s: float | None = None, warning_lead_s: int = WARNING_LEAD_S) -> str:
    """What each array task runs: the worker, in place of the shell (so Slurm's signals
    reach it, and it is the job's own process); an idle timeout and the warning's lead
    through the environment (`shoal work --idle-timeout` reads SHOAL_IDLE_TIMEOUT,
    slurm_work reads SHOAL_SLURM_WARNING_S)."""
    command = [python, "-m", "shoal.providers.slurm_work", queue, log_dir]
    idle = f"export SHOAL_IDLE_TIMEOUT={idle_timeout_s:g}\n" if idle_timeout_s else ""
    lead = f"export SHOAL_SLURM_WARNING_S={warning_lead_s}\n"
    return f"#!/bin/sh\n{idle}{lead}exec {shlex.join(command)}\n"


def _run(argv: list[str], stdin: str | None = None) -> str:
    if shutil.which(argv[0]) is None:
        raise SlurmError(f"--slurm: {argv[0]} not found on PATH (run this on a Slurm login "
                         "node, or load its module)")
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"--slurm: {argv[0]} did not answer within "
                         f"{COMMAND_TIMEOUT_S:g} s") from exc
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no message)"]
        raise SlurmError(f"--slurm: {argv[0]} failed (exit {done.returncode}): {lines[-1]}")
    return done.stdout


class SlurmProvider:
    """Workers for `queue` as Slurm jobs; logs (Slurm's and the workers') in `log_dir`."""

    name = PROVIDER

    def __init__(self, queue: str, log_dir: str, python: str = sys.executable) -> None:
        self.queue = queue
        self.log_dir = log_dir
        self.python = python

    def start(self, count: int, options: SlurmOptions) -> list[Handle]:
        """Submit one array of `count` tasks; a handle per task (JOB_TASK, as squeue)."""
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        argv = ["sbatch", "--parsable", f"--job-name={JOB_NAME}",
                f"--comment={queue_tag(self.queue)}", f"--array=0-{count - 1}",
                f"--output={Path(self.log_dir) / 'slurm-%A_%a.out'}", *options.sbatch_flags()]
        out = _run(argv, stdin=batch_script(self.queue, self.log_dir, self.python,
                                            options.idle_timeout_s, options.warning_lead_s()))
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise SlurmError(f"--slurm: sbatch answered {out.strip()[:200]!r}, not a job id")
        return [Handle(PROVIDER, f"{job_id}_{task}") for task in range(count)]

    def jobs(self) -> dict[str, str]:
        """This queue's Slurm workers that squeue lists: id (JOB_TASK) -> state."""
        out = _run(["squeue", "-h", "-r", f"--name={JOB_NAME}", "-o", "%i|%k|%T"])
        tag, found = queue_tag(self.queue), {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[1] == tag:
                found[parts[0]] = parts[2]
        return found

    def hired(self) -> list[Handle]:
        """Every Slurm worker of this queue still waiting or running."""
        return [Handle(PROVIDER, job_id) for job_id in self.jobs()]

    def stop(self, handles: Sequence[Handle]) -> None:
        """Cancel those not started; send the running ones the time-limit warning (they give
        their jobs back and leave), then scancel what is still there after STOP_GRACE_S."""
        ids = {h.id for h in handles if h.provider == PROVIDER}
        listed = self.jobs()
        running = [i for i in ids if listed.get(i) == "RUNNING"]
        if running:
            _run(["scancel", "--batch", "--signal=USR1", *running])
            deadline = time.monotonic() + STOP_GRACE_S
            while running and time.monotonic() < deadline:
                time.sleep(0.5)
                still = self.jobs()
                running = [i for i in running if i in still]
        rest = [i for i in ids if i in self.jobs()]
        if rest:
            _run(["scancel", *rest])

    def alive(self, handles: Iterable[Handle]) -> list[Handle]:
        listed = self.jobs()
        return [h for h in handles if h.provider == PROVIDER and h.id in listed]

    def unstarted(self) -> list[Handle]:
        """This queue's Slurm workers that have not started (nothing to drain there)."""
        return [Handle(PROVIDER, job_id) for job_id, state in self.jobs().items()
                if state == "PENDING"]

    def handle_of(self, worker: WorkerInfo) -> Handle | None:
        """A Slurm worker names its job in a label (`slurm-JOB_TASK`, see `slurm_work`)."""
        for label in worker.labels:
            if label.startswith(LABEL_PREFIX):
                return Handle(PROVIDER, label.removeprefix(LABEL_PREFIX))
        return None
