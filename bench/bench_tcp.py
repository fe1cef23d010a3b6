"""The network queue (`shoal serve` + `shoal work`) side by side with dask.distributed, Ray
and shoal's local queues.

(a) N tiny calls (default 5000; inc(x) = x + 1) on 2 workers, timed from the first submit
    to the last result. shoal-tcp: a coordinator process (`python -m shoal serve
    sqlite://TMP/queue.sqlite --status TMP/status`), 2 `shoal work TMP/status --slots 1`
    processes, and `shoal.Executor(TMP/status, workers=0)` submitting one call at a time.
(b) M calls sleeping 50 ms (default 200) on 2 workers: efficiency = ideal / wall
    (shoal-tcp, shoal-mem, shoal-sqlite, dask-map, ray).
(c) C concurrent clients (default 10 processes x 100 threads, each its own CoordinatorQueue) each
    submit one tiny call and wait for its result (`watch`); 2 worker processes.
    Reported: submit-to-result latency p50/p99 and the coordinator's RSS before and at peak.
(d) J jobs (default 1,000,000 `true I` command jobs) submitted in batches of 10,000 to
    sqlite:// directly and through tcp:// (CoordinatorQueue.submit): time and bytes per job.

Every measurement of (a) and (b) runs in a fresh subprocess of this script (`--child`),
which starts the executor (and, for tcp, the coordinator and workers), warms it up until
every worker has answered a call, times the workload and stops everything it started.
Variants are interleaved (the order rotates each repetition); medians are reported, with
ratios against dask (client.map) and Ray. Every process is stopped by its PID.

    shoal-tcp      coordinator + 2 worker processes x 1 slot; Executor(STATUS, workers=0)
    shoal-tcp-1x2  the same with 1 worker process x 2 slots
    shoal-tcp-map  shoal-tcp with map(fn, items, chunksize=100)
    shoal-mem      shoal.Executor(workers=2) (in-process queue, local slots)
    shoal-sqlite   shoal.Executor("sqlite://TMP/q.sqlite", workers=2) (local slots)
    dask-map       Client(LocalCluster(2 workers x 1 thread, processes)): map + gather
    ray            ray.init(num_cpus=2): ray.get([f.remote(x) for x in items])

A peer that is not installed or fails to start is reported with the reason and skipped.
Run: python bench/bench_tcp.py [--quick] [--part a,b,c,d] [--only shoal-tcp,ray] [--json PATH]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
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
    Dask,
    Ray,
    Variant,
    marked_outcome,
    measure,
    med,
    paired,
    ratio,
    source_state,
    start_or_skip,
)
from jsonout import Figures, add_option, variants

CALLS = ("shoal-tcp", "shoal-tcp-1x2", "shoal-tcp-map", "shoal-mem", "shoal-sqlite",
         "dask-map", "ray")
SLEEPS = ("shoal-tcp", "shoal-mem", "shoal-sqlite", "dask-map", "ray")
CHUNKSIZE = 100
RAY, DASK = "ray", "dask-map"
TARGET_VS_RAY = 1.5  # shoal-tcp >= 1.5 x Ray
TARGET_VS_DASK = 5.0  # shoal-tcp >= 5 x dask.distributed
TARGET_MILLION_S = 15.0  # 10^6 jobs submitted in < 15 s
TARGET_BYTES = 1024  # < 1 KiB per job on disk
START_S = 30.0  # a coordinator or worker that is not up by then: give up
STOP_S = 10.0  # SIGTERM, then this long, then SIGKILL


# -- the workloads (module level of __main__: every peer ships them by value) ---------------


def inc(x: int) -> int:
    return x + 1


def nap(item: tuple[int, float]) -> int:
    time.sleep(item[1])
    return item[0]


def pid(_: Any) -> int:
    return os.getpid()


# -- processes we start, stopped by PID ---------------------------------------------------------


def descendants(root: int) -> list[int]:
    """Every live descendant of `root` (children of all its threads, recursively)."""
    found, todo = [], [root]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    kids = [int(x) for x in handle.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            found += kids
            todo += kids
    return found


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each (a graceful stop), SIGKILL what is left after STOP_S; then the
    processes they started (callhost interpreters) that are still there."""
    kids = [kid for proc in procs if proc.poll() is None for kid in descendants(proc.pid)]
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_S
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for kid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(kid, signal.SIGKILL)


def cpu_s(pids: list[int]) -> float:
    """user + system CPU seconds of these processes so far (0 for those gone)."""
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def memory_kib(p: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    found = {}
    with open(f"/proc/{p}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


class Cluster:
    """A coordinator process serving TMP/queue.sqlite, and `shoal work` processes."""

    def __init__(self, tmp: Path, workers: int = 0, slots: int = 1) -> None:
        self.tmp, self.status = tmp, tmp / "status"
        self.serve: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._logs: list[Any] = []
        try:
            self.serve = self._spawn("serve.log", "serve", f"sqlite://{tmp / 'queue.sqlite'}",
                                     "--status", str(self.status))
            deadline = time.monotonic() + START_S
            while not (self.status / "status.json").exists():
                if self.serve.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"coordinator did not start: {self.log('serve.log')}")
                time.sleep(0.02)
            self.workers = [self._spawn(f"worker{i}.log", "work", str(self.status), "--slots",
                                        str(slots)) for i in range(workers)]
        except BaseException:
            self.stop()
            raise

    def _spawn(self, log: str, *args: str) -> subprocess.Popen:
        handle = open(self.tmp / log, "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(handle)
        return subprocess.Popen([sys.executable, "-m", "shoal", *args], cwd=self.tmp,
                                stdin=subprocess.DEVNULL, stdout=handle, stderr=handle)

    def log(self, name: str) -> str:
        text = (self.tmp / name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-3:])[-400:]

    def worker_pids(self) -> list[int]:
        return [p for w in self.workers for p in (w.pid, *descendants(w.pid))]

    def stop(self) -> None:
        stop_processes(self.workers)  # workers first: they unregister at the coordinator
        if self.serve is not None:
            stop_processes([self.serve])
        for handle in self._logs:
            handle.close()


# -- the variants of (a) and (b) (run inside a child process) ----------------------------------


class ShoalTcp(Variant):
    def start(self) -> None:
        import shoal

        procs, slots = (1, 2) if self.name.endswith("-1x2") else (self.workers, 1)
        self.cluster = Cluster(self.tmp, procs, slots)
        try:
            self.ex = shoal.Executor(str(self.cluster.status), workers=0)
        except BaseException:
            self.cluster.stop()
            raise

    def call_all(self, fn: Any, items: list) -> list:
        if self.name.endswith("-map"):
            return list(self.ex.map(fn, items, chunksize=CHUNKSIZE))
        return self.submit_all(fn, items)

    def cpu(self) -> dict[str, float]:
        return {"coordinator": cpu_s([self.cluster.serve.pid]),
                "workers": cpu_s(self.cluster.worker_pids())}

    def stop(self) -> None:
        try:
            self.ex.shutdown(wait=True)
            self.ex.queue.close()
        finally:
            self.cluster.stop()


class ShoalLocal(Variant):
    def start(self) -> None:
        import shoal

        queue = f"sqlite://{self.tmp / 'q.sqlite'}" if self.name == "shoal-sqlite" else None
        self.ex = shoal.Executor(queue, workers=self.workers)

    def stop(self) -> None:
        self.ex.shutdown(wait=True)
        if self.name == "shoal-mem":
            shutil.rmtree(self.ex.queue.files.local_dir(), ignore_errors=True)  # a mkdtemp


KINDS: dict[str, type[Variant]] = {
    "shoal-tcp": ShoalTcp, "shoal-tcp-1x2": ShoalTcp, "shoal-tcp-map": ShoalTcp,
    "shoal-mem": ShoalLocal, "shoal-sqlite": ShoalLocal, "dask-map": Dask, "ray": Ray,
}


def warm_up(variant: Variant, workers: int, limit_s: float = 20.0) -> int:
    """Run pid() calls until every worker has answered one (or limit_s): how many did."""
    seen: set[int] = set()
    deadline = time.monotonic() + limit_s
    while len(seen) < workers and time.monotonic() < deadline:
        seen.update(variant.submit_all(pid, list(range(4 * workers))))
    return len(seen)


def child(name: str, workload: str, n: int, workers: int, sleep_s: float, tmp: Path) -> None:
    """Start, warm up, time the workload, stop; print one JSON line for the parent."""
    if workload == "inc":
        fn, items, expected = inc, list(range(n)), [i + 1 for i in range(n)]
    else:
        fn, items, expected = nap, [(i, sleep_s) for i in range(n)], list(range(n))
    variant = KINDS[name](name, workers, tmp)
    t0 = time.perf_counter()
    start_or_skip(variant)
    try:
        seen = warm_up(variant, workers)
        cpu = getattr(variant, "cpu", dict)
        before, mine = cpu(), time.process_time()
        t1 = time.perf_counter()
        results = variant.call_all(fn, items)
        t2 = time.perf_counter()
        after, mine = cpu(), time.process_time() - mine
    finally:
        variant.stop()
    t3 = time.perf_counter()
    if list(results) != expected:
        raise RuntimeError(f"{name}: wrong results ({len(results)} of {n})")
    spent = {key: after[key] - before[key] for key in before}
    if spent:
        spent["client"] = mine
    print(MARK + json.dumps({"startup": t1 - t0, "wall": t2 - t1, "shutdown": t3 - t2,
                             "seen": seen, "cpu": spent}), flush=True)


# -- the parent: interleaved repetitions, each run in a fresh subprocess ---------------------


def run_child(name: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh interpreter; {'skip': why} when it cannot run here."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-tcp-{name}-", dir=args.tmp))
    argv = [sys.executable, os.path.abspath(__file__), "--child", name, "--workload", workload,
            "--calls", str(args.calls if workload == "inc" else args.sleep_calls),
            "--workers", str(args.workers), "--sleep-s", str(args.sleep_s), "--tmp", str(tmp)]
    env = {**os.environ, "TMPDIR": str(tmp)}  # the peers' scratch files go there too
    proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its group: the child and what it started
        _, err = proc.communicate()
        tail = " | ".join(err.strip().splitlines()[-2:])[-300:]
        return {"skip": f"did not finish within {args.timeout:g} s; stderr: {tail}"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return marked_outcome(out, err, proc.returncode)


def verdict(got: float, target: float, what: str, *, most: bool = False) -> str:
    ok = got <= target if most else got >= target
    return f"{'meets' if ok else 'misses'} the target of {'<' if most else '>='} {what}"


def report_calls(names: list[str], n: int, runs: dict, walls: dict, skipped: dict) -> None:
    rate = {name: n / statistics.median(walls[name]) for name in names if walls[name]}
    print(f"\n(a) {n} tiny calls (inc) on 2 workers, median of "
          f"{max(map(len, walls.values()), default=0)} runs; x {RAY} / x {DASK}: ratio of "
          f"medians (pair: median of per-run ratios)")
    print(f"{'variant':<13} {'median s':>8} {'calls/s':>8} {'start s':>7} {'stop s':>6} "
          f"{'x ray':>6} {'(pair)':>6} {'x dask':>6} {'(pair)':>6}  CPU us/call: coord "
          f"workers client")
    for name in names:
        if name in skipped and not walls[name]:
            print(f"{name:<13} skipped: {skipped[name]}")
            continue
        cpu = runs[name][-1].get("cpu") or {}
        cpus = "  ".join(f"{cpu[k] / n * 1e6:5.0f}" for k in ("coordinator", "workers", "client")
                         if k in cpu)
        print(f"{name:<13} {statistics.median(walls[name]):8.3f} {rate[name]:8.0f} "
              f"{med(runs[name], 'startup'):7.2f} {med(runs[name], 'shutdown'):6.2f} "
              f"{ratio(rate, name, RAY):>6} {paired(walls, name, RAY):>6} "
              f"{ratio(rate, name, DASK):>6} {paired(walls, name, DASK):>6}  {cpus}")
    best = max((x for x in ("shoal-tcp", "shoal-tcp-1x2") if x in rate), key=rate.get,
               default=None)
    if best is not None:
        print(f"fastest worker layout: {best} ({rate[best]:.0f} calls/s)")
    for name in (x for x in ("shoal-tcp", "shoal-tcp-1x2") if x in rate):
        for peer, target in ((RAY, TARGET_VS_RAY), (DASK, TARGET_VS_DASK)):
            if peer in rate:
                got = rate[name] / rate[peer]
                print(f"{name}: {got:.2f}x {peer}: {verdict(got, target, f'{target}x')}")
            else:
                print(f"{name}: no {peer} figure, target >= {target}x {peer} not checked")


def report_sleeps(names: list[str], n: int, sleep_s: float, workers: int, runs: dict,
                  walls: dict, skipped: dict) -> None:
    ideal = n * sleep_s / workers
    print(f"\n(b) {n} calls sleeping {sleep_s * 1000:g} ms on {workers} workers, ideal "
          f"{ideal:.2f} s, median of {max(map(len, walls.values()), default=0)} runs")
    print(f"{'variant':<13} {'median s':>8} {'efficiency':>10} {'worst':>6} {'start s':>7}")
    for name in names:
        if name in skipped and not walls[name]:
            print(f"{name:<13} skipped: {skipped[name]}")
            continue
        wall = statistics.median(walls[name])
        print(f"{name:<13} {wall:8.3f} {ideal / wall:10.1%} {ideal / max(walls[name]):6.1%} "
              f"{med(runs[name], 'startup'):7.2f}")


# -- (c) many concurrent clients ----------------------------------------------------------------


def client_process(status: str, threads: int) -> None:
    """`threads` CoordinatorQueue clients: connect, say READY, wait for GO on stdin, then each
    submits one call and waits for its result; print the latencies as one JSON line."""
    from shoal.calls import call_job, outcome
    from shoal.queue.remote import CoordinatorQueue

    queues: list[Any] = [None] * threads
    connect: list[float] = [0.0] * threads
    latency: list[float] = [0.0] * threads
    errors: list[str] = []

    def open_one(i: int) -> None:
        t0 = time.perf_counter()
        queues[i] = CoordinatorQueue(status)
        connect[i] = time.perf_counter() - t0

    def one(i: int, go: threading.Event) -> None:
        queue = queues[i]
        job = call_job(inc, (i,))
        go.wait()
        t0 = time.perf_counter()
        queue.submit([job])
        results: list = []
        while not results and time.perf_counter() - t0 < 300:
            results = queue.watch([job.id], 60.0)
        latency[i] = time.perf_counter() - t0
        if not results or outcome(results[0]) != i + 1:
            errors.append(f"client {i}: {results!r:.200}")

    with cf.ThreadPoolExecutor(32) as pool:  # connecting: a few at a time, not all at once
        list(pool.map(open_one, range(threads)))
    go = threading.Event()
    workers = [threading.Thread(target=one, args=(i, go)) for i in range(threads)]
    for thread in workers:
        thread.start()
    print("READY", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    go.set()
    for thread in workers:
        thread.join()
    cpu = time.process_time() - cpu
    for queue in queues:
        queue.close()
    print(MARK + json.dumps({"latency": latency, "connect": connect, "errors": errors[:5],
                             "cpu": cpu}), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def part_clients(args: argparse.Namespace) -> dict[str, Any]:
    procs_n, threads_n = args.client_procs, args.client_threads
    tmp = Path(tempfile.mkdtemp(prefix="bench-tcp-clients-", dir=args.tmp))
    clients: list[subprocess.Popen] = []
    cluster = None
    try:
        cluster = Cluster(tmp, args.workers, 1)
        coordinator = cluster.serve.pid
        status = str(cluster.status)
        # workers connected and their interpreters started: one round of calls through them
        warm = subprocess.run([sys.executable, os.path.abspath(__file__), "--warm", status,
                               "--workers", str(args.workers)], capture_output=True, text=True,
                              timeout=120, cwd=tmp)
        if warm.returncode != 0:
            raise RuntimeError(f"warm-up failed: {warm.stderr[-400:]}")
        time.sleep(0.5)
        before = memory_kib(coordinator)
        started = time.perf_counter()
        for _ in range(procs_n):
            clients.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--clients", status,
                 "--client-threads", str(threads_n)], cwd=tmp, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for proc in clients:
            line = proc.stdout.readline()
            if line.strip() != "READY":
                raise RuntimeError(f"a client process failed: {line} {proc.stderr.read()[-400:]}")
        connected = time.perf_counter() - started
        connected_mem = memory_kib(coordinator)
        peak_rss = connected_mem["VmRSS"]
        cpu0, workers0 = cpu_s([coordinator]), cpu_s(cluster.worker_pids())
        t0 = time.perf_counter()
        for proc in clients:
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        outputs: list[tuple[str, str]] = []
        done = threading.Event()

        def collect() -> None:
            outputs.extend(proc.communicate(timeout=args.timeout) for proc in clients)
            done.set()

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        while not done.wait(0.02):  # sample the coordinator's RSS while the clients run
            peak_rss = max(peak_rss, memory_kib(coordinator)["VmRSS"])
        wall = time.perf_counter() - t0
        cpu = cpu_s([coordinator]) - cpu0
        workers_cpu = cpu_s(cluster.worker_pids()) - workers0
        after = memory_kib(coordinator)
    finally:
        stop_processes(clients)
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return report_clients(args, outputs, {"connected": connected, "wall": wall, "cpu": cpu,
                                          "workers_cpu": workers_cpu,
                                          "before": before, "connected_mem": connected_mem,
                                          "peak_rss": peak_rss, "after": after})


def report_clients(args: argparse.Namespace, outputs: list[tuple[str, str]],
                   seen: dict[str, Any]) -> dict[str, Any]:
    procs_n, threads_n = args.client_procs, args.client_threads
    total = procs_n * threads_n
    latency, connect, errors, clients_cpu = [], [], [], 0.0
    for out, err in outputs:
        lines = [line[len(MARK):] for line in out.splitlines() if line.startswith(MARK)]
        if not lines:
            errors.append(f"a client process printed nothing: {err[-300:]}")
            continue
        record = json.loads(lines[-1])
        latency += record["latency"]
        connect += record["connect"]
        errors += record["errors"]
        clients_cpu += record["cpu"]
    before, after, wall = seen["before"], seen["after"], seen["wall"]
    print(f"\n(c) {total} concurrent clients ({procs_n} processes x {threads_n} CoordinatorQueue "
          f"threads), one tiny call each, {args.workers} worker processes x 1 slot")
    print(f"  connect ({total} clients, CurveZMQ handshake + hello): {seen['connected']:.2f} s "
          f"in all; per client p50 {percentile(connect, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(connect, 0.99) * 1000:.0f} ms")
    if latency:
        print(f"  submit -> result: p50 {percentile(latency, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(latency, 0.99) * 1000:.0f} ms, max {max(latency) * 1000:.0f} ms; "
              f"all {len(latency)} done in {wall:.2f} s ({len(latency) / wall:.0f} jobs/s); "
              f"CPU: coordinator {seen['cpu']:.2f} s, workers {seen['workers_cpu']:.2f} s, "
              f"clients {clients_cpu:.2f} s")
    print(f"  coordinator RSS: {before['VmRSS'] / 1024:.1f} MiB before the clients, "
          f"{seen['connected_mem']['VmRSS'] / 1024:.1f} MiB with {total} connected, "
          f"peak {max(seen['peak_rss'], after['VmHWM']) / 1024:.1f} MiB (VmHWM), "
          f"{after['VmRSS'] / 1024:.1f} MiB after")
    if errors:
        print(f"  ERRORS ({len(errors)}): {'; '.join(errors[:3])}")
    figures: dict[str, Any] = {
        "clients": total, "processes": procs_n, "threads": threads_n, "workers": args.workers,
        "done": len(latency), "errors": errors[:5], "error_count": len(errors),
        "connect_s": seen["connected"], "wall_s": wall,
        "coordinator_cpu_s": seen["cpu"], "workers_cpu_s": seen["workers_cpu"],
        "clients_cpu_s": clients_cpu,
        "rss_mib": {"before": before["VmRSS"] / 1024,
                    "connected": seen["connected_mem"]["VmRSS"] / 1024,
                    "peak": max(seen["peak_rss"], after["VmHWM"]) / 1024,
                    "after": after["VmRSS"] / 1024}}
    if connect:
        figures["connect_ms"] = {"p50": percentile(connect, 0.5) * 1000,
                                 "p99": percentile(connect, 0.99) * 1000}
    if latency:
        figures["latency_ms"] = {"p50": percentile(latency, 0.5) * 1000,
                                 "p99": percentile(latency, 0.99) * 1000,
                                 "max": max(latency) * 1000}
    return figures


def warm_workers(status: str, workers: int) -> None:
    """Until every worker's interpreter has answered a call (run as a subprocess)."""
    import shoal

    ex = shoal.Executor(status, workers=0)
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while len(seen) < workers and time.monotonic() < deadline:
        seen.update(ex.map(pid, range(4 * workers)))
    ex.shutdown()
    ex.queue.close()
    if len(seen) < workers:
        sys.exit(f"only {len(seen)} of {workers} workers answered")


# -- (d) a million jobs -----------------------------------------------------------------------


def fill(queue: Any, n: int, batch: int, label: str) -> tuple[float, float]:
    """Submit n `true I` command jobs in batches: (seconds creating, seconds submitting)."""
    from shoal.job import Job

    create = submit = 0.0
    for first in range(0, n, batch):
        t0 = time.perf_counter()
        jobs = [Job.command_job(["true", str(i)]) for i in range(first, min(first + batch, n))]
        t1 = time.perf_counter()
        new = queue.submit(jobs)
        t2 = time.perf_counter()
        create, submit = create + t1 - t0, submit + t2 - t1
        if len(new) != len(jobs):
            raise RuntimeError(f"{label}: {len(new)} of {len(jobs)} jobs were new")
    return create, submit


def db_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("queue.sqlite*") if p.is_file())


def part_million(args: argparse.Namespace, figures: Figures) -> None:
    from shoal.queue.remote import CoordinatorQueue
    from shoal.queue.sqlite import SqliteQueue

    n, batch = args.jobs, args.batch
    print(f"\n(d) {n:,} `true I` command jobs submitted in batches of {batch:,}; create = "
          f"Job.command_job (in the caller), submit = queue.submit; bytes/job: the database "
          f"file(s) once closed")
    print(f"{'path':<7} {'create s':>8} {'submit s':>8} {'total s':>8} {'jobs/s':>9} "
          f"{'bytes/job':>9}  coordinator")
    rows: list[dict[str, Any]] = []
    for path in ("sqlite", "tcp"):
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-tcp-million-{path}-", dir=args.tmp))
        row: dict[str, Any] = {"backend": path, "jobs": n, "batch": batch}
        cluster = None
        extra = ""
        try:
            if path == "sqlite":
                queue = SqliteQueue(tmp / "queue.sqlite")
                create, submit = fill(queue, n, batch, path)
            else:
                cluster = Cluster(tmp)
                queue = CoordinatorQueue(str(cluster.status))
                cpu0 = cpu_s([cluster.serve.pid])
                create, submit = fill(queue, n, batch, path)
                mem = memory_kib(cluster.serve.pid)
                row.update(coordinator_cpu_s=cpu_s([cluster.serve.pid]) - cpu0,
                           coordinator_rss_mib=mem["VmRSS"] / 1024,
                           coordinator_peak_rss_mib=mem["VmHWM"] / 1024,
                           bytes_per_job_serving=db_bytes(tmp) / n)
                extra = (f"CPU {row['coordinator_cpu_s']:.1f} s, RSS "
                         f"{mem['VmRSS'] / 1024:.0f} MiB (peak {mem['VmHWM'] / 1024:.0f}), "
                         f"{row['bytes_per_job_serving']:.0f} bytes/job while serving "
                         f"(with its WAL)")
            queue.close()
            if cluster is not None:
                cluster.stop()  # the coordinator closes the database: WAL checkpointed
                cluster = None
            size = db_bytes(tmp)
            rows.append({**row, "build_s": create, "submit_s": submit,
                         "total_s": create + submit, "bytes_per_job": size / n})
            figures.part("million", {"rows": rows})
            print(f"{path:<7} {create:8.2f} {submit:8.2f} {create + submit:8.2f} "
                  f"{n / (create + submit):9,.0f} {size / n:9.0f}  {extra}", flush=True)
            if n == 1_000_000:
                print(f"  {path}: {verdict(create + submit, TARGET_MILLION_S, '15 s', most=True)}"
                      f" with creation, {verdict(submit, TARGET_MILLION_S, '15 s', most=True)}"
                      f" for submit alone; {size / n:.0f} bytes/job: "
                      f"{verdict(size / n, TARGET_BYTES, '1 KiB', most=True)}", flush=True)
            else:  # the insert cost per job grows with the table: no verdict from a sample
                print(f"  {path}: targets (< 15 s, < 1 KiB a job) are for 10^6 jobs: run "
                      f"with --jobs 1000000", flush=True)
        finally:
            if cluster is not None:
                cluster.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    if args.profile:
        profile_million(args)


def profile_million(args: argparse.Namespace) -> None:
    """cProfile of creating and submitting to sqlite:// (not timed: the profiler slows
    Python code several times more than SQLite's)."""
    import cProfile
    import pstats

    from shoal.queue.sqlite import SqliteQueue

    n = min(args.jobs, 200_000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tcp-profile-", dir=args.tmp))
    try:
        queue = SqliteQueue(tmp / "queue.sqlite")
        profiler = cProfile.Profile()
        profiler.enable()
        fill(queue, n, args.batch, "profile")
        profiler.disable()
        queue.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"  cProfile of {n:,} jobs created and submitted to sqlite:// (batches of "
          f"{args.batch:,}):")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(12)
    stats.sort_stats("cumulative").print_stats(r"command_job|content_id|submit|_spec|fill")


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, one repetition (under 2 minutes)")
    parser.add_argument("--part", default="a,b,c,d", help="which parts, e.g. a,d")
    parser.add_argument("--only", default="", help=f"subset of {','.join(CALLS)} for a and b")
    parser.add_argument("--calls", type=int, help="tiny calls in (a) (default 5000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, help="repetitions of (a) (default 3)")
    parser.add_argument("--sleep-calls", type=int, help="sleeping calls in (b) (default 200)")
    parser.add_argument("--sleep-s", type=float, default=0.05)
    parser.add_argument("--sleep-repeat", type=int, help="repetitions of (b) (default 2)")
    parser.add_argument("--client-procs", type=int, help="client processes in (c) (default 10)")
    parser.add_argument("--client-threads", type=int,
                        help="CoordinatorQueue clients per process in (c) (default 100)")
    parser.add_argument("--jobs", type=int, help="jobs in (d) (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=10_000, help="submit batch in (d)")
    parser.add_argument("--profile", action="store_true",
                        help="(d): also cProfile creation + sqlite submit")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds one measurement may take before it is killed")
    parser.add_argument("--tmp", help="parent of the fresh temporary folders (default: $TMPDIR)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=("inc", "sleep"), help=argparse.SUPPRESS)
    parser.add_argument("--clients", help=argparse.SUPPRESS)
    parser.add_argument("--warm", help=argparse.SUPPRESS)
    add_option(parser)
    args = parser.parse_args()
    quick = args.quick
    for key, full, small in (("calls", 5000, 1000), ("repeat", 3, 1), ("sleep_calls", 200, 40),
                             ("sleep_repeat", 2, 1), ("client_procs", 10, 2),
                             ("client_threads", 100, 50), ("jobs", 1_000_000, 100_000)):
        if getattr(args, key) is None:
            setattr(args, key, small if quick else full)
    if args.child:
        child(args.child, args.workload, args.calls, args.workers, args.sleep_s, Path(args.tmp))
        return
    if args.clients:
        client_process(args.clients, args.client_threads)
        return
    if args.warm:
        warm_workers(args.warm, args.workers)
        return
    parts = set(args.part.split(","))
    only = [name for name in args.only.split(",") if name]
    unknown = set(only) - set(CALLS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, workers={args.workers}, "
          f"load {os.getloadavg()[0]:.2f}{' (--quick)' if quick else ''}")
    print(source_state())
    figures = Figures(args.json, __file__)
    figures.part("shoal", source_state())
    started = time.perf_counter()
    if "a" in parts:
        names = [name for name in CALLS if name in only] if only else list(CALLS)
        runs, walls, skipped = measure(names, "inc", args.repeat, args, n=args.calls,
                                       run_child=run_child)
        report_calls(names, args.calls, runs, walls, skipped)
        figures.part("calls", {"workers": args.workers, "repeat": args.repeat,
                               **variants(walls, skipped, n=args.calls, runs=runs,
                                          peers=(RAY, DASK))})
    if "b" in parts:
        names = [name for name in SLEEPS if name in only] if only else list(SLEEPS)
        runs, walls, skipped = measure(names, "sleep", args.sleep_repeat, args,
                                       n=args.sleep_calls, run_child=run_child)
        report_sleeps(names, args.sleep_calls, args.sleep_s, args.workers, runs, walls, skipped)
        ideal = args.sleep_calls * args.sleep_s / args.workers
        figures.part("sleeps", {"workers": args.workers, "repeat": args.sleep_repeat,
                                "sleep_s": args.sleep_s,
                                **variants(walls, skipped, n=args.sleep_calls, runs=runs,
                                           ideal_s=ideal)})
    if "c" in parts:
        figures.part("clients", part_clients(args))
    if "d" in parts:
        part_million(args, figures)
    print(f"load at the end {os.getloadavg()[0]:.2f}; whole run "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
