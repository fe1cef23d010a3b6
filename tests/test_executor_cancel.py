"""cancel() of a call already sent asks the queue whether it still waits; while the
queue answers (a slow file server, a coordinator far away) the call may start and end,
and shutdown may begin. None of that may strand a future: it resolves, and shutdown
ends. Each test holds the queue's answer on an Event, moves the executor on while it is
held, then lets it go; every step waits for the condition it needs, with a deadline.

A queue that fails a look or a cancel must not strand one either: the collector is the
futures' only way out, and the submitter the calls' only way in.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import shoal
from tests import callfns as fns
from tests.conftest import wait_for

T = 20  # seconds: the longest any single step may take before the test fails
CANCELLER = "test-canceller"  # the thread that calls cancel(): only its queue reads are held


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two gate files: the calls blocking on them end once the test opens them."""
    first, second = tmp_path / "gate-1", tmp_path / "gate-2"
    yield first, second
    first.touch()
    second.touch()


@pytest.fixture
def executor(gates: tuple[Path, Path]) -> Iterator[shoal.Executor]:
    """An Executor with one slot; at the end it is shut down without waiting, and every
    thread it started must end (one still waiting on a stranded future would not)."""
    before = set(threading.enumerate())
    ex = shoal.Executor(workers=1)
    yield ex
    for gate in gates:
        gate.touch()
    ex.shutdown(wait=False)
    wait_for(lambda: not new_threads(before), T,
             message=f"the executor's threads to end (left: {new_threads(before)})")


def new_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


def in_thread(fn: Callable[[], Any], name: str = CANCELLER) -> cf.Future:
    """Run `fn` on a thread of its own; its outcome as a future."""
    outcome: cf.Future = cf.Future()

    def run() -> None:
        try:
            outcome.set_result(fn())
        except BaseException as exc:
            outcome.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return outcome


def hold_answers(ex: shoal.Executor, monkeypatch: pytest.MonkeyPatch
                 ) -> tuple[threading.Event, threading.Event]:
    """Make the queue slow to tell the canceller a job's state: its `get` waits for the
    second event; the first says the canceller is waiting."""
    asked, answer = threading.Event(), threading.Event()
    real_get = ex.queue.get

    def slow_get(job_id: str) -> Any:
        if threading.current_thread().name == CANCELLER:
            asked.set()
            answer.wait(T)
        return real_get(job_id)

    monkeypatch.setattr(ex.queue, "get", slow_get)
    return asked, answer


class Looks:
    """The collector's looks at the queue (its `watch` calls): how many began, and the
    job ids whose results they returned."""

    def __init__(self, ex: shoal.Executor, monkeypatch: pytest.MonkeyPatch) -> None:
        self.begun = 0
        self.seen: set[str] = set()
        self.collector: threading.Thread | None = None
        real_watch = ex.queue.watch

        def watch(ids: Any, timeout_s: float) -> Any:
            self.collector = threading.current_thread()
            self.begun += 1
            results = real_watch(ids, timeout_s)
            self.seen.update(result.job_id for result in results)
            return results

        monkeypatch.setattr(ex.queue, "watch", watch)

    def wait_first(self) -> None:
        """Wait for a look through this record (one begun before may still be waiting)."""
        wait_for(lambda: self.collector, T, message="the collector to look at the queue")

    def stopped(self) -> bool:
        return self.collector is not None and not self.collector.is_alive()


def start_two(ex: shoal.Executor, gates: tuple[Path, Path], tmp_path: Path
              ) -> tuple[cf.Future, cf.Future]:
    """A call that runs (until the first gate opens) and one queued behind it (until the
    second): the second's future is neither running nor done."""
    started = tmp_path / "started-1"
    first = ex.submit(fns.wait_gate, str(gates[0]), "first", str(started))
    wait_for(started.exists, T, message="the first call to start")
    second = ex.submit(fns.wait_gate, str(gates[1]), "second", str(tmp_path / "started-2"))
    wait_for(lambda: ex.queue.get(second.job_id), T, message="the second call to be queued")
    return first, second


def start_second_while_its_cancel_asks(ex: shoal.Executor, gates: tuple[Path, Path],
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                       ) -> tuple[cf.Future, cf.Future, threading.Event]:
    """The second call's cancel() waits for the queue's answer while the call starts;
    returns (the second call's future, the cancel's outcome, the answer's event)."""
    first, second = start_two(ex, gates, tmp_path)
    asked, answer = hold_answers(ex, monkeypatch)
    cancelled = in_thread(second.cancel)
    assert asked.wait(T), "cancel() never asked the queue"
    gates[0].touch()
    assert first.result(timeout=T) == "first"
    wait_for((tmp_path / "started-2").exists, T, message="the second call to start")
    return second, cancelled, answer


@pytest.mark.parametrize("lands", ["after the answer", "while the cancel asks"])
def test_a_cancel_too_late_during_shutdown_leaves_the_future_to_resolve(
        executor, gates, tmp_path, monkeypatch, lands):
    """The hang: cancel() took the future out while it asked the queue, so shutdown did
    not wait for it and the collector, seeing no future left, stopped; the call, which
    had started meanwhile, then ended with nobody to resolve its future."""
    second, cancelled, answer = start_second_while_its_cancel_asks(executor, gates, tmp_path,
                                                                   monkeypatch)
    looks = Looks(executor, monkeypatch)
    looks.wait_first()
    executor.shutdown(wait=False)
    if lands == "after the answer":  # the collector has had time to stop, if it would
        begun = looks.begun
        wait_for(lambda: looks.stopped() or looks.begun >= begun + 2, T,
                 message="the collector to look twice more, or stop")
    else:  # the result lands, and the collector sees it, before the queue answers
        gates[1].touch()
        wait_for(lambda: looks.stopped() or second.job_id in looks.seen, T,
                 message="the collector to see the second call's result, or stop")
    assert not looks.stopped(), "the collector stopped while a future was still waiting"
    answer.set()
    assert cancelled.result(timeout=T) is False
    gates[1].touch()
    done, _ = cf.wait([second], timeout=T)
    assert second in done, "the future of the call whose cancel came too late never resolved"
    assert second.result() == "second"
    assert not second.cancelled()


def test_a_cancel_in_time_while_shutting_down_cancels_the_call(executor, gates, tmp_path,
                                                                monkeypatch):
    """The other answer to the same wait: the call still waits, so it is cancelled, and
    shutdown, which counts its future, ends once the running call does."""
    first, second = start_two(executor, gates, tmp_path)
    asked, answer = hold_answers(executor, monkeypatch)
    cancelled = in_thread(second.cancel)
    assert asked.wait(T), "cancel() never asked the queue"
    closer = in_thread(lambda: executor.shutdown(wait=True), name="test-shutdown")
    answer.set()
    assert cancelled.result(timeout=T) is True
    assert second.cancelled()
    gates[0].touch()
    assert first.result(timeout=T) == "first"
    closer.result(timeout=T)
    assert not (tmp_path / "started-2").exists(), "the cancelled call ran"


def test_a_cancel_the_queue_cannot_answer_leaves_the_call_to_run(executor, gates, tmp_path,
                                                                 monkeypatch, caplog):
    """cancel() says False (the call goes on) and its future still resolves; it once
    raised the queue's error, and the future, taken out, never resolved."""
    first, second = start_two(executor, gates, tmp_path)
    real_get = executor.queue.get

    def failing_get(job_id: str) -> Any:
        if threading.current_thread().name == CANCELLER:
            raise OSError("stale file handle")
        return real_get(job_id)

    monkeypatch.setattr(executor.queue, "get", failing_get)
    with caplog.at_level(logging.WARNING, logger="shoal.executor"):
        assert in_thread(second.cancel).result(timeout=T) is False
    assert "stale file handle" in caplog.text
    for gate in gates:
        gate.touch()
    assert first.result(timeout=T) == "first"
    assert second.result(timeout=T) == "second"


def test_the_collector_outlives_a_queue_that_fails_a_look(executor, monkeypatch, caplog):
    """One failed look (a coordinator restarting, a file server's hiccup) once ended the
    collector, and with it every future still waiting."""
    failed = threading.Event()
    real_watch = executor.queue.watch

    def watch_failing_once(ids: Any, timeout_s: float) -> Any:
        if not failed.is_set():
            failed.set()
            raise OSError("stale file handle")
        return real_watch(ids, timeout_s)

    with caplog.at_level(logging.ERROR, logger="shoal.executor"):
        monkeypatch.setattr(executor.queue, "watch", watch_failing_once)
        assert failed.wait(T), "the collector never looked"
        assert executor.submit(fns.square, 3).result(timeout=T) == 9
    assert "cannot read results" in caplog.text


def test_the_submitter_outlives_a_queue_that_fails_a_late_cancel(executor, monkeypatch,
                                                                 caplog):
    """A call cancelled while its batch is being written is cancelled in the queue right
    after; that cancel failing once ended the submitter, and every later call waited in
    the outbox for ever (and shutdown with it)."""
    writing, written = threading.Event(), threading.Event()
    real_submit = executor.queue.submit

    def slow_submit(jobs: Any) -> Any:
        writing.set()
        written.wait(T)
        return real_submit(jobs)

    def failing_cancel(job_ids: Any) -> Any:
        raise OSError("stale file handle")

    monkeypatch.setattr(executor.queue, "submit", slow_submit)
    monkeypatch.setattr(executor.queue, "cancel", failing_cancel)
    with caplog.at_level(logging.ERROR, logger="shoal.executor"):
        queued = executor.submit(fns.square, 2)
        assert writing.wait(T), "the submitter never wrote the call"
        assert queued.cancel() is True
        written.set()
        assert executor.submit(fns.square, 3).result(timeout=T) == 9
    assert "cannot cancel 1 call(s)" in caplog.text
