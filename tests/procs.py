"""Starting real `shoal` processes for tests, and stopping them by PID (never by name)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def run_shoal(*args: str, check: int | None = 0,
              timeout: float = 180) -> subprocess.CompletedProcess:
    """`shoal ARGS` to its end, output captured; its exit status must be `check` (None:
    any)."""
    done = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                          text=True, timeout=timeout)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


class Procs:
    """Starts `python -m shoal ...` in new sessions; kills every group it started at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def shoal(self, *args: str, env: dict[str, str] | None = None,
              cwd: str | Path | None = None, apart: bool = False) -> subprocess.Popen[bytes]:
        """`shoal -v ARGS` in its own session; its output in one log file, or with `apart`
        as the user sees it: stdout and stderr in two files, no -v."""
        n = len(self.started)
        out = open(self.log_dir / f"proc-{n}.{'out' if apart else 'log'}", "wb")  # noqa: SIM115
        err = open(self.log_dir / f"proc-{n}.err", "wb") if apart else None  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", *([] if apart else ["-v"]), *args], stdout=out,
            stderr=err or subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})}, cwd=cwd,
        )
        out.close()
        if err is not None:
            err.close()
        proc.log_path = Path(out.name)  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        """What it printed (on stdout alone if started `apart`)."""
        return proc.log_path.read_text()  # type: ignore[attr-defined]

    def errors(self, proc: subprocess.Popen[bytes]) -> str:
        """What a process started `apart` printed on stderr."""
        return proc.log_path.with_suffix(".err").read_text()  # type: ignore[attr-defined]

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                    os.kill(proc.pid, signal.SIGCONT)
            proc.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    log_dir = tmp_path / "proc-logs"
    log_dir.mkdir()
    p = Procs(log_dir)
    yield p
    p.kill_all()


def marker_job(out: Path, body: str = "") -> str:
    """A shell command that records each execution as its own file (a per-actor history),
    so real executions are counted even if the framework lies."""
    record = f'touch "{out}/$SHOAL_JOB_ID.$SHOAL_ATTEMPT.$SHOAL_WORKER"'
    return f"{body} {record}" if body else record


def executions(out: Path) -> list[tuple[str, int, str]]:
    found = []
    for path in out.iterdir():
        job_id, attempt, worker = path.name.split(".", 2)
        found.append((job_id, int(attempt), worker))
    return found


def alive(pid: int) -> bool:
    """True while `pid` is a running (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
