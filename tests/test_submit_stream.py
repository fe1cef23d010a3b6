"""Submitting a stream of jobs (issue 18): `submit` reads any iterable batch by batch, each
batch all or nothing; a batch that fails leaves the earlier ones in, reads no later one,
and says how many went in. Job ids and records stay what they were (a rerun resumes)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal.errors import ShoalError
from shoal.job import Job, Kind, State, content_id, record_text
from shoal.queue.batches import submit_in_batches
from shoal.queue.scheduling import DependencyError
from tests.conftest import TEST_LEASE_S, QueueFactory

BATCH = 10
# submit's batch size, by module: where each backend reads it
BATCH_OF = {"sqlite": ["shoal.queue.sqlite"],
            "tcp": ["shoal.queue.remote", "shoal.queue.sqlite"],
            "redis": ["shoal.queue.redisq.queue"]}
# batches a pipelined submit may read beyond the last one stored: one being stored, one
# encoded and waiting, one being read
AHEAD = 3


@pytest.fixture(params=sorted(BATCH_OF))
def factory(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[QueueFactory]:
    for module in BATCH_OF[request.param]:
        monkeypatch.setattr(f"{module}.SUBMIT_BATCH", BATCH)
    made = QueueFactory(request.param, tmp_path, TEST_LEASE_S)
    yield made
    made.close()


def job(i: int) -> Job:
    return Job.command_job(["true", str(i)])


def test_a_generator_is_read_as_it_is_stored(factory: QueueFactory):
    """Batches are in the queue (another client sees them) while the generator is still
    being read: 10^6 jobs are never all in memory."""
    queue, other = factory(), factory()
    seen: list[int] = []

    def jobs() -> Iterator[Job]:
        for i in range(100):
            if i % BATCH == 0:
                seen.append(other.counts()[State.PENDING])
            yield job(i)

    assert len(queue.submit(jobs())) == 100
    assert other.counts()[State.PENDING] == 100
    for batch, stored in enumerate(seen):  # as batch N starts being read
        assert stored >= (batch - AHEAD) * BATCH, seen
    assert seen[-1] >= 50, f"nothing stored while reading: {seen}"
    assert [s.job.id for s in other.listing()] == [job(i).id for i in range(100)]


def test_a_failing_batch_keeps_earlier_batches_and_reads_no_later_one(factory: QueueFactory):
    queue = factory()
    read = []
    unknown = "0123456789abcdef"

    def jobs() -> Iterator[Job]:
        for i in range(100):
            read.append(i)
            # the 4th batch names a job no one submitted: refused whole
            yield Job.command_job(["true", str(i)], after=[unknown]) if i == 35 else job(i)

    with pytest.raises(DependencyError) as caught:
        queue.submit(jobs())
    message = str(caught.value)
    assert unknown in message
    assert "30 job(s) of this submission were stored before it, 30 of them new" in message
    assert caught.value.submitted == 30  # type: ignore[attr-defined]
    assert caught.value.new_ids == [job(i).id for i in range(30)]  # type: ignore[attr-defined]
    assert [s.job.id for s in queue.listing()] == [job(i).id for i in range(30)]
    assert max(read) < 40 + AHEAD * BATCH
    # the same stream again, the bad job left out: only the rest is new
    again = queue.submit(job(i) for i in range(100) if i != 35)
    assert again == [job(i).id for i in range(30, 100) if i != 35]


def test_the_error_of_a_first_batch_is_unchanged(factory: QueueFactory):
    queue = factory()
    with pytest.raises(DependencyError) as caught:
        queue.submit(iter([Job.command_job(["true"], after=["0123456789abcdef"])]))
    assert "stored before it" not in str(caught.value)
    assert caught.value.submitted == 0  # type: ignore[attr-defined]


def test_a_list_with_dependencies_goes_whole(factory: QueueFactory):
    """A list may name a job that comes after it, batches apart: checked as one."""
    queue = factory()
    last = job(24)
    first = Job.command_job(["true", "first"], after=[last.id])
    jobs = [first, *(job(i) for i in range(1, 25))]
    assert len(queue.submit(jobs)) == 25
    assert queue.get(first.id).state is State.WAITING
    assert queue.counts()[State.PENDING] == 24


def test_repeats_within_a_stream_are_one_job(factory: QueueFactory):
    queue = factory()
    new = queue.submit(job(i % 15) for i in range(40))
    assert new == [job(i).id for i in range(15)]
    assert [s.seq for s in queue.listing()] == list(range(1, 16))


# -- what a job is, unchanged ---------------------------------------------------------


def test_job_ids_are_what_they_were():
    """Ids are content: the same job as before this change, or a rerun would not resume
    (these were made by the generic json.dumps way)."""
    assert job(1).id == "81c0eae5d8c28fa8"
    assert Job.command_job('echo héllo "x"', cwd="/tmp/a").id == "363d86713d6b58bd"
    assert Job.command_job(["a", "b"], env={"B": "1", "A": "é"},
                           params={"x": 1, "a": [1.5, None]}).id == "08b41ed9b8b44ee6"
    assert Job.command_job(["true"], timeout_s=5).id == "9a940b2edb769559"
    assert content_id("command", ("a", 1), None, {}, {}) == "151f09a70c2879ec"


def test_a_circular_value_in_an_id_is_a_clear_error():
    loop: dict = {}
    loop["me"] = loop
    with pytest.raises(ValueError, match="Circular"):
        content_id(loop)


@pytest.mark.parametrize("made", [
    Job.command_job(["true", "1"]),
    Job.command_job("echo $X", cwd="/tmp", env={"X": "é"}, params={"n": 2.5, "b": None},
                    timeout_s=3.0, retries=2, max_attempts=5, priority=-2,
                    after=["0123456789abcdef"], needs={"cpus": 2}, labels=["gpu"],
                    stderr_apart=True),
    Job.file_job("job.sh", priority=1),
    Job("abc", "call", Kind.CALL, payload=b"\x00\xff", meta={"fn": "d" * 64}),
], ids=["plain", "everything", "file", "call"])
def test_a_record_gives_the_job_back(made: Job):
    assert Job.from_dict(made.to_record()) == made
    assert Job.from_dict(made.to_dict()) == made
    stored = json.loads(record_text(made))
    assert "payload" not in stored
    assert all(value not in (None, {}, [], 0) or key in ("retries", "max_attempts")
               for key, value in stored.items()), stored
    assert Job.from_dict({**stored, "payload": made.payload}) == made


def failing_at(i: int, error: Exception) -> Callable[[list[Job]], list[str]]:
    """A store that raises `error` at the batch starting with job(i)."""
    def store(batch: list[Job]) -> list[str]:
        if batch[0].id == job(i).id:
            raise error
        return [j.id for j in batch]
    return store


def test_a_failure_is_a_shoal_error_with_the_count():
    """Errors other than shoal's own (a bug, an interrupt) go through untouched."""
    with pytest.raises(RuntimeError, match=r"^boom$"):
        submit_in_batches((job(i) for i in range(40)), BATCH,
                          failing_at(20, RuntimeError("boom")))
    with pytest.raises(ShoalError, match=r"^disk full \(20 job\(s\)"):
        submit_in_batches((job(i) for i in range(40)), BATCH,
                          failing_at(20, ShoalError("disk full")))
