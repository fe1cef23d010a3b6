"""Issue 18's benchmark table in one command: runs the bench scripts, prints one table.

Each script runs as a subprocess with `--json PATH` (its own peers side by side and
interleaved, as when run alone); this reads the figures they wrote, prints one table
(row, workload, shoal, peers, ratios, target, met/missed) and writes every figure, with
the machine and the versions measured, to one JSON file. A script that fails or runs past
its time limit turns its lines into "error: ..." and the run goes on; a peer that is not
installed shows in its cell with the reason.

    python bench/run_all.py [--quick] [--json PATH] [--only 1,5,9] [--tmp DIR]
    python bench/run_all.py --show PATH     # the table of a saved run, nothing run

Default JSON: bench/results/run_all-<UTC time>.json (made if missing; in .gitignore).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from bench_tcp import stop_processes
from runall_rows import LINES, Line, table

HERE = Path(__file__).resolve().parent
ROWS = sorted({number for number, _ in LINES})
SUBMIT = "bench_submit.py"  # the (bulk) engineer's: --jobs N --backends ... --json PATH
PEERS = ("ray", "dask", "distributed", "loky", "rq", "redis", "celery", "pyzmq")
TOOLS = {"xargs": ["xargs", "--version"], "parallel": ["parallel", "--version"],
         "redis-server": ["redis-server", "--version"]}


@dataclass(frozen=True)
class Sizes:
    """How big each workload is: the issue's sizes, or smaller ones for --quick."""

    shell_jobs: int
    calls: int  # bench_calls.py (rows 3, 4)
    remote_calls: int  # bench_tcp.py, bench_redis.py (row 5)
    repeat: int
    sleeps: int
    sleep_repeat: int
    client_procs: int
    client_threads: int
    jobs: int  # row 7
    rq_jobs: int  # row 7's RQ enqueue_many (several times slower: fewer, compare rates)
    startup_repeat: int
    limit_s: float  # per script


FULL = Sizes(2000, 20_000, 20_000, 3, 200, 2, 10, 100, 1_000_000, 100_000, 20, 2400.0)
QUICK = Sizes(1000, 5000, 2000, 1, 100, 1, 2, 50, 100_000, 10_000, 5, 300.0)


def plan(rows: set[int], size: Sizes, submit: bool) -> dict[str, list[str]]:
    """script key -> the script and its arguments, for the rows asked for. Row 7 comes
    from bench_submit.py when it exists, else from bench_tcp.py (d) and bench_redis.py (b)."""
    common = ["--repeat", str(size.repeat), "--sleep-calls", str(size.sleeps),
              "--sleep-repeat", str(size.sleep_repeat)]
    scripts: dict[str, list[str]] = {}
    if rows & {1, 2}:
        scripts["shell"] = ["bench_shell_jobs.py", "--only", "shoal-cli,shoal-dir,xargs,parallel",
                            "--jobs", str(size.shell_jobs), "--repeat", str(size.repeat)]
    calls = {"1": rows & {3, 4}, "2": rows & {6}}
    if any(calls.values()):
        scripts["calls"] = ["bench_calls.py", "--only", "shoal-mem,shoal-dir,ppe-submit,loky",
                            "--part", "both" if all(calls.values()) else
                            next(key for key, wanted in calls.items() if wanted),
                            "--calls", str(size.calls), *common]
    tcp = [part for part, row in (("a", 5), ("b", 6), ("c", 8), ("d", 7))
           if row in rows and not (part == "d" and submit)]
    if tcp:
        scripts["tcp"] = ["bench_tcp.py", "--part", ",".join(tcp),
                          "--only", "shoal-tcp,shoal-sqlite,dask-map,ray",
                          "--calls", str(size.remote_calls), *common,
                          "--client-procs", str(size.client_procs),
                          "--client-threads", str(size.client_threads),
                          "--jobs", str(size.jobs)]
    redis = [part for part, row in (("a", 5), ("c", 6), ("b", 7)) if row in rows]
    if redis:  # with bench_submit.py, (b) is only RQ's enqueue_many: --jobs 0
        scripts["redis"] = ["bench_redis.py", "--part", ",".join(redis),
                            "--only", "shoal-redis,shoal-redis-procs,ray,dask-map",
                            "--calls", str(size.remote_calls), *common,
                            "--jobs", "0" if submit else str(size.jobs),
                            "--rq-jobs", str(size.rq_jobs)]
    if 7 in rows and submit:
        scripts["submit"] = [SUBMIT, "--jobs", str(size.jobs), "--backends", "sqlite,tcp,redis"]
    if 9 in rows:
        scripts["startup"] = ["bench_startup.py", "--repeat", str(size.startup_repeat)]
    return scripts


def run_script(argv: list[str], json_path: Path, limit_s: float,
               env: Mapping[str, str]) -> dict[str, Any]:
    """Run one script to its end or its time limit; what it printed, how it ended, and the
    figures it wrote (its JSON is rewritten after each part: a cut-short run keeps those)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, *argv, "--json", str(json_path)], cwd=HERE,
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                text=True, start_new_session=True)
        try:
            proc.wait(timeout=limit_s)
            error = None if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            stop_processes([proc])  # SIGTERM, SIGKILL after 10 s, then what it started
            error = f"did not finish within {limit_s:g} s"
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    status: dict[str, Any] = {"argv": argv, "returncode": proc.returncode,
                              "wall_s": time.perf_counter() - started, "stdout": stdout,
                              "stderr_tail": stderr.strip().splitlines()[-20:]}
    if error:
        last = next((line for line in reversed(status["stderr_tail"]) if line.strip()), "")
        status["error"] = f"{argv[0]}: {error}" + (f": {last.strip()}" if last else "")
    try:
        status["figures"] = json.loads(json_path.read_text())
    except (OSError, ValueError):
        status["figures"] = {}
    return status


def first_line(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr \
        else f"exit {done.returncode}"


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=HERE, capture_output=True,
                               text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (f" + {len(dirty)} uncommitted file(s)" if dirty else "")


def machine() -> dict[str, Any]:
    """What the figures were measured on and with."""
    versions = {}
    for name in ("shoal", *PEERS):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions.update({tool: first_line(argv) for tool, argv in TOOLS.items()})
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0],
            "platform": platform.platform(), "git": git_state(), "versions": versions}


def print_table(lines: list[Line], header: str) -> None:
    head = Line("row", "workload", "shoal", "peer(s)", "ratio(s)", "target", "verdict")
    cells = [astuple(line) for line in (head, *lines)]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(cells[0]))]
    print(f"\n{header}")
    for number, row in enumerate(cells):
        print("| " + " | ".join(f"{cell:<{width}}" for cell, width in zip(row, widths,
                                                                           strict=True)) + " |")
        if number == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def parse_rows(text: str) -> set[int]:
    try:
        rows = {int(word) for word in text.split(",") if word.strip()}
    except ValueError:
        rows = set()
    if not rows or rows - set(ROWS):
        raise argparse.ArgumentTypeError(f"{text!r}: rows are numbers among "
                                         f"{','.join(map(str, ROWS))}, comma-separated")
    return rows


def default_json() -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return HERE / "results" / f"run_all-{stamp}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller workloads, one repetition (under 5 minutes here)")
    parser.add_argument("--json", type=Path, help="where to write every figure "
                        "(default: bench/results/run_all-<UTC time>.json)")
    parser.add_argument("--only", type=parse_rows, default=set(ROWS), metavar="ROWS",
                        help="comma-separated rows of the table, e.g. 1,5,9 (default: all)")
    parser.add_argument("--tmp", type=Path, help="parent of every temporary folder the "
                        "scripts make (their TMPDIR; default: $TMPDIR)")
    parser.add_argument("--show", type=Path, metavar="JSON",
                        help="run nothing: print the table of a run saved before (also one "
                        "stopped midway) with this version's rows")
    args = parser.parse_args()
    if args.show is not None:
        try:
            saved = json.loads(args.show.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--show {args.show}: {exc}")
        show(saved, args.show)
        return
    if args.tmp is not None and not args.tmp.is_dir():
        parser.error(f"--tmp {args.tmp}: not a directory")
    json_path = args.json or default_json()
    if not json_path.parent.is_dir():
        if args.json is not None:
            parser.error(f"--json {json_path}: folder {json_path.parent} does not exist")
        json_path.parent.mkdir(parents=True)
    size = QUICK if args.quick else FULL
    scripts = plan(args.only, size, (HERE / SUBMIT).exists())
    env = {**os.environ, **({"TMPDIR": str(args.tmp.resolve())} if args.tmp else {})}
    started, load_before = time.time(), os.getloadavg()
    results: dict[str, Any] = {
        "quick": args.quick, "rows": sorted(args.only), "sizes": size.__dict__,
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine": machine(), "load_before": load_before, "scripts": {}}
    if 7 in args.only and "submit" not in scripts:
        print(f"row 7: bench/{SUBMIT} not here yet: bench_tcp.py (d) and bench_redis.py (b) "
              "measure it", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="run-all-", dir=args.tmp) as scratch:
        for key, argv in scripts.items():
            print(f"[{time.time() - started:5.0f} s] {' '.join(argv)}", file=sys.stderr,
                  flush=True)
            status = run_script(argv, Path(scratch) / f"{key}.json", size.limit_s, env)
            results["scripts"][key] = status
            json_path.write_text(json.dumps(results, indent=1))  # a stopped run keeps these
            print(f"[{time.time() - started:5.0f} s]   {status.get('error', 'done')} "
                  f"({status['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    results.update(load_after=os.getloadavg(), duration_s=time.time() - started)
    show(results, json_path)


def show(results: dict[str, Any], json_path: Path) -> None:
    """Print the table of a run (this one, or one saved before: --show) and save it."""
    figs = {key: status["figures"] for key, status in results["scripts"].items()}
    errors = {key: status["error"] for key, status in results["scripts"].items()
              if "error" in status}
    lines = table(figs, set(results["rows"]), errors)
    results["table"] = [line.__dict__ for line in lines]
    json_path.write_text(json.dumps(results, indent=1))
    size = Sizes(**results["sizes"])
    how = ("--quick: " + ", ".join((f"{size.shell_jobs} shell jobs", f"{size.calls} calls "
           f"(rows 3-4), {size.remote_calls} remote", f"{size.sleeps} sleeps",
           f"{size.jobs:,} jobs submitted", f"{size.client_procs * size.client_threads} "
           "clients", "1 repetition")) if results["quick"] else
           f"full sizes, median of {size.repeat} (sleeps: {size.sleep_repeat})")
    print_table(lines, f"issue 18 benchmarks ({how}); ratios are speeds, shoal / peer")
    found = results["machine"]
    took = results.get("duration_s")
    print(f"\n{found['cpus']} CPUs, Python {found['python']}, shoal at {found['git'][:12]}"
          + (" (uncommitted changes)" if "uncommitted" in found["git"] else "")
          + f"; load {results['load_before'][0]:.1f} before, "
          + (f"{results['load_after'][0]:.1f} after; {took:.0f} s in all"
             if took is not None else "stopped before the end")
          + f"; every figure: {json_path}")


if __name__ == "__main__":
    main()
