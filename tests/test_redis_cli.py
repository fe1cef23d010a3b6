"""Every client on a redis:// URL, end to end, as a user runs them: real `shoal`
subprocesses and a real redis-server (one per module, a queue of its own per test).

The static split (`shoal split`) does not apply: it is for machines that cannot reach
one queue, so each runs its share on a local folder; machines that reach one Redis share
its queue instead and need no merge.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.queue import open_queue
from tests.conftest import wait_for
from tests.procs import alive
from tests.redisd import RedisServer, start_redis

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    started = start_redis(tmp_path_factory.mktemp("redis-cli"))
    yield started
    started.stop()


@pytest.fixture
def url(server: RedisServer) -> str:
    return f"{server.url}?queue=cli{uuid.uuid4().hex[:8]}"


def elsewhere(tmp_path: Path, name: str) -> dict[str, str]:
    """A process that shares no folder with the others: its own cwd, HOME and TMPDIR."""
    home = tmp_path / name
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {"cwd": str(home), "HOME": str(home), "TMPDIR": str(home / "tmp"),
            "XDG_CACHE_HOME": str(home / ".cache")}


def shoal(*args: str, at: dict[str, str], check: int | None = 0
          ) -> subprocess.CompletedProcess[str]:
    """Run the real `shoal` command in a subprocess, in its own place (see elsewhere)."""
    env = {**os.environ, **{k: v for k, v in at.items() if k != "cwd"}}
    done = subprocess.run([sys.executable, "-m", "shoal", *args], cwd=at["cwd"], env=env,
                          capture_output=True, text=True, timeout=90)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done


def rows(url: str, at: dict[str, str]) -> list[dict]:
    """`shoal results --format json`: one JSON object a line."""
    out = shoal("results", url, "--format", "json", at=at).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_submit_work_status_results_retry_cancel(url: str, tmp_path: Path) -> None:
    user, host = elsewhere(tmp_path, "user"), elsewhere(tmp_path, "worker-host")
    shoal("submit", url, "echo line-{}; test {} != bad", ":::", "a", "b", "bad", at=user)
    assert "pending" in shoal("status", url, at=user).stdout

    shoal("work", url, "--drain", "--slots", "2", at=host)
    found = {row["params"]["1"] if isinstance(row["params"], dict) else row["name"]: row
             for row in rows(url, user)}
    states = sorted(row["state"] for row in found.values())
    assert states == ["done", "done", "failed"], found
    status = shoal("status", url, at=user).stdout
    assert "done" in status and "failed" in status, status

    failed_id = next(row["id"] for row in found.values() if row["state"] == "failed")
    assert "1 job(s) back to pending" in shoal("retry", url, "--failed", at=user).stdout
    assert "1 job(s) cancelled" in shoal("cancel", url, failed_id, at=user).stdout
    assert {row["id"]: row["state"] for row in rows(url, user)}[failed_id] == "cancelled"


def test_a_finished_jobs_log_is_read_from_another_place(url: str, tmp_path: Path) -> None:
    user, host = elsewhere(tmp_path, "user"), elsewhere(tmp_path, "worker-host")
    shoal("submit", url, "echo said-{}", ":::", "hello", at=user)
    shoal("work", url, "--drain", "--slots", "1", at=host)
    (row,) = rows(url, user)
    assert row["state"] == "done"
    assert "said-hello" in shoal("logs", url, row["id"], at=user).stdout


def test_run_with_a_redis_queue(url: str, tmp_path: Path) -> None:
    here = elsewhere(tmp_path, "run")
    done = shoal("run", "--no-progress", "--queue", url, "-j", "2", "echo {} > out-{}",
                 ":::", "a", "b", "c", at=here)
    assert sorted(p.name for p in Path(here["cwd"]).glob("out-*")) == ["out-a", "out-b", "out-c"]
    assert Path(here["cwd"], "out-b").read_text() == "b\n", done.stdout
    assert sorted(row["state"] for row in rows(url, here)) == ["done"] * 3
    again = shoal("run", "--no-progress", "--queue", url, "echo {} > out-{}",
                  ":::", "a", "b", "c", at=here)
    assert sorted(row["state"] for row in rows(url, here)) == ["done"] * 3, again.stdout


def test_hire_here_shows_in_workers_runs_jobs_and_fires(url: str, tmp_path: Path) -> None:
    user = elsewhere(tmp_path, "user")
    queue = open_queue(url)
    pids: set[int] = set()
    try:
        shoal("hire", url, "2", "--slots", "1", at=user)

        def two_workers() -> bool:
            workers = queue.workers()
            pids.update(w.pid for w in workers)
            return len(workers) == 2

        wait_for(two_workers, 60, message="2 hired workers to register")
        listing = shoal("workers", url, at=user).stdout
        assert all(str(pid) in listing for pid in pids), listing
        shoal("submit", url, "echo {}", ":::", *map(str, range(6)), at=user)
        wait_for(lambda: queue.is_drained(), 60, message="the hired workers to drain the queue")
        assert sorted(row["state"] for row in rows(url, user)) == ["done"] * 6
        shoal("fire", url, "--all", at=user)
        wait_for(lambda: not any(alive(pid) for pid in pids), 60,
                 message="fired workers to exit")
    finally:
        queue.close()
        for pid in pids:  # hired workers are detached: stop them by PID if fire did not
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_executor_map_in_a_subprocess(url: str, tmp_path: Path) -> None:
    script = tmp_path / "mapper.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import shoal\n"
        "from tests.callfns import square\n"
        "with shoal.Executor(sys.argv[1], workers=2) as ex:\n"
        "    print(list(ex.map(square, range(20))))\n")
    done = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True,
                          timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([i * i for i in range(20)])



def test_reading_commands_on_a_queue_name_redis_does_not_hold_say_so(url: str,
                                                                      tmp_path: Path) -> None:
    """A typo in ?queue=NAME is an error for the commands that only read, and makes no
    queue; once a job was submitted the same commands work."""
    at = elsewhere(tmp_path, "reader")
    name = url.rsplit("=", 1)[1]
    for command in (["status", url], ["results", url], ["workers", url], ["logs", url, "1"]):
        done = shoal(*command, at=at, check=2)
        assert done.stderr.strip().splitlines() == [
            f"shoal: error: {url}: no such queue (the Redis server holds no key of queue {name!r})"
        ], done.stderr
    shoal("status", url, at=at, check=2)  # looking made nothing
    shoal("submit", url, "true", ":::", "a", at=at)
    assert "1 pending" in shoal("status", url, at=at).stdout
    assert shoal("workers", url, at=at).returncode == 0
