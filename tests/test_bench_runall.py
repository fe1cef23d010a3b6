"""bench/run_all.py's own logic: the table from canned figures, the plan, a script that
fails or overruns. No benchmark runs here (CI does not run them)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import run_all  # bench/ is not a package: its folder goes on the path
from runall_rows import MILLION, table


def rates(**per_s: float) -> dict:
    """A throughput section: variant -> rate, with the ratios the scripts compute."""
    variants = {name: {"n": 2000, "per_s": rate, "median_s": 2000 / rate}
                for name, rate in per_s.items()}
    for entry in variants.values():
        for peer, other in variants.items():
            entry[f"x_{peer}"] = entry["per_s"] / other["per_s"]
    return {"variants": variants, "skipped": {}}


def test_a_line_meets_or_misses_its_ratio_target_against_the_peer_beside_it() -> None:
    shell = {"jobs": rates(**{"shoal-cli": 900, "shoal-dir": 1900, "xargs": 2000,
                              "parallel": 400})}
    one, two = table({"shell": shell}, {1, 2}, {})
    assert (one.row, one.shoal, one.ratios) == ("1", "shoal-cli 900/s",
                                                "0.45x xargs, 2.25x parallel")
    assert one.peers == "xargs 2,000/s; parallel 400/s"
    assert (one.target, one.verdict) == (">= 0.8x xargs", "missed")
    assert (two.target, two.verdict) == (">= 0.9x xargs", "met")  # 0.95x


def test_a_peer_that_is_not_installed_is_named_with_its_reason_and_not_judged() -> None:
    calls = rates(**{"shoal-mem": 9000, "shoal-dir": 2000, "loky": 7000})
    calls["skipped"] = {"ppe-submit": "failed (exit 1): something broke"}
    mem, folder = table({"calls": {"calls": calls}}, {3, 4}, {})
    assert "ppe-submit: skipped: failed (exit 1): something broke" in mem.peers
    assert mem.verdict.startswith("n/a")
    assert folder.verdict.startswith("n/a") and folder.ratios == "0.29x loky"


def test_a_script_that_failed_turns_its_lines_into_the_error_and_the_others_stay() -> None:
    startup = {"startup": {"variants": {"shoal --version": {"median_ms": 35.0, "best_ms": 30.0},
                                        "parallel --version": {"median_ms": 140.0,
                                                               "best_ms": 120.0}},
                           "skipped": {}}}
    lines = table({"startup": startup, "tcp": {}}, {5, 8, 9},
                  {"tcp": "bench_tcp.py: did not finish within 300 s"})
    errors = [line for line in lines if line.verdict == "error"]
    assert [line.row for line in errors] == ["5", "5", "8"]  # tcp, redis, tcp
    assert all("did not finish within 300 s" in errors[i].shoal for i in (0, 2))
    assert "no figures from the redis script" in lines[1].shoal  # redis was not run at all
    version = lines[-1]
    assert (version.shoal, version.ratios, version.verdict) == (
        "35 ms (best 30)", "4.00x parallel", "met")


def test_submitting_fewer_than_a_million_is_projected_and_says_so() -> None:
    rows = [{"backend": "sqlite", "jobs": 100_000, "build_s": 0.3, "submit_s": 0.4,
             "total_s": 0.7, "bytes_per_job": 250},
            {"backend": "tcp", "jobs": 100_000, "build_s": 0.3, "submit_s": 1.2,
             "total_s": 1.5, "bytes_per_job": 250}]
    sqlite, tcp, redis = table({"tcp": {"million": {"rows": rows}}}, {7}, {})
    assert redis.verdict == "error"  # bench_redis.py did not run
    assert sqlite.verdict == "missed (submit alone: met) (projected to 10^6)"  # 7 s > 5 s
    assert tcp.verdict == "missed (projected to 10^6)"  # 15 s > 10 s, 12 s alone
    assert "HyperQueue" in sqlite.peers and sqlite.workload == "submit 100,000 jobs, sqlite"
    rows = [{"backend": "redis", "jobs": MILLION, "build_s": 3.0, "submit_s": 5.0,
             "total_s": 8.0, "bytes_per_job": 400},
            {"backend": "rq-enqueue_many", "jobs": 10_000, "build_s": 0.1, "submit_s": 4.9,
             "total_s": 5.0, "bytes_per_job": 540}]
    _, _, redis = table({"tcp": {}, "redis": {"enqueue": {"rows": rows}}}, {7}, {})
    assert redis.verdict == "missed"  # 400 B/job > 300; 8 s <= 10 s
    assert "RQ enqueue_many 2,000/s (10,000 jobs, 540 B/job)" in redis.peers
    assert redis.ratios.endswith("62.50x RQ")  # 125,000/s vs 2,000/s


def test_the_plan_runs_only_what_the_rows_need() -> None:
    assert list(run_all.plan({9}, run_all.QUICK, submit=False)) == ["startup"]
    plan = run_all.plan({5, 6, 7}, run_all.FULL, submit=True)
    assert set(plan) == {"calls", "tcp", "redis", "submit"}
    assert plan["tcp"][plan["tcp"].index("--part") + 1] == "a,b"  # (d) is bench_submit's
    assert plan["redis"][plan["redis"].index("--part") + 1] == "a,c,b"  # (b): RQ's alone
    assert plan["redis"][plan["redis"].index("--jobs") + 1] == "0"
    assert plan["calls"][plan["calls"].index("--part") + 1] == "2"
    assert plan["submit"][:3] == ["bench_submit.py", "--jobs", "1000000"]
    fallback = run_all.plan({7}, run_all.FULL, submit=False)
    assert fallback["tcp"][2] == "d" and fallback["redis"][2] == "b"


def test_rows_outside_the_table_are_a_one_line_error() -> None:
    assert run_all.parse_rows("1, 9") == {1, 9}
    for bad in ("10", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="rows are numbers among"):
            run_all.parse_rows(bad)


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake_bench.py"
    path.write_text("import json, subprocess, sys, time\n"
                    "out = sys.argv[sys.argv.index('--json') + 1]\n" + textwrap.dedent(body))
    return str(path)


def test_a_script_past_its_limit_is_stopped_with_what_it_started_and_keeps_its_figures(
        tmp_path: Path) -> None:
    argv = [script(tmp_path, """
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        json.dump({"calls": {"child": child.pid}}, open(out, "w"))
        print("started", flush=True)
        time.sleep(300)
    """)]
    status = run_all.run_script(argv, tmp_path / "out.json", 3.0, os.environ)
    assert status["error"].endswith("did not finish within 3 s")
    child = status["figures"]["calls"]["child"]
    assert status["stdout"] == "started\n"

    def gone() -> bool:
        try:
            return Path(f"/proc/{child}/stat").read_text().split(")")[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    wait_for(gone, timeout_s=30, message="the script's own child stopped")


def test_a_script_that_fails_says_how_in_one_line(tmp_path: Path) -> None:
    argv = [script(tmp_path, "sys.exit('redis-server did not start')\n")]
    status = run_all.run_script(argv, tmp_path / "out.json", 60.0, os.environ)
    assert status["error"] == f"{argv[0]}: exit 1: redis-server did not start"
    assert status["figures"] == {}
    assert json.dumps(status)  # it goes into the JSON file as it is


def test_row_7_takes_bench_submit_figures_when_it_ran_and_rq_from_bench_redis() -> None:
    def row(backend: str, total: float) -> dict:
        return {"backend": backend, "jobs": MILLION, "build_s": total / 2,
                "submit_s": total / 2, "total_s": total, "bytes_per_job": 120,
                "peak_rss_mb": 300}
    rq = {"backend": "rq-enqueue_many", "jobs": 10_000, "build_s": 0.0, "submit_s": 2.0,
          "total_s": 2.0, "bytes_per_job": 540}
    figs = {"submit": {"rows": [row("sqlite", 4.0), row("tcp", 12.0), row("redis", 9.0)]},
            "redis": {"enqueue": {"rows": [rq]}}}
    sqlite, tcp, redis = table(figs, {7}, {})
    assert (sqlite.verdict, tcp.verdict, redis.verdict) == (
        "met", "missed (submit alone: met)", "met")  # tcp: 12 s in all, 6 s submitting
    assert "RQ enqueue_many 5,000/s" in redis.peers and "RQ" not in sqlite.peers


def test_show_prints_the_table_of_a_saved_run_even_one_stopped_midway(tmp_path: Path) -> None:
    startup = {"startup": {"variants": {"shoal --version": {"median_ms": 52.0, "best_ms": 48.0}},
                           "skipped": {"parallel --version": "GNU parallel not installed"}}}
    saved = {"quick": True, "rows": [1, 9], "sizes": run_all.QUICK.__dict__,
             "machine": {"cpus": 2, "python": "3.11.7", "git": "0123456789abcdef"},
             "load_before": [1.0, 1.0, 1.0],
             "scripts": {"startup": {"figures": startup}}}  # shell never ran: stopped
    path = tmp_path / "run.json"
    path.write_text(json.dumps(saved))
    done = subprocess.run([sys.executable, run_all.__file__, "--show", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    row9 = next(line for line in done.stdout.splitlines() if line.startswith("| 9 "))
    assert "52 ms (best 48)" in row9 and "missed" in row9
    assert "parallel --version: GNU parallel not installed" in row9
    row1 = next(line for line in done.stdout.splitlines() if line.startswith("| 1 "))
    assert "error: no figures from the shell script" in row1
    assert "stopped before the end" in done.stdout
    bad = subprocess.run([sys.executable, run_all.__file__, "--show", str(tmp_path / "no")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1].startswith("run_all.py: error: --show")
