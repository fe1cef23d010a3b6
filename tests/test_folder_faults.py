"""A queue facing what users and disks leave in it: stray files in a folder queue's state
folders (stray keys in a Redis one's namespace), a corrupt result record, and readers
racing the renames that move a folder queue's jobs."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shoal.job import Job, Result, State
from shoal.queue import open_queue
from shoal.queue.folder import FolderQueue
from tests.conftest import TEST_LEASE_S, redis_queue_url
from tests.procs import run_shoal

pytestmark = pytest.mark.timeout(300)

STRAY = "zzzz.notanumber"
# Where a stray file is put: every state folder, and the levels inside pending/.
STRAY_PLACES = ("pending", "pending/p0", "pending/p0/000000000", "waiting", "claimed",
                "committing", "done", "failed", "cancelled")


def shoal(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    return run_shoal(*args, check=check, timeout=180)


def quick_jobs(n: int) -> list[Job]:
    return [Job.command_job(["true"], params={"i": i}) for i in range(n)]


def litter(queue: FolderQueue) -> None:
    """What `touch Q/.shoal/pending/zzzz.notanumber` and the like leave, everywhere."""
    for place in STRAY_PLACES:
        folder = queue.base / place
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STRAY).write_text("not a marker\n")
    (queue.base / "pending" / "p7").write_text("a file where a lane folder would be\n")


def test_stray_files_never_block_a_drain_nor_count_as_jobs(tmp_path):
    queue = FolderQueue(tmp_path / "q", lease_s=TEST_LEASE_S)
    queue.submit(quick_jobs(3))
    litter(queue)
    assert queue.counts()[State.PENDING] == 3 and queue.counts()[State.RUNNING] == 0
    assert not queue.is_drained()

    work = subprocess.run([sys.executable, "-m", "shoal", "work", str(queue.root), "--drain"],
                          capture_output=True, text=True, timeout=180)

    assert work.returncode == 0, work.stdout + work.stderr
    counts = queue.counts()
    assert counts[State.DONE] == 3, counts
    assert sum(counts.values()) == 3, counts
    assert queue.is_drained()
    rows = shoal("results", str(queue.root), "--format", "json").stdout.splitlines()
    assert sorted(json.loads(row)["state"] for row in rows) == ["done"] * 3
    for place in STRAY_PLACES:  # left where the user put them
        assert (queue.base / place / STRAY).exists()


def test_status_names_stray_files_once_per_folder(tmp_path):
    queue = FolderQueue(tmp_path / "q", lease_s=TEST_LEASE_S)
    queue.submit(quick_jobs(2))
    (queue.base / "pending" / STRAY).touch()
    out = shoal("status", str(queue.root)).stdout
    assert out.count("unknown file") == 1, out
    assert f"1 unknown file in .shoal/pending: {STRAY}" in out, out

    litter(queue)
    out = shoal("status", str(queue.root)).stdout
    assert "2 pending" in out and "0 running" in out and "0 done" in out, out
    assert out.count("unknown file") == len(STRAY_PLACES), out
    assert f"2 unknown files in .shoal/pending: p7, {STRAY}" in out, out
    for place in STRAY_PLACES[1:]:
        assert f"1 unknown file in .shoal/{place}: {STRAY}" in out, out
    data = json.loads(shoal("status", str(queue.root), "--format", "json").stdout)
    assert {"where": ".shoal/pending", "names": ["p7", STRAY]} in data["unknown_files"]


def test_a_corrupt_result_record_is_a_row_of_results_not_a_gap(tmp_path):
    queue = FolderQueue(tmp_path / "q", lease_s=TEST_LEASE_S)
    jobs = quick_jobs(3)
    queue.submit(jobs)
    shoal("work", str(queue.root), "--drain")
    victim = jobs[1].id
    record = queue.base / "done" / f"{victim}.json"
    record.write_bytes(record.read_bytes()[:20])  # a truncated record: what a bad disk leaves

    rows = [json.loads(row) for row in
            shoal("results", str(queue.root), "--format", "json").stdout.splitlines()]

    assert len(rows) == 3
    (bad,) = [row for row in rows if row["id"] == victim]
    assert bad["state"] == "failed" and bad["reason"].startswith("corrupt record: ")
    assert str(queue.base) in bad["reason"]
    table = shoal("results", str(queue.root)).stdout
    assert "corrupt record" in table
    status = json.loads(shoal("status", str(queue.root), "--format", "json").stdout)
    shown = {state: sum(row["state"] == state for row in rows) for state in ("done", "failed")}
    assert status["counts"]["done"] == shown["done"] == 2
    assert status["counts"]["failed"] == shown["failed"] == 1
    assert status["failures"][0]["reason"].startswith("corrupt record: ")
    # The job's record is kept (for whoever wants to look), and the job can run again.
    assert "1 job(s) back to pending" in shoal("retry", str(queue.root), "--failed").stdout
    shoal("work", str(queue.root), "--drain")
    assert queue.get(victim).state is State.DONE


def test_a_corrupt_record_of_a_finish_still_committing_is_no_failure(tmp_path):
    """A power cut before the group commit leaves a half record and its fence: the job
    is still running (the reaper runs it again), not failed."""
    queue = FolderQueue(tmp_path / "q", lease_s=TEST_LEASE_S)
    queue.submit(quick_jobs(1))
    (lease,) = queue.claim("w1")
    queue._fence(lease)
    (queue.base / "done" / f"{lease.job_id}.json").write_bytes(b'{"job_id": "')
    status = queue.get(lease.job_id)
    assert status is not None and status.state is State.RUNNING
    assert (queue.base / "done" / f"{lease.job_id}.json").exists()


def mover(root: Path, ids: list[str], stop: threading.Event, moves: list[int]) -> None:
    """Moves the jobs through every folder as fast as it can: claim, release (back to
    pending), claim, finish, retry (final -> pending), and round again."""
    queue = FolderQueue(root, lease_s=60, fsync=False)
    while not stop.is_set():
        leases = queue.claim("mover", len(ids))
        for lease in leases:
            queue.release(lease)
        moves[0] += len(leases) * 2
        leases = queue.claim("mover", len(ids))
        for lease in leases:
            queue.finish(lease, Result(lease.job_id, State.DONE, attempt=lease.attempt))
        moves[0] += len(leases) * 2
        moves[0] += len(queue.retry(ids, force=True))


def test_get_never_loses_a_job_that_moves_between_folders(tmp_path):
    """Many thousands of get()s while another thread moves the same jobs through every
    state folder: each finds the job (it used to return None when a rename landed
    between two of its looks)."""
    root = tmp_path / "q"
    queue = FolderQueue(root, lease_s=60, fsync=False)
    first = quick_jobs(3)
    after = Job.command_job(["true"], params={"after": 1}, after=(first[0].id,))
    queue.submit([*first, after])
    ids = [job.id for job in first]
    stop, moves = threading.Event(), [0]
    thread = threading.Thread(target=mover, args=(root, ids, stop, moves), daemon=True)
    thread.start()
    reader = FolderQueue(root, lease_s=60, fsync=False)  # another process's view
    gets, lost = 0, []
    deadline = time.monotonic() + 90  # a loaded machine: 5000 gets took 9 s at load 10
    try:
        while (gets < 5000 or moves[0] < 1000) and time.monotonic() < deadline:
            for job_id in (*ids, after.id):
                if reader.get(job_id) is None:
                    lost.append(job_id)
                gets += 1
    finally:
        stop.set()
        thread.join(30)
    print(f"{gets} gets while {moves[0]} moves")
    assert gets >= 5000 and moves[0] >= 200
    assert lost == []


def test_a_sqlite_result_that_does_not_decode_is_shown_corrupt_not_a_traceback(tmp_path):
    """Shoal writes whole rows in transactions; a hand edit or a damaged file can still
    leave a result that is no JSON record."""
    url = f"sqlite://{tmp_path / 'q.sqlite'}"
    queue = open_queue(url)
    jobs = quick_jobs(2)
    queue.submit(jobs)
    for lease in queue.claim("w1", 2):
        queue.finish(lease, Result(lease.job_id, State.DONE, attempt=lease.attempt))
    queue.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "q.sqlite")) as db:
        db.execute("UPDATE jobs SET result = '{\"job_id\": \"' WHERE id = ?", (jobs[0].id,))
        db.commit()

    table = shoal("results", url)
    assert "corrupt record" in table.stdout and "Traceback" not in table.stderr
    listed = shoal("results", url, "--format", "json").stdout
    rows = [json.loads(row) for row in listed.splitlines()]
    assert [row["state"] for row in rows] == ["failed", "done"]
    assert rows[0]["reason"] == f"corrupt record: {url}, job {jobs[0].id}"
    with contextlib.closing(open_queue(url)) as again:
        assert again.get(jobs[0].id).result.reason.startswith("corrupt record")
        assert {r.state for r in again.results()} == {State.FAILED, State.DONE}


def test_foreign_keys_in_a_redis_queue_namespace_are_never_read(tmp_path):
    """The Redis queue reads its keys by name, never by scanning its namespace: keys of
    any type that another tool left under its prefix change nothing."""
    redis = pytest.importorskip("redis")
    url = redis_queue_url("redis")
    name = url.rsplit("queue=", 1)[1]
    prefix = f"shoal:{{{name}}}:"
    queue = open_queue(url)
    jobs = quick_jobs(3)
    queue.submit(jobs)
    client = redis.Redis.from_url(url.split("?", 1)[0])
    client.set(prefix + STRAY, "x")
    client.hset(prefix + "line:p0x", "a", "b")
    client.lpush(prefix + "control:ghost", "rm -rf")
    client.zadd(prefix + "back:zzzz", {"nojob": 1})
    shoal("work", url, "--drain")
    client.close()
    assert queue.counts()[State.DONE] == 3 and sum(queue.counts().values()) == 3
    assert sorted(r.job_id for r in queue.results()) == sorted(job.id for job in jobs)
    assert "3 done" in shoal("status", url).stdout
    queue.close()
