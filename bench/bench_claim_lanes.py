"""Claim cost with many pending jobs of mixed priorities and needs (issue 15).

A claim must not cost more the more pending jobs there are, nor the more of them do not
fit the worker: backends keep pending jobs by lane and look at lane heads. For each
backend, two queues are filled with --small and --large pending jobs of the same mix
(priorities x needs: --lanes lanes), then claims on both are timed, interleaved (the
claimed job is released at once, so the queues keep their size): the table shows the
median time per claim and the ratio large/small, without a fit (any job) and with a
worker's free resources that most lanes do not fit.

Not a CI test. Usage: python bench/bench_claim_lanes.py [--backend memory,sqlite]
[--small 100] [--large 100000] [--claims 400] [--json PATH]. One function per backend opens its
queue (BACKENDS); add a backend there.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jsonout import Figures, add_option

from shoal.job import Job
from shoal.queue.base import Queue
from shoal.queue.memory import MemoryQueue
from shoal.queue.scheduling import Capacity
from shoal.queue.sqlite import SqliteQueue

PRIORITIES = (0, 1, 2, 5)
NEEDS: tuple[dict[str, float], ...] = (
    {}, {"cpus": 2}, {"cpus": 4, "mem": 16e9}, {"gpus": 1}, {"gpus": 2, "cpus": 8},
    {"mem": 64e9})
# A worker without GPUs and 8 GB free: only the lanes of {} and {"cpus": 2} fit it.
SMALL_BOX = Capacity({"cpus": 4, "mem": 8e9})


def open_memory(folder: Path) -> Queue:
    return MemoryQueue(lease_s=600)


def open_sqlite(folder: Path) -> Queue:
    return SqliteQueue(folder / "queue.db", lease_s=600)


BACKENDS: dict[str, Callable[[Path], Queue]] = {"memory": open_memory, "sqlite": open_sqlite}


def mixed_jobs(n: int) -> list[Job]:
    """n jobs cycling through every priority x needs lane, in input order."""
    lanes = [(p, needs) for p in PRIORITIES for needs in NEEDS]
    return [Job.command_job(["true", str(i)], name=f"j{i}", priority=lanes[i % len(lanes)][0],
                            needs=lanes[i % len(lanes)][1]) for i in range(n)]


def fill(queue: Queue, n: int, batch: int = 10_000) -> float:
    started = time.perf_counter()
    jobs = mixed_jobs(n)
    for first in range(0, n, batch):
        queue.submit(jobs[first:first + batch])
    return time.perf_counter() - started


def one_claim(queue: Queue, fit: Capacity | None) -> float:
    """Seconds one claim took (its job goes back to pending at once)."""
    started = time.perf_counter()
    leases = queue.claim("bench", 1, fit=fit)
    took = time.perf_counter() - started
    assert leases, "the queue ran dry"
    queue.release(leases[0])
    return took


def measure(name: str, small: int, large: int, claims: int) -> dict:
    found: dict = {"pending": [small, large], "claims": claims, "submit_s": {}}
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        queues = {small: BACKENDS[name](Path(a)), large: BACKENDS[name](Path(b))}
        for size, queue in queues.items():
            found["submit_s"][size] = fill(queue, size)
            print(f"{name}: submit {size:,} jobs in {found['submit_s'][size]:.2f} s")
        for label, fit in (("any job", None), ("small box", SMALL_BOX)):
            times: dict[int, list[float]] = {size: [] for size in queues}
            for _ in range(claims):  # interleaved: load drift hits both alike
                for size, queue in queues.items():
                    times[size].append(one_claim(queue, fit))
            med = {size: statistics.median(found) for size, found in times.items()}
            print(f"{name:8} {label:10} claim, {small:>7,} pending: {med[small] * 1e6:8.0f} us"
                  f" | {large:>7,} pending: {med[large] * 1e6:8.0f} us"
                  f" | ratio {med[large] / med[small]:.2f}")
            found[label] = {"small_us": med[small] * 1e6, "large_us": med[large] * 1e6,
                            "ratio": med[large] / med[small]}
        for queue in queues.values():
            queue.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="memory,sqlite",
                        help=f"comma-separated, among {', '.join(BACKENDS)}")
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=400)
    add_option(parser)
    args = parser.parse_args()
    figures = Figures(args.json, __file__)
    print(f"{len(PRIORITIES) * len(NEEDS)} lanes; the small box fits "
          f"{sum(SMALL_BOX.fits(Job('', '', mixed_jobs(1)[0].kind, needs=n)) for n in NEEDS)}"
          f" of the {len(NEEDS)} needs")
    for name in args.backend.split(","):
        if name not in BACKENDS:
            parser.error(f"--backend: no backend {name!r} (known: {', '.join(BACKENDS)})")
        figures.part(name, measure(name, args.small, args.large, args.claims))


if __name__ == "__main__":
    main()
