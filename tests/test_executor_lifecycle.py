"""The Executor's life as the stdlib's pools live it: nothing submitted is lost when the
program exits, shutdown and garbage collection leave no thread, hook or interpreter
behind, and map() neither holds values nor leaves timed-out items queued.

Programs that exit are real subprocesses; what ran or is pending is counted afterwards
through a fresh view of the queue, as a user on another machine would see it.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal
from shoal.job import State
from shoal.queue import open_queue
from shoal.queue.sqlite import SqliteQueue
from shoal.serve.coordinator import Coordinator
from tests import callfns as fns
from tests.conftest import _children, wait_for

T = 30  # seconds: generous, the machine may be busy
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["memory", "folder", "sqlite", "tcp"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(name, queue argument) that a separate program can open too (memory: its own)."""
    name = request.param
    if name == "tcp":
        coordinator = Coordinator(SqliteQueue(tmp_path / "q.sqlite"),
                                  status_dir=tmp_path / "status").start()
        yield name, str(tmp_path / "status")
        coordinator.stop()
        return
    yield name, {"memory": "memory://", "folder": str(tmp_path / "q"),
                 "sqlite": f"sqlite://{tmp_path / 'q.db'}"}[name]


def run_program(tmp_path: Path, body: str, *args: str, timeout_s: float = T,
                ) -> subprocess.CompletedProcess[str]:
    """Run a Python program (its functions live in __main__, pickled by value) to its end."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=timeout_s, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done


TOUCHING = """
    import pathlib, sys, time
    import shoal

    def touch(folder, i, seconds=0.0):
        time.sleep(seconds)
        pathlib.Path(folder, str(i)).touch()
        return i

    ex = shoal.Executor(sys.argv[1], workers=int(sys.argv[2]))
    for i in range(int(sys.argv[3])):
        ex.submit(touch, sys.argv[4], i, float(sys.argv[5]))
"""


def ran(folder: Path) -> set[int]:
    return {int(p.name) for p in folder.iterdir()}


# -- program exit ---------------------------------------------------------------------------


def test_calls_submitted_just_before_exit_still_run(backend, tmp_path):
    name, queue = backend
    marks = tmp_path / "marks"
    marks.mkdir()
    run_program(tmp_path, TOUCHING, queue, "2", "30", str(marks), "0")
    assert ran(marks) == set(range(30))
    if name != "memory":
        with open_queue(queue) as view:
            assert view.counts()[State.DONE] == 30
            assert view.workers() == [], "the executor's worker record outlived it"


def test_shutdown_without_waiting_then_exit_still_runs_every_call(backend, tmp_path):
    _, queue = backend
    marks = tmp_path / "marks"
    marks.mkdir()
    body = TOUCHING + "    ex.shutdown(wait=False)\n"
    run_program(tmp_path, body, queue, "1", "10", str(marks), "0.05")
    assert ran(marks) == set(range(10))


@pytest.mark.parametrize("backend", ["folder", "sqlite", "tcp"], indirect=True)
def test_with_no_local_workers_every_call_is_left_pending_for_other_machines(backend, tmp_path):
    """(The in-process queue refuses workers=0: see the test below.)"""
    _, queue = backend
    marks = tmp_path / "marks"
    marks.mkdir()
    done = run_program(tmp_path, TOUCHING, queue, "0", "100", str(marks), "0")
    assert "100 call(s) left pending" in done.stderr
    with open_queue(queue) as view:
        assert view.counts()[State.PENDING] == 100
        assert view.workers() == []
    assert ran(marks) == set()


def test_a_long_wait_at_exit_is_announced_on_stderr(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    done = run_program(tmp_path, TOUCHING, "memory://", "1", "1", str(marks), "3")
    assert "waiting for 1 call(s) to finish before exiting" in done.stderr
    assert ran(marks) == {0}


def test_cancel_futures_at_shutdown_lets_the_program_exit_without_the_queued_calls(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    body = TOUCHING + "    ex.shutdown(wait=False, cancel_futures=True)\n"
    started = time.monotonic()
    run_program(tmp_path, body, "memory://", "1", "20", str(marks), "0.5")
    assert len(ran(marks)) < 20
    assert time.monotonic() - started < 20 * 0.5


# -- shutdown, garbage collection -------------------------------------------------------------


def new_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


def test_shutdown_stops_every_thread_and_lets_go_of_the_queue(backend, tmp_path):
    _, queue = backend
    before = set(threading.enumerate())
    ex = shoal.Executor(queue, workers=2)
    assert list(ex.map(fns.square, range(20))) == [x * x for x in range(20)]
    ex.shutdown(wait=True)
    assert new_threads(before) == []
    assert _children(os.getpid()) == []
    opened = weakref.ref(ex.queue)
    del ex
    gc.collect()
    assert opened() is None, "an exit hook or a thread still holds the queue"


def test_an_executor_dropped_without_shutdown_releases_threads_and_interpreters(backend,
                                                                               tmp_path):
    _, queue = backend
    before = set(threading.enumerate())
    ex = shoal.Executor(queue, workers=2)
    future = ex.submit(fns.square, 7)
    assert future.result(timeout=T) == 49
    assert _children(os.getpid()), "the call ran in a child interpreter"
    dropped = weakref.ref(ex)
    del ex
    gc.collect()
    assert dropped() is None, "something still holds the executor"
    wait_for(lambda: not new_threads(before), T, message=f"threads {new_threads(before)} to end")
    wait_for(lambda: not _children(os.getpid()), T, message="the interpreters to stop")


def test_calls_of_a_dropped_executor_still_complete(tmp_path):
    before = set(threading.enumerate())
    ex = shoal.Executor(workers=1)
    futures = [ex.submit(fns.sleep_then, 0.05, i) for i in range(5)]
    del ex
    gc.collect()
    assert [f.result(timeout=T) for f in futures] == list(range(5))
    wait_for(lambda: not new_threads(before), T, message=f"threads {new_threads(before)} to end")


def test_results_are_still_readable_after_shutdown(backend):
    _, queue = backend
    ex = shoal.Executor(queue, workers=1)
    assert ex.submit(fns.square, 3).result(timeout=T) == 9
    ex.shutdown()
    assert [r.value for r in ex.results()] == ["9"]


def test_negative_workers_is_a_value_error():
    with pytest.raises(ValueError, match="workers must be 0 or more"):
        shoal.Executor(workers=-1)


def test_workers_zero_on_an_in_process_queue_is_refused():
    with pytest.raises(ValueError, match="no other worker can reach this queue"):
        shoal.Executor(workers=0)


# -- map ------------------------------------------------------------------------------------


def test_map_keeps_no_value_alive_between_items():
    with shoal.Executor(workers=1) as ex:
        items = ex.map(fns.box, [1, 2, 3])
        first = next(items)
        seen = weakref.ref(first)
        del first
        gc.collect()
        assert seen() is None, "the map iterator still holds the value it yielded"
        assert [b.value for b in items] == [2, 3]


def test_map_timeout_cancels_the_item_that_timed_out(tmp_path):
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    marker = tmp_path / "late"
    with shoal.Executor(workers=1) as ex:
        blocker = ex.submit(fns.wait_gate, str(gate), "first", str(started))
        wait_for(started.exists, T, message="the blocking call to start")
        items = ex.map(fns.touch, [str(marker)], timeout=0.2)
        with pytest.raises(cf.TimeoutError):
            next(items)
        gate.touch()
        assert blocker.result(timeout=T) == "first"
    assert not marker.exists(), "the timed-out item ran anyway"


# -- initializer, max_tasks_per_child ----------------------------------------------------------


def test_initializer_runs_once_in_each_interpreter_before_its_calls(backend, tmp_path):
    _, queue = backend
    seen = tmp_path / "inits"
    seen.mkdir()
    with shoal.Executor(queue, workers=2, initializer=fns.record_init,
                        initargs=(str(seen), "ready")) as ex:
        answers = list(ex.map(fns.init_state, range(20)))
    pids = {pid for pid, _ in answers}
    assert {state for _, state in answers} == {"ready"}
    assert sorted(int(p.name) for p in seen.iterdir()) == sorted(pids)


def test_max_tasks_per_child_replaces_the_interpreter(tmp_path):
    with shoal.Executor(workers=1, max_tasks_per_child=2) as ex:
        pids = [ex.submit(fns.job_context).result(timeout=T)[1] for _ in range(6)]
    assert len(set(pids)) == 3, pids


def test_bad_initializer_or_task_limit_is_refused_at_once():
    with pytest.raises(TypeError, match="initializer must be a callable"):
        shoal.Executor(workers=1, initializer=42)
    with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
        shoal.Executor(workers=1, max_tasks_per_child=0)
