"""Fixtures of the fault suite: the seed, the iteration count, and `rows`, which runs
iterations of one row on one backend and checks and records each."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.backends import BACKENDS, LEASE_S, Backend
from tests.faults.harness import Run
from tests.faults.history import Report, summary
from tests.procs import Procs

LONG = os.environ.get("SHOAL_FAULTS_LONG") == "1"
ITERATIONS = int(os.environ.get("SHOAL_FAULTS_ITERATIONS") or (50 if LONG else 1))
SEED = int(os.environ.get("SHOAL_FAULTS_SEED") or random.randrange(1 << 30))


def pytest_report_header() -> str:
    return (f"shoal faults: seed {SEED} (replay with SHOAL_FAULTS_SEED={SEED}), "
            f"{ITERATIONS} iteration(s) per row")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Rows:
    """Runs `ITERATIONS` of a scenario; every iteration's history must check clean."""

    def __init__(self, name: str, procs: Procs, tmp_path: Path) -> None:
        self.name, self.procs, self.tmp_path = name, procs, tmp_path
        self.rng = random.Random(f"{SEED}:{name}")

    def run(self, backend: str, row: str, scenario: Callable[[Run], Report], *,
            lease_s: float = LEASE_S) -> list[Report]:
        """Every iteration runs, even after one that went wrong, so the table counts them
        all; then the row fails if any did, naming the iterations and the seed."""
        print(f"fault row {row} on {backend}: seed {SEED} "
              f"(replay with SHOAL_FAULTS_SEED={SEED})")
        reports, wrong = [], []
        for i in range(ITERATIONS):
            folder = self.tmp_path / f"iter-{i}"
            folder.mkdir()
            made = Backend(backend, folder, self.procs, lease_s)
            run = Run(made, self.procs, self.rng)
            try:
                report = scenario(run)
            except (AssertionError, pytest.fail.Exception) as e:  # a timeout, a bad exit
                wrong.append(f"iteration {i}: {str(e).splitlines()[0][:500]}")
                print(f"  iteration {i}: {wrong[-1]}")
                continue
            finally:
                run.close()
                made.close()
            print(f"  iteration {i}: {report.as_dict()}")
            if report.problems():
                wrong.append(f"iteration {i}: {report.problems()}")
            reports.append(report)
        record(row, backend, lease_s, reports, len(wrong))
        assert not wrong, f"row {row} on {backend}, seed {SEED}: {'; '.join(wrong)}"
        return reports


def record(row: str, backend: str, lease_s: float, reports: list[Report],
           wrong: int) -> None:
    """Print the table row; append it to SHOAL_FAULTS_REPORT (JSON lines) if set. `wrong`:
    iterations that went wrong (problems, or stopped by a failed check or a timeout)."""
    line = {"row": row, "backend": backend, "seed": SEED, "lease_s": lease_s,
            **summary(reports), "iterations": ITERATIONS, "wrong_iterations": wrong}
    print(f"fault table: {json.dumps(line)}")
    path = os.environ.get("SHOAL_FAULTS_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


@pytest.fixture
def rows(request: pytest.FixtureRequest, procs: Procs, tmp_path: Path) -> Iterator[Rows]:
    yield Rows(request.node.name, procs, tmp_path)
