"""Redis faults with real processes: the server SIGKILLed and restarted under load, a
Sentinel failover while workers run, and a client that expects TLS from a plain server.

A worker SIGKILLed or SIGSTOPped past its lease is tested on Redis (and Cluster) by the
conformance suite: tests/conformance/test_worker_faults.py runs on every backend. A wrong
or missing password at the CLI: tests/test_redis_link.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.job import Job, State
from shoal.queue import open_queue
from tests.conftest import wait_for
from tests.procs import Procs, executions, marker_job
from tests.redisd import make_tls_files, start_redis, start_sentinel

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

LOST = "connection lost"
BACK = "reconnected after"
JOBS = 200
CALLS = 100

EXECUTOR_SCRIPT = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
import shoal
from tests.callfns import touch
url, out, answer = sys.argv[1:]
with shoal.Executor(url, workers=0) as ex:
    values = list(ex.map(touch, [f"{{out}}/call-{{i}}" for i in range({CALLS})], range({CALLS})))
open(answer, "w").write(json.dumps(values))
"""


def start_executor(tmp_path: Path, url: str, out: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """An Executor(workers=0) mapping CALLS calls in its own process; its stderr is kept."""
    script = tmp_path / "mapper.py"
    script.write_text(EXECUTOR_SCRIPT)
    log = open(tmp_path / "executor.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, str(script), url, str(out),
                             str(tmp_path / "answer.json")], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc, tmp_path / "executor.log"


def submitted_jobs(url: str, out: Path) -> list[str]:
    """JOBS command jobs, acknowledged (submit returned) before any fault."""
    queue = open_queue(url)
    try:
        return queue.submit([Job.command_job(marker_job(out, "sleep 0.02;"), params={"i": i})
                             for i in range(JOBS)])
    finally:
        queue.close()


def check_every_job_ended_once(url: str, ids: list[str], out: Path) -> None:
    """One result per job, every one done; each ran at least once (markers)."""
    queue = open_queue(url)
    try:
        results = [r for r in queue.results() if r.job_id in set(ids)]
    finally:
        queue.close()
    assert sorted(r.job_id for r in results) == sorted(ids), "a job lost or ended twice"
    bad = [(r.job_id, r.state.value, r.attempt, r.reason) for r in results
           if r.state is not State.DONE]
    assert not bad, bad
    assert {job_id for job_id, _, _ in executions(out)} >= set(ids)


def said_once(text: str, who: str) -> None:
    """A client says the outage once and the way back once, never per retry."""
    assert text.count(LOST) == 1 and text.count(BACK) == 1, f"{who}:\n{text[-3000:]}"
    assert "Traceback" not in text, f"{who}:\n{text[-3000:]}"


def all_final(url: str, ids: list[str]) -> bool:
    queue = open_queue(url)
    try:
        states = queue.states(ids)
    finally:
        queue.close()
    return len(states) == len(ids) and all(
        s in (State.DONE, State.FAILED, State.CANCELLED) for s in states.values())


def test_a_killed_server_restarted_on_its_dir_loses_nothing_acknowledged(
        tmp_path: Path, procs: Procs) -> None:
    server = start_redis(tmp_path)  # appendonly yes, appendfsync always
    try:
        url = f"{server.url}?queue=restart"
        out = tmp_path / "out"
        out.mkdir()
        calls = tmp_path / "calls"
        calls.mkdir()
        ids = submitted_jobs(url, out)
        workers = [procs.shoal("work", url, "--slots", "2") for _ in range(2)]
        mapper, mapper_log = start_executor(tmp_path, url, calls)
        wait_for(lambda: len(list(out.iterdir())) >= 40, 120, message="work under way")

        server.kill(signal.SIGKILL)
        wait_for(lambda: all(LOST in procs.output(w) for w in workers)
                 and LOST in mapper_log.read_text(), 60,
                 message="both workers and the executor to notice the server is gone")
        server.start()  # same port, same --dir: the AOF brings the queue back

        assert mapper.wait(timeout=180) == 0, mapper_log.read_text()[-3000:]
        wait_for(lambda: all_final(url, ids), 180, message="every job to end")
        check_every_job_ended_once(url, ids, out)
        answer = json.loads((tmp_path / "answer.json").read_text())
        assert answer == list(range(CALLS))
        assert all((calls / f"call-{i}").exists() for i in range(CALLS))
        for worker in workers:
            assert worker.poll() is None, "a worker gave up: " + procs.output(worker)[-3000:]
            said_once(procs.output(worker), "worker")
        said_once(mapper_log.read_text(), "executor")
    finally:
        procs.kill_all()
        server.stop()


def test_sentinel_failover_while_workers_run_loses_nothing_strict(
        tmp_path: Path, procs: Procs) -> None:
    group = start_sentinel(tmp_path)
    try:
        url = f"{group.url}?queue=failover&durable=strict"
        out = tmp_path / "out"
        out.mkdir()
        ids = submitted_jobs(url, out)  # strict: each submit reached the replica
        workers = [procs.shoal("work", url, "--slots", "2") for _ in range(2)]
        wait_for(lambda: len(list(out.iterdir())) >= 30, 120, message="work under way")

        old_port = group.master_port()
        group.master.kill(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: group.master_port() != old_port, 60,
                 message="the sentinel to promote the replica")
        promoted = time.monotonic() - killed

        def progressed_after_failover() -> bool:
            return all(BACK in procs.output(w) for w in workers)

        wait_for(progressed_after_failover, 120, message="both workers back on the new master")
        recovered = time.monotonic() - killed
        wait_for(lambda: all_final(url, ids), 180, message="every job to end")
        check_every_job_ended_once(url, ids, out)
        for worker in workers:
            assert worker.poll() is None, procs.output(worker)[-3000:]
            said_once(procs.output(worker), "worker")
        print(f"failover: replica promoted {promoted:.1f} s after kill -9 of the master; "
              f"both workers back after {recovered:.1f} s")
    finally:
        procs.kill_all()
        group.stop()


@pytest.mark.parametrize("case", ["tls-client-plain-server", "plain-client-tls-server"])
def test_a_tls_mismatch_at_the_cli_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    tls = make_tls_files(tmp_path / "tls")
    server = start_redis(tmp_path, tls=tls if case == "plain-client-tls-server" else None)
    try:
        url = (f"rediss://127.0.0.1:{server.port}/0?ca={tls.ca}&queue=q"
               if case == "tls-client-plain-server"
               else f"redis://127.0.0.1:{server.port}/0?queue=q")
        run = subprocess.run([sys.executable, "-m", "shoal", "status", url],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stdout + run.stderr
        assert run.stderr.count("\n") == 1, run.stderr
        assert "Traceback" not in run.stderr
        wanted = "redis://" if case == "tls-client-plain-server" else "rediss://"
        assert wanted in run.stderr, run.stderr
    finally:
        server.stop()
