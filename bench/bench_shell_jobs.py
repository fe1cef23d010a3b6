"""Throughput of tiny shell jobs: shoal vs `xargs -P` vs GNU parallel, side by side.

Every variant runs N `true ARG` jobs on the same number of slots; the variants are
interleaved within each repetition and the median wall time per variant is reported,
with ratios against xargs and GNU parallel. Variants:

    shoal-cli    `shoal run --no-progress --slots S --queue TMP true ::: 0 .. N-1`
                 (needs shoal.templates; skipped with a note when it is missing)
    shoal-dir    Python API: FolderQueue(TMP).submit(jobs) + Worker(slots=S, drain=True)
    shoal-mem    the same on a `memory://` queue
    xargs        `xargs -P S -n1 true`, fed N lines on stdin
    parallel     `parallel --will-cite -j S true ::: 0 .. N-1`

For shoal-dir/shoal-mem the "worker" column is the worker alone (submit excluded).
Run: python bench/bench_shell_jobs.py [--jobs 2000] [--slots 2] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jsonout import Figures, add_option, paired_ratio, variants

from shoal.job import Job
from shoal.queue import open_queue
from shoal.queue.folder import FolderQueue
from shoal.worker import Worker

ALL = ("shoal-cli", "shoal-dir", "shoal-dir-nofsync", "shoal-mem", "xargs", "parallel")
TARGET = 0.8  # shoal >= 0.8 x xargs


class Skip(Exception):
    """A variant that cannot run on this machine (tool missing, module missing)."""


def shoal_argv() -> list[str]:
    exe = shutil.which("shoal")
    return [exe] if exe else [sys.executable, "-m", "shoal.cli"]


def make_jobs(n: int) -> list[Job]:
    # Same jobs `shoal run true ::: ...` would build when shoal.templates is missing.
    return [Job.command_job(["true", str(i)]) for i in range(n)]


def run_cli(n: int, slots: int, tmp: Path) -> tuple[float, float | None]:
    if importlib.util.find_spec("shoal.templates") is None:
        raise Skip("shoal.templates not importable yet: `shoal run ... :::` cannot expand")
    argv = [*shoal_argv(), "run", "--no-progress", "--slots", str(slots),
            "--queue", str(tmp / "queue"), "true", ":::", *map(str, range(n))]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"shoal run exited {proc.returncode}: {proc.stderr[-500:]}")
    return elapsed, None


def run_api(queue_url: str, n: int, slots: int, tmp: Path) -> tuple[float, float | None]:
    jobs = make_jobs(n)
    t0 = time.perf_counter()
    if queue_url.startswith("dir"):
        queue = FolderQueue(tmp / "queue", fsync=queue_url != "dir-nofsync")
    else:
        queue = open_queue("memory://")
    queue.submit(jobs)
    t1 = time.perf_counter()
    worker = Worker(queue, slots=slots, drain=True)  # jobs run in our cwd, as in real use
    worker.run()
    t2 = time.perf_counter()
    if not queue_url.startswith("dir"):
        shutil.rmtree(queue.files.local_dir(), ignore_errors=True)  # memory:// logs go to a mkdtemp
    if worker.done != n:
        raise RuntimeError(f"shoal worker finished {worker.done} of {n} jobs")
    return t2 - t0, t2 - t1


def run_xargs(n: int, slots: int, tmp: Path) -> tuple[float, float | None]:
    lines = "".join(f"{i}\n" for i in range(n))
    t0 = time.perf_counter()
    subprocess.run(["xargs", "-P", str(slots), "-n1", "true"], input=lines, text=True,
                   cwd=tmp, check=True)
    return time.perf_counter() - t0, None


def run_parallel(n: int, slots: int, tmp: Path) -> tuple[float, float | None]:
    if shutil.which("parallel") is None:
        raise Skip("GNU parallel not installed (apt-get install -y parallel)")
    argv = ["parallel", "--will-cite", "-j", str(slots), "true", ":::", *map(str, range(n))]
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=tmp, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0, None


RUNNERS: dict[str, Callable[[int, int, Path], tuple[float, float | None]]] = {
    "shoal-cli": run_cli,
    "shoal-dir": lambda n, s, t: run_api("dir", n, s, t),
    "shoal-dir-nofsync": lambda n, s, t: run_api("dir-nofsync", n, s, t),
    "shoal-mem": lambda n, s, t: run_api("memory://", n, s, t),
    "xargs": run_xargs,
    "parallel": run_parallel,
}


def startup_cost(repeat: int) -> float:
    """Median wall time of `shoal --version`: the CLI's fixed cost before any job."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([*shoal_argv(), "--version"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(names: list[str], n: int, slots: int, repeat: int,
            base: str | None) -> tuple[dict, dict, dict]:
    walls: dict[str, list[float]] = {name: [] for name in names}
    workers: dict[str, list[float]] = {name: [] for name in names}
    skipped: dict[str, str] = {}
    for rep in range(repeat):
        for name in names:
            if name in skipped:
                continue
            tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=base))
            # Flush what earlier variants left dirty, so nobody pays for another's writes
            # (shoal's durable submit and group commit sync the filesystem).
            os.sync()
            try:
                wall, worker = RUNNERS[name](n, slots, tmp)
            except Skip as exc:
                skipped[name] = str(exc)
                continue
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            walls[name].append(wall)
            if worker is not None:
                workers[name].append(worker)
            print(f"  rep {rep + 1}/{repeat} {name:<10} {wall:7.3f} s  {n / wall:8.1f} jobs/s",
                  file=sys.stderr, flush=True)
    return walls, workers, skipped


def paired(walls: dict, name: str, peer: str) -> str:
    """Median over repetitions of the per-repetition speed ratio name/peer (load drifts)."""
    got = paired_ratio(walls, name, peer)
    return "-" if got is None else f"{got:.2f}"


def report(names: list[str], n: int, walls: dict, workers: dict, skipped: dict) -> None:
    rate = {name: n / statistics.median(walls[name]) for name in names if walls[name]}
    print(f"\n{n} `true` jobs, median of {max(map(len, walls.values()), default=0)} runs; "
          "x xargs / x parallel: ratio of medians (paired: median of per-run ratios)")
    print(f"{'variant':<10} {'median s':>9} {'jobs/s':>8} {'worker/s':>9} "
          f"{'x xargs':>8} {'(paired)':>8} {'x parallel':>10} {'(paired)':>8}")
    for name in names:
        if name in skipped:
            print(f"{name:<10} skipped: {skipped[name]}")
            continue
        worker = f"{n / statistics.median(workers[name]):.1f}" if workers[name] else "-"
        vs_x = f"{rate[name] / rate['xargs']:.2f}" if "xargs" in rate else "-"
        vs_p = f"{rate[name] / rate['parallel']:.2f}" if "parallel" in rate else "-"
        print(f"{name:<10} {statistics.median(walls[name]):9.3f} {rate[name]:8.1f} "
              f"{worker:>9} {vs_x:>8} {paired(walls, name, 'xargs'):>8} {vs_p:>10} "
              f"{paired(walls, name, 'parallel'):>8}")
    if "xargs" in rate:
        for name in [name for name in rate if name.startswith("shoal")]:
            ok = "meets" if rate[name] / rate["xargs"] >= TARGET else "misses"
            print(f"{name}: {ok} the target of >= {TARGET}x xargs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(ALL),
                        help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--tmp", help="parent of the fresh temporary folders (default: $TMPDIR)")
    add_option(parser)
    args = parser.parse_args()
    names = [name for name in args.only.split(",") if name]
    unknown = set(names) - set(ALL)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, slots={args.slots}, "
          f"load {os.getloadavg()[0]:.2f}")
    figures = Figures(args.json, __file__)
    walls, workers, skipped = measure(names, args.jobs, args.slots, args.repeat, args.tmp)
    report(names, args.jobs, walls, workers, skipped)
    jobs = variants(walls, skipped, n=args.jobs, peers=("xargs", "parallel"))
    for name, entry in jobs["variants"].items():
        if workers[name]:
            entry["worker_per_s"] = args.jobs / statistics.median(workers[name])
    figures.part("jobs", {"jobs": args.jobs, "slots": args.slots, "repeat": args.repeat,
                          "target_x_xargs": TARGET, **jobs})
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    if "shoal-cli" in names and "shoal-cli" not in skipped:
        startup = startup_cost(args.repeat)
        figures.part("startup_ms", startup * 1000)
        print(f"shoal CLI start-up (`shoal --version`, median): {startup * 1000:.0f} ms")
    if "shoal-cli" in skipped:
        print("note: shoal-dir builds its jobs with Job.command_job(['true', str(i)]), the "
              "jobs the CLI would build; the CLI variant waits for shoal.templates")


if __name__ == "__main__":
    main()
