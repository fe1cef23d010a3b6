"""What one `watch` costs when many ids are watched and results land one at a time.

N jobs are submitted and claimed; then, K times, one of them is finished and a watch over
all N ids is timed until it returns that result: once with a plain set (a scan of every
id per call) and once with a `WatchSet` kept across the calls (the Executor's way: the
finals since the last call). Backends: memory, sqlite, folder (the folder keeps no
journal: it scans, paced). Reported: the median and 95th percentile per call, in us.

Run: python bench/bench_watch.py [--ids 1000,100000] [--landings 200] [--only memory,sqlite]
     [--json PATH]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from jsonout import Figures, add_option

from shoal.job import Job, Result, State
from shoal.queue import open_queue
from shoal.queue.base import WatchSet


def open_backend(name: str, where: Path):
    return open_queue({"memory": "memory://", "sqlite": f"sqlite://{where / 'q.sqlite'}",
                       "folder": str(where / "folder")}[name])


def measure(name: str, n: int, landings: int, kind: str) -> list[float]:
    """Seconds per watch call over `n` ids, each call after one result landed."""
    where = Path(tempfile.mkdtemp(prefix="shoal-bench-watch-"))
    try:
        queue = open_backend(name, where)
        jobs = [Job.command_job(["true", str(i)]) for i in range(n)]
        for first in range(0, n, 10_000):
            queue.submit(jobs[first:first + 10_000])
        leases = queue.claim("w", landings)
        ids = {job.id for job in jobs}
        watched = WatchSet(ids) if kind == "WatchSet" else ids
        if kind == "WatchSet":
            queue.watch(watched, 0)  # the first look scans every id, once
        took = []
        for lease in leases:
            queue.finish(lease, Result(lease.job_id, State.DONE, attempt=lease.attempt,
                                       worker=lease.worker, exit_code=0))
            started = time.perf_counter()
            found = queue.watch(watched, 10.0)
            took.append(time.perf_counter() - started)
            assert lease.job_id in {r.job_id for r in found}, "the landed result is missing"
            watched.discard(lease.job_id)  # as the Executor does with what it got
        queue.close()
        return took
    finally:
        shutil.rmtree(where, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", default="1000,100000")
    parser.add_argument("--landings", type=int, default=200)
    parser.add_argument("--only", default="memory,sqlite,folder")
    add_option(parser)
    args = parser.parse_args()
    figures = Figures(args.json, __file__)
    rows: list[dict] = []
    print(f"watch over N ids, one result landing before each call, {args.landings} calls")
    print(f"{'backend':8} {'N':>7} {'ids':>9} {'median us':>10} {'p95 us':>10}")
    for name in args.only.split(","):
        for n in (int(x) for x in args.ids.split(",")):
            for kind in ("set", "WatchSet"):
                landings = args.landings if kind == "WatchSet" or n <= 10_000 else 20
                took = sorted(measure(name, n, landings, kind))
                p95 = took[min(len(took) - 1, int(len(took) * 0.95))]
                print(f"{name:8} {n:>7} {kind:>9} {statistics.median(took) * 1e6:>10.0f} "
                      f"{p95 * 1e6:>10.0f}", flush=True)
                rows.append({"backend": name, "ids": n, "kind": kind, "calls": landings,
                             "median_us": statistics.median(took) * 1e6, "p95_us": p95 * 1e6})
                figures.part("watch", rows)


if __name__ == "__main__":
    main()
