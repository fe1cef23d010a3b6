"""`shoal results` on a big queue: how long the CLI takes to list 10^5 jobs.

A queue is filled through the API (most jobs done, some failed, some pending, a few
running), then `shoal results Q` (table, csv, json) runs as a subprocess, as a user would,
and its wall time is printed. Not a CI test (the target, under 2 s for 10^5 jobs, is in
issue 14). Usage: python bench/bench_results.py [--jobs 100000] [--backend dir,sqlite]
[--json PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jsonout import Figures, add_option

from shoal.job import Job, Result, State
from shoal.queue import open_queue


def fill(url: str, n: int, batch: int = 5000) -> None:
    """n jobs: 10 % pending, 1 % running, 5 % failed, the rest done."""
    queue = open_queue(url)
    for first in range(0, n, batch):
        queue.submit([Job.command_job(f"echo {i}", params={"i": i, "tag": f"t{i % 7}"})
                      for i in range(first, min(first + batch, n))])
    to_finish = n - n // 10 - n // 100
    now = time.time()
    for k in range(to_finish):
        (lease,) = queue.claim("bench", 1)
        failed = k % 20 == 0
        queue.finish(lease, Result(
            lease.job_id, State.FAILED if failed else State.DONE, name=lease.job.name,
            params=lease.job.params, exit_code=1 if failed else 0,
            reason="exit status 1" if failed else "", attempt=lease.attempt,
            worker="bench", host="here", started=now, ended=now + 0.5))
    queue.claim("bench", n // 100)  # left running
    queue.flush()
    queue.close()


def timed(args: list[str]) -> tuple[float, int]:
    env = {**os.environ, "COLUMNS": "120"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "shoal", *args], env=env,
                          capture_output=True, check=False)
    if done.returncode:
        raise SystemExit(f"shoal {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    return time.perf_counter() - started, done.stdout.count(b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--backend", default="dir,sqlite",
                        help="dir, sqlite, redis (redis needs --redis)")
    parser.add_argument("--redis", default=None,
                        help="a running redis-server's URL (redis://HOST:PORT)")
    parser.add_argument("--dir", default=None, help="where the queues go (local disk)")
    parser.add_argument("--repeat", type=int, default=3)
    add_option(parser)
    args = parser.parse_args()
    figures = Figures(args.json, __file__)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for backend in args.backend.split(","):
            url = {"dir": f"dir://{folder}/q", "sqlite": f"sqlite://{folder}/q.sqlite",
                   "redis": f"{args.redis}/0?queue=bench-results-{os.getpid()}"}[backend]
            if backend == "dir":
                Path(folder, "q").mkdir()
                (Path(folder, "q") / ".shoal").mkdir()
                Path(folder, "q", ".shoal", "queue.toml").write_text("fsync = false\n")
            started = time.perf_counter()
            fill(url, args.jobs)
            found: dict = {"jobs": args.jobs, "fill_s": time.perf_counter() - started,
                           "best_s": {}}
            print(f"{backend}: filled {args.jobs} jobs in {found['fill_s']:.0f} s")
            for fmt in ("table", "csv", "json"):
                runs = [timed(["results", url, "--format", fmt]) for _ in range(args.repeat)]
                best = min(t for t, _ in runs)
                found["best_s"][f"results --format {fmt}"] = best
                print(f"  shoal results --format {fmt:5}  best of {args.repeat}: {best:5.2f} s "
                      f"({runs[0][1]} lines)")
            runs = [timed(["results", url, "--state", "failed"]) for _ in range(args.repeat)]
            found["best_s"]["results --state failed"] = min(t for t, _ in runs)
            print(f"  shoal results --state failed  best of {args.repeat}: "
                  f"{min(t for t, _ in runs):5.2f} s")
            runs = [timed(["--version"]) for _ in range(args.repeat)]
            found["best_s"]["--version"] = min(t for t, _ in runs)
            print(f"  shoal --version (start-up)    best of {args.repeat}: "
                  f"{min(t for t, _ in runs):5.2f} s")
            figures.part(backend, found)


if __name__ == "__main__":
    main()
