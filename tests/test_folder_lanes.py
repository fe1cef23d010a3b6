"""Issue 15 on a shared folder: what the conformance suite cannot see. Races between
processes sharing the folder (a dependency ending while its dependant is submitted, two
finishers setting one dependant free), ranks that outlive the process that set them,
queues written before lanes, the claim reading no lane that cannot fit, and a
dependency chain that survives a worker killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.job import Job, Result, State, dumps
from shoal.queue.folder import FolderQueue, deps, lanes
from shoal.queue.scheduling import Capacity
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(240)


def cmd(name: str, **options) -> Job:
    return Job.command_job(["echo", name], name=name, **options)


def done(lease) -> Result:
    return Result(lease.job_id, State.DONE, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=0)


def markers(root: Path) -> list[str]:
    return [name for _, _, names in os.walk(root / ".shoal" / "pending") for name in names]


@pytest.mark.parametrize("moment", ["before its waiting marker", "after its waiting marker"])
def test_a_dependency_done_while_its_dependant_is_submitted(tmp_path, monkeypatch, moment):
    """Another process finishes the dependency at the worst moments of the submit: the
    dependant must not stay waiting for a job that is already done."""
    submitter, finisher = FolderQueue(tmp_path, fsync=False), FolderQueue(tmp_path, fsync=False)
    first = cmd("first")
    submitter.submit([first])
    (lease,) = finisher.claim("w")
    then = cmd("then", after=[first.id])
    waiting = submitter.path("waiting", then.id)

    def finish_now() -> None:
        if not os.path.exists(submitter.path("done", f"{first.id}.json")):
            finisher.finish(lease, done(lease))

    if moment == "before its waiting marker":
        touch = deps.touch_exclusive

        def touch_late(path):
            if str(path) == waiting:
                finish_now()  # the finisher lists after/FIRST: no waiting marker yet
            return touch(path)

        monkeypatch.setattr(deps, "touch_exclusive", touch_late)
    else:
        refresh = deps.refresh_finals

        def refresh_late(queue):
            finish_now()  # the submitter looks at the results only after this
            return refresh(queue)

        monkeypatch.setattr(deps, "refresh_finals", refresh_late)
    submitter.submit([then])
    assert FolderQueue(tmp_path).get(then.id).state is State.PENDING
    assert [lease.job.name for lease in FolderQueue(tmp_path).claim("w2", 5)] == ["then"]


def test_two_finishers_setting_one_dependant_free_make_one_marker(tmp_path):
    one, two = FolderQueue(tmp_path, fsync=False), FolderQueue(tmp_path, fsync=False)
    a, b = cmd("a"), cmd("b")
    reduce = cmd("reduce", after=[a.id, b.id])
    one.submit([a, b, reduce])
    for lease in one.claim("w", 2):
        one._write_final(done(lease))  # both results land before either finisher looks
    deps.ended(one, a.id, State.DONE)
    deps.ended(two, b.id, State.DONE)
    deps.free(two, reduce)  # a third try: the waiting marker is gone, nothing happens
    assert len(markers(tmp_path)) == 1
    assert [lease.job.name for lease in two.claim("w2", 5)] == ["reduce"]


REDUCER = """
import sys
from shoal.job import Result, State
from shoal.queue.folder import FolderQueue
queue = FolderQueue(sys.argv[1], fsync=False)
while True:
    leases = queue.claim(sys.argv[2], 1)
    if not leases:
        if queue.is_drained():
            break
        continue
    lease = leases[0]
    print(lease.job.name, flush=True)
    queue.finish(lease, Result(lease.job_id, State.DONE, attempt=lease.attempt))
"""


def test_racing_finishers_set_a_reduce_free_exactly_once(tmp_path):
    """Four processes claim and finish 60 jobs a reduce waits for: the last of them, whoever
    finishes it, sets the reduce free; it runs once."""
    sims = [cmd(f"sim{i}") for i in range(60)]
    reduce = cmd("reduce", after=[s.id for s in sims])
    FolderQueue(tmp_path, fsync=False).submit([*sims, reduce])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    racers = [subprocess.Popen([sys.executable, "-c", REDUCER, str(tmp_path), f"r{n}"],
                               env=env, stdout=subprocess.PIPE, text=True) for n in range(4)]
    ran = []
    for racer in racers:
        out, _ = racer.communicate(timeout=180)
        assert racer.returncode == 0
        ran += out.split()
    assert sorted(ran) == sorted([*(s.name for s in sims), "reduce"])
    assert ran.count("reduce") == 1
    assert FolderQueue(tmp_path).get(reduce.id).state is State.DONE


def test_a_job_retried_first_stays_first_for_other_processes(tmp_path):
    """The rank a retry gives lives in the folder, not in the retrying process: released by
    its worker, the job is still claimed first by a worker that never saw the retry."""
    queue = FolderQueue(tmp_path, fsync=False)
    queue.submit([cmd("once"), *(cmd(f"j{i}") for i in range(5))])
    (lease,) = queue.claim("w")
    queue.finish(lease, Result(lease.job_id, State.FAILED, attempt=1, reason="exit 1"))
    assert queue.retry([lease.job_id]) == [lease.job_id]
    (again,) = FolderQueue(tmp_path).claim("w2")
    assert again.job.name == "once"
    FolderQueue(tmp_path).release(again)
    stranger = FolderQueue(tmp_path)
    assert stranger.get(lease.job_id).state is State.PENDING
    assert [lease.job.name for lease in stranger.claim("w3", 2)] == ["once", "j0"]


def test_markers_from_before_lanes_are_still_claimed_in_order(tmp_path):
    queue = FolderQueue(tmp_path, fsync=False)
    old = cmd("old")
    (queue.base / "jobs" / f"{old.id}.json").write_bytes(dumps({**old.to_dict(), "seq": 1}))
    (queue.base / "pending" / "000000000").mkdir()
    (queue.base / "pending" / "000000000" / f"000000000001.{old.id}.1").touch()
    (queue.base / "seq" / "1").write_text("1")
    queue.submit([cmd("new")])
    fresh = FolderQueue(tmp_path)
    assert fresh.get(old.id).state is State.PENDING
    assert fresh.counts()[State.PENDING] == 2
    assert [lease.job.name for lease in fresh.claim("w", 2)] == ["old", "new"]


def test_a_claim_reads_no_lane_that_cannot_fit(tmp_path, monkeypatch):
    """A thousand high-priority GPU jobs ahead of one small job: a worker without GPUs
    lists none of their markers to find the small one (the claim cost stays flat)."""
    queue = FolderQueue(tmp_path, fsync=False)
    queue.submit([cmd(f"gpu{i}", priority=5, needs={"gpus": 1}) for i in range(1000)])
    queue.submit([cmd("small")])
    listed = []
    list_names = lanes.list_names

    def counting(folder):
        names = list_names(folder)
        listed.extend(names)
        return names

    monkeypatch.setattr(lanes, "list_names", counting)
    claimer = FolderQueue(tmp_path)
    assert [lease.job.name for lease in claimer.claim("w", 1, fit=Capacity({"cpus": 4}))] == [
        "small"]
    assert len(listed) < 20, listed[:20]


def test_a_dependency_chain_survives_a_worker_killed_mid_job(tmp_path, procs):
    """a -> b -> c; the worker running a is killed with SIGKILL: a is reaped and run again
    by the next worker, and b and c follow it once each, in order."""
    root = tmp_path / "q"
    out = tmp_path / "ran"
    out.mkdir()
    first_try = tmp_path / "first-try"
    record = f'echo "$SHOAL_JOB_NAME.$SHOAL_ATTEMPT" >> "{out}/history"'
    a = Job.command_job(f'{record}; if [ ! -e "{first_try}" ]; then touch "{first_try}"; '
                        "sleep 120; fi", name="a")
    b = Job.command_job(record, name="b", after=[a.id])
    c = Job.command_job(record, name="c", after=[b.id])
    FolderQueue(root).submit([c, b, a])
    doomed = procs.shoal("work", str(root), "--slots", "2", "--lease", "2")
    wait_for(lambda: first_try.exists(), 60, message="a to start")
    assert FolderQueue(root).get(b.id).state is State.WAITING
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    procs.shoal("work", str(root), "--slots", "2", "--lease", "2", "--drain")
    queue = FolderQueue(root)
    wait_for(lambda: queue.get(c.id).state is State.DONE, 120, message="c to be done")
    assert (out / "history").read_text().split() == ["a.1", "a.2", "b.1", "c.1"]


def test_a_lane_whose_file_a_purge_took_is_still_claimed(tmp_path):
    """A long-lived submitter knows it wrote lanes/LANE.json; another process purges the
    queue; its next job in that lane must still reach a worker that fits it."""
    submitter = FolderQueue(tmp_path, fsync=False)
    submitter.submit([cmd("gpu-before", needs={"gpus": 1})])
    assert FolderQueue(tmp_path).purge(force=True) == 1
    submitter.submit([cmd("gpu-after", needs={"gpus": 1})])
    claimed = FolderQueue(tmp_path).claim("w", 2, fit=Capacity({"cpus": 2, "gpus": 1}))
    assert [lease.job.name for lease in claimed] == ["gpu-after"]


def test_a_dependant_whose_ender_died_is_ended_by_the_reaper_not_run(tmp_path):
    """The process ending a dependant (its dependency failed) dies between taking the
    waiting marker and writing the result: the reaper must end it, never run it."""
    queue = FolderQueue(tmp_path, lease_s=0.6, fsync=False)
    a = cmd("a")
    b = cmd("b", after=[a.id])
    queue.submit([a, b])
    (lease,) = queue.claim("w")
    write_final = queue._write_final

    def dies_before_writing(result, **options):
        if result.job_id == b.id:
            raise KeyboardInterrupt  # the process is killed here
        return write_final(result, **options)

    queue._write_final = dies_before_writing  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        queue.finish(lease, Result(a.id, State.FAILED, attempt=1, reason="exit 1"))
    reaper = FolderQueue(tmp_path, lease_s=0.6, fsync=False)
    wait_for(lambda: reaper.reap() is not None and reaper.get(b.id).state is State.FAILED,
             30, message="the reaper to end b")
    assert a.id in reaper.get(b.id).result.reason
    assert reaper.claim("w2", 5) == []
