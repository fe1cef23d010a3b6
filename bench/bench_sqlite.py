"""Submitting very many jobs to the sqlite:// queue: time, rate, bytes per job, claim cost.

Not a CI test. Usage: python bench/bench_sqlite.py [--jobs 1000000] [--dir /tmp] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from jsonout import Figures, add_option

from shoal.job import Job
from shoal.queue.sqlite import SqliteQueue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--dir", default=None, help="where the database goes (local disk)")
    add_option(parser)
    args = parser.parse_args()
    figures = Figures(args.json, __file__)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "queue.db"
        queue = SqliteQueue(path)
        started = time.perf_counter()
        for first in range(0, args.jobs, args.batch):
            last = min(first + args.batch, args.jobs)
            queue.submit([Job.command_job(["true", str(i)]) for i in range(first, last)])
        elapsed = time.perf_counter() - started
        size = sum(p.stat().st_size for p in Path(folder).glob("queue.db*") if p.is_file())
        print(f"submit {args.jobs} jobs: {elapsed:.1f} s, {args.jobs / elapsed:,.0f} jobs/s, "
              f"{size / args.jobs:.0f} bytes/job on disk")
        started = time.perf_counter()
        for _ in range(1000):
            queue.claim("bench")
        per_claim = (time.perf_counter() - started) / 1000
        print(f"claim with {args.jobs - 1000:,} pending: {per_claim * 1e6:.0f} us")
        figures.part("submit", {"backend": "sqlite", "jobs": args.jobs, "batch": args.batch,
                                "total_s": elapsed, "bytes_per_job": size / args.jobs,
                                "claim_us": per_claim * 1e6})
        queue.close()
        os.sync()


if __name__ == "__main__":
    main()
