"""`shoal split run/merge` and `shoal.split_map`: machines that never talk to each other."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

JOBS = ["sh -c 'echo {} $SHOAL_SEED'", ":::", *[str(i) for i in range(12)]]
MACHINES = {"alpha": [2, 2], "beta": [1, 1], "gamma": [1, 2]}


def shoal(*args: str, cwd: Path, check: int | None = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


def machines_file(tmp_path: Path, machines: dict) -> Path:
    path = tmp_path / f"machines-{len(machines)}.json"
    path.write_text(json.dumps(machines))
    return path


def run_machine(tmp_path: Path, name: str, machines: Path, *extra: str) -> Path:
    """One "machine": its own directory, no shared folder, no network."""
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    shoal("split", "run", "--no-progress", "--machines", str(machines), "--machine", name,
          *extra, *JOBS, cwd=home)
    return home / f"results-{name}.csv"


def outputs(merged: Path) -> dict[int, str]:
    with open(merged, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["state"] == "done" for row in rows)
    return {int(row["index"]): Path(row["log"]).read_text() for row in rows}


def test_three_machines_merged_equal_one_machine(tmp_path):
    three = machines_file(tmp_path, MACHINES)
    files = [run_machine(tmp_path, name, three) for name in MACHINES]
    shares = [len(list(csv.DictReader(open(f, newline="")))) for f in files]  # noqa: SIM115
    assert shares == [7, 2, 3]  # speed x cores 4 : 1 : 2 of 12 jobs, largest remainders
    merged = tmp_path / "merged.csv"
    out = shoal("split", "merge", *map(str, files), "-o", str(merged), cwd=tmp_path)
    assert "merged 12 job(s)" in out.stdout
    alone = machines_file(tmp_path, {"solo": [1, 2]})
    single = run_machine(tmp_path, "solo", alone)
    solo_merged = tmp_path / "solo.csv"
    shoal("split", "merge", str(single), "-o", str(solo_merged), cwd=tmp_path)
    assert outputs(merged) == outputs(solo_merged)  # same outputs, same per-job seeds
    with open(merged, newline="") as handle:
        header = next(csv.reader(handle))
    assert header[:3] == ["Run Start Time", "Job Running Time", "Job Start Time"]


def test_merge_lists_a_missing_share_and_refuses_mixed_plans(tmp_path):
    three = machines_file(tmp_path, MACHINES)
    alpha = run_machine(tmp_path, "alpha", three)
    gamma = run_machine(tmp_path, "gamma", three)
    out = shoal("split", "merge", str(alpha), str(gamma), "-o", str(tmp_path / "m.csv"),
                cwd=tmp_path, check=1)
    assert "missing 2 job(s)" in out.stdout
    config = tmp_path / "config.toml"
    config.write_text("step = 2\n")
    beta = run_machine(tmp_path, "beta", three, "--config", str(config))
    out = shoal("split", "merge", str(alpha), str(beta), "-o", str(tmp_path / "m.csv"),
                cwd=tmp_path, check=2)
    assert "different plans" in out.stderr


def test_plan_is_shown_with_the_checksum_every_machine_prints(tmp_path):
    three = machines_file(tmp_path, MACHINES)
    plan = shoal("split", "plan", "--machines", str(three), *JOBS, cwd=tmp_path).stdout
    checksum = plan.strip().splitlines()[-1].split()[-1]
    home = tmp_path / "beta"
    home.mkdir()
    run = shoal("split", "run", "--no-progress", "--machines", str(three), "--machine", "beta",
                *JOBS, cwd=home)
    assert f"plan {checksum}" in run.stderr


def test_rerunning_a_machine_skips_what_it_finished(tmp_path):
    three = machines_file(tmp_path, MACHINES)
    run_machine(tmp_path, "alpha", three)
    home = tmp_path / "alpha"
    again = shoal("split", "run", "--no-progress", "--machines", str(three), "--machine", "alpha",
                  *JOBS, cwd=home)
    assert "7 done (7 already before)" in again.stderr


def test_the_host_name_picks_the_machine(tmp_path):
    host = socket.gethostname()
    machines = machines_file(tmp_path, {host: [1, 1], "other": [1, 1]})
    out = shoal("split", "run", "--no-progress", "--machines", str(machines), *JOBS, cwd=tmp_path)
    assert f"machine {host}," in out.stderr
    out = shoal("split", "run", "--machines", str(machines), "--machine", "nope", *JOBS,
                cwd=tmp_path, check=2)
    assert "unknown machine 'nope'" in out.stderr


SPLIT_MAP = """
import json, sys, shoal

def draw(x):
    return [x, shoal.random().randint(0, 10**9)]

if __name__ == "__main__":
    pairs = shoal.split_map(draw, range(10), machines=sys.argv[1], machine=sys.argv[2],
                            workers=1, seed=3)
    print(json.dumps(pairs))
"""


def test_split_map_shares_cover_the_input_once_with_machine_independent_numbers(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SPLIT_MAP)
    three = machines_file(tmp_path, MACHINES)
    alone = machines_file(tmp_path, {"solo": [1, 1]})

    def run(machines: Path, name: str) -> list:
        done = subprocess.run([sys.executable, str(script), str(machines), name],
                              capture_output=True, text=True, timeout=120, check=True,
                              cwd=tmp_path)
        return json.loads(done.stdout)

    parts = [pair for name in MACHINES for pair in run(three, name)]
    assert sorted(index for index, _ in parts) == list(range(10))
    assert sorted(parts) == sorted(run(alone, "solo"))
    files = [str(tmp_path / f"results-{name}.csv") for name in MACHINES]
    out = shoal("split", "merge", *files, "-o", str(tmp_path / "all.csv"), cwd=tmp_path)
    assert "merged 10 job(s)" in out.stdout
    with open(tmp_path / "all.csv", newline="") as handle:
        values = [row["value"] for row in csv.DictReader(handle)]
    assert values == [repr(result) for _, result in sorted(parts)]
