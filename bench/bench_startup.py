"""CLI and call-interpreter start-up: what a user waits for before shoal does anything.

Each variant runs --repeat times (default 20), interleaved with the others, as a fresh
process; the table shows the median and the best wall time, and the median CPU time (user +
system, steadier on a loaded machine). The floors are measured too: `python -S -c pass`
(no site), `python -c pass` (site and every .pth of this installation) and `import click`
(what every click CLI pays): shoal's own share is what `shoal --version` takes beyond it.
`--no-site` runs shoal and click with `python -S`, the site-packages on PYTHONPATH: what
they cost where site start-up is cheap. The call interpreter is timed from its start to its
"ready" frame (worker/callhost.py). The peer: `parallel --version` (GNU parallel, a Perl
script; skipped when it is not installed). shoal's modules are compiled to bytecode first, as pip
install does (PYTHONDONTWRITEBYTECODE would make every start compile them again).
Target (issue 18): `shoal --version` <= 40 ms.
Usage: python bench/bench_startup.py [--repeat 20] [--no-site] [--importtime] [--json PATH]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jsonout import Figures, add_option

import shoal
from shoal.job import Job, Result, State
from shoal.queue import open_queue
from shoal.worker.callhost import CallHost

NO_PARALLEL = "GNU parallel not installed (apt-get install -y parallel)"


def small_queue(folder: Path) -> str:
    """A folder queue of 20 jobs, 5 of them done: what `shoal status` reads."""
    queue = open_queue(str(folder))
    queue.submit([Job.command_job(f"echo {i}") for i in range(20)])
    for lease in queue.claim("bench", 5):
        queue.finish(lease, Result(lease.job_id, State.DONE, exit_code=0,
                                   attempt=lease.attempt))
    queue.close()
    return str(folder)


def command(argv: list[str], env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        done = subprocess.run(argv, env=env, capture_output=True, check=False)
        if done.returncode:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()[-400:]}")
    return run


def callhost_start() -> None:
    host = CallHost(dict(os.environ), os.getcwd())
    assert host.ensure_started(), "the call interpreter died while starting"
    host.close()


def variants(queue: str, no_site: bool) -> dict[str, Callable[[], None]]:
    env = dict(os.environ)
    src = str(Path(shoal.__file__).resolve().parent.parent)  # the shoal measured
    python = [sys.executable]
    if no_site:
        env["PYTHONPATH"] = os.pathsep.join([src, sysconfig.get_paths()["purelib"]])
        python = [sys.executable, "-S"]
    cli = [*python, "-m", "shoal"]
    peer = shutil.which("parallel")
    return {
        "python -S -c pass": command([sys.executable, "-S", "-c", "pass"], env),
        "python -c pass": command([sys.executable, "-c", "pass"], env),
        "import click (the floor)": command([*python, "-c", "import click"], env),
        "shoal --version": command([*cli, "--version"], env),
        "shoal --help": command([*cli, "--help"], env),
        "shoal status Q": command([*cli, "status", queue], env),
        "call interpreter ready": callhost_start,
        **({"parallel --version": command([peer, "--version"], env)} if peer else {}),
    }


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(runs: dict[str, Callable[[], None]],
            repeat: int) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU seconds (the child's user + system: steadier on a loaded machine)."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            cpu, started = children_cpu_s(), time.perf_counter()
            run()
            times[name][0].append(time.perf_counter() - started)
            times[name][1].append(children_cpu_s() - cpu)
    return times


def top_imports(argv: list[str], count: int = 12) -> list[tuple[int, str]]:
    """The modules with the largest cumulative import time under `python -X importtime`."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True,
                          text=True, check=False)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-site", action="store_true",
                        help="run shoal with python -S (site-packages on PYTHONPATH)")
    parser.add_argument("--importtime", action="store_true",
                        help="also print the top cumulative imports of `shoal --version`")
    add_option(parser)
    args = parser.parse_args()
    compileall.compile_dir(str(Path(shoal.__file__).parent), quiet=1)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}")
    figures = Figures(args.json, __file__)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        times = measure(variants(small_queue(Path(tmp) / "q"), args.no_site), args.repeat)
    print(f"{'variant':<26}{'median ms':>10}{'best ms':>9}{'cpu ms':>8}")
    for name, (walls, cpus) in times.items():
        print(f"{name:<26}{statistics.median(walls) * 1000:>10.1f}"
              f"{min(walls) * 1000:>9.1f}{statistics.median(cpus) * 1000:>8.1f}")
    if "parallel --version" not in times:
        print(f"{'parallel --version':<26}skipped: {NO_PARALLEL}")
    print(f"load at the end {os.getloadavg()[0]:.2f}; target: shoal --version <= 40 ms")
    figures.part("startup", {
        "repeat": args.repeat, "no_site": args.no_site, "target_ms": 40,
        "variants": {name: {"median_ms": statistics.median(walls) * 1000,
                            "best_ms": min(walls) * 1000,
                            "cpu_ms": statistics.median(cpus) * 1000}
                     for name, (walls, cpus) in times.items()},
        "skipped": {} if "parallel --version" in times else {
            "parallel --version": NO_PARALLEL}})
    if args.importtime:
        print("top cumulative imports of `python -m shoal --version` (us):")
        for micros, name in top_imports(["-m", "shoal", "--version"]):
            print(f"{micros:>9} {name}")


if __name__ == "__main__":
    main()
