"""Python calls as a user meets them: crashes stay in their call, __main__ code travels,
shoal.random() is the same everywhere, progress and config reach the call and the CLI."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import shoal
from shoal.context import job_seed
from shoal.job import Job, State
from shoal.queue.folder import FolderQueue
from shoal.worker import Worker
from tests import callfns as fns
from tests.conftest import wait_for
from tests.procs import alive

T = 20  # seconds: the longest any single result may take before the test fails


@pytest.fixture
def executors(tmp_path: Path):
    """Executors made through this list are shut down (gate opened first) at the end."""
    made: list[shoal.Executor] = []
    yield made
    (tmp_path / "gate").touch()
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)


def executor(made: list[shoal.Executor], queue: object = None, **options: object):
    ex = shoal.Executor(queue, **options)
    made.append(ex)
    return ex


# -- crashes stay in their own call ------------------------------------------------------

CRASHES = {  # what the call does: (function, args, exception the caller gets, message, dies)
    "os._exit(3)": (fns.exit_now, (3,), shoal.JobFailed,
                    r"worker process died \(exit status 3\)", True),
    "SIGKILL": (fns.sigkill_self, (), shoal.JobFailed,
                r"worker process died \(killed by SIGKILL\)", True),
    "segfault": (fns.segfault, (), shoal.JobFailed,
                 r"worker process died \(killed by SIGSEGV\)", True),
    "MemoryError": (fns.out_of_memory, (), MemoryError, "cannot allocate the moon", False),
    "unpicklable result": (fns.unpicklable_result, (), TypeError,
                           "return value cannot be pickled", False),
    "unpicklable exception": (fns.unpicklable_exception, (), shoal.JobFailed,
                              "ValueError: carries a lock", False),
}


@pytest.mark.parametrize("crash", list(CRASHES))
def test_a_crashing_call_fails_only_itself(executors, crash):
    fn, args, error, message, dies = CRASHES[crash]
    ex = executor(executors, workers=1)
    before = ex.submit(fns.job_context)
    crashing = ex.submit(fn, *args)
    after = [ex.submit(fns.job_context) for _ in range(2)]
    with pytest.raises(error, match=message):
        crashing.result(timeout=T)
    pid_before = before.result(timeout=T)[1]
    pids_after = {f.result(timeout=T)[1] for f in after}
    assert len(pids_after) == 1  # one long-lived interpreter per slot
    assert (pid_before not in pids_after) is dies  # a fresh one only after a death
    (failed,) = [r for r in ex.results() if r.job_id == crashing.job_id]
    assert failed.state is State.FAILED and failed.reason


def test_crashes_in_one_slot_leave_calls_in_the_other_slot_alone(executors, tmp_path):
    ex = executor(executors, workers=2)
    gate = tmp_path / "gate"
    waiting = ex.submit(fns.wait_gate, str(gate), "survived")
    crashes = [ex.submit(fns.sigkill_self), ex.submit(fns.exit_now, 1), ex.submit(fns.segfault)]
    for future in crashes:
        with pytest.raises(shoal.JobFailed, match="worker process died"):
            future.result(timeout=T)
    assert not waiting.done()
    gate.touch()
    assert waiting.result(timeout=T) == "survived"


@pytest.mark.parametrize("warm", [
    False,
    True,
], ids=["first call of its interpreter", "later call of its interpreter"])
def test_a_call_left_running_by_a_killed_worker_is_killed_when_its_lease_is_taken_back(
        procs, tmp_path, warm):
    queue, gate, started = tmp_path / "q", tmp_path / "gate", tmp_path / "started"
    with shoal.Executor(queue, workers=0) as ex:
        dying = procs.shoal("work", str(queue), "--slots", "1", "--lease", "1")
        if warm:
            ex.submit(fns.square, 2).result(timeout=T)
        future = ex.submit(fns.wait_gate, str(gate), "retried", str(started))
        wait_for(lambda: started.exists() and started.read_text(), T, message="call started")
        orphan = int(started.read_text())
        os.kill(dying.pid, signal.SIGKILL)
        procs.shoal("work", str(queue), "--slots", "1", "--lease", "1", "--drain")
        try:
            wait_for(lambda: started.read_text() not in ("", str(orphan)), T,
                     message="the call's second attempt on the other worker")
            wait_for(lambda: not alive(orphan), 2, message="the orphaned first attempt to die")
        finally:
            if alive(orphan):  # the call our test started; stop it by its pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(orphan, signal.SIGKILL)
            gate.touch()
        assert future.result(timeout=T) == "retried"


# -- what a call prints ------------------------------------------------------------------------


def shoal_logs(queue: Path, job_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal", "logs", str(queue), job_id],
                          capture_output=True, text=True, timeout=T)


def test_what_a_call_prints_is_in_its_log(executors, tmp_path):
    queue = tmp_path / "q"
    ex = executor(executors, queue, workers=1)
    future = ex.submit(fns.talk, "hello from a call")
    assert future.result(timeout=T) == "hello from a call"
    shown = shoal_logs(queue, future.job_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "hello from a call\nhello from a call (stderr)\n"


def test_what_a_call_printed_before_its_interpreter_died_is_in_its_log(executors, tmp_path):
    queue = tmp_path / "q"
    ex = executor(executors, queue, workers=1)
    future = ex.submit(fns.talk, "last words", exit_code=3)
    with pytest.raises(shoal.JobFailed, match="exit status 3"):
        future.result(timeout=T)
    shown = shoal_logs(queue, future.job_id)
    assert "last words" in shown.stdout, shown.stderr


def test_shoal_logs_shows_what_a_running_call_printed_so_far(executors, tmp_path):
    queue, started = tmp_path / "q", tmp_path / "started"
    ex = executor(executors, queue, workers=1)
    future = ex.submit(fns.talk, "halfway there", str(started), str(tmp_path / "gate"))
    wait_for(started.exists, T, message="the call to print and wait")
    shown = shoal_logs(queue, future.job_id)
    assert "halfway there" in shown.stdout, shown.stderr


# -- code defined in __main__ ----------------------------------------------------------------

MAIN_SCRIPT = """
    import dataclasses
    import shoal

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    def make_scaler(factor):
        def scale(value):
            return value * factor
        return scale

    if __name__ == "__main__":
        offset = 100
        with shoal.Executor(workers=2) as ex:
            print("lambda", list(ex.map(lambda x: x * x + offset, range(4))))
            print("closure", ex.submit(make_scaler(3), 7).result())
            print("class", ex.submit(lambda: Point(1, 2)).result())
            print("nested", ex.submit(lambda p: dataclasses.replace(p, y=p.y + offset),
                                      Point(5, 6)).result())
            try:
                ex.submit(lambda: 1 / 0).result()
            except ZeroDivisionError as error:
                print("error", type(error).__name__, "<lambda>" in str(error.__cause__))
"""


def test_lambdas_closures_and_classes_from_a_scripts_main_run_as_calls(tmp_path):
    script = tmp_path / "main_calls.py"
    script.write_text(textwrap.dedent(MAIN_SCRIPT))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "lambda [100, 101, 104, 109]",
        "closure 21",
        "class Point(x=1, y=2)",
        "nested Point(x=5, y=106)",
        "error ZeroDivisionError True",
    ]


# -- shoal.random(): the same numbers for the same call, wherever it runs ---------------------


def run_draws_on_outside_workers(procs, queue: Path, n_workers: int, calls: int = 4):
    """Submit `calls` rendezvous_draws calls with seed 7; run them with `shoal work --drain`
    processes, all of which get one call at once (they meet at a gate) before the rest."""
    checkins, gate = queue.parent / f"{queue.name}-in", queue.parent / f"{queue.name}-gate"
    checkins.mkdir()
    with shoal.Executor(queue, workers=0, seed=7) as ex:
        futures = [ex.submit(fns.rendezvous_draws, str(checkins), str(gate))
                   for _ in range(calls)]
        view = FolderQueue(queue)
        wait_for(lambda: view.counts()[State.PENDING] == calls, T, message="calls queued")
        workers = [procs.shoal("work", str(queue), "--drain", "--slots", "1")
                   for _ in range(n_workers)]
        wait_for(lambda: len(list(checkins.iterdir())) >= n_workers, T,
                 message="every worker running a call")
        gate.touch()
        results = [f.result(timeout=T) for f in futures]
    for worker in workers:
        assert worker.wait(timeout=T) == 0, procs.output(worker)
    return results


def test_random_gives_the_same_numbers_for_the_same_call_on_any_worker(procs, tmp_path):
    first = run_draws_on_outside_workers(procs, tmp_path / "q1", n_workers=2)
    again = run_draws_on_outside_workers(procs, tmp_path / "q2", n_workers=1)
    assert len({worker for worker, _, _ in first}) == 2  # two worker processes drew
    assert {worker for worker, _, _ in again}.isdisjoint(w for w, _, _ in first)
    assert [numbers for _, _, numbers in first] == [numbers for _, _, numbers in again]
    all_numbers = [x for _, _, numbers in first for x in numbers]
    assert len(set(all_numbers)) == len(all_numbers)  # different calls, different numbers


def test_random_is_the_same_in_process_and_differs_with_the_seed(executors, procs, tmp_path):
    local = executor(executors, workers=1, seed=7)
    here = [local.submit(fns.draws).result(timeout=T) for _ in range(2)]
    other_seed = executor(executors, workers=1, seed=8)
    assert other_seed.submit(fns.draws).result(timeout=T) != here[0]
    (tmp_path / "q-gate").touch()
    outside = run_draws_on_outside_workers(procs, tmp_path / "q", n_workers=1, calls=2)
    assert [numbers for _, _, numbers in outside] == here


def test_map_items_in_one_chunk_draw_different_numbers(executors):
    ex = executor(executors, workers=1, seed=1)
    drawn = list(ex.map(fns.draws, [2] * 4, chunksize=2, timeout=T))
    assert len({tuple(numbers) for numbers in drawn}) == 4


def test_map_draws_the_same_numbers_whatever_the_chunksize(executors):
    one_by_one = executor(executors, workers=1, seed=1)
    chunked = executor(executors, workers=1, seed=1)
    expected = list(one_by_one.map(fns.draws, [2] * 4, timeout=T))
    assert list(chunked.map(fns.draws, [2] * 4, chunksize=2, timeout=T)) == expected


def test_a_retried_call_draws_the_same_numbers(executors, tmp_path):
    ex = executor(executors, workers=1, seed=3)
    marker = tmp_path / "draws"
    future = ex.with_options(retries=1).submit(fns.draws_fail_first, str(marker))
    numbers = future.result(timeout=T)
    first, second = marker.read_text().splitlines()  # what attempts 1 and 2 drew
    assert first == second == repr(numbers)


# -- progress and config -------------------------------------------------------------------


@pytest.fixture
def reporting_call(executors, tmp_path: Path):
    """A call on a folder queue that reported progress 3 of 10 and now waits at the gate."""
    queue = tmp_path / "q"
    ex = executor(executors, queue, workers=1)
    future = ex.submit(fns.progress_then_wait, str(tmp_path / "gate"), 3, 10)
    return queue, future


def test_progress_of_a_running_call_is_visible_from_another_process(reporting_call, tmp_path):
    queue, future = reporting_call
    other = FolderQueue(queue)  # a second view, as another process or host has
    wait_for(lambda: other.files.progress().get(future.job_id) == (3.0, 10.0), T,
             message="progress 3/10 through another view")
    (tmp_path / "gate").touch()
    assert future.result(timeout=T) == "finished"
    assert future.job_id not in other.files.progress()  # a finished call reports no progress


def test_shoal_status_shows_the_progress_of_a_running_call(reporting_call):
    queue, future = reporting_call
    wait_for(lambda: FolderQueue(queue).files.progress().get(future.job_id), T,
             message="progress reported")
    status = subprocess.run([sys.executable, "-m", "shoal", "status", str(queue)],
                            capture_output=True, text=True, timeout=T)
    assert status.returncode == 0, status.stderr
    assert "progress_then_wait" in status.stdout and "3/10 (30%)" in status.stdout


@pytest.mark.parametrize("backend", ["memory", "folder"])
def test_config_inside_a_call_is_the_toml_given_to_the_executor(executors, tmp_path, backend):
    config = tmp_path / "sweep.toml"
    config.write_text('step_size = 2\nname = "sweep"\n[grid]\nx = [1, 2]\n')
    queue = None if backend == "memory" else tmp_path / "q"
    ex = executor(executors, queue, workers=1, config=config)
    expected = {"step_size": 2, "name": "sweep", "grid": {"x": [1, 2]}}
    assert ex.submit(fns.read_config).result(timeout=T) == expected
    config.write_text("changed = true\n")  # the executor keeps its own copy
    assert ex.submit(fns.read_config).result(timeout=T) == expected


def test_config_reaches_calls_run_by_an_outside_worker(procs, tmp_path):
    config = tmp_path / "shared.toml"
    config.write_text("answer = 42\n")
    queue = tmp_path / "q"
    with shoal.Executor(queue, workers=0, config=config) as ex:
        future = ex.submit(fns.read_config)
        worker = procs.shoal("work", str(queue), "--drain", "--slots", "1")
        assert future.result(timeout=T) == {"answer": 42}
    assert worker.wait(timeout=T) == 0, procs.output(worker)


def test_a_call_without_config_gets_an_empty_dict(executors):
    ex = executor(executors, workers=1)
    assert ex.submit(fns.read_config).result(timeout=T) == {}


# -- script jobs share the context -------------------------------------------------------------

DRAW_SCRIPT = "import os, shoal\nprint(os.environ['SHOAL_SEED'], shoal.random().random())\n"


def run_script_job(queue: FolderQueue, job: Job) -> tuple[int, float]:
    queue.submit([job])
    Worker(queue, slots=1, drain=True).run()
    result = queue.get(job.id).result
    assert result is not None and result.state is State.DONE, result
    seed, value = Path(result.log).read_text().split()
    return int(seed), float(value)


def test_a_script_job_sees_shoal_seed_and_draws_with_it(tmp_path):
    script = tmp_path / "draw.py"
    script.write_text(DRAW_SCRIPT)
    job = Job.command_job([sys.executable, str(script)])
    seed, value = run_script_job(FolderQueue(tmp_path / "a"), job)
    assert seed == job_seed(0, job.id)  # the queue's run seed (0) and the job's id
    assert value == random.Random(seed).random()
    assert run_script_job(FolderQueue(tmp_path / "b"), job) == (seed, value)  # a fresh run
    seeded = tmp_path / "c"
    FolderQueue(seeded)
    (seeded / ".shoal" / "queue.toml").write_text("seed = 5\n")
    other_seed, other_value = run_script_job(FolderQueue(seeded), job)
    assert other_seed == job_seed(5, job.id) and other_value != value


def test_a_calls_name_and_params_read_as_reprlib_writes_them_whatever_the_arguments():
    """call_job reprs plain arguments once for both its name and its params (calls.py):
    what `shoal status` shows must not depend on which way it took."""
    import reprlib

    from shoal.calls import call_job

    short = reprlib.Repr()
    short.maxstring = short.maxother = 80
    cases = [(), (1,), (1, "a"), (0.5, None, True, -0.0), ("x" * 19,), ("\x00" * 19,),
             ("x" * 20,), (10**37,), (10**40,), tuple(range(6)), tuple(range(7)),
             ([1, [2, [3, [4]]]],), ({"k": (1, 2)},)]
    for args in cases:
        job = call_job(fns.identity, args)
        parts = ", ".join(short.repr(arg) for arg in args)
        assert job.name == f"identity({parts})"[:120], args
        assert job.params == {"args": short.repr(args), "kwargs": "{}"}, args
    job = call_job(fns.identity, (1,), {"b": "two"})
    assert job.name == "identity(1, b='two')"
    assert job.params == {"args": "(1,)", "kwargs": "{'b': 'two'}"}
