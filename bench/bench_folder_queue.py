"""Folder queue (`dir://`) on a local disk: claim+finish throughput and claim cost vs depth.

(a) N jobs submitted, then a loop of claim(worker, 1) + finish(DONE): on one thread,
    and with P processes racing on the same folder (no job may be claimed twice).
(b) claim cost with 100 vs 100,000 pending jobs (and at 100,000 after 90 % of them
    were claimed+finished): each round opens a fresh FolderQueue (as a new worker
    would, so every round pays one directory read) and claims+finishes 100 jobs;
    rounds on the small and the big queue are interleaved.

Run: python bench/bench_folder_queue.py [--jobs 5000] [--deep 100000] [--dir /tmp] [--json PATH]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from jsonout import Figures, add_option

from shoal.fsutil import filesystem_type
from shoal.job import Job, Result, State
from shoal.queue.folder import FolderQueue

TARGET_RATE = 2000.0  # claim+finish pairs per second
TARGET_RATIO = 1.5  # claim cost at 100k pending / at 100 pending


def make_jobs(tag: str, start: int, stop: int) -> list[Job]:
    return [Job.command_job(["true", f"{tag}-{i}"]) for i in range(start, stop)]


def fill(root: Path, tag: str, n: int, *, fsync: bool, batch: int = 2000) -> float:
    """Submit n jobs in batches through the public API; return the seconds it took."""
    queue = FolderQueue(root, fsync=fsync)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        jobs = make_jobs(tag, start, min(n, start + batch))
        if len(queue.submit(jobs)) != len(jobs):
            raise RuntimeError("submit refused new jobs")
    seconds = time.perf_counter() - t0
    os.sync()  # later timings must not pay for this write-back
    return seconds


def drain(queue: FolderQueue, worker: str, limit: int | None = None) -> list[str]:
    """claim(1)+finish(DONE) until nothing is pending (or `limit` jobs); the ids done."""
    done: list[str] = []
    while limit is None or len(done) < limit:
        leases = queue.claim(worker, 1)
        if not leases:
            if queue.is_drained():
                break
            continue  # a racing process took our whole batch: read the folder again
        lease = leases[0]
        queue.finish(lease, Result(lease.job_id, State.DONE, attempt=lease.attempt,
                                   worker=worker))
        done.append(lease.job_id)
    return done


def racer(root: str, worker: str, go: Any, out: Any) -> None:
    queue = FolderQueue(root, create=False)
    go.wait()
    t0 = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes on Linux
    ids = drain(queue, worker)
    out.put((worker, t0, time.perf_counter(), ids))


def single(base: Path, n: int, fsync: bool) -> tuple[float, float]:
    """One thread: submit n, then claim+finish them all; (submit/s, claim+finish/s)."""
    root = Path(tempfile.mkdtemp(prefix="bench-fq-a1-", dir=base))
    try:
        submit_s = fill(root, "a1", n, fsync=fsync)
        t0 = time.perf_counter()
        ids = drain(FolderQueue(root, fsync=fsync), "solo")
        rate = len(ids) / (time.perf_counter() - t0)
        assert len(ids) == n == len(set(ids)), "single thread: lost or duplicated jobs"
    finally:
        shutil.rmtree(root)
    return n / submit_s, rate


def race(base: Path, n: int, procs: int) -> tuple[float, str]:
    """`procs` processes drain one folder; (total claim+finish/s, jobs per process)."""
    root = Path(tempfile.mkdtemp(prefix="bench-fq-a2-", dir=base))
    try:
        fill(root, "a2", n, fsync=True)
        ctx = mp.get_context()
        go, out = ctx.Event(), ctx.Queue()
        children = [ctx.Process(target=racer, args=(str(root), f"racer{i}", go, out))
                    for i in range(procs)]
        for child in children:
            child.start()
        time.sleep(0.5)  # let every child import and open the queue before the go
        go.set()
        reports = [out.get() for _ in children]
        for child in children:
            child.join()
        claimed = [job_id for report in reports for job_id in report[3]]
        dupes = len(claimed) - len(set(claimed))
        assert dupes == 0, f"{dupes} jobs claimed twice"
        assert len(claimed) == n, f"{len(claimed)} of {n} jobs done"
        assert len(os.listdir(root / ".shoal" / "done")) == n
    finally:
        shutil.rmtree(root)
    wall = max(r[2] for r in reports) - min(r[1] for r in reports)
    return n / wall, " / ".join(str(len(r[3])) for r in sorted(reports))


def part_a(base: Path, n: int, procs: int) -> dict:
    print(f"\n(a) claim+finish throughput, {n} jobs")
    submit, one = single(base, n, fsync=True)
    submit_off, one_off = single(base, n, fsync=False)
    racing, split = race(base, n, procs)
    print(f"  submit, fsync on (default)       {submit:8.0f} jobs/s")
    print(f"  submit, fsync off                {submit_off:8.0f} jobs/s")
    print(f"  1 thread, fsync on (default)     {one:8.0f} claim+finish/s")
    print(f"  1 thread, fsync off              {one_off:8.0f} claim+finish/s")
    print(f"  {procs} processes racing, fsync on   {racing:8.0f} claim+finish/s in total "
          f"(split {split}; none claimed twice)")
    for label, rate in (("1 thread", one), (f"{procs} processes", racing)):
        verdict = "meets" if rate >= TARGET_RATE else "misses"
        print(f"  {label}, fsync on: {verdict} the target of >= {TARGET_RATE:.0f}/s "
              f"({rate / TARGET_RATE:.2f}x)")
    return {"jobs": n, "submit_per_s": submit, "submit_nofsync_per_s": submit_off,
            "one_thread_per_s": one, "one_thread_nofsync_per_s": one_off,
            "racing_per_s": racing, "racing_procs": procs, "racing_split": split,
            "target_per_s": TARGET_RATE}


def claim_round(root: Path, worker: str, k: int, fsync: bool) -> tuple[list, list]:
    """Fresh queue object, then k x (claim + finish); the per-claim and per-pair times."""
    queue = FolderQueue(root, fsync=fsync, create=False)
    claims, pairs = [], []
    for _ in range(k):
        t0 = time.perf_counter()
        lease = queue.claim(worker, 1)[0]
        t1 = time.perf_counter()
        queue.finish(lease, Result(lease.job_id, State.DONE, attempt=1, worker=worker))
        claims.append(t1 - t0)
        pairs.append(time.perf_counter() - t0)
    return claims, pairs


def compare(small: Path, big: Path, label: str, rounds: int, k: int, fsync: bool) -> dict:
    """Interleaved rounds on the small (k pending, topped up after each round) and big queue."""
    stats: dict[str, dict[str, list]] = {"small": {"claim": [], "pair": [], "first": []},
                                         "big": {"claim": [], "pair": [], "first": []}}
    for rnd in range(rounds):
        order = (("small", small), ("big", big))
        for name, root in order if rnd % 2 == 0 else order[::-1]:  # alternate who goes first
            claims, pairs = claim_round(root, f"{label}-{name}", k, fsync)
            stats[name]["claim"] += claims
            stats[name]["pair"] += pairs
            stats[name]["first"].append(claims[0])
        fill(small, f"{label}-top{rnd}", k, fsync=True)  # back to k pending
    return stats


def show(label: str, stats: dict, deep: int, k: int) -> dict:
    """Print one comparison; return its figures (ratio: of the mean claim times)."""
    mean = {name: statistics.fmean(s["claim"]) for name, s in stats.items()}
    pair = {name: statistics.fmean(s["pair"]) for name, s in stats.items()}
    first = {name: statistics.median(s["first"]) for name, s in stats.items()}
    for name, pending in (("small", k), ("big", deep)):
        print(f"  {label + ' ' + str(pending):<22} {mean[name] * 1e6:9.1f} "
              f"{first[name] * 1e6:9.1f} {pair[name] * 1e6:12.1f}")
    ratio = mean["big"] / mean["small"]
    print(f"  ratio big/small: claim {ratio:.2f}, claim+finish "
          f"{pair['big'] / pair['small']:.2f}")
    return {"pending": {"small": k, "big": deep}, "ratio": ratio,
            "pair_ratio": pair["big"] / pair["small"],
            **{f"{key}_us": {name: value * 1e6 for name, value in found.items()}
               for key, found in (("claim", mean), ("first", first), ("pair", pair))}}


def listing_ms(root: Path, repeat: int = 3) -> float:
    queue = FolderQueue(root, create=False)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        queue.counts()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def part_b(base: Path, deep: int, k: int, rounds: int, fill_fsync: bool,
           fsync: bool) -> dict:
    print(f"\n(b) claim cost vs pending jobs: {rounds} interleaved rounds of {k} claims "
          f"(fsync {'on' if fsync else 'off'} for finish)")
    small = Path(tempfile.mkdtemp(prefix="bench-fq-small-", dir=base))
    big = Path(tempfile.mkdtemp(prefix="bench-fq-big-", dir=base))
    try:
        submit_s = fill(big, "deep", deep, fsync=fill_fsync)
        print(f"  submit {deep} jobs (batches of 2000, fsync {'on' if fill_fsync else 'off'}):"
              f" {submit_s:.1f} s, {deep / submit_s:.0f} jobs/s")
        fill(small, "init", k, fsync=True)
        print(f"  counts() (lists every state folder, as status/progress do): "
              f"{listing_ms(small):.2f} ms at {k} pending, {listing_ms(big):.2f} ms at {deep}")
        print(f"  {'queue, pending':<22} {'claim us':>9} {'1st claim':>9} "
              f"{'claim+finish':>12}")
        fresh = show("fresh", compare(small, big, "fresh", rounds, k, fsync), deep, k)
        ratio = fresh["ratio"]
        left = FolderQueue(big, fsync=False).counts()[State.PENDING]
        target = max(deep // 10, (rounds + 1) * k)
        t0 = time.perf_counter()
        gone = len(drain(FolderQueue(big, fsync=False), "drainer", left - target))
        drain_s = time.perf_counter() - t0
        os.sync()
        print(f"  claimed+finished {gone} more (fsync off) in {drain_s:.1f} s "
              f"({gone / drain_s:.0f}/s); {target} pending remain")
        after = show("after90%", compare(small, big, "late", rounds, k, fsync), target, k)
        verdict = "meets" if ratio <= TARGET_RATIO else "misses"
        print(f"  claim cost ratio {deep}/{k} pending = {ratio:.2f}: {verdict} the target of "
              f"<= {TARGET_RATIO}; after 90% claimed: {after['ratio']:.2f}")
        return {"deep": deep, "submit_s": submit_s, "fresh": fresh, "after90": after,
                "target_ratio": TARGET_RATIO}
    finally:
        shutil.rmtree(small, ignore_errors=True)
        shutil.rmtree(big, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs for part (a)")
    parser.add_argument("--procs", type=int, default=2, help="racing processes in (a)")
    parser.add_argument("--deep", type=int, default=100_000, help="big queue for (b)")
    parser.add_argument("--claims", type=int, default=100, help="claims per round in (b)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per queue in (b)")
    parser.add_argument("--fill-no-fsync", action="store_true",
                        help="fill the big queue with fsync off (default: the queue's default)")
    parser.add_argument("--no-fsync", action="store_true", help="finish without fsync in (b)")
    parser.add_argument("--only", choices=["a", "b"], help="run one part")
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="parent of the fresh temporary queues (default: $TMPDIR)")
    add_option(parser)
    args = parser.parse_args()
    figures = Figures(args.json, __file__)
    base = Path(args.dir)
    print(f"queues under {base} ({filesystem_type(base) or 'unknown fs'}), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    if args.only in (None, "a"):
        figures.part("a", part_a(base, args.jobs, args.procs))
    if args.only in (None, "b"):
        figures.part("b", part_b(base, args.deep, args.claims, args.rounds,
                                 not args.fill_no_fsync, not args.no_fsync))
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
