"""Executor calls that take other calls' futures as arguments (they wait for them and get
their values, as with dask), and calls with a priority or resources (`Executor.options`).

Real workers throughout: the executor's own, or `shoal work` processes on a coordinator
whose queue lives in this process (a worker is SIGKILLed mid-chain there). The core cases
run on every backend an Executor can use.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import shoal
from shoal.call_options import job_fields, parse_mem
from shoal.errors import JobFailed
from shoal.job import State
from shoal.queue.memory import MemoryQueue
from shoal.queue.sqlite import SqliteQueue
from shoal.serve.coordinator import Coordinator
from tests import callfns as fns
from tests import test_executor
from tests.conftest import wait_for
from tests.procs import Procs

pytestmark = pytest.mark.timeout(240)

T = 60  # seconds: the longest a result may take on a loaded machine
REPO = Path(__file__).resolve().parent.parent

# The gate file and the executor factory that shuts its executors down: test_executor's.
gate = test_executor.gate
make_executor = test_executor.make_executor
LEASE_S = 1.0


# -- calls the tests submit (importable as tests.test_executor_deps) ----------------------

def note(path: str, word: str, value: object = None) -> object:
    """Append `word` to a file: the order in which calls ran."""
    with open(path, "a") as out:
        out.write(word + "\n")
    return value


def plus_ten_hanging_on_victim(x: int, folder: str) -> int:
    """x + 10; on the worker started with VICTIM set, hang (until that worker is killed)."""
    Path(folder, f"attempt-{os.environ['SHOAL_ATTEMPT']}").touch()
    if os.environ.get("VICTIM"):
        deadline = time.monotonic() + fns.GATE_MAX_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
    return x + 10


# -- fixtures ----------------------------------------------------------------------------

@pytest.fixture(params=["memory", "folder", "sqlite", "tcp"])
def queue_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """What an Executor is given: the in-process queue, a folder, sqlite, or a coordinator
    (over sqlite) that outlives the test's executors (set up before them)."""
    if request.param != "tcp":
        yield {"memory": None, "folder": tmp_path / "q",
               "sqlite": f"sqlite://{tmp_path / 'q.db'}"}[request.param]
        return
    coordinator = Coordinator(SqliteQueue(tmp_path / "served.db"),
                              status_dir=tmp_path / "status").start()
    yield str(tmp_path / "status")
    coordinator.stop()


@pytest.fixture
def executor_on(queue_target: object, make_executor) -> Callable[..., shoal.Executor]:
    """An Executor factory on each backend in turn."""
    return lambda **options: make_executor(queue_target, **options)


def wait_until_sent(ex: shoal.Executor, *fs: cf.Future, state: State | None = None) -> None:
    """Until the queue holds these calls' jobs (the executor submits in the background),
    in `state` if given."""
    def there() -> bool:
        found = [ex.queue.get(f.job_id) for f in fs]
        return all(s is not None and (state is None or s.state is state) for s in found)
    wait_for(there, T, message="the calls to reach the queue")


# -- dependencies ------------------------------------------------------------------------

def test_map_reduce_passes_every_map_result_to_the_reduce(executor_on, gate):
    ex = executor_on(workers=2)
    maps = [ex.submit(fns.gated_square, str(gate), i, 9) for i in range(10)]  # 9 waits
    total = ex.submit(sum, maps)  # a list of futures: the reduce gets a list of values
    wait_until_sent(ex, total)
    assert ex.queue.get(total.job_id).state is State.WAITING
    gate.touch()
    assert total.result(timeout=T) == sum(i * i for i in range(10))
    reduce_job = ex.queue.get(total.job_id).job
    assert set(reduce_job.after) == {f.job_id for f in maps}


def test_values_arrive_one_level_deep_and_the_same_future_twice_is_one_dependency(
        make_executor):
    ex = make_executor(workers=2)
    three = ex.submit(fns.add, 1, 2)
    both = ex.submit(fns.identity, [three, three, {"k": 1}])
    assert both.result(timeout=T) == [3, 3, {"k": 1}]
    assert ex.queue.get(both.job_id).job.after == (three.job_id,)
    four = ex.submit(fns.square, 2)
    mixed = ex.submit(fns.identity, {"k": three, "n": 5, "l": [1]})
    assert mixed.result(timeout=T) == {"k": 3, "n": 5, "l": [1]}
    assert ex.submit(fns.identity, (four, 0)).result(timeout=T) == (4, 0)
    assert ex.submit(fns.add, three, y=four).result(timeout=T) == 7


def test_map_over_futures_gets_their_values(make_executor):
    ex = make_executor(workers=2)
    firsts = [ex.submit(fns.add, i, 1) for i in range(6)]
    assert list(ex.map(fns.square, firsts, timeout=T)) == [(i + 1) ** 2 for i in range(6)]


def test_a_chain_waits_for_each_link_even_when_the_first_is_slow(executor_on, gate, tmp_path):
    ex = executor_on(workers=3)
    order = str(tmp_path / "order")
    first = ex.submit(fns.wait_gate, str(gate), 1)
    second = ex.submit(note, order, "second", first)
    third = ex.submit(note, order, "third", second)
    wait_until_sent(ex, first, second, third)
    assert ex.queue.get(third.job_id).state is State.WAITING
    assert not Path(order).exists(), "a call ran before the call it takes the value of"
    gate.touch()
    assert third.result(timeout=T) == 1
    assert Path(order).read_text().split() == ["second", "third"]


def test_a_failed_dependency_fails_its_dependants_without_running_them(executor_on, tmp_path):
    ex = executor_on(workers=2)
    ran = tmp_path / "dependant-ran"
    bad = ex.submit(fns.boom, "no data")
    dependant = ex.submit(fns.touch, str(ran), bad)
    further = ex.submit(fns.touch, str(ran), [dependant])
    with pytest.raises(ValueError, match="no data"):  # the call's own exception
        bad.result(timeout=T)
    for future in (dependant, further):
        with pytest.raises(JobFailed, match=r"dependency .* failed"):
            future.result(timeout=T)
    assert not ran.exists(), "a call whose dependency failed ran"
    results = {r.job_id: r for r in ex.results()}
    assert results[dependant.job_id].state is State.FAILED
    assert results[dependant.job_id].attempt == 0
    assert bad.job_id in results[dependant.job_id].reason


def test_a_call_submitted_after_its_dependency_failed_fails_at_once(make_executor, tmp_path):
    ex = make_executor(workers=1)
    bad = ex.submit(fns.boom, "no data")
    assert bad.exception(timeout=T) is not None
    late = ex.submit(fns.touch, str(tmp_path / "ran"), bad)
    with pytest.raises(JobFailed, match="dependency"):
        late.result(timeout=T)
    assert not (tmp_path / "ran").exists()


def test_cancelling_a_pending_dependency_cancels_the_call_that_waits_for_it(make_executor,
                                                                          gate, tmp_path):
    ex = make_executor(workers=1)
    started = tmp_path / "started"
    blocker = ex.submit(fns.wait_gate, str(gate), None, str(started))
    wait_for(started.exists, T, message="the blocking call to start")
    dependency = ex.submit(fns.identity, 1)
    dependant = ex.submit(fns.touch, str(tmp_path / "ran"), dependency)
    unwanted = ex.submit(fns.touch, str(tmp_path / "ran"), dependency)
    wait_until_sent(ex, dependency, dependant)
    wait_until_sent(ex, unwanted, state=State.WAITING)
    assert unwanted.cancel(), "a call waiting for its dependencies can be cancelled"
    assert dependency.cancel()
    with pytest.raises(JobFailed, match=r"dependency .* cancelled"):
        dependant.result(timeout=T)
    gate.touch()
    blocker.result(timeout=T)
    assert not (tmp_path / "ran").exists()


def test_a_dependency_cancelled_before_it_was_sent_ends_its_dependants(make_executor, gate,
                                                                        tmp_path):
    """Calls wait in the executor's outbox until its submitter sends them; the test holds
    the submitter back (the engine's lock) so that the cancels land before the sends."""
    ex = make_executor(workers=1)
    started, ran = tmp_path / "started", tmp_path / "ran"
    blocker = ex.submit(fns.wait_gate, str(gate), None, str(started))
    wait_for(started.exists, T, message="the blocking call to start")
    with ex._engine._lock:
        waited_for = ex.submit(fns.identity, 1)
        dependant = ex.submit(fns.touch, str(ran), waited_for)  # sent, then ended by the queue
        alone = ex.submit(fns.identity, 2)
        assert waited_for.cancel() and alone.cancel()
        late = ex.submit(fns.touch, str(ran), alone)  # its dependency never reaches the queue
    for future in (dependant, late):
        with pytest.raises(JobFailed, match=r"dependency .* was cancelled"):
            future.result(timeout=T)
    assert ex.queue.get(alone.job_id) is None and ex.queue.get(late.job_id) is None
    assert ex.queue.get(waited_for.job_id).state is State.CANCELLED
    gate.touch()
    blocker.result(timeout=T)
    assert not ran.exists()


def test_a_future_of_another_executor_is_refused_with_a_clear_type_error(make_executor):
    ex, other = make_executor(workers=1), make_executor(workers=1)
    theirs = other.submit(fns.square, 2)
    with pytest.raises(TypeError, match="another shoal Executor"):
        ex.submit(fns.identity, theirs)
    with pytest.raises(TypeError, match=r"concurrent\.futures"):
        ex.submit(fns.identity, [cf.Future()])
    mine = ex.submit(fns.square, 2)
    with pytest.raises(TypeError, match="one level inside a list, tuple or dict"):
        ex.submit(fns.identity, [[mine]])
    assert theirs.result(timeout=T) == 4 and mine.result(timeout=T) == 4


def test_a_chain_of_calls_completes_across_a_worker_killed_mid_chain(make_executor, tmp_path,
                                                                    procs: Procs):
    """Workers are `shoal work` processes on a coordinator; the one running the middle
    call is SIGKILLed; its lease expires, another worker reaps it and runs the call again."""
    status = tmp_path / "status"
    coordinator = Coordinator(MemoryQueue(lease_s=LEASE_S), status_dir=status).start()
    try:
        ex = make_executor(str(status), workers=0)
        attempts = tmp_path / "attempts"
        attempts.mkdir()
        env = {"PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
        first = ex.submit(fns.add, 1, 2)
        middle = ex.submit(plus_ten_hanging_on_victim, first, str(attempts))
        last = ex.submit(fns.square, middle)
        victim = procs.shoal("work", str(status), "--slots", "1", env={**env, "VICTIM": "1"})
        wait_for(lambda: (attempts / "attempt-1").exists(), T,
                 message="the middle call to start on the victim")
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        procs.shoal("work", str(status), "--slots", "1", env=env)
        assert last.result(timeout=T) == 13 ** 2
        assert (attempts / "attempt-2").exists()
        assert ex.queue.get(middle.job_id).result.attempt == 2
        ex.shutdown()
    finally:
        procs.kill_all()
        coordinator.stop()


# -- priorities and resources ------------------------------------------------------------

def test_a_higher_priority_call_submitted_last_runs_first(make_executor, gate, tmp_path):
    ex = make_executor(workers=1)
    started, order = tmp_path / "started", str(tmp_path / "order")
    blocker = ex.submit(fns.wait_gate, str(gate), None, str(started))
    wait_for(started.exists, T, message="the blocking call to start")
    lows = [ex.submit(note, order, f"low{i}") for i in range(3)]
    urgent = ex.options(priority=5).submit(note, order, "urgent")
    middle = ex.options(priority=1).map(note, [order], ["middle"])
    wait_until_sent(ex, *lows, urgent)
    wait_for(lambda: ex.queue.counts()[State.PENDING] == 5, T, message="5 pending calls")
    gate.touch()
    blocker.result(timeout=T)
    assert list(middle) == [None]
    cf.wait([*lows, urgent], timeout=T)
    assert Path(order).read_text().split() == ["urgent", "middle", "low0", "low1", "low2"]


def test_options_set_the_job_fields_of_the_calls_they_submit(make_executor, tmp_path):
    ex = make_executor(tmp_path / "q", workers=0)
    view = ex.options(priority=5, cpus=2, gpus=1, mem="4G", requires=["gpu"],
                      resources={"license": 1}).options(timeout_s=30)
    future = view.submit(fns.square, 3)
    plain = ex.submit(fns.square, 4)
    wait_until_sent(ex, future, plain)
    job = ex.queue.get(future.job_id).job
    assert job.priority == 5 and job.timeout_s == 30
    assert dict(job.needs) == {"cpus": 2, "gpus": 1, "mem": 4 * 2**30, "license": 1}
    assert job.labels == ("gpu",)
    default = ex.queue.get(plain.job_id).job
    assert (default.priority, dict(default.needs), default.labels) == (0, {}, ())


@pytest.mark.parametrize(("options", "error", "words"), [
    ({"bogus": 1}, TypeError, "unknown option"),
    ({"priority": 1.5}, TypeError, "priority must be a whole number"),
    ({"mem": "4Q"}, ValueError, "mem: '4Q' is not an amount of memory"),
    ({"mem": 0}, ValueError, "mem: 0: give an amount of memory > 0"),
    ({"cpus": -1}, ValueError, "cpus: -1 is not a number >= 0"),
    ({"cpus": 0.5}, ValueError, "cpus: 0.5 is not a whole number"),
    ({"gpus": 0.5}, ValueError, "gpus: 0.5 is not a whole number"),
    ({"requires": [1]}, TypeError, "requires must be a label"),
])
def test_bad_options_are_refused_with_the_option_named(options, error, words):
    with pytest.raises(error, match=words):
        job_fields(options)


def test_mem_sizes_are_binary_units():
    assert parse_mem("512M") == 512 * 2**20
    assert parse_mem("4G") == parse_mem("4GiB") == parse_mem("4gb") == 4 * 2**30
    assert parse_mem("1.5G") == 3 * 2**29
    assert parse_mem(1000) == 1000
