"""Shoal on Redis beside the peers a Redis user would pick (issue 13 item 7), one run.

All on one redis-server this script starts in a fresh folder on a free loopback port
(`--appendonly yes --appendfsync everysec`, or --fsync always) and stops by its PID.
(a) N tiny calls (default 2000; inc(x) = x + 1) on 2 workers, timed from the first
    submit to the last result, each measurement in a fresh child process (started,
    warmed up until every worker answered, timed, stopped), variants interleaved with
    the order rotating, medians and per-round ratios against Ray, RQ and Celery:
        shoal-redis        shoal.Executor("redis://...?queue=Q", workers=2): local slots
        shoal-redis-procs  2 `shoal work URL --slots 1` processes + Executor(URL, workers=0)
        ray                ray.init(num_cpus=2), f.remote one by one, ray.get
        rq / rq-simple     2 `rq worker` processes (default Worker: a fork per job /
                           SimpleWorker), enqueue one by one, block on each result
                           (--slow-calls of them: a fork per job is slow)
        celery             one `celery worker --concurrency 2` (prefork), Redis broker and
                           result backend, delay one by one, get each
    (--only also takes shoal-mem and shoal-tcp, the in-process and tcp queues, and
    dask-map: LocalCluster, 2 workers x 1 thread, processes, client.map + gather)
(c) 200 calls sleeping 50 ms on the same variants: efficiency = ideal (5 s) / wall.
(b) 10^5 and 10^6 command jobs submitted in batches of 10,000: submit time (building the
    Jobs timed apart), Redis memory per pending job (INFO memory before/after), the
    server's CPU; then the peer, RQ's Queue.enqueue_many (--rq-jobs of them, default
    10^5: RQ's jobs are several times bigger, compare rates).
(d) 200 simulated workers (redis_swarm.py) draining 10^5 no-op jobs: jobs/s, claim
    latency p50/p99, Redis CPU.
Run: python bench/bench_redis.py [--part a,b,c,d] [--only shoal-redis,ray] [--repeat 3]
     [--json PATH]
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

from bench_calls import MARK, Dask, Variant, marked_outcome, measure, start_or_skip
from bench_calls import Ray as RayPeer
from bench_tcp import ShoalTcp
from jsonout import Figures, add_option, variants
from redis_peers import URL_ENV, CeleryPeer, Rq, rq_enqueue_many

CALL_NAMES = ("shoal-redis", "shoal-redis-procs", "ray", "rq", "rq-simple", "celery")
SLOW = ("rq", "rq-simple")
EXTRA_NAMES = ("shoal-mem", "shoal-tcp", "dask-map")  # with --only
PEERS = ("ray", "dask-map", "rq", "rq-simple", "celery")
TARGET_BYTES = 500  # issue 13: under 500 bytes of Redis memory per pending job
TARGET_ENQUEUE_S = 10.0  # issue 13: 10^6 jobs enqueued in under 10 s
TARGET_VS_RAY, TARGET_VS_RQ = 1.5, 5.0  # issue 13: tiny calls, shoal on Redis vs peers
TARGET_EFFICIENCY = 0.97


def inc(x: int) -> int:
    return x + 1


def pid(_: Any) -> int:
    return os.getpid()


def nap(item: tuple[int, float]) -> int:
    time.sleep(item[1])
    return item[0]


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
        shutil.rmtree(self.ex.queue.files.local_dir(), ignore_errors=True)
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


KINDS: dict[str, type[Variant]] = {
    "shoal-mem": ShoalExecutor, "shoal-redis": ShoalExecutor,
    "shoal-redis-procs": RedisWorkers, "shoal-tcp": ShoalTcp, "ray": RayPeer, "rq": Rq,
    "rq-simple": Rq, "celery": CeleryPeer, "dask-map": Dask}


def child(name: str, workload: str, n: int, workers: int, sleep_s: float, tmp: Path) -> None:
    """Start, warm up, time n calls, stop; print one result line for the parent."""
    if workload == "inc":
        fn, items, expected = inc, list(range(n)), [i + 1 for i in range(n)]
    else:
        fn, items, expected = nap, [(i, sleep_s) for i in range(n)], list(range(n))
    variant = KINDS[name](name, workers, tmp)
    t0 = time.perf_counter()
    start_or_skip(variant)
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while len(seen) < workers and time.monotonic() < deadline:
            seen.update(variant.submit_all(pid, list(range(4 * workers))))
        t1 = time.perf_counter()
        results = variant.call_all(fn, items)
        t2 = time.perf_counter()
    finally:
        variant.stop()
    if list(results) != expected:
        raise RuntimeError(f"{name}: wrong results")
    print(MARK + json.dumps({"startup": t1 - t0, "wall": t2 - t1, "seen": len(seen), "n": n}),
          flush=True)


def run_child(name: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-redis-{name}-"))
    n = args.calls if workload == "inc" else args.sleep_calls
    if workload == "inc" and name in SLOW:  # a fork per call: fewer calls, same rate
        n = min(n, args.slow_calls)
    argv = [sys.executable, os.path.abspath(__file__), "--child", name, "--workload", workload,
            "--calls", str(n), "--workers", str(args.workers), "--sleep-s", str(args.sleep_s),
            "--tmp", str(tmp)]
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\ndid not finish within {args.timeout:g} s"
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


def part_enqueue(url: str, client: Any, jobs: int, batch: int) -> dict[str, Any]:
    """Submit `jobs` command jobs in batches: building them is timed apart from submit."""
    from shoal.job import Job
    from shoal.queue import open_queue

    queue = open_queue(f"{url}?queue=enqueue-{uuid.uuid4().hex[:8]}")
    client.execute_command("MEMORY", "PURGE")
    before = client.info("memory")["used_memory"]
    cpu0 = redis_cpu(client)
    build = send = 0.0
    for first in range(0, jobs, batch):
        t0 = time.perf_counter()
        made = [Job.command_job(["true", str(i)]) for i in range(first, min(first + batch, jobs))]
        t1 = time.perf_counter()
        queue.submit(made)
        send += time.perf_counter() - t1
        build += t1 - t0
    per_job = (client.info("memory")["used_memory"] - before) / jobs
    server_s = redis_cpu(client) - cpu0
    pending = queue.counts()
    queue.close()
    print(f"(b) {jobs:>8,} jobs, batches of {batch}: submit {send:6.2f} s "
          f"({jobs / send:8,.0f} jobs/s), building the Jobs {build:5.2f} s, together "
          f"{send + build:6.2f} s; {per_job:5.0f} B of Redis memory per pending job "
          f"(counts: {dict((k.value, v) for k, v in pending.items() if v)}); redis-server "
          f"CPU {server_s:.2f} s")
    if jobs >= 1_000_000:
        print(f"    submit of 10^6: {verdict(send < TARGET_ENQUEUE_S)} < {TARGET_ENQUEUE_S:g} s "
              f"({send:.2f} s; with building {send + build:.2f} s)")
    print(f"    memory: {verdict(per_job < TARGET_BYTES)} < {TARGET_BYTES} B per pending job")
    client.flushdb()
    return {"backend": "redis", "jobs": jobs, "batch": batch, "build_s": build,
            "submit_s": send, "total_s": build + send, "bytes_per_job": per_job,
            "server_cpu_s": server_s}


def part_rq_enqueue(url: str, client: Any, jobs: int, batch: int) -> dict[str, Any]:
    """The peer of part b: RQ's enqueue_many, or why it could not run."""
    try:
        row = rq_enqueue_many(url, client, jobs, batch)
    except ImportError as exc:
        print(f"(b) RQ enqueue_many: skipped: {exc} (pip install rq)")
        return {"backend": "rq-enqueue_many", "skipped": f"{exc} (pip install rq)"}
    print(f"(b) RQ enqueue_many, {jobs:>8,} jobs: {row['submit_s']:6.2f} s "
          f"({jobs / row['submit_s']:8,.0f} jobs/s), building the EnqueueData "
          f"{row['build_s']:5.2f} s, together {row['total_s']:6.2f} s; "
          f"{row['bytes_per_job']:5.0f} B of Redis memory per pending job")
    return row


def redis_cpu(client: Any) -> float:
    """The server's CPU seconds so far (INFO cpu, user + system)."""
    info = client.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


def verdict(ok: bool) -> str:
    return "meets the target of" if ok else "MISSES the target of"


def per_round(runs: dict, name: str, peer: str) -> str:
    """Median over rounds of the per-round rate ratio name/peer (load drifts)."""
    pairs = [(a["n"] / a["wall"]) / (b["n"] / b["wall"])
             for a, b in zip(runs[name], runs.get(peer, []), strict=False)]
    return f"{statistics.median(pairs):.2f}" if pairs else "-"


def rates_table(names: list[str], runs: dict, skipped: dict, unit: str) -> dict[str, float]:
    rate = {name: statistics.median(r["n"] / r["wall"] for r in rs)
            for name, rs in runs.items() if rs}
    peers = [p for p in PEERS if p in rate]
    print(f"{'variant':<18}{'median s':>9}{unit + '/s':>10}{'start s':>8}  "
          + "".join(f"{'x ' + p:>8}{'(pair)':>7}" for p in peers))
    for name in names:
        if name not in rate:
            print(f"{name:<18} skipped: {skipped.get(name)}")
            continue
        start = statistics.median(r["startup"] for r in runs[name])
        cells = "".join(f"{rate[name] / rate[p]:8.2f}{per_round(runs, name, p):>7}"
                        for p in peers)
        wall = statistics.median(r["wall"] for r in runs[name])
        print(f"{name:<18}{wall:9.3f}{rate[name]:10.1f}"
              f"{start:8.2f}  {cells}")
    return rate


def part_calls(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    runs, walls, skipped = measure(names, "inc", args.repeat, args, n=args.calls,
                                   run_child=run_child)
    print(f"\n(a) {args.calls} tiny calls (inc), {args.workers} workers, median of "
          f"{args.repeat}; x peer: ratio of medians (pair: median of per-round ratios)")
    rate = rates_table(names, runs, skipped, "calls")
    best = max((n for n in ("shoal-redis", "shoal-redis-procs") if n in rate),
               key=rate.get, default=None)
    for peer, target in (("ray", TARGET_VS_RAY), ("rq", TARGET_VS_RQ)):
        if best and peer in rate:
            got = rate[best] / rate[peer]
            print(f"{best}: {got:.2f}x {peer}: {verdict(got >= target)} >= {target}x")
    return {"workers": args.workers, "repeat": args.repeat,
            **variants(walls, skipped, n={name: run[0]["n"] for name, run in runs.items()
                                           if run}, runs=runs, peers=PEERS)}


def part_sleeps(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    runs, walls, skipped = measure(names, "nap", args.sleep_repeat, args,
                                   n=args.sleep_calls, run_child=run_child)
    ideal = args.sleep_calls * args.sleep_s / args.workers
    print(f"\n(c) {args.sleep_calls} calls sleeping {args.sleep_s * 1000:g} ms on "
          f"{args.workers} workers, ideal {ideal:.2f} s, median of {args.sleep_repeat}")
    print(f"{'variant':<18}{'median s':>9}{'efficiency':>11}{'worst':>7}{'start s':>8}")
    for name in names:
        if not walls.get(name):
            print(f"{name:<18} skipped: {skipped.get(name)}")
            continue
        wall = statistics.median(walls[name])
        start = statistics.median(r["startup"] for r in runs[name])
        print(f"{name:<18}{wall:9.3f}{ideal / wall:10.1%}{ideal / max(walls[name]):7.1%}"
              f"{start:8.2f}")
    for name in ("shoal-redis", "shoal-redis-procs"):
        if walls.get(name):
            eff = ideal / statistics.median(walls[name])
            print(f"{name}: efficiency {eff:.1%}: {verdict(eff >= TARGET_EFFICIENCY)} "
                  f">= {TARGET_EFFICIENCY:.0%}")
    return {"workers": args.workers, "repeat": args.sleep_repeat, "sleep_s": args.sleep_s,
            **variants(walls, skipped, n=args.sleep_calls, runs=runs, ideal_s=ideal)}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slow-calls", type=int, default=200,
                        help="calls for the RQ workers in part a (they are slow)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sleep-calls", type=int, default=200)
    parser.add_argument("--sleep-s", type=float, default=0.05)
    parser.add_argument("--sleep-repeat", type=int, default=2)
    parser.add_argument("--jobs", default="100000,1000000",
                        help="comma-separated sizes for part b (0: only RQ's)")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rq-jobs", type=int, default=100_000,
                        help="jobs RQ's enqueue_many submits in part b (0: none)")
    parser.add_argument("--swarm-workers", type=int, default=200)
    parser.add_argument("--swarm-procs", type=int, default=8)
    parser.add_argument("--swarm-jobs", type=int, default=100_000)
    parser.add_argument("--swarm-then-claim", action="store_true",
                        help="part d also with finish(then_claim=1), as a Worker slot does")
    parser.add_argument("--fsync", choices=("everysec", "always"), default="everysec")
    parser.add_argument("--part", default="a,b,c,d")
    parser.add_argument("--only", help="comma-separated variants for parts a and c")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", default="inc", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    add_option(parser)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workload, args.calls, args.workers, args.sleep_s,
              Path(args.tmp))
        return
    names = args.only.split(",") if args.only else list(CALL_NAMES)
    unknown = set(names) - set(KINDS)
    if unknown:
        parser.error(f"--only: unknown variant(s) {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(KINDS)}")
    parts = args.part.split(",")
    print(f"load average at start: {load()}; redis appendfsync {args.fsync}", flush=True)
    figures = Figures(args.json, __file__)
    with redis_server(args.fsync) as (url, client):
        os.environ[URL_ENV] = url
        figures.part("redis_server", client.info("server")["redis_version"])
        if "a" in parts:
            figures.part("calls", part_calls(args, names))
            print(f"load average: {load()}", flush=True)
        if "c" in parts:
            figures.part("sleeps", part_sleeps(args, names))
            print(f"load average: {load()}", flush=True)
        if "b" in parts:
            print()
            rows: list[dict[str, Any]] = []
            for jobs in (int(j) for j in args.jobs.split(",") if int(j) > 0):
                rows.append(part_enqueue(url, client, jobs, args.batch))
                figures.part("enqueue", {"rows": rows})
            if args.rq_jobs:
                rows.append(part_rq_enqueue(url, client, args.rq_jobs, args.batch))
                figures.part("enqueue", {"rows": rows})
            print(f"load average: {load()}", flush=True)
        if "d" in parts:
            from redis_swarm import part_swarm

            swarms: list[dict[str, Any]] = []
            for then_claim in (False, True) if args.swarm_then_claim else (False,):
                swarms.append(part_swarm(url, client, workers=args.swarm_workers,
                                         procs=args.swarm_procs, jobs=args.swarm_jobs,
                                         batch=args.batch, then_claim=then_claim))
                figures.part("swarm", swarms)
            print(f"load average: {load()}", flush=True)


if __name__ == "__main__":
    main()
