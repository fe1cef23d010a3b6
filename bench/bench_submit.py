"""Submitting very many jobs (issue 18): sqlite://, tcp:// (a coordinator over sqlite) and
Redis, with RQ's `enqueue_many` beside Redis; HyperQueue is not installed here.

Each backend runs in a child process of its own (so its peak RSS is its own): it first
builds N `Job.command_job(["true", str(i)])` and drops them ("build s": what building
costs alone), then submits a generator of N fresh ones with one `queue.submit` call
("total s": what a user waits; "submit s" = total - build; the JSON also has
total_cpu_s, the submitting process's CPU seconds in it, steadier than wall time on a
loaded machine). Bytes per job: the SQLite
file after a checkpoint (tcp: once the coordinator stopped), or Redis `INFO memory`
used_memory after - before. Peak RSS: the submitting process's (tcp: the coordinator's
beside it).

Usage: python bench/bench_submit.py --jobs 1000000 --backends sqlite,tcp,redis,rq
       [--json PATH] [--tmp DIR] [--rq-jobs N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START_S = 60.0
STOP_S = 30.0


def jobs(n: int) -> Iterator[Any]:
    from shoal.job import Job

    return (Job.command_job(["true", str(i)]) for i in range(n))


def build_only(n: int) -> float:
    started = time.perf_counter()
    for _ in jobs(n):
        pass
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, SIGKILL after STOP_S: by the PID we started."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(condition: Any, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_S
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[tuple[int, Any]]:
    """A redis-server of our own (no persistence: memory is what we measure)."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False
        wait_until(up, "redis-server", proc)
        yield port, client
    finally:
        client.close()
        stop(proc)


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def sqlite_bytes(path: Path) -> int:
    """The file's size once its WAL is checkpointed into it."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def peak_rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


CPU: dict[str, float] = {}  # CPU seconds of this process in the timed submit


def timed_submit(queue: Any, n: int, backend: str) -> float:
    started, cpu = time.perf_counter(), time.process_time()
    new = queue.submit(jobs(n))
    took = time.perf_counter() - started
    CPU["total_cpu_s"] = time.process_time() - cpu
    if len(new) != n:
        raise RuntimeError(f"{backend}: {len(new)} of {n} jobs were new")
    return took


def run_sqlite(n: int, tmp: Path) -> dict[str, Any]:
    from shoal.queue.sqlite import SqliteQueue

    build = build_only(n)
    queue = SqliteQueue(tmp / "queue.sqlite")
    total = timed_submit(queue, n, "sqlite")
    queue.close()
    return {"build_s": build, "total_s": total,
            "bytes_per_job": sqlite_bytes(tmp / "queue.sqlite") / n}


def run_tcp(n: int, tmp: Path) -> dict[str, Any]:
    from shoal.queue.remote import CoordinatorQueue

    build = build_only(n)
    status = tmp / "status"
    with open(tmp / "serve.log", "wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "shoal", "serve",
                                  f"sqlite://{tmp / 'queue.sqlite'}", "--status", str(status)],
                                 cwd=tmp, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_until((status / "status.json").exists, "the coordinator", serve)
        queue = CoordinatorQueue(str(status))
        total = timed_submit(queue, n, "tcp")
        coordinator_peak = peak_rss_mb(serve.pid)
        queue.close()
    finally:
        stop(serve)
    return {"build_s": build, "total_s": total, "coordinator_peak_rss_mb": coordinator_peak,
            "bytes_per_job": sqlite_bytes(tmp / "queue.sqlite") / n}


def run_redis(n: int, tmp: Path) -> dict[str, Any]:
    from shoal.queue.redisq.queue import RedisQueue

    build = build_only(n)
    with redis_server(tmp) as (port, client):
        queue = RedisQueue(f"redis://127.0.0.1:{port}/0?queue=bench")
        before = used_memory(client)
        total = timed_submit(queue, n, "redis")
        after = used_memory(client)
        queue.close()
    return {"build_s": build, "total_s": total, "bytes_per_job": (after - before) / n}


RQ_BATCH = 10_000


def run_rq(n: int, tmp: Path) -> dict[str, Any]:
    """RQ's bulk enqueue, in pipelined batches of RQ_BATCH (its data built as it goes)."""
    from redis import Redis
    from rq import Queue

    def datas(first: int, last: int) -> list[Any]:
        return [Queue.prepare_data("os.getpid", args=("true", str(i)))
                for i in range(first, last)]

    started = time.perf_counter()
    for first in range(0, n, RQ_BATCH):
        datas(first, min(first + RQ_BATCH, n))
    build = time.perf_counter() - started
    with redis_server(tmp) as (port, client):
        connection = Redis(port=port)
        queue = Queue("bench", connection=connection)
        before = used_memory(client)
        started = time.perf_counter()
        for first in range(0, n, RQ_BATCH):
            with connection.pipeline() as pipe:
                queue.enqueue_many(datas(first, min(first + RQ_BATCH, n)), pipeline=pipe)
                pipe.execute()
        total = time.perf_counter() - started
        count = queue.count
        after = used_memory(client)
        connection.close()
    if count != n:
        raise RuntimeError(f"rq: {count} of {n} jobs queued")
    return {"build_s": build, "total_s": total, "bytes_per_job": (after - before) / n}


RUNS = {"sqlite": run_sqlite, "tcp": run_tcp, "redis": run_redis, "rq": run_rq}


def child(backend: str, n: int, tmp_root: str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-submit-{backend}-", dir=tmp_root))
    try:
        row = {"backend": backend, "jobs": n, **RUNS[backend](n, tmp), **CPU}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row["submit_s"] = row["total_s"] - row["build_s"]
    row["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(row))


def measure(backend: str, n: int, tmp: str | None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", backend, "--jobs", str(n),
                           *(["--tmp", tmp] if tmp else [])],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])[-400:]
        return {"backend": backend, "jobs": n, "error": tail or f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def show(rows: list[dict[str, Any]]) -> None:
    print(f"{'backend':<8} {'jobs':>9} {'build s':>8} {'submit s':>8} {'total s':>8} "
          f"{'jobs/s':>9} {'bytes/job':>9} {'peak RSS MB':>11}")
    for row in rows:
        if "error" in row:
            print(f"{row['backend']:<8} {row['jobs']:>9,} failed: {row['error']}")
            continue
        extra = (f"  (coordinator peak {row['coordinator_peak_rss_mb']:.0f} MB)"
                 if "coordinator_peak_rss_mb" in row else "")
        print(f"{row['backend']:<8} {row['jobs']:>9,} {row['build_s']:8.2f} "
              f"{row['submit_s']:8.2f} {row['total_s']:8.2f} "
              f"{row['jobs'] / row['total_s']:9,.0f} {row['bytes_per_job']:9.0f} "
              f"{row['peak_rss_mb']:11.0f}{extra}", flush=True)
    print("HyperQueue: not installed here (its figure, ~92,600 jobs/s, is from issue 18)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,tcp,redis,rq",
                        help="comma-separated: sqlite, tcp, redis, rq (RQ's enqueue_many)")
    parser.add_argument("--rq-jobs", type=int, default=None,
                        help="jobs for RQ (default: --jobs)")
    parser.add_argument("--json", default=None, help="write the rows here as JSON")
    parser.add_argument("--tmp", default=None, help="where databases go (local disk)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.jobs, args.tmp)
        return
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = [name for name in backends if name not in RUNS]
    if unknown:
        parser.error(f"--backends: unknown {', '.join(unknown)} (known: {', '.join(RUNS)})")
    rows = []
    for backend in backends:
        n = args.rq_jobs if backend == "rq" and args.rq_jobs else args.jobs
        rows.append(measure(backend, n, args.tmp))
    for row in rows:
        if "error" not in row:
            row["jobs_per_s"] = row["jobs"] / row["total_s"]
    show(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
