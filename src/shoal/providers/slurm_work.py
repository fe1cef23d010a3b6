"""Inside a Slurm allocation: run `shoal work` sized to what Slurm gave this job.

Run by the batch script `shoal hire --slurm` submits, as
`python -m shoal.providers.slurm_work QUEUE LOG_DIR`. The cpus, memory and GPUs come
from the SLURM_* environment, so the worker hands out only what the allocation holds
(not the whole node's); its label `slurm-JOB` shows the job id in `shoal workers`;
its `--until` is the allocation's end, so it starts no job that would be cut off.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping

from ..errors import UsageError
from ..worker.walltime import parse_until
from .slurm import LABEL_PREFIX

# Seconds before the end that Slurm sends its time-limit warning (`--signal=B:USR1@N`): for
# the batch script to export, as only the hire knows which --signal it asked for.
WARNING_ENV = "SHOAL_SLURM_WARNING_S"


def job_id(env: Mapping[str, str]) -> str | None:
    """This job's id as squeue and scancel name it: ARRAYJOB_TASK for an array task."""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def _count(text: str | None) -> int | None:
    """'4' -> 4; '4(x2)' (SLURM_JOB_CPUS_PER_NODE) -> 4; anything else -> None."""
    if not text:
        return None
    head = text.split("(")[0].split(",")[0].strip()
    return int(head) if head.isdigit() else None


def work_options(env: Mapping[str, str]) -> list[str]:
    """`shoal work` options for this allocation: --cpus, --mem, --gpus, --label."""
    options: list[str] = []
    cpus = (_count(env.get("SLURM_CPUS_PER_TASK")) or _count(env.get("SLURM_CPUS_ON_NODE"))
            or _count(env.get("SLURM_JOB_CPUS_PER_NODE")))
    if cpus:
        options += ["--cpus", str(cpus)]
    mem_mb = _count(env.get("SLURM_MEM_PER_NODE"))
    per_cpu = _count(env.get("SLURM_MEM_PER_CPU"))
    if mem_mb is None and per_cpu and cpus:
        mem_mb = per_cpu * cpus
    if mem_mb:
        options += ["--mem", f"{mem_mb}M"]
    if "CUDA_VISIBLE_DEVICES" not in env:  # set by Slurm for a GPU gres: shoal reads it
        # no GPU of this node is ours unless Slurm says so
        options += ["--gpus", str(_count(env.get("SLURM_GPUS_ON_NODE")) or 0)]
    slurm_job = job_id(env)
    if slurm_job:
        options += ["--label", LABEL_PREFIX + slurm_job]
    return options


def allocation_end(env: Mapping[str, str]) -> float | None:
    """When this allocation ends (seconds since the epoch): SLURM_JOB_END_TIME (newer
    Slurm), else what `squeue -o %e` says of this job; None when neither knows (no time
    limit, squeue unreachable)."""
    end = env.get("SLURM_JOB_END_TIME", "").strip()
    if end.isdigit() and int(end) > 0:
        return float(end)
    slurm_job = job_id(env)  # 7_1, not 7: squeue -j of an array's job id lists every task
    if not slurm_job:
        return None
    try:
        said = subprocess.run(["squeue", "-h", "-j", slurm_job, "-o", "%e"], text=True,
                              capture_output=True, timeout=30, check=False).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        return parse_until(said[0]) if said else None
    except UsageError:  # Unknown, N/A: no end known
        return None


def until_options(env: Mapping[str, str]) -> list[str]:
    """`--until` for `shoal work`: the allocation's end, less the lead of the time-limit
    warning when the batch script says it (WARNING_ENV): a job still running at the
    warning is given back, so it must end before it."""
    end = allocation_end(env)
    if end is None:
        return []
    lead = env.get(WARNING_ENV, "").strip()
    return ["--until", f"{end - (int(lead) if lead.isdigit() else 0):.0f}"]


def leave_at_warning() -> None:
    """Slurm's time-limit warning (`--signal=B:USR1@60`, which `shoal hire --slurm` asks
    for; `shoal fire --slurm` sends it too before a scancel) becomes the worker's double
    stop: claim nothing more and release the running jobs back to the queue untouched,
    so the walltime burns no attempt and fails no job."""

    def warned(signum: int, frame: object) -> None:
        logging.getLogger("shoal.worker").warning(
            "Slurm's time-limit warning (SIGUSR1): releasing running jobs and leaving")
        stop = signal.getsignal(signal.SIGTERM)  # the worker's own (shoal work sets it)
        if callable(stop):
            stop(signal.SIGTERM, frame)  # the first stop lets jobs finish,
            stop(signal.SIGTERM, frame)  # the second releases them
        else:
            sys.exit(0)  # not working yet: nothing to give back

    signal.signal(signal.SIGUSR1, warned)


def main(argv: list[str]) -> None:
    from ..cli import main as shoal

    if len(argv) != 2:
        sys.exit("usage: python -m shoal.providers.slurm_work QUEUE LOG_DIR")
    queue, log_dir = argv
    leave_at_warning()
    shoal(["work", queue, "--log-dir", log_dir, *work_options(os.environ),
           *until_options(os.environ)], prog_name="shoal")


if __name__ == "__main__":
    main(sys.argv[1:])
