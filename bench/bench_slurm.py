"""Slurm-hired shoal workers vs a plain Slurm job array, on a local single-node Slurm.

(1) shoal: N `true` jobs on a folder queue, then `shoal hire --slurm QUEUE W` (one CPU
    each); timed from the hire to the first job started and to the last job done.
(2) Slurm alone: `sbatch --array=0-(M-1) --wrap true`, one task per array element; timed
    from the submit until squeue lists none of it. Slurm starts jobs in waves (about 1 s
    apart here, with batch_sched_delay=0), so M may be smaller than N: the table compares
    the time per task.

Needs root and the Slurm packages (tests/slurmd.py starts the cluster, by PID, and stops
it). Not a CI test. Usage: python bench/bench_slurm.py [--tasks 2000] [--array-tasks 200]
[--workers 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jsonout import Figures, add_option

from shoal.job import Job, State
from shoal.queue.folder import FolderQueue
from tests.slurmd import SlurmCluster, start_slurm

DEADLINE_S = 3600.0


def wait(condition, what: str, poll_s: float = 0.05) -> float:
    """Wait for `condition`; the monotonic time it first held."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic()


def shoal_run(cluster: SlurmCluster, tasks: int, workers: int, folder: Path) -> dict:
    q = FolderQueue(folder / "q", lease_s=30)
    q.submit([Job.command_job(["true"], params={"i": i}) for i in range(tasks)])
    hire = [sys.executable, "-m", "shoal", "hire", "--slurm", str(q.root), str(workers)]
    t0 = time.monotonic()
    subprocess.run(hire, env=cluster.env, check=True, capture_output=True)
    first = wait(lambda: q.counts()[State.PENDING] < tasks, "the first job to start")
    last = wait(lambda: q.counts()[State.DONE] == tasks, "the sweep to finish", 0.2)
    subprocess.run([sys.executable, "-m", "shoal", "fire", "--slurm", str(q.root)],
                   env=cluster.env, check=True, capture_output=True)
    wait(lambda: not cluster.jobs(), "the workers to leave Slurm", 0.5)
    return {"first_s": first - t0, "all_s": last - t0}


def array_run(cluster: SlurmCluster, tasks: int) -> dict:
    t0 = time.monotonic()
    job = cluster.run("sbatch", "--parsable", f"--array=0-{tasks - 1}", "-o", "/dev/null",
                      "--wrap", "true").stdout.strip().split(";")[0]

    def gone() -> bool:
        listed = cluster.run("squeue", "-h", "-j", job, "-o", "%i", check=False).stdout
        return not listed.strip()

    last = wait(gone, "the array to finish", 0.5)
    return {"all_s": last - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--array-tasks", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    add_option(parser)
    args = parser.parse_args()
    figures = Figures(args.json, __file__)
    cluster = start_slurm()
    folder = Path(tempfile.mkdtemp(prefix="shoal-bench-slurm-"))
    try:
        shoal = shoal_run(cluster, args.tasks, args.workers, folder)
        array = array_run(cluster, args.array_tasks)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    per_shoal = shoal["all_s"] / args.tasks
    per_array = array["all_s"] / args.array_tasks
    print(f"shoal hire --slurm, {args.workers} workers, {args.tasks} x true: "
          f"first job {shoal['first_s']:.2f} s after hire, all done {shoal['all_s']:.1f} s "
          f"({per_shoal * 1000:.1f} ms/task)")
    print(f"sbatch --array, {args.array_tasks} x true: {array['all_s']:.1f} s "
          f"({per_array * 1000:.0f} ms/task)")
    print(f"time per task, array / shoal: {per_array / per_shoal:.0f}x")
    figures.part("slurm", {"workers": args.workers, "tasks": args.tasks,
                           "array_tasks": args.array_tasks, "shoal": shoal, "array": array,
                           "ms_per_task": {"shoal": per_shoal * 1000,
                                           "array": per_array * 1000}})


if __name__ == "__main__":
    main()
