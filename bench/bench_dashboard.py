"""The web dashboard at scale, timed from a real browser (Playwright + Debian chromium).

A sqlite queue of --jobs jobs (default 10^5, `sleep 0.01; test $((n % 50)) -ne 0`: one in
fifty fails), 2 `shoal work --slots 1` processes running, one `shoal dashboard`. Measured:

* first paint: `goto(URL)` until the counts and the first jobs page show (--runs times);
* API calls from the page (fetch + performance.now()): /api/overview (what every live
  update reads), jobs pages 0, 100 and the last (deep pages read one page: the offset in
  `Queue.summaries`), the failed filter, a search by parameter, the timeline;
* the event stream: the gaps between `overview` events over --sse-s seconds;
* the workers' throughput (jobs ended per --window-s seconds): without the dashboard,
  then twice with it and a page open (its stream live), then without again.

Prints a table against the issue's targets: first paint < 1 s, updates < 250 ms, the
dashboard costs the workers < 5% of their throughput. Needs the web extra, playwright
and /usr/bin/chromium (never downloads a browser).

    python bench/bench_dashboard.py                 # ~6 min on 2 busy cores
    python bench/bench_dashboard.py --jobs 20000 --window-s 15 [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import re
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

from jsonout import Figures, add_option

from shoal.job import Job
from shoal.queue import open_queue
from shoal.queue.base import Queue

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
URL_LINE = re.compile(r"(http://\S+)/\?token=([0-9a-f]+)")
PAGE_SIZE = 50  # the page's own page size (dashboard.js)
SUBMIT_BATCH = 5000
PAINTED = ("document.querySelector('#count-done').textContent !== '\u2013' && "
           "document.querySelectorAll('#job-rows tr').length > 0")

# Called in the page: fetch `path` `times` times, one after the other; milliseconds each.
TIME_FETCH = """async ([path, times]) => {
  const took = [];
  for (let i = 0; i < times; i++) {
    const t0 = performance.now();
    const r = await fetch(path, {cache: "no-store"});
    await r.json();
    if (!r.ok) throw new Error(path + ": " + r.status);
    took.push(performance.now() - t0);
  }
  return took;
}"""

# Called in the page: the gaps (ms) between `overview` events of a new stream.
SSE_GAPS = """(seconds) => new Promise((done) => {
  const at = [];
  const source = new EventSource("/api/events");
  source.addEventListener("overview", () => at.push(performance.now()));
  setTimeout(() => { source.close(); done(at.slice(1).map((t, i) => t - at[i])); },
             seconds * 1000);
})"""


def fill(queue: Queue, jobs: int, sleep_s: float) -> float:
    """Submit the sweep; seconds it took."""
    started = time.monotonic()
    batch: list[Job] = []
    for n in range(1, jobs + 1):
        batch.append(Job.command_job(["sh", "-c", f"sleep {sleep_s}; test {n % 50} -ne 0"],
                                     name=f"job {n}", params={"n": n}))
        if len(batch) == SUBMIT_BATCH:
            queue.submit(batch)
            batch = []
    if batch:
        queue.submit(batch)
    return time.monotonic() - started


def shoal(*args: str, **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "shoal", *args], start_new_session=True,
                            **popen)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process we started (its group: its jobs too), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def ended(queue: Queue) -> int:
    return sum(n for state, n in queue.counts().items() if state.final)


def throughput(queue: Queue, window_s: float) -> float:
    """Jobs ended per second over `window_s`."""
    first, started = ended(queue), time.monotonic()
    time.sleep(window_s)
    return (ended(queue) - first) / (time.monotonic() - started)


def start_dashboard(url: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    out = folder / "dashboard.out"
    with open(out, "wb") as sink:
        proc = shoal("dashboard", url, "--bind", "127.0.0.1:0", stdout=sink,
                     stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = URL_LINE.search(out.read_text())
        if match:
            return proc, f"{match.group(1)}/?token={match.group(2)}"
        if proc.poll() is not None:
            raise SystemExit(f"shoal dashboard exited: {out.read_text()}")
        time.sleep(0.05)
    stop(proc)
    raise SystemExit("shoal dashboard printed no URL in 60 s")


def first_paints(browser: Any, url: str, runs: int) -> list[float]:
    """Milliseconds from goto to the counts and the first rows shown, in a fresh context
    (no cookie, no cache) each time."""
    took = []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_function(PAINTED, timeout=60_000)
        took.append((time.perf_counter() - started) * 1000)
        context.close()
    return took


def row(name: str, values: list[float], target: str = "", ok: bool | None = None) -> str:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    return (f"| {name} | {statistics.median(values):8.1f} | {max(values):8.1f} | "
            f"{len(values):3d} | {target} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.01, help="each job's sleep (s)")
    parser.add_argument("--runs", type=int, default=5, help="first paints measured")
    parser.add_argument("--calls", type=int, default=10, help="fetches per API path")
    parser.add_argument("--window-s", type=float, default=20.0,
                        help="each throughput window (4: off, on, on, off)")
    parser.add_argument("--sse-s", type=float, default=10.0)
    parser.add_argument("--tmp", help="folder for the queue (default: a new temporary one)")
    add_option(parser)
    opts = parser.parse_args()
    figures = Figures(opts.json, __file__)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("needs playwright: pip install playwright (no browser download)") from None
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"needs {CHROMIUM}: apt-get install chromium")

    folder = Path(tempfile.mkdtemp(prefix="shoal-bench-dash-", dir=opts.tmp))
    url = f"sqlite://{folder / 'q.db'}"
    queue = open_queue(url)
    workers: list[subprocess.Popen[bytes]] = []
    dashboard: subprocess.Popen[bytes] | None = None
    try:
        print(f"filling {url} with {opts.jobs} jobs ...", flush=True)
        print(f"  submitted in {fill(queue, opts.jobs, opts.sleep):.1f} s", flush=True)
        for _ in range(opts.workers):
            workers.append(shoal("work", url, "--slots", "1", "-q",
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while ended(queue) < opts.workers * 10:  # both have started
            time.sleep(0.2)
        rates: dict[str, list[float]] = {"off": [], "on": []}
        rates["off"].append(throughput(queue, opts.window_s))
        print(f"  workers alone: {rates['off'][-1]:.1f} jobs/s", flush=True)

        dashboard, page_url = start_dashboard(url, folder)
        base = page_url.split("/?", 1)[0]
        last_page = max(0, (opts.jobs - 1) // PAGE_SIZE)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=FLAGS)
            paints = first_paints(browser, page_url, opts.runs)
            print(f"  first paint: {statistics.median(paints):.0f} ms median", flush=True)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(page_url)
            page.wait_for_function(PAINTED, timeout=60_000)

            def timed(path: str, times: int = opts.calls) -> list[float]:
                return page.evaluate(TIME_FETCH, [base + path, times])

            calls: list[tuple[str, list[float], str, Callable[[float], bool] | None]] = [
                ("/api/overview (each update)", timed("/api/overview"), "< 250 ms",
                 lambda ms: ms < 250),
                ("/api/jobs page 0", timed(f"/api/jobs?page=0&size={PAGE_SIZE}"), "", None),
                ("/api/jobs page 100", timed(f"/api/jobs?page=100&size={PAGE_SIZE}"), "",
                 None),
                (f"/api/jobs page {last_page} (last)",
                 timed(f"/api/jobs?page={last_page}&size={PAGE_SIZE}"), "", None),
                ("/api/jobs?state=failed", timed("/api/jobs?state=failed"), "", None),
                ("/api/jobs?q=n=77777 (params)", timed("/api/jobs?q=n%3D77777", 3), "", None),
                ("/api/timeline (10^4 bars)", timed("/api/timeline", 3), "", None),
            ]
            gaps = page.evaluate(SSE_GAPS, opts.sse_s)
            for _ in range(2):  # the page stays open, its stream live
                rates["on"].append(throughput(queue, opts.window_s))
                print(f"  with the dashboard: {rates['on'][-1]:.1f} jobs/s", flush=True)
            context.close()
            browser.close()
        stop(dashboard)
        rates["off"].append(throughput(queue, opts.window_s))
        print(f"  workers alone again: {rates['off'][-1]:.1f} jobs/s", flush=True)
        report(opts, paints, calls, gaps, rates)
        figures.part("dashboard", {
            "jobs": opts.jobs, "workers": opts.workers, "first_paint_ms": paints,
            "fetch_ms": {name: took for name, took, _, _ in calls}, "sse_gaps_ms": gaps,
            "jobs_per_s": rates})
    finally:
        for proc in [*workers, *([dashboard] if dashboard is not None else [])]:
            stop(proc)
        queue.close()
        shutil.rmtree(folder, ignore_errors=True)


def report(opts: argparse.Namespace, paints: list[float],
           calls: list[tuple[str, list[float], str, Callable[[float], bool] | None]],
           gaps: list[float], rates: dict[str, list[float]]) -> None:
    print()
    print(f"shoal dashboard, sqlite queue of {opts.jobs} jobs, {opts.workers} workers "
          f"--slots 1, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print()
    print("| what | median ms | max ms | n | target | |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    paint = statistics.median(paints)
    print(row("first paint (goto to counts and rows)", paints, "< 1000 ms", paint < 1000))
    for name, took, target, check in calls:
        print(row(name, took, target, None if check is None else check(
            statistics.median(took))))
    if gaps:
        late = max(abs(gap - 1000) for gap in gaps)
        print(row("event stream: gap between updates", gaps, "~1000 (every 1 s)",
                  late < 250))
    off, on = statistics.mean(rates["off"]), statistics.mean(rates["on"])
    cost = 1 - on / off if off else 0.0
    print()
    print(f"worker throughput (jobs/s, {opts.window_s:g} s windows): without "
          f"{', '.join(f'{r:.1f}' for r in rates['off'])}; with the dashboard and a page "
          f"open {', '.join(f'{r:.1f}' for r in rates['on'])}")
    print(f"dashboard cost: {cost * 100:+.1f}% of the workers' throughput (target < 5%): "
          f"{'ok' if cost < 0.05 else 'MISSED'}")


if __name__ == "__main__":
    main()
