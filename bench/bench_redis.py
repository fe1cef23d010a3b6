"""The Redis queue beside shoal's memory and tcp queues: tiny calls, and enqueue cost.

(a) N tiny calls (default 5000; inc(x) = x + 1) on 2 workers, timed from the first submit
    to the last result, each measurement in a fresh child process (started, warmed up
    until every worker answered, timed, stopped), variants interleaved, medians:
        shoal-mem     shoal.Executor(workers=2): the in-process queue
        shoal-redis   shoal.Executor("redis://.../0?queue=Q", workers=2): local slots on a
                      Redis queue (a queue of its own each run)
        shoal-redis-procs  2 `shoal work URL --slots 1` processes and
                      shoal.Executor(URL, workers=0): the layout of shoal-tcp, on Redis
        shoal-tcp     a coordinator process and 2 `shoal work` processes (bench_tcp.py's)
(b) J command jobs (default 100,000) submitted to a Redis queue in batches of 10,000:
    time, jobs/s and Redis memory per pending job (INFO memory used_memory, before/after).

redis-server runs in a fresh folder on a free loopback port with `--appendonly yes
--appendfsync everysec` (or --fsync always), started and stopped by its PID.
Run: python bench/bench_redis.py [--calls 5000] [--repeat 3] [--jobs 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_calls import MARK, Variant, marked_outcome, measure, start_or_skip
from bench_tcp import ShoalTcp

NAMES = ("shoal-mem", "shoal-redis", "shoal-redis-procs", "shoal-tcp")
URL_ENV = "SHOAL_BENCH_REDIS"
TARGET_BYTES = 500  # issue 13: under 500 bytes of Redis memory per pending job


def inc(x: int) -> int:
    return x + 1


def pid(_: Any) -> int:
    return os.getpid()


class ShoalExecutor(Variant):
    """shoal.Executor(workers=W) on memory:// or on a fresh Redis queue."""

    def start(self) -> None:
        import shoal

        queue = None
        if self.name == "shoal-redis":
            queue = f"{os.environ[URL_ENV]}?queue=bench-{uuid.uuid4().hex[:8]}"
        self.ex = shoal.Executor(queue, workers=self.workers)

    def stop(self) -> None:
        self.ex.shutdown(wait=True)
        shutil.rmtree(self.ex.queue.log_dir, ignore_errors=True)
        self.ex.queue.close()


class RedisWorkers(Variant):
    """`shoal work` processes on a fresh Redis queue, and an Executor without slots."""

    def start(self) -> None:
        import shoal

        url = f"{os.environ[URL_ENV]}?queue=bench-{uuid.uuid4().hex[:8]}"
        self.logs = [open(self.tmp / f"worker{i}.log", "wb") for i in range(self.workers)]  # noqa: SIM115
        self.procs = [subprocess.Popen([sys.executable, "-m", "shoal", "work", url, "--slots",
                                        "1"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                      for log in self.logs]
        self.ex = shoal.Executor(url, workers=0)

    def stop(self) -> None:
        try:
            self.ex.shutdown(wait=True)
            self.ex.queue.close()
        finally:
            for proc in self.procs:
                proc.terminate()
            for proc, log in zip(self.procs, self.logs, strict=True):
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log.close()


KINDS: dict[str, type[Variant]] = {"shoal-mem": ShoalExecutor, "shoal-redis": ShoalExecutor,
                                   "shoal-redis-procs": RedisWorkers, "shoal-tcp": ShoalTcp}


def child(name: str, n: int, workers: int, tmp: Path) -> None:
    """Start, warm up, time n calls, stop; print one result line for the parent."""
    variant = KINDS[name](name, workers, tmp)
    t0 = time.perf_counter()
    start_or_skip(variant)
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        while len(seen) < workers and time.monotonic() < deadline:
            seen.update(variant.submit_all(pid, list(range(4 * workers))))
        t1 = time.perf_counter()
        results = variant.call_all(inc, list(range(n)))
        t2 = time.perf_counter()
    finally:
        variant.stop()
    if list(results) != [i + 1 for i in range(n)]:
        raise RuntimeError(f"{name}: wrong results")
    print(MARK + json.dumps({"startup": t1 - t0, "wall": t2 - t1, "seen": len(seen)}),
          flush=True)


def run_child(name: str, _workload: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-redis-{name}-"))
    argv = [sys.executable, os.path.abspath(__file__), "--child", name, "--calls",
            str(args.calls), "--workers", str(args.workers), "--tmp", str(tmp)]
    proc = subprocess.Popen(argv, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return marked_outcome(out, err, proc.returncode)


# -- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server(fsync: str):
    """A redis-server in a fresh folder, stopped by its PID; yields (url, client)."""
    import redis

    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
         "--save", "", "--appendonly", "yes", "--appendfsync", fsync],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0", client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def part_enqueue(url: str, client: Any, jobs: int, batch: int) -> None:
    from shoal.job import Job
    from shoal.queue import open_queue

    queue = open_queue(f"{url}?queue=enqueue-{uuid.uuid4().hex[:8]}")
    before = client.info("memory")["used_memory"]
    t0 = time.perf_counter()
    for first in range(0, jobs, batch):
        queue.submit([Job.command_job(["true", str(i)]) for i in range(first, first + batch)])
    took = time.perf_counter() - t0
    per_job = (client.info("memory")["used_memory"] - before) / jobs
    queue.close()
    verdict = "meets" if per_job < TARGET_BYTES else "misses"
    print(f"\n(b) {jobs} command jobs submitted in batches of {batch}: {took:.2f} s "
          f"({jobs / took:,.0f} jobs/s, job creation included); Redis memory "
          f"{per_job:.0f} bytes per pending job ({verdict} the target of < {TARGET_BYTES})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--fsync", choices=("everysec", "always"), default="everysec")
    parser.add_argument("--part", default="a,b")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls, args.workers, Path(args.tmp))
        return
    with redis_server(args.fsync) as (url, client):
        os.environ[URL_ENV] = url
        if "a" in args.part:
            _runs, walls, skipped = measure(list(NAMES), "inc", args.repeat, args,
                                            n=args.calls, run_child=run_child)
            rate = {name: args.calls / statistics.median(w) for name, w in walls.items() if w}
            print(f"\n(a) {args.calls} tiny calls, {args.workers} workers, median of "
                  f"{args.repeat} (redis appendfsync {args.fsync})")
            for name in NAMES:
                if name not in rate:
                    print(f"{name:<17} skipped: {skipped.get(name)}")
                    continue
                ratios = "  ".join(f"x {peer} {rate[name] / rate[peer]:.2f}"
                                   for peer in NAMES if peer in rate and peer != name)
                print(f"{name:<17} {rate[name]:9.1f} calls/s  {ratios}")
        if "b" in args.part:
            part_enqueue(url, client, args.jobs, args.batch)


if __name__ == "__main__":
    main()
