"""shoal.Executor keeps the concurrent.futures.Executor contract (as the stdlib pools do).

Calls that must still be running at some point block on a gate file that the test
opens; the `make_executor` fixture opens it and shuts every executor down at the end,
so the autouse no-leftover-children check also covers the executors' interpreters.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import shoal
from shoal.calls import RemoteTraceback
from shoal.fsutil import HOST
from shoal.job import State
from shoal.queue.sqlite import SqliteQueue
from shoal.serve.coordinator import Coordinator
from tests import callfns as fns
from tests.conftest import wait_for

T = 20  # seconds: the longest any single result may take before the test fails


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    return tmp_path / "gate"


@pytest.fixture
def make_executor(gate: Path) -> Iterator[Callable[..., shoal.Executor]]:
    made: list[shoal.Executor] = []

    def make(queue: object = None, **options: object) -> shoal.Executor:
        executor = shoal.Executor(queue, **options)
        made.append(executor)
        return executor

    yield make
    gate.touch()  # release any call still waiting, then stop everything
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(params=["memory", "folder", "tcp"])
def executor_on(request: pytest.FixtureRequest, make_executor, tmp_path: Path, gate: Path):
    """An Executor factory on the in-process queue, a folder queue, or a coordinator."""
    made: list[shoal.Executor] = []
    if request.param == "tcp":
        coordinator = Coordinator(SqliteQueue(tmp_path / "q.sqlite"),
                                  status_dir=tmp_path / "status").start()

        def stop() -> None:  # the executors first: they talk to the coordinator
            gate.touch()
            for executor in made:
                executor.shutdown(wait=True, cancel_futures=True)
            coordinator.stop()
        request.addfinalizer(stop)

    def make(**options: object) -> shoal.Executor:
        queue = {"memory": None, "folder": tmp_path / "q",
                 "tcp": str(tmp_path / "status")}[request.param]
        made.append(make_executor(queue, **options))
        return made[-1]
    return make


def open_gate_when(gate: Path, condition: Callable[[], bool],
                   *events: threading.Event) -> threading.Thread:
    """Set `events` and open the gate from another thread once `condition` holds (or
    after T seconds)."""
    def watch() -> None:
        deadline = time.monotonic() + T
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        for event in events:
            event.set()
        gate.touch()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def start_blocking(executor, gate: Path, tmp_path: Path, value: str = "first") -> cf.Future:
    """Submit a call that holds its slot until the gate opens; return once it runs."""
    started = tmp_path / f"started-{value}"
    future = executor.submit(fns.wait_gate, str(gate), value, str(started))
    wait_for(started.exists, T, message="the blocking call to start")
    return future


# -- submit, map ---------------------------------------------------------------------------


def test_submit_returns_a_future_with_the_result(executor_on):
    ex = executor_on(workers=2)
    future = ex.submit(fns.add, 2, y=3)
    assert isinstance(future, cf.Future)
    assert future.result(timeout=T) == 5
    assert future.done() and not future.cancelled() and future.exception() is None


def test_map_returns_results_in_input_order_whatever_the_durations(executor_on):
    ex = executor_on(workers=2)
    durations = [0.3, 0.0, 0.15, 0.0, 0.05]
    labels = ["a", "b", "c", "d", "e"]
    assert list(ex.map(fns.sleep_then, durations, labels, timeout=T)) == labels


def test_map_accepts_several_iterables_and_stops_at_the_shortest(make_executor):
    ex = make_executor(workers=2)
    assert list(ex.map(fns.add, range(5), range(10, 13), timeout=T)) == [10, 12, 14]


@pytest.mark.parametrize("chunksize", [1, 2])
def test_map_submits_every_item_at_once_but_yields_results_lazily(make_executor, gate,
                                                                  chunksize):
    ex = make_executor(workers=2)
    consumed: list[int] = []

    def items() -> Iterator[int]:
        for i in range(6):
            consumed.append(i)
            yield i

    fn = functools.partial(fns.gated_square, str(gate), blocked=5)
    results = ex.map(fn, items(), timeout=T, chunksize=chunksize)
    assert consumed == list(range(6))  # like the stdlib: the input is read at once
    assert [next(results) for _ in range(4)] == [0, 1, 4, 9]  # the last call still waits
    assert not gate.exists()
    gate.touch()
    assert list(results) == [16, 25]


def test_map_timeout_raises_timeout_error(make_executor, gate):
    ex = make_executor(workers=2)
    started = time.monotonic()
    results = ex.map(fns.wait_gate, [str(gate)], timeout=0.3)
    with pytest.raises(cf.TimeoutError):
        next(results)
    assert time.monotonic() - started < 5
    assert cf.TimeoutError is TimeoutError


@pytest.mark.parametrize("chunksize", [2, 3, 10])
def test_map_with_chunks_gives_the_same_as_without(make_executor, chunksize):
    ex = make_executor(workers=2)
    expected = list(ex.map(fns.add, range(7), range(100, 107), timeout=T))
    assert expected == [100 + 2 * i for i in range(7)]
    assert list(ex.map(fns.add, range(7), range(100, 107), timeout=T,
                       chunksize=chunksize)) == expected


def test_map_rejects_a_chunksize_below_one(make_executor):
    ex = make_executor(workers=1)
    with pytest.raises(ValueError):
        ex.map(fns.square, [1], chunksize=0)


def test_map_with_chunks_returns_a_generator_like_the_stdlib(make_executor):
    ex = make_executor(workers=1)
    results = ex.map(fns.square, range(4), chunksize=2, timeout=T)
    assert next(results) == 0
    results.close()  # the stdlib's result iterator is a generator


@pytest.mark.parametrize("chunksize", [1, 2])
def test_closing_the_map_iterator_cancels_the_calls_not_started(make_executor, gate, tmp_path,
                                                                chunksize):
    ex = make_executor(workers=1)
    markers = [tmp_path / f"item-{i}" for i in range(3 * chunksize)]
    gates = [str(gate) if i == chunksize else None for i in range(len(markers))]
    results = ex.map(fns.touch_then_wait, [str(m) for m in markers], gates,
                     chunksize=chunksize, timeout=T)
    assert next(results) == "item-0"
    wait_for(markers[chunksize].exists, T, message="the second chunk to run")
    results.close()  # the third chunk has not started: it is cancelled
    gate.touch()
    ex.shutdown()
    assert [m.exists() for m in markers] == [True] * 2 * chunksize + [False] * chunksize


def test_map_through_with_options_accepts_chunksize(make_executor):
    ex = make_executor(workers=1)
    view = ex.with_options(timeout_s=T)
    assert list(view.map(fns.square, range(4), chunksize=2, timeout=T)) == [0, 1, 4, 9]


# -- exceptions ---------------------------------------------------------------------------


def test_remote_exception_keeps_type_message_and_traceback(executor_on):
    ex = executor_on(workers=1)
    future = ex.submit(fns.boom, "bad input 42")
    with pytest.raises(ValueError, match="bad input 42") as info:
        future.result(timeout=T)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in boom" in str(cause) and "raise ValueError(message)" in str(cause)
    assert isinstance(future.exception(), ValueError)


def test_remote_exception_of_a_user_defined_class_comes_back_as_itself(make_executor):
    ex = make_executor(workers=1)
    with pytest.raises(fns.CustomError, match="mine") as info:
        ex.submit(fns.raise_custom, "mine").result(timeout=T)
    assert "raise_custom" in str(info.value.__cause__)


def test_exception_that_pickle_cannot_rebuild_still_tells_what_happened(make_executor):
    ex = make_executor(workers=1)
    error = ex.submit(fns.raise_two_arg, 7, "disk full").exception(timeout=T)
    assert "error 7: disk full" in str(error)
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "raise_two_arg" in str(error.__cause__)


def test_exception_in_map_is_raised_when_its_item_is_reached(make_executor):
    ex = make_executor(workers=2)
    results = ex.map(fns.boom_on, [1, 2, 3], [2, 2, 2], timeout=T)
    assert next(results) == 1
    with pytest.raises(ValueError, match="item 2"):
        next(results)


# -- waiting ------------------------------------------------------------------------------


def test_as_completed_yields_futures_in_completion_order(make_executor, gate):
    ex = make_executor(workers=2)
    slow = ex.submit(fns.wait_gate, str(gate), "slow")
    fast = ex.submit(fns.square, 3)
    order = []
    for future in cf.as_completed([slow, fast], timeout=T):
        order.append(future)
        gate.touch()
    assert order == [fast, slow]
    assert [f.result() for f in order] == [9, "slow"]


def test_wait_first_completed_returns_the_finished_one(make_executor, gate):
    ex = make_executor(workers=2)
    slow = ex.submit(fns.wait_gate, str(gate), "slow")
    fast = ex.submit(fns.square, 3)
    done, not_done = cf.wait([slow, fast], timeout=T, return_when=cf.FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}


def test_wait_first_exception_returns_at_the_first_failure(make_executor, gate):
    ex = make_executor(workers=2)
    slow = ex.submit(fns.wait_gate, str(gate), "slow")
    failing = ex.submit(fns.boom, "first failure")
    done, not_done = cf.wait([slow, failing], timeout=T, return_when=cf.FIRST_EXCEPTION)
    assert failing in done and not_done == {slow}
    assert isinstance(failing.exception(), ValueError)


def test_wait_all_completed(make_executor):
    ex = make_executor(workers=2)
    futures = [ex.submit(fns.square, i) for i in range(5)]
    done, not_done = cf.wait(futures, timeout=T)
    assert done == set(futures) and not not_done


# -- cancel, shutdown ---------------------------------------------------------------------


def poll(condition: Callable[[], object], seconds: float) -> bool:
    """Like wait_for, but only reports whether `condition` came true in time."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def notified_done(futures: list[cf.Future], seconds: float) -> set[cf.Future]:
    """The futures concurrent.futures.wait sees as done within `seconds`."""
    return cf.wait(futures, timeout=seconds)[0]


def unstick(futures: list[cf.Future]) -> None:
    """Notify cancelled futures nobody notified, so a test that found a hang can end."""
    for future in futures:
        if future.cancelled() and future not in notified_done([future], 0):
            future.set_running_or_notify_cancel()


def watchdog(futures: list[cf.Future], seconds: float) -> tuple[threading.Event, list[bool]]:
    """Unstick `futures` if nobody sets the returned event within `seconds` (a hang)."""
    finished, stuck = threading.Event(), []

    def watch() -> None:
        if not finished.wait(seconds):
            stuck.append(True)
            unstick(futures)

    threading.Thread(target=watch, daemon=True).start()
    return finished, stuck


@pytest.mark.parametrize("when", ["right after submit", "once queued"])
def test_cancel_before_start_returns_true_and_the_call_never_runs(executor_on, gate, tmp_path,
                                                                  when):
    ex = executor_on(workers=1)
    first = start_blocking(ex, gate, tmp_path)
    marker = tmp_path / "queued-ran"
    queued = ex.submit(fns.touch, str(marker), "queued")
    if when == "once queued":
        wait_for(lambda: ex.queue.get(queued.job_id), T, message="the call to be queued")
    assert queued.cancel() is True
    assert queued.cancelled() and queued.done()
    with pytest.raises(cf.CancelledError):
        queued.result(timeout=T)
    gate.touch()
    assert first.result(timeout=T) == "first"
    assert ex.submit(fns.square, 4).result(timeout=T) == 16  # the slot went on
    ex.shutdown()
    assert not marker.exists()
    status = ex.queue.get(queued.job_id)
    assert status is None or status.state is State.CANCELLED


def test_cancel_of_a_running_call_returns_false_and_it_completes(executor_on, gate, tmp_path):
    ex = executor_on(workers=1)
    first = start_blocking(ex, gate, tmp_path)
    assert first.cancel() is False
    assert not first.cancelled()
    gate.touch()
    assert first.result(timeout=T) == "first"


def test_future_of_a_running_call_reports_running(make_executor, gate, tmp_path):
    ex = make_executor(workers=1)
    first = start_blocking(ex, gate, tmp_path)
    wait_for(first.running, 5, message="running() of a started call")
    assert not first.done()


def test_cancelled_futures_count_as_done_for_wait_and_as_completed(executor_on, gate,
                                                                   tmp_path):
    """wait() and as_completed() see a future as done only once it is cancelled AND
    notified (set_running_or_notify_cancel); a cancel right after submit (the call still
    waits to be sent) once left futures that wait() never returned."""
    ex = executor_on(workers=1)
    start_blocking(ex, gate, tmp_path)
    queued = []
    for i in range(5):
        queued.append(ex.submit(fns.square, i))
        assert queued[-1].cancel() is True
    try:
        assert notified_done(queued, 2) == set(queued)
        assert set(cf.as_completed(queued, timeout=2)) == set(queued)
    finally:
        unstick(queued)


def test_shutdown_cancel_futures_cancels_the_queued_calls(executor_on, gate, tmp_path):
    ex = executor_on(workers=1)
    first = start_blocking(ex, gate, tmp_path)
    markers = [tmp_path / f"queued-{i}" for i in range(3)]
    queued = [ex.submit(fns.touch, str(m), i) for i, m in enumerate(markers)]
    wait_for(lambda: all(ex.queue.get(f.job_id) for f in queued), T, message="calls queued")
    open_gate_when(gate, lambda: all(f.cancelled() for f in queued))
    finished, stuck = watchdog(queued, 10)
    ex.shutdown(cancel_futures=True)
    finished.set()
    assert not stuck, "shutdown(cancel_futures=True) hung"
    assert all(f.cancelled() for f in queued)
    assert first.result(timeout=0) == "first"
    assert not any(m.exists() for m in markers)


def hold_submits(ex: shoal.Executor, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make the queue slow to write (a slow shared file system): each submit waits for
    the second event; the first event says a submit is under way."""
    writing, written = threading.Event(), threading.Event()
    real_submit = ex.queue.submit

    def slow_submit(jobs):
        writing.set()
        written.wait(T)
        return real_submit(jobs)

    monkeypatch.setattr(ex.queue, "submit", slow_submit)
    return writing, written


def test_shutdown_cancel_futures_while_calls_wait_to_be_sent(executor_on, gate, tmp_path,
                                                             monkeypatch):
    """Calls cancelled before they were even sent must not make shutdown wait for ever."""
    ex = executor_on(workers=1)
    first = start_blocking(ex, gate, tmp_path)
    writing, written = hold_submits(ex, monkeypatch)
    ex.submit(fns.square, 2)  # keeps the submitter busy: the next calls wait to be sent
    assert writing.wait(T)
    markers = [tmp_path / f"queued-{i}" for i in range(3)]
    queued = [ex.submit(fns.touch, str(m), i) for i, m in enumerate(markers)]
    open_gate_when(gate, lambda: all(f.cancelled() for f in queued), written)
    finished, stuck = watchdog(queued, 5)
    ex.shutdown(cancel_futures=True)
    finished.set()
    assert not stuck, "shutdown(cancel_futures=True) hung"
    assert all(f.cancelled() for f in queued)
    assert first.result(timeout=0) == "first"
    assert not any(m.exists() for m in markers)


def test_cancel_while_the_call_is_being_written_to_a_slow_queue(make_executor, gate, tmp_path,
                                                                monkeypatch):
    ex = make_executor(tmp_path / "q", workers=1)
    first = start_blocking(ex, gate, tmp_path)
    writing, written = hold_submits(ex, monkeypatch)
    marker = tmp_path / "queued-ran"
    queued = ex.submit(fns.touch, str(marker), "queued")
    assert writing.wait(T)
    cancelled = queued.cancel()
    written.set()
    gate.touch()
    assert first.result(timeout=T) == "first"
    ex.shutdown()
    assert (cancelled, marker.exists()) == (True, False)


def test_cancel_is_not_undone_by_the_cancellation_result(executor_on, gate, tmp_path,
                                                         monkeypatch):
    """The CANCELLED result the queue records must not reach the future first (it would
    be set running and failed with JobFailed, and cancel() would return False); the
    queue's cancel is slowed down here to give the collector every chance."""
    ex = executor_on(workers=1)
    start_blocking(ex, gate, tmp_path)
    queued = ex.submit(fns.square, 3)
    wait_for(lambda: ex.queue.get(queued.job_id), T, message="the call to be queued")
    real_cancel = ex.queue.cancel

    def cancel_then_give_the_collector_a_moment(job_ids):
        cancelled = real_cancel(job_ids)
        poll(lambda: queued.running() or queued.done(), 0.5)
        return cancelled

    monkeypatch.setattr(ex.queue, "cancel", cancel_then_give_the_collector_a_moment)
    assert queued.cancel() is True
    assert queued.cancelled()


def test_shutdown_waits_for_calls_then_submit_raises(executor_on):
    ex = executor_on(workers=2)
    futures = [ex.submit(fns.sleep_then, 0.1, i) for i in range(4)]
    ex.shutdown()
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [0, 1, 2, 3]
    with pytest.raises(RuntimeError):
        ex.submit(fns.square, 1)
    with pytest.raises(RuntimeError):
        ex.with_options(timeout_s=5).submit(fns.square, 1)
    with pytest.raises(RuntimeError):
        ex.map(fns.square, [1])


def test_shutdown_without_waiting_still_resolves_the_futures(make_executor):
    ex = make_executor(workers=1)
    future = ex.submit(fns.sleep_then, 0.2, "late")
    started = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - started < 0.2
    assert future.result(timeout=T) == "late"


def test_shutdown_twice_is_harmless(make_executor):
    ex = make_executor(workers=1)
    assert ex.submit(fns.square, 3).result(timeout=T) == 9
    ex.shutdown()
    ex.shutdown()


def test_context_manager_waits_for_its_calls_and_shuts_down():
    with shoal.Executor(workers=2) as ex:
        futures = [ex.submit(fns.sleep_then, 0.1, i) for i in range(3)]
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [0, 1, 2]
    with pytest.raises(RuntimeError):
        ex.submit(fns.square, 2)


def test_context_manager_shuts_down_when_the_body_raises():
    with pytest.raises(KeyError), shoal.Executor(workers=1) as ex:
        future = ex.submit(fns.square, 5)
        raise KeyError("body failed")
    assert future.result(timeout=0) == 25


# -- timeouts, retries --------------------------------------------------------------------


def test_executor_timeout_raises_timeout_error_and_the_slot_keeps_working(executor_on, gate):
    ex = executor_on(workers=1, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out"):
        ex.submit(fns.wait_gate, str(gate)).result(timeout=T)
    assert time.monotonic() - started < 5
    assert ex.submit(fns.square, 7).result(timeout=T) == 49


def test_per_submit_timeout_applies_to_that_call_only(executor_on, gate):
    ex = executor_on(workers=1)
    with pytest.raises(TimeoutError):
        ex.with_options(timeout_s=0.4).submit(fns.wait_gate, str(gate)).result(timeout=T)
    assert ex.submit(fns.sleep_then, 0.6, "no timeout").result(timeout=T) == "no timeout"


def test_per_submit_option_overrides_the_executor_default(make_executor):
    ex = make_executor(workers=1, timeout_s=0.3)
    relaxed = ex.with_options(timeout_s=None)
    assert relaxed.submit(fns.sleep_then, 0.6, "allowed").result(timeout=T) == "allowed"
    assert list(relaxed.map(fns.square, [2, 3], timeout=T)) == [4, 9]


def test_with_options_rejects_unknown_options(make_executor):
    ex = make_executor(workers=1)
    with pytest.raises(TypeError, match="bogus"):
        ex.with_options(bogus=1)


def test_retry_after_a_failed_first_attempt_resolves_once_with_the_final_value(
        executor_on, tmp_path):
    ex = executor_on(workers=1)
    marker = tmp_path / "runs"
    resolved: list[cf.Future] = []
    future = ex.with_options(retries=1).submit(fns.fail_first_attempt, str(marker), "second")
    future.add_done_callback(resolved.append)
    assert future.result(timeout=T) == "second"
    assert marker.read_text() == "2"
    ex.shutdown()
    assert resolved == [future]
    (result,) = ex.results()
    assert result.attempt == 2 and result.state is State.DONE


def test_without_retries_the_first_failure_is_final(make_executor, tmp_path):
    ex = make_executor(workers=1)
    marker = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="first attempt fails"):
        ex.submit(fns.fail_first_attempt, str(marker), "second").result(timeout=T)
    assert marker.read_text() == "1"


# -- results ------------------------------------------------------------------------------


def test_results_list_calls_with_args_value_host_attempts_and_timings(executor_on):
    ex = executor_on(workers=1)
    before = time.time()
    assert ex.submit(fns.add, 2, 3).result(timeout=T) == 5
    with pytest.raises(ValueError):
        ex.submit(fns.boom, "broken").result(timeout=T)
    ok, failed = ex.results()
    assert ok.state is State.DONE and ok.params["args"] == "(2, 3)" and ok.value == "5"
    assert ok.host == HOST and ok.attempt == 1
    assert before <= ok.started <= ok.ended <= time.time() and ok.duration_s >= 0
    assert "add" in ok.name
    assert failed.state is State.FAILED and "ValueError: broken" in failed.reason
    assert failed.params["args"] == "('broken',)"


def test_results_frame_has_one_row_per_call(make_executor):
    pytest.importorskip("pandas")
    ex = make_executor(workers=1)
    list(ex.map(fns.square, range(3), timeout=T))
    frame = ex.results_frame()
    assert len(frame) == 3
    assert {"value", "host", "attempts", "duration_s"} <= set(frame.columns)
