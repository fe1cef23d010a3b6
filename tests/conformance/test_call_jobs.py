"""Call jobs on every backend: a Worker runs cloudpickled calls and `outcome` gives them back."""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

import cloudpickle
import pytest

from shoal.calls import RemoteTraceback, call_job, outcome, runtime
from shoal.errors import JobFailed
from shoal.job import Job, Result, State
from shoal.worker import Worker
from tests import callfns as fns

pytestmark = pytest.mark.timeout(60)


RUN_LEASE_S = 5.0  # nothing here is about losing leases: a loaded machine must not take one


def run_all(queue_factory, jobs: list[Job]) -> dict[str, Result]:
    """Submit through one view, drain with a 2-slot Worker on another, read the results.
    On leases of RUN_LEASE_S: the suite's 0.6 s ones were taken back from a worker stalled
    by a loaded machine, and its calls ran a second time (attempt 2)."""
    queue_factory.lease_s = max(queue_factory.lease_s, RUN_LEASE_S)
    queue = queue_factory()
    queue.submit(jobs)
    assert Worker(queue_factory(), slots=2, drain=True).run() == "drained"
    results = {}
    for job in jobs:
        status = queue.get(job.id)
        assert status is not None and status.result is not None, job.name
        results[job.id] = status.result
    return results


def test_call_jobs_give_back_their_values(queue_factory):
    jobs = [call_job(fns.add, (i,), {"y": 10}) for i in range(6)]
    results = run_all(queue_factory, jobs)
    assert [outcome(results[job.id]) for job in jobs] == [i + 10 for i in range(6)]
    first = results[jobs[0].id]
    assert first.state is State.DONE and first.value == "10" and first.attempt == 1
    assert first.params == {"args": "(0,)", "kwargs": "{'y': 10}"}
    assert "add" in jobs[0].name


def test_call_job_values_of_any_picklable_type(queue_factory):
    values = [None, b"\x00bytes", {"nested": [1, (2, 3)]}, 1.5, fns.CustomError("as value")]
    jobs = [call_job(fns.identity, (value,)) for value in values]
    results = run_all(queue_factory, jobs)
    got = [outcome(results[job.id]) for job in jobs]
    assert got[:4] == values[:4]
    assert isinstance(got[4], fns.CustomError) and got[4].args == ("as value",)


def test_a_raising_call_job_gives_back_its_exception_with_the_remote_traceback(queue_factory):
    job = call_job(fns.boom, ("no good",))
    result = run_all(queue_factory, [job])[job.id]
    assert result.state is State.FAILED and result.reason == "ValueError: no good"
    with pytest.raises(ValueError, match="no good") as info:
        outcome(result)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "in boom" in str(info.value.__cause__)


def test_a_dying_call_job_fails_alone_with_the_reason(queue_factory):
    dying = call_job(fns.exit_now, (3,))
    others = [call_job(fns.square, (i,)) for i in range(4)]
    results = run_all(queue_factory, [dying, *others])
    with pytest.raises(JobFailed, match=r"worker process died \(exit status 3\)"):
        outcome(results[dying.id])
    assert [outcome(results[job.id]) for job in others] == [0, 1, 4, 9]


def test_a_call_job_past_its_timeout_raises_timeout_error(queue_factory, tmp_path: Path):
    job = call_job(fns.wait_gate, (str(tmp_path / "never"),), timeout_s=0.3)
    result = run_all(queue_factory, [job])[job.id]
    assert result.state is State.FAILED and result.reason.startswith("timed out")
    with pytest.raises(TimeoutError, match=r"timed out after 0\.3 s"):
        outcome(result)


def test_a_call_job_with_retries_succeeds_on_its_second_attempt(queue_factory, tmp_path: Path):
    marker = tmp_path / "runs"
    job = call_job(fns.fail_first_attempt, (str(marker), "second"), retries=1)
    result = run_all(queue_factory, [job])[job.id]
    assert outcome(result) == "second"
    assert result.attempt == 2 and marker.read_text() == "2"


def test_a_call_job_knows_its_own_id(queue_factory):
    job = call_job(fns.job_context, job_id="my-call-0001")
    job_id, _ = outcome(run_all(queue_factory, [job])[job.id])
    assert job.id == job_id == "my-call-0001"


def test_a_call_job_pickled_by_another_python_fails_naming_both_versions(queue_factory):
    job = call_job(fns.square, (3,))
    foreign = dataclasses.replace(job, meta={**job.meta, "python": "2.7",
                                                       "cloudpickle": "0.1"})
    result = run_all(queue_factory, [foreign])[foreign.id]
    assert result.state is State.FAILED
    here = runtime()
    for text in ("Python 2.7", "cloudpickle 0.1", f"Python {here['python']}",
                 f"cloudpickle {here['cloudpickle']}"):
        assert text in result.reason
    with pytest.raises(JobFailed, match=r"Python 2\.7"):
        outcome(result)


def test_a_call_job_from_another_cloudpickle_major_version_fails(queue_factory):
    job = call_job(fns.square, (3,))
    python = ".".join(platform.python_version_tuple()[:2])
    foreign = dataclasses.replace(job, meta={**job.meta, "python": python,
                                                       "cloudpickle": "0.1"})
    result = run_all(queue_factory, [foreign])[foreign.id]
    assert result.state is State.FAILED and "cloudpickle 0.1" in result.reason


def test_a_call_job_from_the_same_cloudpickle_major_version_runs(queue_factory):
    major = cloudpickle.__version__.split(".")[0]
    job = call_job(fns.square, (3,))
    python = ".".join(platform.python_version_tuple()[:2])
    same = dataclasses.replace(job, meta={**job.meta, "python": python,
                                          "cloudpickle": f"{major}.999"})
    assert outcome(run_all(queue_factory, [same])[same.id]) == 9
