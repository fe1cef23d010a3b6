"""Issue 18's table, line by line, from the figures the bench scripts wrote (`--json`).

Every function here reads figures only (no process, no clock), so the table's logic can be
tested on canned figures. Ratios are speeds, shoal / peer: above 1 means shoal is faster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MILLION = 1_000_000
HYPERQUEUE_PER_S = 92_600  # HyperQueue's published submit rate; not installed here
EFFICIENCY = 0.98  # row 6, every backend
BYTES_PER_JOB = 300  # row 7
CLIENTS_P99_MS = 500  # row 8
VERSION_MS = 40  # row 9
SKIP_CHARS = 70  # a skip reason in a cell is cut there; the JSON has all of it
# row 6: the peers beside shoal in each script's sleeping part
SLEEP_PEERS = {"calls": ("ppe-submit", "loky"), "tcp": ("ray", "dask-map"),
               "redis": ("ray", "dask-map")}

Figures = Mapping[str, Any]  # script key -> the JSON that script wrote


@dataclass
class Line:
    """One line of the table."""

    row: str
    workload: str
    shoal: str = "-"
    peers: str = "-"
    ratios: str = "-"
    target: str = "-"
    verdict: str = "-"


class Missing(Exception):
    """A figure a line needs is not there: its script failed or was cut short."""

    def __init__(self, script: str) -> None:
        super().__init__(script)
        self.script = script


def part(figs: Figures, script: str, name: str) -> dict[str, Any]:
    found = (figs.get(script) or {}).get(name)
    if not found:
        raise Missing(script)
    return found


def short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SKIP_CHARS else text[:SKIP_CHARS - 3] + "..."


def absent(found: dict[str, Any], name: str) -> str:
    """Why a variant has no figure: its skip reason, or that it was not run."""
    why = found.get("skipped", {}).get(name)
    return f"{name}: skipped: {short(why)}" if why else f"{name}: not measured"


def peer_cells(found: dict[str, Any], peers: tuple[str, ...],
               show: Callable[[dict[str, Any]], str]) -> str:
    return "; ".join(f"{peer} {show(found['variants'][peer])}" if peer in found["variants"]
                     else absent(found, peer) for peer in peers)


def judge(checks: list[bool | None]) -> str:
    """missed if any measured check fails; met if all pass; else what is missing."""
    if any(check is False for check in checks):
        return "missed"
    return "met" if checks and all(checks) else "n/a: a peer figure is missing"


def throughput(row: str, what: str, figs: Figures, script: str, section: str, name: str,
               peers: tuple[str, ...], targets: Mapping[str, float]) -> Line:
    """shoal's rate against its peers' (the same script, interleaved), ratio targets."""
    found = part(figs, script, section)
    target = ", ".join(f">= {x:g}x {peer}" for peer, x in targets.items())
    mine = found["variants"].get(name)
    n = mine["n"] if mine else next((v["n"] for v in found["variants"].values()), "?")
    line = Line(row, what.format(n=n), target=target,
                peers=peer_cells(found, peers, lambda v: f"{v['per_s']:,.0f}/s"))
    if mine is None:
        line.shoal, line.verdict = absent(found, name), "n/a"
        return line
    line.shoal = f"{name} {mine['per_s']:,.0f}/s"
    ratios, checks = [], []
    for peer in peers:
        got = mine.get(f"x_{peer}")
        if got is not None:
            ratios.append(f"{got:.2f}x {peer}")
        if peer in targets:
            checks.append(None if got is None else got >= targets[peer])
    line.ratios, line.verdict = ", ".join(ratios) or "-", judge(checks)
    return line


def efficiency(row: str, figs: Figures, script: str, name: str, backend: str) -> Line:
    """Row 6: ideal / wall for the sleeping calls, against the peers of the same script."""
    found = part(figs, script, "sleeps")
    peers = SLEEP_PEERS[script]
    mine = found["variants"].get(name)
    any_run = mine or next(iter(found["variants"].values()), None)
    what = (f"{any_run['n']} x {found['sleep_s'] * 1000:g} ms sleeps, "
            f"{found['workers']} workers, {backend}") if any_run else f"sleeps, {backend}"
    line = Line(row, what, target=f">= {EFFICIENCY:.0%} efficiency",
                peers=peer_cells(found, peers, lambda v: f"{v['efficiency']:.1%}"))
    if mine is None:
        line.shoal, line.verdict = absent(found, name), "n/a"
        return line
    line.shoal = (f"{name} {mine['efficiency']:.1%} ({mine['median_s']:.2f} s, "
                  f"ideal {mine['ideal_s']:.2f})")
    line.ratios = ", ".join(f"{mine['efficiency'] / found['variants'][p]['efficiency']:.2f}x {p}"
                            for p in peers if p in found["variants"]) or "-"
    line.verdict = "met" if mine["efficiency"] >= EFFICIENCY else "missed"
    return line


def submit_rows(figs: Figures) -> tuple[str, list[dict[str, Any]]]:
    """Row 7's figures: bench_submit.py's if it ran, else bench_tcp.py (d) + bench_redis.py (b);
    RQ's enqueue_many comes from bench_redis.py (b) either way."""
    sources = (("redis", "enqueue"),) if "submit" in figs else (("tcp", "million"),
                                                                ("redis", "enqueue"))
    rows = list(part(figs, "submit", "rows")) if "submit" in figs else []
    for script, section in sources:
        rows += ((figs.get(script) or {}).get(section) or {}).get("rows", [])
    return ("submit" if "submit" in figs else "tcp"), rows


def submitted(row: str, figs: Figures, backend: str, limit_s: float) -> Line:
    """Row 7: 10^6 jobs submitted (a smaller run is projected linearly and says so)."""
    script, rows = submit_rows(figs)
    mine = next((r for r in rows if r["backend"] == backend), None)
    if mine is None:
        raise Missing("redis" if backend == "redis" and script == "tcp" else script)
    jobs, total, alone = mine["jobs"], mine["total_s"], mine["submit_s"]
    scale = MILLION / jobs
    peers = [f"HyperQueue ~{HYPERQUEUE_PER_S:,}/s (quoted, not installed)"]
    ratios = [f"{jobs / total / HYPERQUEUE_PER_S:.2f}x HyperQueue (quoted)"]
    rq = next((r for r in rows if r["backend"] == "rq-enqueue_many"), None)
    if backend == "redis" and rq is None:
        peers.append("RQ enqueue_many: not measured")
    elif backend == "redis" and "skipped" in rq:
        peers.append(f"RQ enqueue_many: skipped: {short(rq['skipped'])}")
    elif backend == "redis":
        rq_rate = rq["jobs"] / rq["total_s"]
        peers.append(f"RQ enqueue_many {rq_rate:,.0f}/s ({rq['jobs']:,} jobs, "
                     f"{rq['bytes_per_job']:.0f} B/job)")
        ratios.append(f"{jobs / total / rq_rate:.2f}x RQ")
    line = Line(row, f"submit {jobs:,} jobs, {backend}", peers="; ".join(peers),
                ratios=", ".join(ratios),
                target=f"<= {limit_s:g} s for 10^6, <= {BYTES_PER_JOB} B/job")
    line.shoal = (f"{total:.2f} s (build {mine['build_s']:.2f} + submit {alone:.2f}), "
                  f"{jobs / total:,.0f}/s, {mine['bytes_per_job']:.0f} B/job")
    ok_bytes = mine["bytes_per_job"] <= BYTES_PER_JOB
    verdict = judge([total * scale <= limit_s, ok_bytes])
    if verdict == "missed" and ok_bytes and alone * scale <= limit_s:
        verdict += " (submit alone: met)"
    line.verdict = verdict if jobs == MILLION else f"{verdict} (projected to 10^6)"
    return line


def clients(row: str, figs: Figures) -> Line:
    """Row 8: concurrent clients on tcp://, submit -> result latency."""
    found = part(figs, "tcp", "clients")
    line = Line(row, f"{found['clients']} concurrent clients, submit + result (tcp)",
                target=f"p99 <= {CLIENTS_P99_MS} ms (1000 clients)")
    latency = found.get("latency_ms")
    if not latency:
        line.shoal, line.verdict = f"no result: {short('; '.join(found['errors']))}", "missed"
        return line
    line.shoal = (f"p99 {latency['p99']:.0f} ms, p50 {latency['p50']:.0f} ms "
                  f"({found['done']}/{found['clients']} done)")
    ok = latency["p99"] <= CLIENTS_P99_MS and found["done"] == found["clients"]
    verdict = judge([ok and not found["error_count"]])
    line.verdict = verdict if found["clients"] >= 1000 else f"{verdict} ({found['clients']})"
    return line


def startup(row: str, figs: Figures) -> Line:
    """Row 9: `shoal --version` wall time (median), GNU parallel's beside it."""
    found = part(figs, "startup", "startup")
    times = found["variants"]
    line = Line(row, "`shoal --version` (CLI start-up)", target=f"<= {VERSION_MS} ms")
    mine = times.get("shoal --version")
    if mine is None:
        raise Missing("startup")
    peer = times.get("parallel --version")
    line.shoal = f"{mine['median_ms']:.0f} ms (best {mine['best_ms']:.0f})"
    if peer:
        line.peers = f"parallel --version {peer['median_ms']:.0f} ms"
        line.ratios = f"{peer['median_ms'] / mine['median_ms']:.2f}x parallel"
    else:
        line.peers = "parallel --version: " + short(found["skipped"].get(
            "parallel --version", "not measured"))
    line.verdict = "met" if mine["median_ms"] <= VERSION_MS else "missed"
    return line


TINY = "{n} no-op calls, 2 workers, "

# (row number, what builds its line(s)): the script keys are those of run_all.SCRIPTS
LINES: list[tuple[int, Callable[[Figures], Line]]] = [
    (1, lambda f: throughput("1", "{n} shell `true` jobs, 2 slots, `shoal run`", f, "shell",
                             "jobs", "shoal-cli", ("xargs", "parallel"), {"xargs": 0.8})),
    (2, lambda f: throughput("2", "{n} shell `true` jobs, 2 slots, Python API, folder", f,
                             "shell", "jobs", "shoal-dir", ("xargs", "parallel"),
                             {"xargs": 0.9})),
    (3, lambda f: throughput("3", TINY + "in-process queue", f, "calls", "calls",
                             "shoal-mem", ("ppe-submit", "loky"), {"ppe-submit": 1.0})),
    (4, lambda f: throughput("4", TINY + "folder queue (fsync on)", f, "calls", "calls",
                             "shoal-dir", ("ppe-submit", "loky"), {"ppe-submit": 0.4})),
    (5, lambda f: throughput("5", TINY + "tcp:// (2 `shoal work`)", f, "tcp", "calls",
                             "shoal-tcp", ("ray", "dask-map"), {"ray": 1.5, "dask-map": 5.0})),
    (5, lambda f: throughput("5", TINY + "redis:// (2 `shoal work`)", f, "redis", "calls",
                             "shoal-redis-procs", ("ray", "dask-map"),
                             {"ray": 1.5, "dask-map": 5.0})),
    (6, lambda f: efficiency("6", f, "calls", "shoal-mem", "memory")),
    (6, lambda f: efficiency("6", f, "calls", "shoal-dir", "folder")),
    (6, lambda f: efficiency("6", f, "tcp", "shoal-sqlite", "sqlite")),
    (6, lambda f: efficiency("6", f, "tcp", "shoal-tcp", "tcp")),
    (6, lambda f: efficiency("6", f, "redis", "shoal-redis-procs", "redis")),
    (7, lambda f: submitted("7", f, "sqlite", 5.0)),
    (7, lambda f: submitted("7", f, "tcp", 10.0)),
    (7, lambda f: submitted("7", f, "redis", 10.0)),
    (8, lambda f: clients("8", f)),
    (9, lambda f: startup("9", f)),
]
WORKLOADS = {1: "shell `true` jobs, `shoal run`", 2: "shell `true` jobs, Python API",
             3: "no-op calls, in-process", 4: "no-op calls, folder", 5: "no-op calls, remote",
             6: "50 ms sleeps", 7: "submit 10^6 jobs", 8: "1000 concurrent clients",
             9: "`shoal --version`"}


def table(figs: Figures, rows: set[int], errors: Mapping[str, str]) -> list[Line]:
    """The lines of the chosen rows; a line whose figures are missing says why."""
    lines = []
    for number, build in LINES:
        if number not in rows:
            continue
        try:
            lines.append(build(figs))
        except Missing as gone:
            why = errors.get(gone.script, f"no figures from the {gone.script} script")
            lines.append(Line(str(number), f"{WORKLOADS[number]} ({gone.script} script)",
                              shoal=f"error: {short(why)}", verdict="error"))
    return lines
