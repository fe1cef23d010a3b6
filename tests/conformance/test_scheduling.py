"""Dependencies, resources and priorities (issue 15) on every backend: claim never hands out
a job whose dependencies are not done, a job that does not fit the worker, or a lower
priority job while a higher one that fits is pending."""

from __future__ import annotations

import pytest

from shoal.job import Job, Result, State
from shoal.queue.scheduling import Capacity, DependencyError

GPU_BOX = Capacity({"cpus": 8, "gpus": 2, "mem": 64e9})
SMALL_BOX = Capacity({"cpus": 2, "mem": 4e9})


def cmd(name: str, **options) -> Job:
    return Job.command_job(["echo", name], name=name, **options)


def ended(lease, state: State = State.DONE) -> Result:
    return Result(lease.job_id, state, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=0 if state is State.DONE else 1,
                  reason="" if state is State.DONE else "exit status 1")


def names(leases) -> list[str]:
    return [lease.job.name for lease in leases]


def drain_names(queue, worker: str = "w", **claim) -> list[str]:
    """Claim and finish one job at a time until none is given: the names in claim order."""
    order = []
    while True:
        leases = queue.claim(worker, 1, **claim)
        if not leases:
            return order
        order += names(leases)
        queue.finish(leases[0], ended(leases[0]))


# -- priorities ------------------------------------------------------------------------

def test_higher_priority_first_then_input_order(queue):
    queue.submit([cmd("a"), cmd("b", priority=1), cmd("c"), cmd("d", priority=5),
                  cmd("e", priority=1)])
    assert drain_names(queue) == ["d", "b", "e", "a", "c"]


def test_a_high_priority_job_overtakes_a_long_queue_submitted_before_it(queue):
    queue.submit([cmd(f"j{i}") for i in range(300)])
    queue.submit([cmd("urgent", priority=10)])
    assert names(queue.claim("w", 1)) == ["urgent"]


def test_priority_is_not_part_of_the_job_id():
    assert cmd("a").id == cmd("a", priority=3).id
    assert cmd("a").id != cmd("a", after=[cmd("b").id]).id


def _retried_behind_an_older_pending_job(queue) -> Job:
    """`gpu` (first in input order) is pending while `last` failed and is retried."""
    queue.submit([cmd("gpu", needs={"gpus": 1}), cmd("b"), cmd("last")])
    leases = queue.claim("w", 3, fit=Capacity({"cpus": 8}))  # b and last: gpu does not fit
    assert names(leases) == ["b", "last"]
    queue.finish(leases[1], ended(leases[1], State.FAILED))
    return leases[1].job


def test_retried_jobs_go_first_unless_told_otherwise(queue):
    last = _retried_behind_an_older_pending_job(queue)
    assert queue.retry([last.id]) == [last.id]
    assert names(queue.claim("w", 1, fit=GPU_BOX)) == ["last"]


def test_retry_without_first_keeps_input_order(queue):
    last = _retried_behind_an_older_pending_job(queue)
    assert queue.retry([last.id], first=False) == [last.id]
    assert names(queue.claim("w", 1, fit=GPU_BOX)) == ["gpu"]


def test_a_retried_job_keeps_its_priority(queue):
    queue.submit([cmd("low"), cmd("high", priority=2)])
    (lease,) = queue.claim("w", 1)
    assert lease.job.name == "high"
    queue.finish(lease, ended(lease, State.FAILED))
    queue.retry([lease.job_id], first=False)
    assert names(queue.claim("w", 2)) == ["high", "low"]


# -- dependencies ----------------------------------------------------------------------

def test_a_job_waits_until_its_dependencies_are_done(queue, queue_factory):
    prepare = cmd("prepare")
    sims = [cmd(f"sim{i}", after=[prepare.id]) for i in range(3)]
    reduce = cmd("reduce", after=[s.id for s in sims])
    queue.submit([reduce, *sims, prepare])  # order in the submission does not matter
    assert queue.get(reduce.id).state is State.WAITING
    assert queue.counts()[State.WAITING] == 4
    (lease,) = queue.claim("w", 5)
    assert lease.job.name == "prepare"
    assert queue.claim("w", 5) == []
    queue.finish(lease, ended(lease))
    other = queue_factory()  # another view sees the release
    assert [other.get(s.id).state for s in sims] == [State.PENDING] * 3
    leases = other.claim("w", 5)
    assert sorted(names(leases)) == ["sim0", "sim1", "sim2"]
    for lease in leases[:2]:
        other.finish(lease, ended(lease))
    assert queue.get(reduce.id).state is State.WAITING
    queue.finish(leases[2], ended(leases[2]))
    assert names(queue.claim("w", 5)) == ["reduce"]


def test_a_failed_dependency_fails_its_dependants_without_running_them(queue):
    a = cmd("a")
    b = cmd("b", after=[a.id])
    c = cmd("c", after=[b.id])
    free = cmd("free")
    queue.submit([a, b, c, free])
    (lease,) = queue.claim("w", 1)
    queue.finish(lease, ended(lease, State.FAILED))
    for job, blamed in ((b, a), (c, b)):
        status = queue.get(job.id)
        assert status.state is State.FAILED
        assert status.result is not None and blamed.id in status.result.reason
        assert "dependency" in status.result.reason and status.result.exit_code is None
    assert names(queue.claim("w", 5)) == ["free"]
    assert {r.job_id for r in queue.results()} >= {a.id, b.id, c.id}


def test_a_cancelled_dependency_cancels_its_dependants(queue):
    a = cmd("a")
    b = cmd("b", after=[a.id])
    queue.submit([a, b])
    assert queue.cancel([a.id]) == [a.id]
    status = queue.get(b.id)
    assert status.state is State.CANCELLED and a.id in status.result.reason


def test_unknown_dependencies_refuse_the_whole_submission(queue):
    with pytest.raises(DependencyError, match="0123456789abcdef"):
        queue.submit([cmd("a"), cmd("b", after=["0123456789abcdef"])])
    assert sum(queue.counts().values()) == 0


def test_a_cycle_is_refused_with_the_names_involved(queue):
    a = Job.command_job(["echo", "a"], name="a")
    b = cmd("b", after=[a.id])
    looped = Job(a.id, "a", a.kind, command=a.command, after=(b.id,))
    with pytest.raises(DependencyError, match=r"a -> b -> a|b -> a -> b"):
        queue.submit([looped, b])
    assert sum(queue.counts().values()) == 0


def test_dependencies_across_submissions(queue):
    done_first, failed_first, running = cmd("done-first"), cmd("failed-first"), cmd("running")
    queue.submit([done_first, failed_first, running])
    leases = {lease.job.name: lease for lease in queue.claim("w", 3)}
    queue.finish(leases["done-first"], ended(leases["done-first"]))
    queue.finish(leases["failed-first"], ended(leases["failed-first"], State.FAILED))
    after_done = cmd("after-done", after=[done_first.id])
    after_failed = cmd("after-failed", after=[failed_first.id])
    after_running = cmd("after-running", after=[running.id])
    queue.submit([after_done, after_failed, after_running])
    assert queue.get(after_done.id).state is State.PENDING
    assert queue.get(after_failed.id).state is State.FAILED
    assert queue.get(after_running.id).state is State.WAITING
    assert names(queue.claim("w", 5)) == ["after-done"]


def test_retrying_a_failed_dependency_brings_its_dependants_back(queue):
    a = cmd("a")
    b = cmd("b", after=[a.id])
    queue.submit([a, b])
    (lease,) = queue.claim("w", 1)
    queue.finish(lease, ended(lease, State.FAILED))
    assert queue.get(b.id).state is State.FAILED
    assert a.id in queue.retry([a.id])
    assert queue.get(b.id).state is State.WAITING
    assert drain_names(queue) == ["a", "b"]


def test_a_failed_attempt_tried_again_does_not_end_its_dependants(queue):
    a = cmd("a", retries=1)
    b = cmd("b", after=[a.id])
    queue.submit([a, b])
    (lease,) = queue.claim("w", 1)
    queue.release(lease, failed=ended(lease, State.FAILED))
    assert queue.get(b.id).state is State.WAITING
    assert drain_names(queue) == ["a", "b"]


# -- resources -------------------------------------------------------------------------

def test_a_job_goes_only_to_a_worker_it_fits(queue):
    train = cmd("train", needs={"gpus": 2, "cpus": 4})
    queue.submit([train, cmd("small")])
    assert names(queue.claim("w", 2, fit=SMALL_BOX)) == ["small"]
    assert names(queue.claim("w", 2, fit=GPU_BOX)) == ["train"]


def test_claimed_jobs_fit_together(queue):
    queue.submit([cmd(f"half{i}", needs={"gpus": 1}) for i in range(3)])
    assert len(queue.claim("w", 3, fit=GPU_BOX)) == 2  # two GPUs: two jobs, not three
    assert len(queue.claim("w", 3, fit=Capacity({"cpus": 8, "gpus": 1}))) == 1


def test_a_job_without_a_cpu_need_takes_one_cpu(queue):
    queue.submit([cmd(f"j{i}") for i in range(5)])
    assert len(queue.claim("w", 5, fit=Capacity({"cpus": 3}))) == 3


def test_a_big_high_priority_job_does_not_block_a_small_one_that_fits(queue):
    queue.submit([cmd("big", priority=9, needs={"mem": 100e9}), cmd("small")])
    assert names(queue.claim("w", 1, fit=SMALL_BOX)) == ["small"]
    assert queue.get(cmd("big", priority=9, needs={"mem": 100e9}).id).state is State.PENDING


def test_labels_pick_the_worker(queue):
    queue.submit([cmd("needs-bigmem", labels=["bigmem"]), cmd("anywhere")])
    plain = Capacity({"cpus": 4})
    assert names(queue.claim("w", 2, fit=plain)) == ["anywhere"]
    labelled = Capacity({"cpus": 4}, frozenset({"bigmem", "ssd"}))
    assert names(queue.claim("w", 2, fit=labelled)) == ["needs-bigmem"]


def test_then_claim_respects_what_is_free(queue):
    queue.submit([cmd("first"), cmd("gpu", needs={"gpus": 1}), cmd("cpu")])
    (lease,) = queue.claim("w", 1, fit=SMALL_BOX)
    following = queue.finish(lease, ended(lease), then_claim=2, fit=SMALL_BOX)
    assert names(following) == ["cpu"]


def test_the_scheduling_fields_survive_a_round_trip(queue, queue_factory):
    job = cmd("x", priority=4, needs={"gpus": 1, "license": 2}, labels=["ssd"],
              after=[])
    queue.submit([job])
    seen = queue_factory().get(job.id).job
    assert (seen.priority, dict(seen.needs), tuple(seen.labels)) == (4, {"gpus": 1,
                                                                       "license": 2},
                                                                      ("ssd",))


def test_a_job_a_retry_put_first_stays_first_while_it_waits(queue):
    old = cmd("old", needs={"gpus": 1})  # pending all along, first in input order
    dep = cmd("dep")
    late = cmd("late", after=[dep.id])
    queue.submit([old, dep, late])
    (lease,) = queue.claim("w", 2, fit=Capacity({"cpus": 8}))  # dep: old does not fit
    assert lease.job.name == "dep"
    assert queue.cancel([late.id]) == [late.id]
    assert queue.retry([late.id]) == [late.id]
    assert queue.get(late.id).state is State.WAITING
    queue.finish(lease, ended(lease))
    assert names(queue.claim("w", 1, fit=GPU_BOX)) == ["late"]
