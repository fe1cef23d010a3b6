"""The path of a Python call, measured: what it writes, what it keeps, when its clock starts."""

from __future__ import annotations

import functools
import gc
import os
import subprocess
import sys
import threading
import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal import defaults
from shoal.calls import call_job, outcome
from shoal.job import Job
from shoal.queue.base import Queue
from shoal.queue.folder import FolderQueue
from shoal.queue.memory import MemoryQueue
from shoal.worker import Worker
from tests import callfns as fns
from tests.conftest import wait_for

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore::shoal.errors.LargeCallWarning")]

MiB = 2**20


@pytest.fixture
def running_worker() -> Iterator[tuple[MemoryQueue, Worker]]:
    """An in-process queue with a one-slot worker running beside the test."""
    queue = MemoryQueue()
    worker = Worker(queue, slots=1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield queue, worker
    worker.stop()
    thread.join(timeout=30)


def run_call(queue: Queue, job: Job) -> object:
    queue.submit([job])
    result = wait_for(lambda: queue.watch([job.id], 0.5), timeout_s=60,
                      message=f"the result of {job.name}")
    return outcome(result[0])  # type: ignore[index]


def test_a_function_is_pickled_once_while_it_lives_and_not_kept_alive_for_it():
    fn = functools.partial(len, b"x" * 1000)
    first, again = call_job(fn), call_job(fn)
    assert first.blobs[first.meta["fn"]] is again.blobs[again.meta["fn"]]
    setup = functools.partial(fns.initialize, "marker", 1)  # what an Executor passes
    first, again = call_job(len, initializer=setup), call_job(len, initializer=setup)
    assert first.blobs[first.meta["init"]] is again.blobs[again.meta["init"]]
    gone = weakref.ref(fn), weakref.ref(setup)
    del fn, setup, first, again
    gc.collect()
    assert [ref() for ref in gone] == [None, None]


def test_a_function_capturing_an_array_is_written_once_to_a_folder_queue(tmp_path: Path):
    np = pytest.importorskip("numpy")
    array = np.random.default_rng(0).random(20 * MiB // 8)  # 20 MiB
    queue = FolderQueue(tmp_path / "queue")
    fn = lambda i: float(array[i])  # noqa: E731 - a lambda pickled by value, with the array
    jobs = [call_job(fn, (i,)) for i in range(4)]
    queue.submit(jobs)
    assert Worker(queue, slots=2, drain=True).run() == "drained"
    assert [outcome(queue.get(job.id).result) for job in jobs] == [  # type: ignore[union-attr]
        float(array[i]) for i in range(4)]
    written = sum(path.stat().st_size for path in (tmp_path / "queue").rglob("*")
                  if path.is_file())
    assert written < 2 * array.nbytes, f"{written / MiB:.0f} MiB written for a 20 MiB array"


def test_the_in_process_queue_lets_go_of_the_arguments_of_finished_calls(running_worker):
    queue, _ = running_worker
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(40):
            assert run_call(queue, call_job(len, (bytes([i]) * (5 * MiB),))) == 5 * MiB
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sum(len(status.job.payload or b"") for status in queue.jobs()) < MiB
    assert held < 20 * MiB, f"{held / MiB:.0f} MiB still held after 40 calls of 5 MiB"


def test_submitted_partials_are_not_kept_alive_here_nor_in_the_interpreter(running_worker):
    queue, _ = running_worker
    rss_before = run_call(queue, call_job(fns.rss_bytes))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20):
            fn = functools.partial(len, bytes([i]) * (5 * MiB))
            assert run_call(queue, call_job(fn)) == 5 * MiB
            del fn
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 20 * MiB, f"{held / MiB:.0f} MiB still held after 20 partials of 5 MiB"
    grown = run_call(queue, call_job(fns.rss_bytes)) - rss_before  # type: ignore[operator]
    assert grown < defaults.CALLHOST_FUNCTION_BYTES + 16 * MiB, (
        f"the call interpreter grew by {grown / MiB:.0f} MiB")


def test_a_call_right_after_a_timed_out_one_gets_its_whole_timeout_on_a_busy_machine(
        tmp_path: Path):
    # Three CPU burners per core, each in its own session (as the interpreter is, so the
    # kernel's autogroups share the CPU between them): a fresh interpreter's start-up then
    # takes ~0.9 s instead of 0.1 s, which used to count against the next call's 0.5 s.
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                start_new_session=True)
               for _ in range(min(3 * (os.cpu_count() or 1), 12))]
    try:
        queue = MemoryQueue()
        jobs = [call_job(fns.wait_gate, (str(tmp_path / "never"),), timeout_s=0.5),
                call_job(fns.identity, ("fine",), timeout_s=0.5)]
        queue.submit(jobs)
        assert Worker(queue, slots=1, drain=True).run() == "drained"
        first, second = (queue.get(job.id).result for job in jobs)  # type: ignore[union-attr]
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert first is not None and first.reason.startswith("timed out")
    assert second is not None and outcome(second) == "fine", second.reason
