"""`Queue.listing` on every backend: what `shoal results`, `status` and `#N` read: jobs in
submission order with their results, filtered by state and cut by a limit, the same as
`jobs()` but without the records of failed attempts."""

from __future__ import annotations

from dataclasses import replace

from shoal.job import Job, JobStatus, JobSummary, Kind, Result, State


def cmd(i: int) -> Job:
    return Job.command_job(["echo", str(i)], params={"i": i})


def outcome(lease, state: State) -> Result:
    return Result(lease.job_id, state, name=lease.job.name, params=lease.job.params,
                  attempt=lease.attempt, worker=lease.worker,
                  exit_code=0 if state is State.DONE else 1,
                  reason="" if state is State.DONE else "exit status 1")


def fill(queue) -> list[Job]:
    """Jobs in every state, submitted in an order their ids do not follow; returns them in
    submission order: 2 done, 1 failed, 1 pending again after a failed attempt, 1 running,
    1 cancelled, 2 pending."""
    order = [cmd(i) for i in range(4)] + [cmd(i) for i in (7, 6, 5, 4)]
    queue.submit(order[:4])
    queue.submit(order[4:])
    leases = queue.claim("w1", 5)
    assert [lease.job for lease in leases] == order[:5]
    queue.finish(leases[0], outcome(leases[0], State.DONE))
    queue.finish(leases[1], outcome(leases[1], State.FAILED))
    queue.release(leases[2], failed=outcome(leases[2], State.FAILED))  # tried again later
    queue.finish(leases[3], outcome(leases[3], State.DONE))
    assert queue.cancel([order[5].id]) == [order[5].id]
    return order


def without_attempts(status: JobStatus) -> JobStatus:
    return replace(status, attempts=())


def test_listing_is_jobs_in_submission_order_without_attempt_records(queue, queue_factory):
    order = fill(queue)
    listed = list(queue.listing())
    assert [s.job for s in listed] == order
    seqs = [s.seq for s in listed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] >= 1
    assert all(s.attempts == () for s in listed)
    everything = {s.job.id: s for s in queue.jobs()}
    assert len(everything[order[2].id].attempts) == 1  # jobs() keeps the failed attempt
    assert listed == [without_attempts(everything[job.id]) for job in order]
    states = [s.state for s in listed]
    assert states == [State.DONE, State.FAILED, State.PENDING, State.DONE, State.RUNNING,
                      State.CANCELLED, State.PENDING, State.PENDING]
    assert listed[2].attempt == 2 and listed[4].worker == "w1"
    assert list(queue_factory().listing()) == listed  # another client, the same listing


def test_listing_final_jobs_come_with_their_result(queue):
    fill(queue)
    for status in queue.listing():
        if status.state.final:
            assert status.result is not None and status.result.state is status.state
            assert status.result.job_id == status.job.id
        else:
            assert status.result is None
    failed = next(iter(queue.listing({State.FAILED})))
    assert failed.result.reason == "exit status 1" and failed.result.exit_code == 1


def test_listing_filters_by_state_and_keeps_the_order(queue):
    order = fill(queue)
    finals = list(queue.listing({State.DONE, State.FAILED, State.CANCELLED}))
    assert [s.job for s in finals] == [order[0], order[1], order[3], order[5]]
    assert [s.job for s in queue.listing([State.PENDING])] == [order[2], order[6], order[7]]
    assert [s.job for s in queue.listing({State.RUNNING})] == [order[4]]
    assert list(queue.listing(set())) == []


def test_listing_limit_takes_the_first_in_order(queue):
    order = fill(queue)
    assert [s.job for s in queue.listing(limit=3)] == order[:3]
    assert [s.job for s in queue.listing({State.PENDING}, limit=2)] == [order[2], order[6]]
    assert list(queue.listing(limit=0)) == []
    assert [s.job for s in queue.listing(limit=100)] == order


def test_listing_of_an_empty_queue_is_empty(queue):
    assert list(queue.listing()) == []
    assert list(queue.listing({State.FAILED}, limit=5)) == []


def test_listing_keeps_a_call_jobs_binary_payload(queue):
    call = Job(id="call-listing-1", name="f(1)", kind=Kind.CALL, payload=b"\x80\x04\x00\xff{[\"",
               params={"x": 1})
    queue.submit([cmd(1), call])
    (listed,) = [s for s in queue.listing() if s.job.id == call.id]
    assert listed.job == call and listed.job.payload == call.payload
    assert list(queue.listing()) == [without_attempts(s) for s in
                                     sorted(queue.jobs(), key=lambda s: s.seq)]


def test_summaries_are_the_listing_narrowed(queue, queue_factory):
    """`shoal results`' table reads `summaries`: the same rows, fields and order as
    `listing`, whatever state each job is in (a lost-lease record included where a
    backend writes one)."""
    jobs = [Job.command_job(["echo", str(i)], name=f"job {i}") for i in range(7)]
    queue.submit(jobs)
    leases = queue.claim("w1", 5)
    queue.finish(leases[0], Result(leases[0].job_id, State.DONE, name=leases[0].job.name,
                                   exit_code=0, attempt=1, worker="w1", host="h",
                                   started=10.0, ended=12.5, log="/l/0.log"))
    queue.finish(leases[1], Result(leases[1].job_id, State.FAILED, name=leases[1].job.name,
                                   exit_code=3, reason="exit status 3", attempt=1,
                                   worker="w1", host="h", started=11.0, ended=11.5))
    queue.release(leases[2], failed=Result(leases[2].job_id, State.FAILED, attempt=1,
                                           reason="exit status 1", worker="w1"))
    queue.cancel([leases[3].job_id, jobs[6].id])
    ended_by_dependency = Job.command_job(["echo", "late"], name="late",
                                          after=[leases[1].job_id])
    queue.submit([ended_by_dependency])
    other = queue_factory()
    for states in (None, {State.DONE, State.FAILED}, {State.PENDING}, {State.RUNNING}):
        for limit in (None, 3):
            assert list(other.summaries(states, limit)) == [
                JobSummary.of(s) for s in other.listing(states, limit)]
    rows = {row.id: row for row in other.summaries()}
    done = rows[leases[0].job_id]
    assert (done.state, done.exit_code, done.host, done.ended - done.started, done.log) == (
        State.DONE, 0, "h", 2.5, "/l/0.log")
    assert rows[leases[1].job_id].reason == "exit status 3"
    assert rows[ended_by_dependency.id].state is State.FAILED
    assert rows[ended_by_dependency.id].reason.startswith("dependency ")
    assert rows[leases[4].job_id].state is State.RUNNING
    assert rows[leases[4].job_id].worker == "w1"


def test_summaries_pages_are_slices_of_the_whole_list(queue, queue_factory):
    """The dashboard's jobs table reads one page at a time (`offset`, `limit`): page 0, 1,
    the last and one past the end are the same rows as slices of the whole list, in
    input order, with a state filter too."""
    order = fill(queue)
    other = queue_factory()
    for states in (None, {State.PENDING, State.DONE}):
        whole = list(other.summaries(states))
        assert [row.id for row in whole] == [
            job.id for job, status in zip(order, queue.listing(), strict=True)
            if states is None or status.state in states]
        size = 3
        last = (len(whole) - 1) // size
        for page in (0, 1, last, last + 1):
            assert list(other.summaries(states, size, page * size)) == whole[
                page * size:(page + 1) * size], (states, page)
        assert list(other.summaries(states, offset=2)) == whole[2:]  # no limit: the rest
        assert list(other.summaries(states, 0, 1)) == []
    assert list(other.summaries({State.FAILED}, 5, 1)) == []  # one failed job: past it


def test_search_matches_name_id_and_parameters_in_order(queue, queue_factory):
    """The dashboard's search: a part of the name, of the id or of a parameter written
    `name=value`, any case, as summary rows in input order, with a state filter too."""
    jobs = [Job.command_job(["echo", str(i)], name=f"Sweep {i}",
                            params={"alpha": i, "mode": "Fast" if i % 2 else "slow",
                                    "odd": bool(i % 2), "cap": None if i == 5 else 2.5})
            for i in range(6)]
    queue.submit(jobs)
    (lease,) = queue.claim("w1", 1)
    queue.finish(lease, outcome(lease, State.DONE))
    other = queue_factory()

    def found(text: str, states: set[State] | None = None) -> list[str]:
        rows = list(other.search(text, states))
        assert rows == [row for row in other.summaries(states) if row.id in
                        {r.id for r in rows}]  # the same rows as the table's, in order
        return [row.id for row in rows]

    ids = [job.id for job in jobs]
    assert found("sweep 3") == [ids[3]]
    assert found("MODE=fast") == [ids[1], ids[3], ids[5]]
    assert found("alpha=4") == [ids[4]]
    assert found("=slow") == [ids[0], ids[2], ids[4]]
    assert found(ids[2][3:9].upper()) == [ids[2]]
    assert found("mode=slow", {State.PENDING}) == [ids[2], ids[4]]
    assert found("mode=slow", {State.DONE}) == [ids[0]]
    assert found("nothing like it") == []
    # what the job view shows (Python's spelling of a TOML job's values) finds it
    assert found("odd=True") == [ids[1], ids[3], ids[5]]
    assert found("odd=false") == [ids[0], ids[2], ids[4]]
    assert found("cap=none") == [ids[5]]
    assert found("cap=2.5") == ids[:5]
