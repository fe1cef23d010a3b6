"""The README's examples run as printed: taken from README.md itself, run for real."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

# What the example's `executable = python3 simulate.py` runs: it reads its own
# parameters from the job file (its last argument), as the README says.
SIMULATE = """\
import configparser, sys
job = configparser.ConfigParser()
job.read(sys.argv[-1])
print(f"seed={job['params']['seed']} steps={job['params']['steps']}")
"""


def readme_block(heading: str, language: str) -> str:
    """The first ```language block after `heading` in the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    found = re.compile(rf"^```{language}\n(.*?)^```", re.S | re.M).search(text, start)
    assert found is not None, f"no {language} block after {heading!r} in README.md"
    return found.group(1)


def shoal(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.timeout(180)
def test_the_ini_job_file_example_runs_as_printed(tmp_path: Path) -> None:
    if shutil.which("python3") is None:
        pytest.skip("the example runs `python3`, which is not on PATH here")
    example = readme_block("### Job files", "ini")
    assert ";" in example  # the inline comments are part of what is tested
    folder, worker = tmp_path / "sweep", tmp_path / "worker"
    folder.mkdir()
    worker.mkdir()
    (worker / "simulate.py").write_text(SIMULATE)
    (folder / "seed-1.ini").write_text(example)
    shoal("submit", str(folder), str(folder / "seed-1.ini"), cwd=worker)  # checked, accepted
    shoal("work", str(folder), "--drain", cwd=worker)
    (row,) = map(json.loads, shoal("results", str(folder), "--format", "json",
                                   cwd=worker).stdout.splitlines())
    assert (row["name"], row["state"]) == ("seed-1.ini", "done"), row
    assert (folder / "seed-1.log").read_text() == "seed=1 steps=1000\n"
