"""Python-call executors side by side: shoal.Executor vs ProcessPoolExecutor, loky, dask, Ray.

(1) N no-op calls (default 20,000; a module-level function that returns its argument)
    on W workers (default 2), timed from the first submit to the last result;
(2) M calls that sleep S seconds (default 200 x 50 ms): efficiency = ideal / wall,
    ideal = M * S / W.

Every measurement runs in a fresh subprocess of this script (`--child`), which starts
the executor, warms it up until every worker has answered a call (that is the start-up
time, reported separately), times the workload and shuts the executor down. Variants
are interleaved within each repetition (the order rotates) and medians are reported,
with ratios against ProcessPoolExecutor.submit, Ray and dask (client.map). Variants:

    shoal-mem      shoal.Executor(workers=W) (in-process queue): submit one by one + wait
    shoal-mem-map  the same executor, map(fn, items, chunksize=200)
    shoal-dir      shoal.Executor(TMP/queue, workers=W) (folder queue): submit + wait
    ppe-submit     ProcessPoolExecutor(W): submit one by one + wait
    ppe-map        ProcessPoolExecutor(W).map(fn, items, chunksize=200)
    loky           loky.get_reusable_executor(max_workers=W): submit one by one + wait
    dask-map       Client(LocalCluster(W workers, 1 thread, processes)): map + gather
    dask-submit    the same client: submit one by one + gather (only with --only: slow)
    ray            ray.init(num_cpus=W): ray.get([f.remote(x) for x in items])

A peer that is not installed or fails to start is reported with the reason and skipped.
Run: python bench/bench_calls.py [--calls 20000] [--workers 2] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonout import Figures, add_option, paired_ratio, variants

CALLS = ("shoal-mem", "shoal-mem-map", "shoal-dir", "ppe-submit", "ppe-map", "loky",
         "dask-map", "dask-submit", "ray")
DEFAULT_CALLS = tuple(name for name in CALLS if name != "dask-submit")  # ~1 min a run here
SLEEPS = ("shoal-mem", "shoal-dir", "ppe-submit", "loky", "dask-map", "ray")
CHUNKSIZE = 200
BASE, RAY, DASK = "ppe-submit", "ray", "dask-map"
TARGET_VS_PPE = 0.5  # shoal-mem >= 0.5 x ProcessPoolExecutor.submit
TARGET_VS_RAY = 2.0  # shoal-mem >= 2 x Ray
TARGET_DIR_RATE = 1360.0  # shoal-dir >= 2 x jug's file store (~680 calls/s)
TARGET_EFFICIENCY = 0.97  # on the sleep workload
MARK = "BENCH-RESULT "


def marked_outcome(out: str, err: str, returncode: int | None) -> dict:
    """The last MARK line a measuring child printed, or why there is none."""
    lines = [line[len(MARK):] for line in out.splitlines() if line.startswith(MARK)]
    if lines:
        return json.loads(lines[-1])
    tail = " | ".join(err.strip().splitlines()[-3:]) or f"exit status {returncode}"
    return {"skip": f"failed (exit {returncode}): {tail[-400:]}"}
SKIP_EXIT = 3
PIP = {"loky": "loky", "dask-map": "'dask[distributed]'", "dask-submit": "'dask[distributed]'",
       "ray": "ray"}


# -- the workloads (module level: every peer ships them to its workers) ----------------------


def noop(x: Any) -> Any:
    return x


def nap(item: tuple[int, float]) -> int:
    time.sleep(item[1])
    return item[0]


def pid(_: Any) -> int:
    return os.getpid()


# -- the variants (run inside the child process) ---------------------------------------------


class Skip(Exception):
    """This variant cannot run here (peer not installed)."""


def _wait_all(fs: list[cf.Future]) -> list[Any]:
    cf.wait(fs)
    return [f.result() for f in fs]


class Variant:
    """start() the executor; submit_all() for the warm-up; call_all() is what is timed."""

    def __init__(self, name: str, workers: int, tmp: Path) -> None:
        self.name, self.workers, self.tmp = name, workers, tmp

    def start(self) -> None:
        raise NotImplementedError

    def submit_all(self, fn: Any, items: list) -> list:
        return _wait_all([self.ex.submit(fn, x) for x in items])

    def call_all(self, fn: Any, items: list) -> list:
        return self.submit_all(fn, items)

    def stop(self) -> None:
        self.ex.shutdown(wait=True)


class Shoal(Variant):
    def start(self) -> None:
        import shoal

        queue = self.tmp / "queue" if self.name == "shoal-dir" else None
        self.ex = shoal.Executor(queue, workers=self.workers)

    def call_all(self, fn: Any, items: list) -> list:
        if self.name.endswith("-map"):
            return list(self.ex.map(fn, items, chunksize=CHUNKSIZE))
        return self.submit_all(fn, items)

    def stop(self) -> None:
        self.ex.shutdown(wait=True)
        # memory:// logs go to a mkdtemp
        shutil.rmtree(self.ex.queue.files.local_dir(), ignore_errors=True)


class ProcessPool(Variant):
    def start(self) -> None:
        self.ex = cf.ProcessPoolExecutor(self.workers)

    def call_all(self, fn: Any, items: list) -> list:
        if self.name.endswith("-map"):
            return list(self.ex.map(fn, items, chunksize=CHUNKSIZE))
        return self.submit_all(fn, items)


class Loky(Variant):
    def start(self) -> None:
        try:
            from loky import get_reusable_executor
        except ImportError as exc:
            raise Skip(f"loky not installed ({exc}): pip install loky") from exc
        self.ex = get_reusable_executor(max_workers=self.workers)


class Dask(Variant):
    def start(self) -> None:
        import logging

        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as exc:
            raise Skip(f"dask.distributed not installed ({exc}): "
                       "pip install 'dask[distributed]'") from exc
        self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                    processes=True, dashboard_address=None,
                                    local_directory=str(self.tmp), silence_logs=logging.ERROR)
        self.client = Client(self.cluster)

    def submit_all(self, fn: Any, items: list) -> list:
        return self.client.gather([self.client.submit(fn, x, pure=False) for x in items])

    def call_all(self, fn: Any, items: list) -> list:
        if self.name.endswith("-map"):
            return self.client.gather(self.client.map(fn, items, pure=False))
        return self.submit_all(fn, items)

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()


class Ray(Variant):
    def start(self) -> None:
        try:
            import ray
        except ImportError as exc:
            raise Skip(f"ray not installed ({exc}): pip install ray") from exc
        self.ray = ray
        ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(self.tmp / "ray"))
        self.remote: dict[Any, Any] = {}

    def submit_all(self, fn: Any, items: list) -> list:
        if fn not in self.remote:
            self.remote[fn] = self.ray.remote(fn)
        f = self.remote[fn]
        return self.ray.get([f.remote(x) for x in items])

    def stop(self) -> None:
        self.ray.shutdown()


KINDS: dict[str, type[Variant]] = {
    "shoal-mem": Shoal, "shoal-mem-map": Shoal, "shoal-dir": Shoal,
    "ppe-submit": ProcessPool, "ppe-map": ProcessPool, "loky": Loky,
    "dask-map": Dask, "dask-submit": Dask, "ray": Ray,
}


def start_or_skip(variant: Variant) -> None:
    """Start a measured variant in its child process; one it cannot run here (a missing
    peer) is reported through the result line and the child exits with SKIP_EXIT."""
    try:
        variant.start()
    except Skip as exc:
        print(f"{MARK}{json.dumps({'skip': str(exc)})}", flush=True)
        sys.exit(SKIP_EXIT)


def warm_up(variant: Variant, workers: int, limit_s: float = 10.0) -> int:
    """Run pid() calls until every worker has answered one (or limit_s): how many did."""
    seen: set[int] = set()
    deadline = time.monotonic() + limit_s
    while len(seen) < workers and time.monotonic() < deadline:
        seen.update(variant.submit_all(pid, list(range(4 * workers))))
    return len(seen)


def child(name: str, workload: str, n: int, workers: int, sleep_s: float, tmp: Path) -> None:
    """Start, warm up, time the workload, stop; print one JSON line for the parent."""
    if workload == "noop":
        fn, items, expected = noop, list(range(n)), list(range(n))
    else:
        fn, items, expected = nap, [(i, sleep_s) for i in range(n)], list(range(n))
    variant = KINDS[name](name, workers, tmp)
    t0 = time.perf_counter()
    start_or_skip(variant)
    seen = warm_up(variant, workers)
    t1 = time.perf_counter()
    results = variant.call_all(fn, items)
    t2 = time.perf_counter()
    variant.stop()
    t3 = time.perf_counter()
    if list(results) != expected:
        raise RuntimeError(f"{name}: wrong results ({len(results)} of {n})")
    print(MARK + json.dumps({"startup": t1 - t0, "wall": t2 - t1, "shutdown": t3 - t2,
                             "seen": seen}), flush=True)


# -- the parent: interleaved repetitions, each run in a fresh subprocess ---------------------


def run_child(name: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh interpreter; {'skip': why} when it cannot run here."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-calls-{name}-", dir=args.tmp))
    argv = [sys.executable, os.path.abspath(__file__), "--child", name, "--workload", workload,
            "--calls", str(args.calls if workload == "noop" else args.sleep_calls),
            "--workers", str(args.workers), "--sleep-s", str(args.sleep_s), "--tmp", str(tmp)]
    env = {**os.environ, "TMPDIR": str(tmp)}  # the peers' scratch files go there too
    proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        tail = " | ".join(err.strip().splitlines()[-2:])[-300:]
        return {"skip": f"did not finish within {args.timeout:g} s; stderr: {tail}"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [line[len(MARK):] for line in out.splitlines() if line.startswith(MARK)]
    if lines:
        return json.loads(lines[-1])
    tail = " | ".join(err.strip().splitlines()[-3:]) or f"exit status {proc.returncode}"
    missing = "ModuleNotFoundError" in err or "ImportError" in err
    hint = f" (pip install {PIP[name]})" if name in PIP and missing else ""
    return {"skip": f"failed (exit {proc.returncode}): {tail[-400:]}{hint}"}


def measure(names: list[str], workload: str, repeat: int, args: argparse.Namespace, *,
            n: int, run_child: Callable[..., dict[str, Any]] = run_child,
            ) -> tuple[dict, dict, dict]:
    """Each variant `repeat` times, the order rotated every round (load drifts), each run
    in a fresh child process; bench_tcp.py passes its own `run_child`."""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    walls: dict[str, list[float]] = {name: [] for name in names}
    skipped: dict[str, str] = {}
    for rep in range(repeat):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            if name in skipped:
                continue
            run = run_child(name, workload, args)
            if "skip" in run:
                skipped[name] = run["skip"]
                print(f"  {name}: skipped: {run['skip']}", file=sys.stderr, flush=True)
                continue
            runs[name].append(run)
            walls[name].append(run["wall"])
            print(f"  {workload} rep {rep + 1}/{repeat} {name:<13} {run['wall']:7.3f} s "
                  f"{run.get('n', n) / run['wall']:9.1f} calls/s  "
                  f"start-up {run['startup']:6.3f} s  "
                  f"workers seen {run['seen']}", file=sys.stderr, flush=True)
    return runs, walls, skipped


def paired(walls: dict, name: str, peer: str) -> str:
    """Median over repetitions of the per-repetition speed ratio name/peer (load drifts)."""
    got = paired_ratio(walls, name, peer)
    return "-" if got is None else f"{got:.2f}"


def ratio(rate: dict, name: str, peer: str) -> str:
    return f"{rate[name] / rate[peer]:.2f}" if peer in rate else "-"


def med(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def report_calls(names: list[str], n: int, runs: dict, walls: dict, skipped: dict) -> None:
    rate = {name: n / statistics.median(walls[name]) for name in names if walls[name]}
    print(f"\n(1) {n} no-op calls, median of {max(map(len, walls.values()), default=0)} runs; "
          f"x {BASE} / x {RAY} / x {DASK}: ratio of medians (paired: median of per-run ratios)")
    print(f"{'variant':<13} {'median s':>8} {'calls/s':>8} {'start s':>7} {'stop s':>6} "
          f"{'x ppe':>7} {'(pair)':>7} {'x ray':>7} {'(pair)':>7} {'x dask':>7} {'(pair)':>7}")
    for name in names:
        if name in skipped and not walls[name]:
            print(f"{name:<13} skipped: {skipped[name]}")
            continue
        print(f"{name:<13} {statistics.median(walls[name]):8.3f} {rate[name]:8.0f} "
              f"{med(runs[name], 'startup'):7.2f} {med(runs[name], 'shutdown'):6.2f} "
              f"{ratio(rate, name, BASE):>7} {paired(walls, name, BASE):>7} "
              f"{ratio(rate, name, RAY):>7} {paired(walls, name, RAY):>7} "
              f"{ratio(rate, name, DASK):>7} {paired(walls, name, DASK):>7}")
    if "shoal-mem" in rate:
        for peer, target in ((BASE, TARGET_VS_PPE), (RAY, TARGET_VS_RAY)):
            if peer in rate:
                got = rate["shoal-mem"] / rate[peer]
                ok = "meets" if got >= target else "misses"
                print(f"shoal-mem: {got:.2f}x {peer}: {ok} the target of >= {target}x")
            else:
                print(f"shoal-mem: no {peer} figure, target >= {target}x {peer} not checked")
    if "shoal-dir" in rate:
        ok = "meets" if rate["shoal-dir"] >= TARGET_DIR_RATE else "misses"
        print(f"shoal-dir: {rate['shoal-dir']:.0f} calls/s: {ok} the target of >= "
              f"{TARGET_DIR_RATE:.0f} calls/s (2x jug's file store, ~680 calls/s)")


def report_sleeps(names: list[str], n: int, sleep_s: float, workers: int, runs: dict,
                  walls: dict, skipped: dict) -> None:
    ideal = n * sleep_s / workers
    print(f"\n(2) {n} calls sleeping {sleep_s * 1000:g} ms on {workers} workers, ideal "
          f"{ideal:.2f} s, median of {max(map(len, walls.values()), default=0)} runs")
    print(f"{'variant':<13} {'median s':>8} {'efficiency':>10} {'worst':>6} {'start s':>7}")
    for name in names:
        if name in skipped and not walls[name]:
            print(f"{name:<13} skipped: {skipped[name]}")
            continue
        wall = statistics.median(walls[name])
        print(f"{name:<13} {wall:8.3f} {ideal / wall:10.1%} {ideal / max(walls[name]):6.1%} "
              f"{med(runs[name], 'startup'):7.2f}")
    for name in ("shoal-mem", "shoal-dir"):
        if walls.get(name):
            got = ideal / statistics.median(walls[name])
            ok = "meets" if got >= TARGET_EFFICIENCY else "misses"
            print(f"{name}: efficiency {got:.1%}: {ok} the target of >= {TARGET_EFFICIENCY:.0%}")


def source_state() -> str:
    """Which shoal is measured: its folder, and the git commit (+ uncommitted files)."""
    import shoal

    where = Path(shoal.__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=where,
                               text=True, capture_output=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"shoal {shoal.__version__} from {where}"
    return (f"shoal {shoal.__version__} from {where}, git {head}"
            + (f" + {len(dirty)} uncommitted file(s)" if dirty else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="no-op calls (part 1)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of part 1")
    parser.add_argument("--sleep-calls", type=int, default=200, help="sleeping calls (part 2)")
    parser.add_argument("--sleep-s", type=float, default=0.05)
    parser.add_argument("--sleep-repeat", type=int, default=2, help="repetitions of part 2")
    parser.add_argument("--part", choices=("1", "2", "both"), default="both")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of {','.join(CALLS)} "
                             "(default: all but dask-submit)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds one measurement may take before it is killed")
    parser.add_argument("--tmp", help="parent of the fresh temporary folders (default: $TMPDIR)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=("noop", "sleep"), help=argparse.SUPPRESS)
    add_option(parser)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workload, args.calls, args.workers, args.sleep_s, Path(args.tmp))
        return
    only = [name for name in args.only.split(",") if name]
    unknown = set(only) - set(CALLS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, workers={args.workers}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(source_state())
    figures = Figures(args.json, __file__)
    figures.part("shoal", source_state())
    started = time.perf_counter()
    if args.part in ("1", "both"):
        names = [name for name in CALLS if name in only] if only else list(DEFAULT_CALLS)
        runs, walls, skipped = measure(names, "noop", args.repeat, args, n=args.calls)
        report_calls(names, args.calls, runs, walls, skipped)
        figures.part("calls", {"workers": args.workers, "repeat": args.repeat,
                               **variants(walls, skipped, n=args.calls, runs=runs,
                                          peers=(BASE, "loky", RAY, DASK))})
    if args.part in ("2", "both"):
        names = [name for name in SLEEPS if name in only] if only else list(SLEEPS)
        runs, walls, skipped = measure(names, "sleep", args.sleep_repeat, args,
                                       n=args.sleep_calls)
        report_sleeps(names, args.sleep_calls, args.sleep_s, args.workers, runs, walls, skipped)
        ideal = args.sleep_calls * args.sleep_s / args.workers
        figures.part("sleeps", {"workers": args.workers, "repeat": args.sleep_repeat,
                                "sleep_s": args.sleep_s,
                                **variants(walls, skipped, n=args.sleep_calls, runs=runs,
                                           ideal_s=ideal)})
    print(f"load at the end {os.getloadavg()[0]:.2f}; whole run "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
