"""Function blobs on every backend: a call's function is stored once per queue, by digest,
and reaches the interpreters that run it; initializers and interpreter restarts."""

from __future__ import annotations

import hashlib
import pickle
import threading
from pathlib import Path

import pytest

from shoal.calls import call_job, outcome
from shoal.errors import LargeCallWarning
from shoal.job import Job, Result
from shoal.worker import Worker
from tests import callfns as fns

pytestmark = pytest.mark.timeout(60)


def run_all(queue_factory, jobs: list[Job], slots: int = 1) -> list[Result]:
    """Submit through one view, drain with a Worker on another, results in job order."""
    queue = queue_factory()
    queue.submit(jobs)
    assert Worker(queue_factory(), slots=slots, drain=True).run() == "drained"
    statuses = [queue.get(job.id) for job in jobs]
    assert all(s is not None and s.result is not None for s in statuses)
    return [s.result for s in statuses]  # type: ignore[union-attr]


def test_a_call_names_its_function_by_digest_and_the_queue_gives_it_back(queue_factory):
    job = call_job(fns.add, (1, 2))
    digest = job.meta["fn"]
    blob = job.blobs[digest]
    assert digest == hashlib.sha256(blob).hexdigest()
    assert job.payload is not None and blob not in job.payload  # arguments only
    queue_factory().submit([job])
    other = queue_factory()  # another process or host on the same queue
    assert other.get_blob(digest) == blob
    assert other.get_blob("0" * 64) is None
    assert other.missing_blobs([digest, "0" * 64]) == ["0" * 64]


def test_put_blobs_stores_a_blob_once_for_every_view(queue_factory):
    blob = b"not really a function"
    digest = hashlib.sha256(blob).hexdigest()
    queue_factory().put_blobs({digest: blob})
    queue_factory().put_blobs({digest: blob})  # again: nothing changes
    assert queue_factory().get_blob(digest) == blob


def test_calls_of_a_function_that_captures_data_run_with_it(queue_factory):
    data = bytes(range(256)) * 4096  # 1 MiB, captured by a closure pickled by value
    jobs = [call_job(lambda i: (len(data), data[i]), (i,)) for i in range(4)]  # 4 objects
    same = lambda i: (len(data), data[i])  # noqa: E731 - one object for 4 calls
    jobs += [call_job(same, (i,)) for i in range(4)]
    # The same content is the same blob (4 objects, 1 digest); the other lambda's code
    # sits on another line, so it is another blob.
    assert len({job.meta["fn"] for job in jobs[:4]}) == 1
    assert len({job.meta["fn"] for job in jobs[4:]}) == 1
    results = run_all(queue_factory, jobs, slots=2)
    assert [outcome(r) for r in results] == [(len(data), i) for i in range(4)] * 2


def test_an_initializer_runs_once_per_interpreter_before_its_calls(queue_factory, tmp_path):
    marker = tmp_path / "init"
    jobs = [call_job(fns.initialized_value, initializer=fns.initialize,
                     initargs=(str(marker), "ready")) for _ in range(4)]
    results = run_all(queue_factory, jobs)
    values = [outcome(r) for r in results]
    assert {value for value, _ in values} == {"ready"}
    pids = {pid for _, pid in values}
    assert len(pids) == 1
    assert marker.read_text().split() == [str(p) for p in pids]  # ran once


def test_a_failing_initializer_fails_its_call_with_its_exception(queue_factory):
    jobs = [call_job(fns.identity, (1,), initializer=fns.failing_initializer,
                     initargs=("cannot start",)),
            call_job(fns.identity, (2,))]
    results = run_all(queue_factory, jobs)
    with pytest.raises(fns.CustomError, match="cannot start"):
        outcome(results[0])
    assert outcome(results[1]) == 2  # only the calls that name it fail


def test_max_tasks_per_child_gives_a_fresh_interpreter_after_that_many_calls(queue_factory):
    jobs = [call_job(fns.pid, max_tasks_per_child=2) for _ in range(5)]
    results = sorted(run_all(queue_factory, jobs), key=lambda r: r.started or 0)
    pids = [outcome(r) for r in results]  # in the order they ran (one slot)
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_call_job_checks_its_options_as_process_pool_executor_does():
    with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
        call_job(fns.pid, max_tasks_per_child=0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        call_job(fns.pid, initializer="not callable")  # type: ignore[arg-type]


def test_a_return_value_that_does_not_pickle_keeps_its_error_type(queue_factory):
    results = run_all(queue_factory, [call_job(fns.refuses_pickling),
                                      call_job(fns.unpicklable_result)])
    with pytest.raises(pickle.PicklingError, match="will not be pickled") as info:
        outcome(results[0])
    assert any("return value cannot be pickled" in note for note in info.value.__notes__)
    with pytest.raises(TypeError, match="lock") as info:
        outcome(results[1])
    assert any("return value cannot be pickled" in note for note in info.value.__notes__)


def test_arguments_that_do_not_pickle_fail_call_job_with_their_error_and_a_note():
    with pytest.raises(TypeError, match="lock") as info:
        call_job(fns.identity, (threading.Lock(),))
    assert any("identity(" in note for note in info.value.__notes__)
    with pytest.raises(pickle.PicklingError) as info:
        call_job(fns.identity, (fns.RefusesPickling(),))
    assert any("identity(" in note for note in info.value.__notes__)


def test_a_large_call_warns_once_per_function_naming_its_size(tmp_path: Path):
    big = b"x" * (5 * 2**20)
    with pytest.warns(LargeCallWarning, match=r"arguments pickled to 5\.0 MiB.*file path"):
        call_job(fns.rss_bytes, (big,))
    with pytest.warns(LargeCallWarning, match=r"function pickled to 5\.0 MiB"):
        call_job(lambda: len(big))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call_job(fns.rss_bytes, (big,))  # the same function again: no second warning
        call_job(fns.rss_bytes, (1,))
