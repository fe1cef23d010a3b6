"""Submission order (`JobStatus.seq`, claims in that order), `retry(force=)` and `purge`,
on every backend: what `shoal run` output order, `#N`, `shoal retry` and `shoal clean`
rely on."""

from __future__ import annotations

import pytest

from shoal.errors import LeaseLost, UsageError
from shoal.job import Job, Result, State, WorkerInfo


def cmd(i: int) -> Job:
    return Job.command_job(["echo", str(i)])


def done(lease) -> Result:
    return Result(lease.job_id, State.DONE, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=0)


def test_seq_follows_submission_order_across_submits_and_views(queue, queue_factory):
    queue.submit([cmd(i) for i in range(5)])
    queue.submit([cmd(i) for i in range(3, 9)])  # 3 and 4 again: they keep their number
    seqs = [queue.get(cmd(i).id).seq for i in range(9)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 9 and seqs[0] >= 1
    other = queue_factory()  # another view (another client, or the file opened again)
    assert [other.get(cmd(i).id).seq for i in range(9)] == seqs
    assert {s.job.id: s.seq for s in other.jobs()} == {cmd(i).id: seqs[i] for i in range(9)}


def test_a_lease_carries_its_jobs_number(queue):
    """What `shoal work`'s line per job shows as #SEQ, with no read of the job."""
    queue.submit([cmd(i) for i in range(4)])
    leases = queue.claim("w1", 2)
    leases += queue.finish(leases[0], done(leases[0]), then_claim=2)
    assert len(leases) == 4
    assert {lease.job_id: lease.seq for lease in leases} == {
        cmd(i).id: queue.get(cmd(i).id).seq for i in range(4)}


def test_one_claimer_claims_in_submission_order(queue):
    jobs = [cmd(i) for i in range(15)]
    queue.submit(jobs[:8])
    queue.submit(jobs[8:])
    order = []
    while lease := queue.claim("w1", 1):
        order.append(lease[0].job)
        queue.finish(lease[0], done(lease[0]))
    assert order == jobs


def test_retry_force_runs_done_jobs_again(queue):
    queue.submit([cmd(1), cmd(2)])
    seq = queue.get(cmd(1).id).seq
    for lease in queue.claim("w1", 2):
        queue.finish(lease, done(lease))
    assert queue.retry([cmd(1).id]) == []  # done: left alone without force
    assert queue.get(cmd(1).id).state is State.DONE
    assert queue.retry([cmd(1).id], force=True) == [cmd(1).id]
    status = queue.get(cmd(1).id)
    assert (status.state, status.result, status.attempt, status.seq) == (State.PENDING, None,
                                                                         1, seq)
    assert queue.watch({cmd(1).id}, 0) == []  # not final any more, for a watcher too
    assert queue.states([cmd(1).id]) == {cmd(1).id: State.PENDING}
    assert queue.counts()[State.DONE] == 1
    (again,) = queue.claim("w1", 1)
    assert again.job_id == cmd(1).id
    queue.finish(again, done(again))
    assert [r.job_id for r in queue.watch({cmd(1).id}, 5)] == [cmd(1).id]


def test_purge_empties_the_queue_and_refuses_while_workers_live(queue):
    queue.submit([cmd(i) for i in range(4)])
    first, second = queue.claim("w1", 2)
    queue.finish(first, done(first))
    queue.beat(WorkerInfo("w1", "host-a", 123, slots=2), [second])
    with pytest.raises(UsageError, match="worker"):
        queue.purge()
    assert queue.counts()[State.PENDING] == 2  # refused: nothing removed
    assert queue.purge(force=True) == 4
    assert sum(queue.counts().values()) == 0
    assert list(queue.jobs()) == [] and list(queue.results()) == []
    assert queue.get(cmd(0).id) is None
    with pytest.raises(LeaseLost):  # the running job's lease went with it
        queue.finish(second, done(second))
    queue.unregister("w1")
    assert queue.purge() == 0
    assert queue.submit([cmd(0)]) == [cmd(0).id]  # a fresh sweep: it runs again
    assert queue.get(cmd(0).id).seq == 1
