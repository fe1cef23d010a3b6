"""Claim cost on Redis with 10^2 vs 10^5 pending jobs of mixed priorities and sizes (issue 15).

One redis-server (bench_redis.redis_server: a fresh folder, a free port, stopped by its
PID) holds two queues filled alike but for their depth: jobs of 5 priorities and 4 shapes
(1 cpu; 4 cpus + 16 GB; 1 GPU; the label `bigmem`), so 20 lanes, in random order. A
claimer whose free capacity is 8 cpus and 32 GB and no label (so the GPU and `bigmem`
lanes, the highest priority among them, are passed over at every claim) claims one job,
then either releases it (it goes back in line: the lanes' zsets) or finishes it and
submits a fresh job of the same shape (the lanes' lists; the queue keeps its depth), in
rounds alternating between the queues; the table gives the median claim time (the
claim alone), and the ratio deep / shallow (issue 15 asks claim cost flat: within 1.5x).
With and without a capacity (`fit=None`).
Then (b): one job with 10^4 dependants: the finish that releases them all (one script),
and the claim after it.
Run: python bench/bench_redis_lanes.py [--deep 100000] [--shallow 100] [--rounds 2000]
     [--json PATH]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

from bench_redis import redis_server
from jsonout import Figures, add_option

from shoal.job import Job, Result, State
from shoal.queue.redisq import RedisQueue
from shoal.queue.scheduling import Capacity

SHAPES = ({}, {"needs": {"cpus": 4, "mem": 16e9}}, {"needs": {"gpus": 1}},
          {"labels": ["bigmem"]})
BOX = Capacity({"cpus": 8, "mem": 32e9})
TARGET_RATIO = 1.5


def mixed_jobs(count: int, tag: str) -> list[Job]:
    rng = random.Random(count)
    jobs = []
    for i in range(count):
        shape = SHAPES[rng.randrange(len(SHAPES))]
        priority = rng.randrange(5)
        if shape.get("needs", {}).get("gpus") or shape.get("labels"):
            priority = 9  # never fits BOX: passed over first at every claim
        jobs.append(Job.command_job(["true", tag, str(i)], priority=priority, **shape))
    return jobs


def filled(url: str, count: int) -> RedisQueue:
    queue = RedisQueue(f"{url}?queue=lanes-{uuid.uuid4().hex[:8]}")
    jobs = mixed_jobs(count, queue.url)
    started = time.perf_counter()
    for first in range(0, count, 10_000):
        queue.submit(jobs[first:first + 10_000])
    took = time.perf_counter() - started
    print(f"  {count:>7} mixed jobs submitted in {took:.2f} s "
          f"({count / took:,.0f} jobs/s); pending: {queue.counts()[State.PENDING]}")
    return queue


def claim_time(queue: RedisQueue, fit: Capacity | None, then: str) -> float:
    started = time.perf_counter()
    (lease,) = queue.claim("bench", 1, fit=fit)
    took = time.perf_counter() - started
    if then == "release":
        queue.release(lease)
    else:
        queue.finish(lease, Result(lease.job_id, State.DONE, attempt=lease.attempt,
                                   worker="bench", exit_code=0))
        job = lease.job
        queue.submit([Job.command_job(["true", uuid.uuid4().hex], priority=job.priority,
                                      needs=job.needs, labels=job.labels)])
    return took


def part_claims(url: str, args: argparse.Namespace) -> list[dict]:
    print(f"(a) claim one job, {args.rounds} rounds per queue, interleaved")
    queues = {"shallow": filled(url, args.shallow), "deep": filled(url, args.deep)}
    rows: list[dict] = []
    for then in ("finish+refill", "release"):
        for label, fit in (("fit=8 cpus, 32 GB", BOX), ("fit=None", None)):
            times: dict[str, list[float]] = {name: [] for name in queues}
            for _ in range(50):  # warm up: scripts loaded, connections open
                for queue in queues.values():
                    claim_time(queue, fit, then)
            for _ in range(args.rounds):
                for name, queue in queues.items():
                    times[name].append(claim_time(queue, fit, then))
            shallow, deep = (statistics.median(times[n]) * 1e6 for n in ("shallow", "deep"))
            ratio = deep / shallow
            print(f"  {then:<13} {label:<18} median claim: {args.shallow} pending "
                  f"{shallow:5.0f} us, {args.deep} pending {deep:5.0f} us; ratio {ratio:.2f} "
                  f"({'OK' if ratio <= TARGET_RATIO else 'over'} target {TARGET_RATIO}x)")
            rows.append({"then": then, "fit": label, "shallow_us": shallow, "deep_us": deep,
                         "ratio": ratio, "target_ratio": TARGET_RATIO})
    for queue in queues.values():
        queue.purge(force=True)
        queue.close()
    return rows


def part_release(url: str, args: argparse.Namespace) -> dict:
    print(f"(b) one job with {args.dependants} dependants")
    queue = RedisQueue(f"{url}?queue=deps-{uuid.uuid4().hex[:8]}")
    first = Job.command_job(["true", "first"])
    queue.submit([first, *(Job.command_job(["true", str(i)], after=[first.id])
                           for i in range(args.dependants))])
    (lease,) = queue.claim("bench", 1)
    started = time.perf_counter()
    queue.finish(lease, Result(lease.job_id, State.DONE, attempt=lease.attempt,
                               worker="bench", exit_code=0))
    released = time.perf_counter() - started
    started = time.perf_counter()
    queue.claim("bench", 1)
    claimed = time.perf_counter() - started
    print(f"  finish releasing them: {released * 1e3:.0f} ms "
          f"({released / args.dependants * 1e6:.1f} us per dependant); the next claim: "
          f"{claimed * 1e6:.0f} us; pending now {queue.counts()[State.PENDING]}")
    queue.purge(force=True)
    queue.close()
    return {"dependants": args.dependants, "release_ms": released * 1e3,
            "next_claim_us": claimed * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deep", type=int, default=100_000)
    parser.add_argument("--shallow", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--dependants", type=int, default=10_000)
    add_option(parser)
    args = parser.parse_args()
    figures = Figures(args.json, __file__)
    with redis_server("everysec") as (url, _client):
        figures.part("claims", part_claims(url, args))
        figures.part("release", part_release(url, args))


if __name__ == "__main__":
    main()
