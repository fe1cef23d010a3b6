"""Executor memory (issue 11): shoal.Executor vs ProcessPoolExecutor, side by side.

(1) map(abs, <generator of N ints>) (default 10^5) on W workers (default 2), the iterator
    consumed: peak RSS growth of the submitting process (VmHWM after resetting it through
    /proc/self/clear_refs, and a 20 ms VmRSS sampler) over its VmRSS right before the
    map, and the peak growth of its worker processes (the sum of their VmRSS, sampled).
    Target: shoal-mem <= 1.2x ppe's growth of the submitting process.
(2) C calls (default 20) of functools.partial(len, <5 MiB of bytes>), a new partial and new
    bytes per call (b"A" * 5 MiB, b"B" * 5 MiB, ...: different content, so a cache keyed
    by the pickle cannot fold them into one entry), all submitted, results read, futures
    and partials dropped, gc.collect() and a 1 s settle: what the submitter still holds
    (tracemalloc current, started right before the calls; and VmRSS growth), and the
    worker processes' VmRSS before and after. Target: under 20 MiB held (tracemalloc)
    after the results are read.
(3) A lambda defined here in __main__ (so cloudpickle ships it by value) capturing a numpy
    array of --mb MB (default 400: np.random.default_rng(0).random(50_000_000)), submitted
    4 times, results read: wall time from the first submit to the last result, peak RSS
    growth of the submitter and of its workers, and the bytes in the queue folder (apparent
    size of every file in it once the results are in; the sampled peak too). ppe cannot
    pickle a lambda, so it ships the same array with each call as
    functools.partial(pick, array) (what a ProcessPoolExecutor user would write).
    Targets: at most one copy of the array in the folder; shoal-dir within 1.5x of
    shoal-mem's time.

    shoal-mem   shoal.Executor(None, workers=W): the in-process queue
    shoal-dir   shoal.Executor(TMP/queue, workers=W): a folder queue with W local slots
    ppe         concurrent.futures.ProcessPoolExecutor(W) (fork): the reference

Every measurement runs in a fresh subprocess of this script (`--child`, its own session
and TMPDIR), which starts the executor, warms it up until every worker has answered a
call (the array of part 3 is made after that, so forked workers do not map it), measures
and shuts the executor down; a measurement that does not finish within its part's
timeout is killed (with every process it started) and reported as such. Variants are
interleaved, the order rotating each repetition; medians of --repeat runs are reported,
with ratios (ratio of the medians, and "pair": the median of per-repetition ratios).
Run: python bench/bench_executor_memory.py [--part 1,2,3] [--repeat 1] [--mb 400] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_calls import (
    MARK,
    ProcessPool,
    Shoal,
    Variant,
    marked_outcome,
    measure,
    paired,
    ratio,
    source_state,
    start_or_skip,
)
from bench_calls import warm_up as warm_up_workers
from jsonout import Figures, add_option

PARTS = {"1": ("shoal-mem", "ppe"), "2": ("shoal-mem", "shoal-dir", "ppe"),
         "3": ("shoal-dir", "shoal-mem", "ppe")}
TIMEOUT_S = {"1": 150.0, "2": 120.0, "3": 300.0}  # one measurement, then it is killed
TARGET_MAP_VS_PPE = 1.2  # (1) shoal-mem's RSS growth <= 1.2 x ppe's
TARGET_HELD_MIB = 20.0  # (2) < 20 MiB held once the results are read
TARGET_COPIES = 1.0  # (3) at most one copy of the array in the queue folder
COPIES_SLACK = 0.01  # ...give or take the pickle's own few hundred bytes
TARGET_DIR_VS_MEM = 1.5  # (3) shoal-dir's time <= 1.5 x shoal-mem's
SUBMITS = 4  # (3) calls of the lambda
SAMPLE_S = 0.02  # the RSS sampler's period
FOLDER_SAMPLE_S = 0.25  # how often it adds up the queue folder
SETTLE_S = 1.0  # (2) after gc.collect(), before memory is read: background threads let go
MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- reading memory from /proc ----------------------------------------------------------------


def rss(pid: int | str = "self") -> int:
    """Resident bytes of a process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def peak_rss() -> int:
    """This process's VmHWM in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed here."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def descendants(root: int | None = None) -> list[int]:
    """Every live process below `root` (default: this one), from /proc/*/stat."""
    root = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        below = [pid for pid, ppid in parents.items() if ppid in frontier]
        found.extend(below)
        frontier = below
    return found


def workers_rss() -> int:
    return sum(rss(pid) for pid in descendants())


def folder_bytes(root: Path) -> int:
    """Apparent size of every file under root (files may vanish while we look)."""
    total, stack = 0, [root]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
    return total


class Sampler(threading.Thread):
    """Peaks of this process's RSS, of its workers' summed RSS and of a folder's size."""

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.folder = folder
        self.peak_self = self.peak_workers = self.peak_folder = 0
        self._done = threading.Event()

    def run(self) -> None:
        pids, next_scan, next_folder = [], 0.0, 0.0
        while True:
            now = time.monotonic()
            if now >= next_scan:  # a worker that died is replaced: look for new ones
                pids, next_scan = descendants(), now + 0.5
            self.peak_self = max(self.peak_self, rss())
            self.peak_workers = max(self.peak_workers, sum(rss(pid) for pid in pids))
            if self.folder is not None and now >= next_folder:
                self.peak_folder = max(self.peak_folder, folder_bytes(self.folder))
                next_folder = now + FOLDER_SAMPLE_S
            if self._done.wait(SAMPLE_S):
                return

    def finish(self) -> Sampler:
        self._done.set()
        self.join()
        return self


def mib(n: float) -> float:
    return n / MIB


# -- the workloads (in the child) ---------------------------------------------------------------


def pick(array: Any, i: int) -> float:
    return float(array[i])


def map_abs(ex: Any, n: int) -> dict[str, Any]:
    """(1) Consume map(abs, generator) and report the peaks over the RSS before it."""
    gc.collect()
    base_self, base_workers = rss(), workers_rss()
    exact = reset_peak()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    total = count = 0
    for value in ex.map(abs, (-i for i in range(n))):
        total += value
        count += 1
    wall = time.perf_counter() - t0
    sampler.finish()
    if (count, total) != (n, n * (n - 1) // 2):
        raise RuntimeError(f"map returned {count} values summing to {total}")
    peak_self = max(sampler.peak_self, peak_rss() if exact else 0)
    return {"wall": wall, "base_mib": mib(base_self), "self_mib": mib(peak_self - base_self),
            "workers_mib": mib(max(sampler.peak_workers - base_workers, 0)), "hwm": exact}


def partial_calls(ex: Any, calls: int, size: int) -> dict[str, Any]:
    """(2) Submit `calls` new partials holding `size` bytes each, read the results, drop
    everything, and report what is still held."""
    import tracemalloc

    gc.collect()
    base_self, base_workers = rss(), workers_rss()
    tracemalloc.start()
    t0 = time.perf_counter()
    fs = [ex.submit(functools.partial(len, bytes([65 + i % 26]) * size)) for i in range(calls)]
    results = [f.result() for f in fs]
    wall = time.perf_counter() - t0
    del fs
    if results != [size] * calls:
        raise RuntimeError(f"wrong results: {results}")
    gc.collect()
    time.sleep(SETTLE_S)
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pids = descendants()
    return {"wall": wall, "held_mib": mib(held), "traced_peak_mib": mib(peak),
            "rss_mib": mib(rss() - base_self), "workers_before_mib": mib(base_workers),
            "workers_after_mib": mib(sum(rss(pid) for pid in pids)),
            "worker_max_mib": mib(max((rss(pid) for pid in pids), default=0))}


def captured_array(ex: Any, mb: int, folder: Path | None, ppe: bool) -> dict[str, Any]:
    """(3) A lambda capturing an array of `mb` MB, submitted SUBMITS times."""
    import numpy as np

    array = np.random.default_rng(0).random(mb * 1_000_000 // 8)
    fn = functools.partial(pick, array) if ppe else lambda i: float(array[i])
    gc.collect()
    base_self, base_workers = rss(), workers_rss()
    exact = reset_peak()
    sampler = Sampler(folder)
    sampler.start()
    t0 = time.perf_counter()
    fs = [ex.submit(fn, i) for i in range(SUBMITS)]
    results = [f.result() for f in fs]
    wall = time.perf_counter() - t0
    in_folder = folder_bytes(folder) if folder is not None else None
    sampler.finish()
    if results != [float(array[i]) for i in range(SUBMITS)]:
        raise RuntimeError(f"wrong results: {results}")
    peak_self = max(sampler.peak_self, peak_rss() if exact else 0)
    return {"wall": wall, "array_mib": mib(array.nbytes), "self_mib": mib(peak_self - base_self),
            "workers_mib": mib(max(sampler.peak_workers - base_workers, 0)),
            "folder_mib": None if in_folder is None else mib(in_folder),
            "folder_peak_mib": None if folder is None else mib(sampler.peak_folder),
            "copies": None if in_folder is None else in_folder / array.nbytes, "hwm": exact}


def child(name: str, part: str, args: argparse.Namespace) -> None:
    """Start, warm up, measure one part, stop; print one JSON line for the parent."""
    import bench_calls
    import cloudpickle

    cloudpickle.register_pickle_by_value(bench_calls)  # the warm-up's pid(), for callhosts
    tmp = Path(args.tmp)
    variant: Variant = (ProcessPool if name == "ppe" else Shoal)(name, args.workers, tmp)
    t0 = time.perf_counter()
    start_or_skip(variant)
    seen = warm_up_workers(variant, args.workers)
    startup = time.perf_counter() - t0
    if part == "1":
        run = map_abs(variant.ex, args.items)
    elif part == "2":
        run = partial_calls(variant.ex, args.calls, args.call_mib * MIB)
    else:
        folder = tmp / "queue" if name == "shoal-dir" else None
        run = captured_array(variant.ex, args.mb, folder, name == "ppe")
    t1 = time.perf_counter()
    variant.stop()
    run.update(startup=startup, seen=seen, shutdown=time.perf_counter() - t1)
    print(MARK + json.dumps(run), flush=True)


# -- the parent: interleaved repetitions, each in a fresh subprocess ---------------------------


def kill_tree(pid: int) -> None:
    """SIGKILL a timed-out child and every process it started (callhosts run in their
    own sessions, so killing the child's process group alone would leave them)."""
    for below in [*descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(below, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_child(name: str, part: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh interpreter; {'skip': why} when it failed or timed out."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-memory-{name}-", dir=args.tmp))
    argv = [sys.executable, os.path.abspath(__file__), "--child", name, "--workload", part,
            "--items", str(args.items), "--calls", str(args.calls), "--call-mib",
            str(args.call_mib), "--mb", str(args.mb), "--workers", str(args.workers),
            "--tmp", str(tmp)]
    timeout = args.timeout or TIMEOUT_S[part]
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        _, err = proc.communicate()
        tail = " | ".join(err.strip().splitlines()[-2:])[-300:]
        return {"skip": f"did not finish within {timeout:g} s (killed)"
                        + (f"; stderr: {tail}" if tail else "")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return marked_outcome(out, err, proc.returncode)


def medians(runs: dict[str, list[dict]], key: str) -> dict[str, float]:
    return {name: statistics.median(run[key] for run in got)
            for name, got in runs.items() if got and got[0].get(key) is not None}


def series(runs: dict[str, list[dict]], key: str) -> dict[str, list[float]]:
    return {name: [run[key] for run in got] for name, got in runs.items()}


def x(values: dict[str, float], name: str, peer: str, floor: float = 1.0) -> str:
    """ratio() name/peer, or '-' where the peer's figure is too small to divide by."""
    return ratio(values, name, peer) if values.get(peer, 0.0) >= floor else "-"


def header(title: str, runs: dict[str, list[dict]]) -> None:
    print(f"\n{title}, median of {max(map(len, runs.values()), default=0)} run(s)")


def verdict(label: str, got: float, target: float, unit: str = "x", *, below: bool = False,
            what: str = "") -> None:
    ok = got < target if below else got <= target
    sign = "<" if below else "<="
    print(f"{label}: {got:.2f}{unit}{what}: {'meets' if ok else 'misses'} the target of "
          f"{sign} {target:g}{unit}")


def report_map(names: list[str], runs: dict, skipped: dict, n: int) -> None:
    header(f"(1) map(abs, generator of {n} ints); growth over the RSS before the map; "
           "x ppe: shoal / ppe (pair: median of per-run ratios)", runs)
    self_, workers, walls = (medians(runs, key) for key in ("self_mib", "workers_mib", "wall"))
    grow = series(runs, "self_mib")
    print(f"{'variant':<10} {'wall s':>7} {'RSS before':>10} {'peak +MiB':>9} {'x ppe':>6} "
          f"{'(pair)':>6} {'workers +MiB':>12} {'x ppe':>6}")
    for name in names:
        if not runs[name]:
            print(f"{name:<10} skipped: {skipped.get(name, 'no run')}")
            continue
        print(f"{name:<10} {walls[name]:7.2f} {medians(runs, 'base_mib')[name]:10.1f} "
              f"{self_[name]:9.1f} {x(self_, name, 'ppe'):>6} {paired(grow, 'ppe', name):>6} "
              f"{workers[name]:12.1f} {x(workers, name, 'ppe'):>6}")
    if "shoal-mem" in self_ and self_.get("ppe", 0.0) > 0:
        verdict("shoal-mem", self_["shoal-mem"] / self_["ppe"], TARGET_MAP_VS_PPE,
                what=" ppe's RSS growth")
    if not all(run.get("hwm") for got in runs.values() for run in got):
        print("(VmHWM could not be reset here: peaks are from the 20 ms sampler only)")


def report_partials(names: list[str], runs: dict, skipped: dict, calls: int, size: int) -> None:
    header(f"(2) {calls} calls of partial(len, {size} MiB of bytes), results read, all dropped, "
           f"gc.collect() + {SETTLE_S:g} s; held = still allocated (tracemalloc)", runs)
    held, rss_, walls = (medians(runs, key) for key in ("held_mib", "rss_mib", "wall"))
    before, after, biggest = (medians(runs, key) for key in
                              ("workers_before_mib", "workers_after_mib", "worker_max_mib"))
    print(f"{'variant':<10} {'wall s':>7} {'held MiB':>8} {'- ppe':>7} {'RSS +MiB':>8} "
          f"{'- ppe':>7} {'workers MiB before':>18} {'after':>7} {'+MiB':>7} {'biggest':>7}")
    for name in names:
        if not runs[name]:
            print(f"{name:<10} skipped: {skipped.get(name, 'no run')}")
            continue
        minus = {key: f"{values[name] - values['ppe']:+7.1f}" if "ppe" in values else "-"
                 for key, values in (("held", held), ("rss", rss_))}
        print(f"{name:<10} {walls[name]:7.2f} {held[name]:8.1f} {minus['held']:>7} "
              f"{rss_[name]:8.1f} {minus['rss']:>7} {before[name]:18.1f} {after[name]:7.1f} "
              f"{after[name] - before[name]:+7.1f} {biggest[name]:7.1f}")
    for name in ("shoal-mem", "shoal-dir"):
        if name in held:
            verdict(name, held[name], TARGET_HELD_MIB, " MiB", below=True,
                    what=f" held (RSS +{rss_[name]:.1f} MiB)")


def report_array(names: list[str], runs: dict, skipped: dict, mb: int) -> None:
    header(f"(3) a lambda capturing a {mb} MB array, submitted {SUBMITS} times; x mem / x ppe: "
           "time / shoal-mem's or ppe's (pair: per-run ratios)", runs)
    walls, self_, workers = (medians(runs, key) for key in ("wall", "self_mib", "workers_mib"))
    folder, peak, copies = (medians(runs, key) for key in
                            ("folder_mib", "folder_peak_mib", "copies"))
    times = series(runs, "wall")
    print(f"{'variant':<10} {'wall s':>7} {'x mem':>6} {'(pair)':>6} {'x ppe':>6} {'(pair)':>6} "
          f"{'peak +MiB':>9} {'workers +MiB':>12} {'folder MiB':>10} {'(peak)':>7} "
          f"{'copies':>6}")
    for name in names:
        if not runs[name]:
            print(f"{name:<10} skipped: {skipped.get(name, 'no run')}")
            continue
        on_disk = (f"{folder[name]:10.1f} {peak[name]:7.1f} {copies[name]:6.2f}"
                   if name in folder else f"{'-':>10} {'-':>7} {'-':>6}")
        print(f"{name:<10} {walls[name]:7.2f} {x(walls, name, 'shoal-mem', 0):>6} "
              f"{paired(times, 'shoal-mem', name):>6} {x(walls, name, 'ppe', 0):>6} "
              f"{paired(times, 'ppe', name):>6} {self_[name]:9.1f} {workers[name]:12.1f} "
              f"{on_disk}")
    if "shoal-dir" in copies:
        verdict("shoal-dir", copies["shoal-dir"] - COPIES_SLACK, TARGET_COPIES, " copies",
                what=" of the array in the folder")
    if "shoal-dir" in walls and "shoal-mem" in walls:
        verdict("shoal-dir", walls["shoal-dir"] / walls["shoal-mem"], TARGET_DIR_VS_MEM,
                what=" shoal-mem's time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="1,2,3", help="comma-separated parts: 1,2,3")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant (median)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=100_000, help="(1) items mapped")
    parser.add_argument("--calls", type=int, default=20, help="(2) partial calls")
    parser.add_argument("--call-mib", type=int, default=5, help="(2) MiB bound in each partial")
    parser.add_argument("--mb", type=int, default=400, help="(3) MB of the captured array")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="seconds one measurement may take (default: 150, 120, 300 for "
                             "parts 1, 2, 3)")
    parser.add_argument("--tmp", help="parent of the fresh temporary folders (default: $TMPDIR)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    add_option(parser)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workload, args)
        return
    parts = [part for part in args.part.split(",") if part]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--part: a comma-separated subset of {','.join(PARTS)}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, workers={args.workers}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(source_state())
    figures = Figures(args.json, __file__)
    figures.part("shoal", source_state())
    started = time.perf_counter()
    sizes = {"1": args.items, "2": args.calls, "3": SUBMITS}
    for part in parts:
        names = list(PARTS[part])
        runs, _, skipped = measure(names, part, args.repeat, args, n=sizes[part],
                                   run_child=run_child)
        if part == "1":
            report_map(names, runs, skipped, args.items)
        elif part == "2":
            report_partials(names, runs, skipped, args.calls, args.call_mib)
        else:
            report_array(names, runs, skipped, args.mb)
        figures.part(f"part{part}", {
            "n": sizes[part], "runs": runs, "skipped": skipped,
            "medians": {name: {key: statistics.median(run[key] for run in got)
                               for key, value in got[0].items()
                               if isinstance(value, (int, float))}
                        for name, got in runs.items() if got}})
    print(f"load at the end {os.getloadavg()[0]:.2f}; whole run "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
