"""A full disk (a 512 KiB tmpfs filled by a filler file) never kills a worker or the
coordinator, and a submission lands whole or not at all (issue 19, case 2).

Real processes on a real tmpfs; a machine that refuses the mount skips with the reason.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.job import Job, State
from shoal.queue import open_queue
from tests.conftest import wait_for
from tests.procs import executions, marker_job

pytestmark = pytest.mark.timeout(240)

NO_SPACE = "no space left"
JOBS = 12


class SmallDisk:
    """A 512 KiB tmpfs mounted for one test; `fill` takes its last byte, `free` gives
    the space back."""

    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.filler = mount / "filler"

    def fill(self, leave_pages: int = 0) -> None:
        """Write the filler until the disk is full, then (with `leave_pages`) cut it by
        that many 4 KiB pages."""
        chunk = b"\0" * 4096
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
        finally:
            os.close(fd)
        if leave_pages:
            size = self.filler.stat().st_size
            os.truncate(self.filler, max(0, size - leave_pages * 4096 - size % 4096))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


# A sqlite queue's WAL grows to 1000 pages (4 MiB) before its first checkpoint: on a
# smaller disk the WAL alone fills it, and nothing can free it (a checkpoint needs room
# for the database to grow). A sqlite queue gets a disk where the filler is what fills.
SIZES = {"folder": "512k", "sqlite": "8m"}


@pytest.fixture
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    mount = tmp_path / "small"
    mount.mkdir()
    size = SIZES[getattr(request, "param", "folder")]
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def queue_url(kind: str, disk: SmallDisk) -> str:
    return f"dir://{disk.mount / 'q'}" if kind == "folder" else f"sqlite://{disk.mount / 'q.db'}"


def lines_saying(text: str, words: str) -> list[str]:
    return [line for line in text.splitlines() if words in line.lower()]


@pytest.mark.parametrize(("kind", "disk"), [("folder", "folder"), ("sqlite", "sqlite")],
                         indirect=["disk"])
def test_a_worker_outlives_a_full_disk_and_finishes_every_job_once(kind, disk, procs,
                                                                    tmp_path):
    url = queue_url(kind, disk)
    out = tmp_path / "out"
    out.mkdir()
    queue = open_queue(url)
    queue.submit([Job.command_job(marker_job(out, "sleep 0.3;"), params={"i": i})
                  for i in range(JOBS)])
    worker = procs.shoal("work", url, "--slots", "2", "--drain", "--lease", "4")
    wait_for(lambda: executions(out), 60, message="a first job")
    disk.fill()
    wait_for(lambda: lines_saying(procs.output(worker), NO_SPACE) or worker.poll() is not None,
             60, message="the worker to notice the full disk")
    assert worker.poll() is None, procs.output(worker)
    stalled = len(executions(out))
    status = subprocess.run(["python", "-m", "shoal", "status", url], capture_output=True,
                            text=True, timeout=60, env={**os.environ})
    assert status.returncode == 0, status.stderr  # read-only views still work
    assert "Traceback" not in status.stderr
    assert worker.poll() is None, procs.output(worker)  # still alive, backing off
    assert len(executions(out)) <= stalled + 2  # at most the jobs that were running
    disk.free()
    assert worker.wait(timeout=120) == 0, procs.output(worker)
    text = procs.output(worker)
    assert "Traceback" not in text and "Errno 28" not in text
    assert len(lines_saying(text, NO_SPACE)) == 1, text  # once, not once per beat
    assert str(disk.mount) in lines_saying(text, NO_SPACE)[0]
    results = list(open_queue(url).results())
    assert len(results) == JOBS and {r.state for r in results} == {State.DONE}
    assert sorted(job_id for job_id, _, _ in executions(out)) == sorted(r.job_id for r in results)


@pytest.mark.parametrize(("kind", "disk"), [("folder", "folder"), ("sqlite", "sqlite")],
                         indirect=["disk"])
def test_a_submit_on_a_full_disk_is_one_line_and_all_or_nothing(kind, disk, procs, tmp_path):
    url = queue_url(kind, disk)
    open_queue(url).close()  # the queue exists; the disk fills mid-way through the batch
    disk.fill(leave_pages=6)
    done = subprocess.run(["python", "-m", "shoal", "submit", url, "echo", ":::",
                           *map(str, range(40))], capture_output=True, text=True, timeout=60)
    queue = open_queue(url, create=False)  # a read changes nothing, needs no space
    counted = sum(queue.counts().values())
    if done.returncode == 0:  # it fitted after all: then every job is there
        assert counted == 40
        pytest.skip("the batch fitted in the space left; nothing to roll back")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert NO_SPACE in done.stderr.lower(), done.stderr
    assert counted == 0, queue.counts()  # none visible, to workers or anyone
    if kind == "folder":  # and nothing half-written left behind
        assert list((disk.mount / "q" / ".shoal" / "jobs").iterdir()) == []
    disk.free()
    again = subprocess.run(["python", "-m", "shoal", "submit", url, "echo", ":::",
                            *map(str, range(40))], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert sum(open_queue(url).counts().values()) == 40


@pytest.mark.parametrize("disk", ["sqlite"], indirect=True)
def test_a_coordinator_on_a_full_disk_keeps_its_workers(disk, procs, tmp_path):
    url = f"sqlite://{disk.mount / 'q.db'}"
    status = tmp_path / "status"
    serve = procs.shoal("serve", url, "--status", str(status), "--lease", "4")
    wait_for(lambda: (status / "status.json").exists(), 60, message="the coordinator")
    out = tmp_path / "out"
    out.mkdir()
    queue = open_queue(str(status))
    queue.submit([Job.command_job(marker_job(out, "sleep 0.3;"), params={"i": i})
                  for i in range(2 * JOBS)])
    workers = [procs.shoal("work", str(status), "--slots", "2") for _ in range(2)]
    wait_for(lambda: executions(out), 60, message="a first job")
    with sqlite3.connect(disk.mount / "q.db") as db:  # an empty WAL: its next page needs
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a block the full disk refuses
    disk.fill()
    wait_for(lambda: any(lines_saying(procs.output(w), NO_SPACE) for w in workers)
             or any(w.poll() is not None for w in workers), 60,
             message="the fleet to meet the full disk")
    assert [w.poll() for w in workers] == [None, None], [procs.output(w) for w in workers]
    assert serve.poll() is None, procs.output(serve)
    disk.free()
    wait_for(lambda: queue.counts()[State.DONE] == 2 * JOBS, 120,
             message="every job done once space is back")
    assert [w.poll() for w in workers] == [None, None], [procs.output(w) for w in workers]
    results = list(queue.results())
    assert len(results) == 2 * JOBS and {r.state for r in results} == {State.DONE}
    ran = [job_id for job_id, _, _ in executions(out)]
    assert sorted(set(ran)) == sorted(r.job_id for r in results)
    assert len(ran) == len(set(ran)), "a job ran twice"
    for worker in workers:
        assert "Traceback" not in procs.output(worker)
    queue.close()
