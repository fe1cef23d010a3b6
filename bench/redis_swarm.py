"""Many simulated workers on one box draining a Redis queue through the real protocol.

200 workers as real shoal.Worker processes would cost 200 interpreters and a process
per job on a 2-core machine; what the issue asks about is the queue, so each simulated
worker is a thread with its own queue connection that does what a worker slot does with
the queue: a blocking `claim(worker, 1)` and `finish(lease, Result(DONE))`, the job
itself being a no-op. The threads are spread over several processes (so the client side
is not one GIL), started together after the jobs are submitted. Reported: jobs/s from
the start signal to the last finish, the latency of claims that returned a job
(p50/p99), the redis-server's CPU (INFO cpu, user+sys, over the drain) and the clients'.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import threading
import time
import uuid
from typing import Any

IDLE_WAIT_S = 1.0  # a claim that waits this long with nothing pending ends a worker


def _drain(url: str, worker: str, then_claim: bool, go: threading.Event, out: list) -> None:
    """One simulated worker: claim, finish, until a claim waits IDLE_WAIT_S for nothing.
    With `then_claim` the finish also claims the next job in the same round trip (what a
    shoal.Worker slot does); the latency is then that of finish + claim together."""
    from shoal.job import Result, State
    from shoal.queue import open_queue

    queue = open_queue(url)
    latencies: list[float] = []
    last = 0.0
    go.wait()
    t0 = time.perf_counter()
    leases = queue.claim(worker, 1, wait_s=IDLE_WAIT_S)
    while leases:
        latencies.append(time.perf_counter() - t0)
        lease = leases[0]
        now = time.time()
        result = Result(lease.job_id, State.DONE, attempt=lease.attempt, worker=worker,
                        started=now, ended=now)
        if then_claim:
            t0 = time.perf_counter()
            leases = queue.finish(lease, result, then_claim=1)
            last = time.time()
            if not leases:
                t0 = time.perf_counter()
                leases = queue.claim(worker, 1, wait_s=IDLE_WAIT_S)
        else:
            queue.finish(lease, result)
            last = time.time()
            t0 = time.perf_counter()
            leases = queue.claim(worker, 1, wait_s=IDLE_WAIT_S)
    queue.close()
    out.append((latencies, last))


def _process(url: str, index: int, threads: int, then_claim: bool, barrier: Any,
             results: Any) -> None:
    """One client process: `threads` simulated workers, released together."""
    go = threading.Event()
    out: list = []
    pool = [threading.Thread(target=_drain, args=(url, f"sim-{index}-{t}", then_claim, go, out))
            for t in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    cpu0 = sum(os.times()[:2])
    go.set()
    for thread in pool:
        thread.join()
    latencies = [lat for lats, _ in out for lat in lats]
    results.put((latencies, max((last for _, last in out), default=0.0),
                 sum(os.times()[:2]) - cpu0))


def _redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


def part_swarm(url: str, client: Any, *, workers: int, procs: int, jobs: int,
               batch: int, then_claim: bool = False) -> dict[str, Any]:
    from shoal.job import Job, State
    from shoal.queue import open_queue

    queue_url = f"{url}?queue=swarm-{uuid.uuid4().hex[:8]}"
    queue = open_queue(queue_url)
    for first in range(0, jobs, batch):
        queue.submit([Job.command_job(["true", str(i)])
                      for i in range(first, min(first + batch, jobs))])
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(procs + 1)
    results = ctx.Queue()
    shares = [workers // procs + (1 if i < workers % procs else 0) for i in range(procs)]
    children = [ctx.Process(target=_process, args=(queue_url, i, n, then_claim, barrier, results))
                for i, n in enumerate(shares)]
    for proc in children:
        proc.start()
    barrier.wait(timeout=120)
    start, cpu0 = time.time(), _redis_cpu(client)
    outcomes = [results.get(timeout=1800) for _ in children]
    redis_cpu = _redis_cpu(client) - cpu0  # includes the idle claims' IDLE_WAIT_S tail
    for proc in children:
        proc.join(timeout=60)
    end = max(last for _, last, _ in outcomes)
    latencies = sorted(lat for lats, _, _ in outcomes for lat in lats)
    done = queue.counts().get(State.DONE, 0)
    queue.close()
    client.flushdb()
    wall = end - start
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    how = "finish(then_claim=1)" if then_claim else "claim, then finish"
    print(f"\n(d) {workers} simulated workers ({procs} processes x threads, one connection "
          f"each: {how}) draining {jobs:,} no-op jobs")
    print(f"    {len(latencies):,} claimed, {done:,} DONE in the queue; {wall:.2f} s, "
          f"{len(latencies) / wall:,.0f} jobs/s")
    what = "finish+claim" if then_claim else "claim"
    print(f"    {what} latency p50 {statistics.median(latencies) * 1000:.2f} ms, "
          f"p99 {p99 * 1000:.2f} ms, max {latencies[-1] * 1000:.1f} ms")
    print(f"    redis-server CPU {redis_cpu:.2f} s ({redis_cpu / wall:.0%} of one core, "
          f"{redis_cpu / max(1, len(latencies)) * 1e6:.0f} us per job); client processes "
          f"{sum(c for _, _, c in outcomes):.2f} s CPU")
    return {"workers": workers, "procs": procs, "jobs": jobs, "then_claim": then_claim,
            "claimed": len(latencies), "done": done, "wall_s": wall,
            "per_s": len(latencies) / wall, "latency_ms": {
                "p50": statistics.median(latencies) * 1000, "p99": p99 * 1000,
                "max": latencies[-1] * 1000},
            "redis_cpu_s": redis_cpu, "clients_cpu_s": sum(c for _, _, c in outcomes)}
