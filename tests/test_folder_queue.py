"""Shared-folder specifics: group commit and crash recovery, fresh listings, drop-ins."""

from __future__ import annotations

import os
from pathlib import Path

from shoal.job import Job, Result, State, dumps
from shoal.queue.folder import FolderQueue
from tests.conftest import TEST_LEASE_S, wait_for


def one_claimed(tmp_path: Path) -> tuple[FolderQueue, object]:
    queue = FolderQueue(tmp_path / "q", lease_s=TEST_LEASE_S)
    queue.submit([Job.command_job(["echo", "x"])])
    (lease,) = queue.claim("w1")
    return queue, lease


def fences(queue: FolderQueue) -> list[str]:
    return os.listdir(queue.base / "committing")


def test_a_result_is_visible_at_once_and_its_fence_goes_after_the_group_commit(tmp_path):
    queue, lease = one_claimed(tmp_path)
    queue.finish(lease, Result(lease.job_id, State.DONE))
    assert queue.get(lease.job_id).state is State.DONE
    assert queue.counts()[State.RUNNING] == 0
    queue.flush()
    assert fences(queue) == []


def test_get_finds_a_job_claimed_while_it_looks(tmp_path, monkeypatch):
    """get() looks in one folder after another; a claim landing between two looks (a
    loaded machine widens that gap) must not make the job vanish: it used to return None."""
    queue = FolderQueue(tmp_path / "q", lease_s=TEST_LEASE_S)
    other = FolderQueue(tmp_path / "q", lease_s=TEST_LEASE_S)  # another worker
    queue.submit([Job.command_job(["echo", "x"])])
    (job_id,) = [status.job.id for status in queue.jobs()]
    look_in_pending = queue._pending_attempt
    leases: list = []

    def claimed_just_after_the_look(job: Job, rank: int) -> int | None:
        attempt = look_in_pending(job, rank)
        if not leases:
            leases.extend(other.claim("w2"))  # pending when get() looked, running now
            return None  # as if get() had looked a moment later
        return attempt

    monkeypatch.setattr(queue, "_pending_attempt", claimed_just_after_the_look)
    status = queue.get(job_id)
    assert len(leases) == 1
    assert status is not None and status.state is State.RUNNING and status.worker == "w2"


def crash_after_finish(tmp_path: Path, result_bytes: bytes | None) -> tuple[FolderQueue, str]:
    """A worker fenced its job, wrote (or half-wrote) the result, and died before its
    group commit removed the fence: the state a power cut leaves behind."""
    queue, lease = one_claimed(tmp_path)
    claimed = queue.base / "claimed" / f"{lease.job_id}.1.w1"
    os.rename(claimed, queue.base / "committing" / f"{lease.job_id}.1.w1.abc123")
    if result_bytes is not None:
        (queue.base / "done" / f"{lease.job_id}.json").write_bytes(result_bytes)
    return FolderQueue(queue.root, lease_s=TEST_LEASE_S), lease.job_id


def reap_until(queue: FolderQueue, condition) -> None:
    wait_for(lambda: (queue.reap(), condition())[1], message="the reaper to settle the fence")


def test_reaper_tidies_a_dead_workers_fence_when_its_result_is_readable(tmp_path):
    job_id = Job.command_job(["echo", "x"]).id
    good = dumps(Result(job_id, State.DONE, attempt=1, worker="w1").to_dict())
    queue, _ = crash_after_finish(tmp_path, good)
    reap_until(queue, lambda: fences(queue) == [])
    assert queue.get(job_id).state is State.DONE
    assert queue.claim("w2") == []


def test_reaper_runs_the_job_again_when_the_crash_left_its_result_empty(tmp_path):
    queue, job_id = crash_after_finish(tmp_path, b"")
    reap_until(queue, lambda: queue.get(job_id).state is State.PENDING)
    (lease,) = queue.claim("w2")
    assert (lease.job_id, lease.attempt) == (job_id, 2)
    assert any(".corrupt." in name for name in os.listdir(queue.base / "attempts"))


def test_reaper_runs_the_job_again_when_the_crash_lost_its_result(tmp_path):
    queue, job_id = crash_after_finish(tmp_path, None)
    reap_until(queue, lambda: queue.get(job_id).state is State.PENDING)


def test_without_fsync_the_fence_goes_at_once(tmp_path):
    queue = FolderQueue(tmp_path / "q", fsync=False)
    queue.submit([Job.command_job(["true"])])
    (lease,) = queue.claim("w1")
    queue.finish(lease, Result(lease.job_id, State.DONE))
    assert fences(queue) == []


def test_hidden_temporary_and_log_files_in_the_folder_are_not_jobs(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    for name in ("run.py", ".hidden.py", "other.py.log", "x.py.tmp", "y.sh~", "notes.txt",
                 ".nfs000123"):
        (folder / name).write_text("print(1)\n")
    queue = FolderQueue(folder)
    queue.refresh()
    assert [status.job.name for status in queue.jobs()] == ["run.py"]
    queue.refresh()
    assert len(list(queue.jobs())) == 1


SUBMITTER = """
import sys
from shoal.job import Job
from shoal.queue.folder import FolderQueue
queue = FolderQueue(sys.argv[1], fsync=False)
for batch in range(30):
    queue.submit([Job.command_job(["echo", sys.argv[2], str(batch), str(i)])
                  for i in range(1 + batch % 4)])
"""


def test_submitters_racing_get_numbers_that_tile_without_a_gap(tmp_path):
    """Four processes submit at once, each reserving ranges in seq/ with link(2): every
    job gets its own number, and together they are exactly 1..N (no lock anywhere)."""
    import subprocess
    import sys

    root = tmp_path / "q"
    FolderQueue(root)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    racers = [subprocess.Popen([sys.executable, "-c", SUBMITTER, str(root), f"p{n}"], env=env)
              for n in range(4)]
    assert [racer.wait(timeout=120) for racer in racers] == [0] * 4
    seqs = sorted(status.seq for status in FolderQueue(root).jobs())
    per_process = sum(1 + batch % 4 for batch in range(30))
    assert seqs == list(range(1, 4 * per_process + 1))


def test_a_job_from_before_seq_is_still_claimed(tmp_path):
    """A queue written before jobs were numbered: spec without seq, marker pending/ID.1."""
    queue = FolderQueue(tmp_path / "q")
    old = Job.command_job(["echo", "old"])
    (queue.base / "jobs" / f"{old.id}.json").write_bytes(dumps(old.to_dict()))
    (queue.base / "pending" / f"{old.id}.1").touch()
    queue.submit([Job.command_job(["echo", "new"])])
    assert queue.get(old.id).seq == 0 and queue.get(old.id).state is State.PENDING
    (first,) = queue.claim("w1")
    assert first.job == old  # no number: before every numbered job
    queue.release(first)  # back to where it was
    assert queue.counts()[State.PENDING] == 2


def test_a_block_folder_removed_empty_is_made_again_by_a_release(tmp_path):
    queue, lease = one_claimed(tmp_path)
    assert queue.claim("w1") == []  # this refill finds the block empty and removes it
    lanes = list((queue.base / "pending").iterdir())  # the lane's folder stays, empty
    assert [lane.name for lane in lanes] == ["p0"] and list(lanes[0].iterdir()) == []
    queue.release(lease, failed=Result(lease.job_id, State.FAILED, reason="exit status 1"))
    (again,) = queue.claim("w1")
    assert (again.job_id, again.attempt) == (lease.job_id, 2)


def test_retry_force_of_a_job_whose_fence_awaits_its_group_commit(tmp_path):
    """Right after a finish, its fence still exists until the group commit: a forced
    retry must leave the job pending, not looking as if it ran."""
    queue, lease = one_claimed(tmp_path)
    queue.finish(lease, Result(lease.job_id, State.DONE))
    assert queue.retry([lease.job_id], force=True) == [lease.job_id]
    assert queue.get(lease.job_id).state is State.PENDING
    assert queue.counts()[State.RUNNING] == 0
    queue.flush()
    (again,) = queue.claim("w1")
    assert again.job_id == lease.job_id


def test_a_second_submitter_of_a_job_between_its_spec_and_marker_makes_no_second_marker(
        tmp_path):
    """Submitter A has published the spec but not yet its pending marker when B submits the
    same job: B's repair must use the number in A's spec, so there is one marker and the job
    runs once. (A spec is published whole, by link, so B never reads one half-written and
    repairs with a number of its own: two markers ran the job twice; found in review.)"""
    first, second = FolderQueue(tmp_path, fsync=False), FolderQueue(tmp_path, fsync=False)
    job = Job.command_job("echo once")
    to_pending = first._to_pending

    def b_submits_first(job_id, attempt, seq, src=None):
        second.submit([job])  # B finds the spec and no marker: "a submitter died", repair
        return to_pending(job_id, attempt, seq, src)

    first._to_pending = b_submits_first  # type: ignore[method-assign]
    first.submit([job])
    markers = [name for _, _, names in os.walk(tmp_path / ".shoal" / "pending")
               for name in names]
    assert len(markers) == 1, markers
    claimed = first.claim("w1", 5) + second.claim("w2", 5)
    assert [lease.job_id for lease in claimed] == [job.id]


def test_a_watch_hears_of_its_own_finals_and_of_another_process_s(tmp_path):
    """A watcher hears of the finals its own queue object records without listing the
    final folders (finals.py), and still of those another process records (here another
    FolderQueue on the same folder), even while its own keep coming."""
    from shoal.queue.base import WatchSet

    queue = FolderQueue(tmp_path / "q", lease_s=TEST_LEASE_S)
    other = FolderQueue(tmp_path / "q", lease_s=TEST_LEASE_S)
    queue.submit([Job.command_job(["echo", str(i)]) for i in range(4)])
    watched = WatchSet(status.job.id for status in queue.jobs())
    assert queue.watch(watched, 0) == []  # the first look scans: nothing final yet
    heard: set[str] = set()

    def finish(on: FolderQueue) -> str:
        (lease,) = on.claim("w")
        on.finish(lease, Result(lease.job_id, State.DONE, attempt=lease.attempt))
        return lease.job_id

    def hear(job_id: str) -> bool:
        for result in queue.watch(watched, 0.2):
            watched.discard(result.job_id)
            heard.add(result.job_id)
        return job_id in heard

    mine = finish(queue)
    wait_for(lambda: hear(mine), timeout_s=30)
    theirs = finish(other)
    mine_again = finish(queue)  # our own keep coming: the scan for theirs is paced, not off
    wait_for(lambda: hear(mine_again), timeout_s=30)
    wait_for(lambda: hear(theirs), timeout_s=30)
    assert heard == {mine, theirs, mine_again}
