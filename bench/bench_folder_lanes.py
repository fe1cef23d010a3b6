"""Folder queue (`dir://`): claim cost with 10^2 vs 10^5 pending jobs of mixed priorities
and resource sizes (issue 15 asks for a ratio within 1.5).

Jobs get a priority from {0, 1, 2, 5} and a shape from {1 cpu, 2 cpus, 4 cpus + 8 GB,
1 GPU}, at random (seeded): 16 lanes. The claiming worker has 8 cpus and 16 GB but no
GPU, so the highest-priority GPU jobs never fit and every claim must pass them over.
Each round opens a fresh FolderQueue (as a new worker would: it pays the first read of
the lanes) and claims+finishes `k` jobs one at a time with `fit=`; rounds on the small
and the big queue are interleaved, the small one topped up after each round.

Run: python bench/bench_folder_lanes.py [--deep 100000] [--small 100] [--rounds 10]
     [--json PATH]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from jsonout import Figures, add_option

from shoal.fsutil import filesystem_type
from shoal.job import Job, Result, State
from shoal.queue.folder import FolderQueue
from shoal.queue.scheduling import Capacity

TARGET_RATIO = 1.5
PRIORITIES = (0, 1, 2, 5)
SHAPES = ({}, {"cpus": 2}, {"cpus": 4, "mem": 8e9}, {"gpus": 1})
WORKER = Capacity({"cpus": 8, "mem": 16e9})


def mixed_jobs(tag: str, n: int, rng: random.Random) -> list[Job]:
    return [Job.command_job(["true", f"{tag}-{i}"], priority=rng.choice(PRIORITIES),
                            needs=rng.choice(SHAPES)) for i in range(n)]


def fill(root: Path, tag: str, n: int, rng: random.Random, batch: int = 5000) -> float:
    queue = FolderQueue(root, fsync=False)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        queue.submit(mixed_jobs(f"{tag}-{start}", min(batch, n - start), rng))
    return time.perf_counter() - t0


def top_up(root: Path, tag: str, k: int, rng: random.Random) -> None:
    """Mixed jobs until k of them fit the worker: what a round of k claims took away."""
    jobs: list[Job] = []
    while sum(WORKER.fits(job) for job in jobs) < k:
        jobs += mixed_jobs(f"{tag}-{len(jobs)}", 1, rng)
    FolderQueue(root, fsync=False).submit(jobs)


def claim_round(root: Path, k: int) -> list[float]:
    """A fresh queue object claims+finishes k jobs with fit=WORKER: each claim's time."""
    queue = FolderQueue(root, fsync=False, create=False)
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        (lease,) = queue.claim("bench", 1, fit=WORKER)
        times.append(time.perf_counter() - t0)
        assert "gpus" not in lease.job.needs, "a job that does not fit was handed out"
        queue.finish(lease, Result(lease.job_id, State.DONE, attempt=1, worker="bench"))
    return times


def folder_claims(base: Path, deep: int, small: int, rounds: int, k: int) -> dict:
    """Print the figures and return them (ratio: of the mean claim times, deep / small)."""
    rng = random.Random(15)
    roots = {name: Path(tempfile.mkdtemp(prefix=f"bench-lanes-{name}-", dir=base))
             for name in ("small", "deep")}
    try:
        took = fill(roots["deep"], "deep", deep, rng)
        print(f"  submit {deep} mixed jobs: {took:.1f} s ({deep / took:.0f} jobs/s)")
        fill(roots["small"], "small", small, rng)
        times: dict[str, list[float]] = {"small": [], "deep": []}
        firsts: dict[str, list[float]] = {"small": [], "deep": []}
        for rnd in range(rounds):
            order = ("small", "deep") if rnd % 2 == 0 else ("deep", "small")
            for name in order:
                got = claim_round(roots[name], k)
                times[name] += got
                firsts[name].append(got[0])
            top_up(roots["small"], f"top{rnd}", k, rng)  # back to about `small` pending
        found: dict = {"submit_s": took, "target_ratio": TARGET_RATIO}
        for name, pending in (("small", small), ("deep", deep)):
            found[name] = {"pending": pending, "mean_us": statistics.fmean(times[name]) * 1e6,
                           "median_us": statistics.median(times[name]) * 1e6,
                           "first_us": statistics.median(firsts[name]) * 1e6}
            print(f"  {pending:>7} pending: claim {statistics.fmean(times[name]) * 1e6:7.1f} us"
                  f" mean, {statistics.median(times[name]) * 1e6:7.1f} us median, first "
                  f"claim of a fresh queue {statistics.median(firsts[name]) * 1e6:7.1f} us")
        ratio = statistics.fmean(times["deep"]) / statistics.fmean(times["small"])
        verdict = "within" if ratio <= TARGET_RATIO else "OVER"
        print(f"  ratio deep/small: {ratio:.2f} ({verdict} the target of {TARGET_RATIO})")
        return {**found, "ratio": ratio}
    finally:
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deep", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--claims", type=int, default=50, help="claims per round")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    add_option(parser)
    args = parser.parse_args()
    figures = Figures(args.json, __file__)
    print(f"folder queue on {args.dir} ({filesystem_type(args.dir)}), lanes: "
          f"{len(PRIORITIES) * len(SHAPES)}, worker {dict(WORKER.free)}")
    figures.part("claims", folder_claims(args.dir, args.deep, args.small, args.rounds,
                                         args.claims))


if __name__ == "__main__":
    main()
