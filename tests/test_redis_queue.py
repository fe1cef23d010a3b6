"""`redis://`: what only the Redis backend promises, checked on a real redis-server.

The conformance suite holds it to the contract; here: where its keys live (one hash
tag, one Cluster slot), counts that cost the same however many jobs wait, claims that
block and wake at once, leases judged by the server's clock, a killed worker process
taken over, and a late result refused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from shoal import defaults
from shoal.errors import (
    DurabilityWarning,
    LeaseLost,
    NoSuchQueue,
    NotDurable,
    QueueUnavailable,
    UsageError,
)
from shoal.job import Job, Result, State, WorkerInfo
from shoal.queue import open_queue
from shoal.queue.base import Queue, WatchSet
from shoal.queue.scheduling import Capacity
from tests import faketime, redisd
from tests.conftest import REDIS_BACKENDS, redis_queue_url, shoal_processes, wait_for
from tests.procs import Procs, executions, marker_job

pytestmark = pytest.mark.timeout(120)
key_slot = pytest.importorskip("redis.crc", reason="pip install redis").key_slot

LEASE_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redisd.RedisServer]:
    """A server of this module's own, so its command counts are ours alone."""
    started = redisd.start_redis(tmp_path_factory.mktemp("redis-own"))
    yield started
    started.stop()


@pytest.fixture
def url(server: redisd.RedisServer) -> str:
    return f"{server.url}?queue=q{uuid.uuid4().hex[:10]}"


@pytest.fixture
def views() -> Iterator[list[Queue]]:
    """Opens views of the test's queue (each another client); closes them at the end."""
    opened: list[Queue] = []

    yield opened
    for view in opened:
        view.close()


def view(views: list[Queue], url: str, lease_s: float = LEASE_S) -> Queue:
    opened = open_queue(url, lease_s=lease_s)
    views.append(opened)
    return opened


def cmd(i: int, **options: object) -> Job:
    return Job.command_job(["echo", str(i)], **options)


def done(lease) -> Result:
    return Result(lease.job_id, State.DONE, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=0)


def calls(server: redisd.RedisServer) -> dict[str, int]:
    """Commands the server ran so far, by name (INFO commandstats)."""
    with contextlib.closing(server.client()) as c:
        stats = c.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def ran_since(before: dict[str, int], server: redisd.RedisServer) -> dict[str, int]:
    after = calls(server)
    return {k: n - before.get(k, 0) for k, n in after.items()  # less our own calls
            if n - before.get(k, 0) and k not in ("info", "hello") and not k.startswith("client")}


# -- where the keys live ---------------------------------------------------------------


def exercise(queue: Queue) -> None:
    """Touch every kind of key: jobs, payload-free and with a blob, leases, results,
    failures kept, workers, control, reaps, finals."""
    queue.submit([cmd(i) for i in range(4)])
    queue.put_blobs({"ab" * 32: b"blob"})
    first, second, third = queue.claim("w1", 3)
    queue.beat(WorkerInfo("w1", "h1", 1, 3), [first, second, third])
    queue.finish(first, done(first))
    queue.release(second, failed=Result(second.job_id, State.FAILED, reason="exit 1"))
    queue.cancel([third.job_id])
    queue.send_control("w1", "stop")
    queue.watch([first.job_id], 0)


def test_every_key_of_a_queue_shares_its_hash_tag(server, url, views):
    queue = view(views, url)
    exercise(queue)
    view(views, url, lease_s=0.05).claim("w-dead", 1)
    wait_for(lambda: queue.reap(), message="a reap to be logged")
    name = url.rsplit("queue=", 1)[1]
    with contextlib.closing(server.client()) as c:
        mentioning = {k.decode() for k in c.scan_iter(match=f"*{name}*")}
    slots = {key_slot(k.encode()) for k in mentioning}
    assert mentioning and all(k.startswith(f"shoal:{{{name}}}:") for k in mentioning)
    kinds = {k.split(":", 2)[2].split(":")[0] for k in mentioning}
    assert {"spec", "state", "result", "failed", "finals", "reaped", "workers", "control",
            "blob", "counts"} <= kinds
    assert len(slots) == 1, "a queue must live in one Cluster slot"


def test_queues_spread_over_a_cluster_one_slot_each(tmp_path):
    cluster = redisd.start_cluster(tmp_path)
    try:
        nodes = set()
        for i in range(6):
            queue = open_queue(f"{cluster.url}&queue=spread{i}", lease_s=LEASE_S)
            try:
                exercise(queue)
                assert queue.counts()[State.DONE] == 1
                slot = queue.client.keyslot(queue.keys.state)
                nodes.add(queue.client.get_node_from_key(queue.keys.state).port)
                for key in queue.keys.shared:
                    assert queue.client.keyslot(key) == slot
            finally:
                queue.close()
        assert len(nodes) > 1, "six queues all landed on one node"
    finally:
        cluster.stop()


def test_a_bad_queue_name_is_a_one_line_usage_error(server):
    with pytest.raises(UsageError, match=r"queue='a\{b': use 1-200 letters"):
        open_queue(f"{server.url}?queue=a{{b")


# -- counts -----------------------------------------------------------------------------


def test_counts_are_kept_by_the_scripts_not_counted_by_scanning(server, url, views):
    queue = view(views, url, lease_s=0.05)
    queue.submit([cmd(i) for i in range(3000)])
    leases = queue.claim("w1", 10)
    for lease in leases[:4]:
        queue.finish(lease, done(lease))
    queue.cancel([leases[4].job_id, cmd(2999).id])
    queue.release(leases[5], failed=Result(leases[5].job_id, State.FAILED, reason="x"))
    queue.retry([leases[4].job_id])
    # The 4 left running expire within 50 ms; reaping takes them back.
    wait_for(lambda: queue.reap() and queue.counts()[State.RUNNING] == 0,
             message="the leases to be reaped")
    expected = dict.fromkeys(State, 0)
    for status in queue.jobs():
        expected[status.state] += 1
    before = calls(server)
    counts = queue.counts()
    assert counts == expected
    assert counts[State.DONE] == 4 and counts[State.CANCELLED] == 1
    assert ran_since(before, server) == {"hgetall": 1}, "counts() read one small hash"


# -- scheduling: costs that do not grow with the jobs a step does not touch --------------


def test_a_claim_reads_lane_heads_not_the_jobs_it_passes_over(server, url, views):
    """5,000 GPU jobs of a higher priority wait ahead of one plain job: a claim on a box
    without a GPU hands out the plain one after a few reads, not one per job passed over."""
    queue = view(views, url)
    queue.submit([cmd(i, priority=5, needs={"gpus": 1}) for i in range(5000)] + [cmd(-1)])
    before = calls(server)
    (lease,) = queue.claim("w1", 1, fit=Capacity({"cpus": 4}))
    ran = ran_since(before, server)
    assert lease.job_id == cmd(-1).id
    assert ran.get("zrangebylex", 0) <= 3 and sum(ran.values()) < 40, ran


def test_a_finish_releases_its_dependants_without_reading_other_waiting_jobs(
        server, url, views):
    """3,000 jobs wait for another job; finishing `first` releases its one dependant with
    a handful of commands."""
    queue = view(views, url)
    first, other = cmd(0), cmd(1)
    follows = cmd(2, after=[first.id])
    queue.submit([first, other, follows, *(cmd(i, after=[other.id]) for i in range(3, 3003))])
    leases = {lease.job_id: lease for lease in queue.claim("w1", 2)}
    before = calls(server)
    queue.finish(leases[first.id], done(leases[first.id]))
    ran = ran_since(before, server)
    assert queue.get(follows.id).state is State.PENDING
    assert queue.counts()[State.WAITING] == 3000
    assert sum(ran.values()) < 60, ran


def test_a_job_submitted_batches_before_its_dependency_waits_for_it(server, url, views):
    """Submit sends 2,000 jobs a script call: a dependant in the first batch whose
    dependency comes in a later one still waits for it, and goes once it is done."""
    queue = view(views, url)
    first = cmd(0, priority=1)
    follows = cmd(1, after=[first.id])
    queue.submit([follows, *(cmd(i) for i in range(2, 2600)), first])
    assert queue.get(follows.id).state is State.WAITING
    (lease,) = queue.claim("w1", 1)
    assert lease.job_id == first.id
    queue.finish(lease, done(lease))
    assert queue.get(follows.id).state is State.PENDING


# -- blocking claims --------------------------------------------------------------------


def blocked(server) -> None:
    """Wait until a client of the server is blocked (in BLPOP or XREAD BLOCK)."""
    with contextlib.closing(server.client()) as c:
        wait_for(lambda: c.info("clients")["blocked_clients"] >= 1, 30,
                 message="a client to block on the server")


def test_a_blocked_claim_wakes_within_milliseconds_of_a_submit(server, url, views):
    claimer, submitter = view(views, url), view(views, url)
    got: list[tuple[float, list]] = []
    thread = threading.Thread(target=lambda: got.append(
        (time.monotonic(), claimer.claim("w1", 1, wait_s=60))))
    thread.start()
    blocked(server)  # the point is how little it does meanwhile
    before = calls(server)
    time.sleep(1.0)
    idle = ran_since(before, server)
    submitted_at = time.monotonic()
    submitter.submit([cmd(1)])
    thread.join(60)
    woke_at, leases = got[0]
    assert [lease.job_id for lease in leases] == [cmd(1).id]
    assert woke_at - submitted_at < 0.5, f"woke {woke_at - submitted_at:.3f}s after the submit"
    assert idle == {}, f"a blocked claimer polled: {idle}"


def test_a_claimer_nothing_fits_leaves_the_wake_up_to_one_it_fits(server, url, views):
    """Two claimers block; a GPU job comes. Whichever wakes first, the one with a GPU gets
    it at once: a claimer that nothing fits passes the wake-up on (and then sleeps
    between looks instead of blocking on it)."""
    plain, gpu_box, submitter = view(views, url), view(views, url), view(views, url)
    got: dict[str, tuple[float, list]] = {}

    def claim(name: str, queue: Queue, fit: Capacity, wait_s: float) -> None:
        got[name] = (time.monotonic(), queue.claim(name, 1, wait_s=wait_s, fit=fit))

    threads = [threading.Thread(target=claim, args=("plain", plain, Capacity({"cpus": 4}), 3)),
               threading.Thread(target=claim, args=("gpu", gpu_box,
                                                    Capacity({"cpus": 4, "gpus": 1}), 60))]
    for thread in threads:
        thread.start()
    with contextlib.closing(server.client()) as c:
        wait_for(lambda: c.info("clients")["blocked_clients"] >= 2, 30,
                 message="both claimers to block")
    submitted_at = time.monotonic()
    job = cmd(1, needs={"gpus": 1})
    submitter.submit([job])
    for thread in threads:
        thread.join(90)
    woke_at, leases = got["gpu"]
    assert [lease.job_id for lease in leases] == [job.id]
    late = woke_at - submitted_at
    assert late < 2.5, f"the GPU claimer got it {late:.1f}s after the submit"
    assert got["plain"][1] == []


def test_a_claim_with_nothing_to_claim_ends_by_its_wait(url, views):
    claimer = view(views, url)
    started = time.monotonic()
    assert claimer.claim("w1", 1, wait_s=0.3) == []
    assert 0.25 <= time.monotonic() - started < 5


# -- leases -----------------------------------------------------------------------------


def test_a_lease_deadline_is_set_by_the_servers_clock(server, url, views, monkeypatch):
    queue = view(views, url, lease_s=2.0)
    queue.submit([cmd(1)])
    with contextlib.closing(server.client()) as c:
        seconds, micros = c.time()
        (lease,) = queue.claim("w1", 1)
        deadline_ms = c.zscore(queue.keys.running, lease.job_id)
    server_ms = seconds * 1000 + micros / 1000
    assert server_ms + 2000 - 1 <= deadline_ms < server_ms + 2000 + 5000
    # A client whose own clocks run an hour ahead takes nothing back: only TIME counts.
    ahead = 3600.0
    real_time, real_monotonic = time.time, time.monotonic
    monkeypatch.setattr(time, "time", lambda: real_time() + ahead)
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + ahead)
    assert queue.reap() == []
    assert queue.get(lease.job_id).state is State.RUNNING
    monkeypatch.undo()
    wait_for(lambda: queue.reap(), message="the lease to expire on the server's clock")
    assert queue.get(lease.job_id).attempt == 2


def test_a_heartbeat_renews_its_own_leases_and_reaps_others_in_one_script(server, url, views):
    """A worker stalled past its lease, which nobody reaped meanwhile, keeps it at its next
    heartbeat, and that heartbeat takes back another worker's expired lease: the beat and
    the reap are one script (the beat first), so no stall between two calls on a loaded
    host can make a worker reap its own live leases."""
    queue = view(views, url, lease_s=0.2)
    me = WorkerInfo("w1", "h1", 1, 1)
    queue.heartbeat(me, [])  # the script is loaded: the one counted below runs at once
    queue.submit([cmd(1), cmd(2)])
    (mine,) = queue.claim("w1", 1)
    (theirs,) = queue.claim("w2", 1)
    with contextlib.closing(server.client()) as c:
        latest = max(c.zscore(queue.keys.running, x.job_id) for x in (mine, theirs))

        def server_ms() -> float:
            seconds, micros = c.time()
            return seconds * 1000 + micros / 1000

        wait_for(lambda: server_ms() > latest + 1, message="both leases to expire")
    before = calls(server)
    beat = queue.heartbeat(me, [mine])
    assert ran_since(before, server).get("evalsha") == 1
    assert beat.lost == ()
    assert [(r.job_id, r.worker) for r in beat.reaped] == [(theirs.job_id, "w2")]
    assert (queue.get(mine.job_id).state, queue.get(mine.job_id).attempt) == (State.RUNNING, 1)
    assert (queue.get(theirs.job_id).state, queue.get(theirs.job_id).attempt) == (
        State.PENDING, 2)


SKEW_LEASE_S = 2.0  # 600 s of skew shows on any lease; load alone must not end one


@pytest.mark.parametrize("skew", ["-600s", "+600s"])
def test_a_worker_whose_wall_clock_is_10_minutes_off_keeps_its_leases_and_takes_none(
        url, views, tmp_path, procs: Procs, skew):
    """Leases are stamped and judged by the server's TIME alone. A worker whose wall clock
    is 600 s behind (deadlines of its own clock would be long past) or ahead (every other
    lease would look expired to its reaps), its monotonic clock true (libfaketime), works
    beside a true one: each job stays with the worker that claimed it and runs once."""
    env = faketime.fixed_offset(skew)
    queue = view(views, url, lease_s=SKEW_LEASE_S)
    out, gate = tmp_path / "out", tmp_path / "gate"
    out.mkdir()
    body = f'while [ ! -e "{gate}" ]; do sleep 0.1; done; sleep {2 * SKEW_LEASE_S:g};'
    jobs = [Job.command_job(marker_job(out, body), params={"i": i}) for i in range(4)]
    queue.submit(jobs)
    lease = ("--lease", str(SKEW_LEASE_S))
    procs.shoal("work", url, "--slots", "2", *lease, env=env)
    wait_for(lambda: queue.counts()[State.RUNNING] == 2, 60,
             message="the skewed worker to hold 2 jobs")
    procs.shoal("work", url, "--slots", "2", *lease)
    wait_for(lambda: queue.counts()[State.RUNNING] == 4, 60,
             message="the true worker to hold the other 2")
    holders = {job.id: queue.get(job.id).worker for job in jobs}
    gate.touch()  # both hold leases for a while yet: renewals and reaps on both clocks
    wait_for(lambda: queue.counts()[State.DONE] == 4, 120, message="every job to end")
    assert len(set(holders.values())) == 2
    assert {r.job_id: (r.worker, r.attempt) for r in queue.results()} == {
        job_id: (worker, 1) for job_id, worker in holders.items()}
    assert sorted(attempt for _, attempt, _ in executions(out)) == [1, 1, 1, 1]


def test_a_late_result_is_refused_and_the_new_one_kept(url, views):
    stale_view, rescuer = view(views, url, lease_s=0.3), view(views, url, lease_s=0.3)
    stale_view.submit([cmd(1)])
    (stale,) = stale_view.claim("w-slow", 1)
    wait_for(lambda: rescuer.reap(), message="the silent lease to be reaped")
    (fresh,) = rescuer.claim("w-fast", 1)
    assert fresh.attempt == 2 and fresh.token != stale.token
    assert stale_view.beat(WorkerInfo("w-slow", "h", 1, 1), [stale]).lost == (stale,)
    with pytest.raises(LeaseLost):
        stale_view.finish(stale, done(stale))
    with pytest.raises(LeaseLost):
        stale_view.release(stale)
    rescuer.finish(fresh, done(fresh))
    result = stale_view.get(cmd(1).id).result
    assert (result.state, result.worker, result.attempt) == (State.DONE, "w-fast", 2)
    assert stale_view.counts()[State.DONE] == 1


def test_a_worker_process_killed_past_its_lease_is_taken_over(url, views, tmp_path,
                                                              procs: Procs):
    queue = view(views, url)
    out = tmp_path / "out"
    out.mkdir()
    job = Job.command_job(marker_job(out, 'if [ "$SHOAL_ATTEMPT" = 1 ]; then sleep 60; fi;'))
    queue.submit([job])
    victim = procs.shoal("work", url, "--slots", "1", "--lease", str(LEASE_S))
    wait_for(lambda: queue.counts()[State.RUNNING] == 1, 30, message="the job to start")
    (victim_id,) = [w.id for w in queue.workers()]
    wait_for(lambda: shoal_processes(worker=victim_id), 30, message="the job's process")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    rescuer = procs.shoal("work", url, "--slots", "1", "--drain", "--lease", str(LEASE_S))
    assert rescuer.wait(timeout=60) == 0, procs.output(rescuer)
    result = queue.get(job.id).result
    assert (result.state, result.attempt) == (State.DONE, 2)
    assert result.worker != victim_id
    assert sorted(attempt for _, attempt, _ in executions(out)) == [2]
    wait_for(lambda: shoal_processes(worker=victim_id) == [], 20,
             message="the dead worker's orphan to be killed")


# -- results pushed -------------------------------------------------------------------------


def test_a_waiter_cut_off_from_the_server_still_gets_the_result(server, url, views):
    writer, waiter = view(views, url), view(views, url)
    writer.submit([cmd(1)])
    (lease,) = writer.claim("w1", 1)
    got: list[list[Result]] = []
    thread = threading.Thread(target=lambda: got.append(waiter.watch([cmd(1).id], 60)))
    thread.start()
    blocked(server)  # in XREAD
    with contextlib.closing(server.client()) as c:
        c.client_kill_filter(_type="normal", skipme=True)  # every client's connection cut
    writer.finish(lease, done(lease))
    thread.join(60)
    assert [(r.job_id, r.state) for r in got[0]] == [(cmd(1).id, State.DONE)]


def queue_bytes(server: redisd.RedisServer, queue: Queue) -> int:
    """What the queue's own keys take in Redis: MEMORY USAGE of each, every element
    counted (SAMPLES 0). Not a used_memory delta, which also moves with the server's
    client buffers and background state (once 508 B per job where the keys held 390)."""
    prefix = queue.keys.prefix
    with contextlib.closing(server.client()) as c:
        return sum(c.memory_usage(key, samples=0) or 0
                   for key in c.scan_iter(match=f"{prefix}*", count=1000))


def test_enqueue_stays_small_per_pending_job(server, url, views):
    """Pending jobs cost Redis a few hundred bytes each (issue 13 asks under 500)."""
    queue = view(views, url)
    n = 20_000
    before = queue_bytes(server, queue)
    queue.submit([Job.command_job(["python3", "train.py", "--seed", str(i)]) for i in range(n)])
    assert queue.counts()[State.PENDING] == n
    per_job = (queue_bytes(server, queue) - before) / n
    assert per_job < 500, f"{per_job:.0f} bytes per pending job"


def test_the_url_must_reach_a_server(tmp_path: Path):
    port = redisd.free_port()
    with pytest.raises(QueueUnavailable, match=f"127.0.0.1:{port}.*no Redis server") as info:
        open_queue(f"redis://127.0.0.1:{port}/0?queue=x")
    assert "\n" not in str(info.value)


# -- durable=strict ---------------------------------------------------------------------------


def test_strict_durability_confirms_a_submit_or_says_why_not(server, tmp_path, views):
    """On an AOF-always server a strict submit returns as usual; on one that fsyncs every
    second with no replica, it is refused before anything is written, saying why."""
    strict = view(views, f"{server.url}?queue=s{uuid.uuid4().hex[:8]}&durable=strict")
    assert strict.submit([cmd(1)]) == [cmd(1).id]
    lax = redisd.start_redis(tmp_path, appendfsync="everysec")
    try:
        with pytest.warns(DurabilityWarning, match="appendfsync is everysec"):
            queue = view(views, f"{lax.url}?queue=s1&durable=strict")
        with pytest.raises(NotDurable, match="durable=strict cannot be confirmed") as info:
            queue.submit([cmd(2)])
        assert "\n" not in str(info.value)
        assert queue.get(cmd(2).id) is None and queue.counts()[State.PENDING] == 0
    finally:
        for opened in views:
            opened.close()
        views.clear()
        lax.stop()


# -- waiting for results again and again ---------------------------------------------------


def test_a_watch_set_asked_again_reads_the_stream_not_every_result(server, url, views):
    """The Executor's collector watches thousands of futures over and over: after the
    first look, a look reads the finals stream and the results of the ids it names."""
    writer, waiter = view(views, url), view(views, url)
    jobs = [cmd(i) for i in range(2000)]
    writer.submit(jobs)
    watched = WatchSet(job.id for job in jobs)
    before = calls(server)
    assert waiter.watch(watched, 0) == []
    first = ran_since(before, server)
    (lease,) = writer.claim("w1", 1)
    writer.finish(lease, done(lease))
    before = calls(server)
    assert [r.job_id for r in waiter.watch(watched, 5)] == [lease.job_id]
    again = ran_since(before, server)
    assert first.get("hmget", 0) >= 2000 // 500  # every id's result, in batches
    assert again.get("hmget", 0) <= 1, f"the second look read every result again: {again}"


def test_a_watcher_whose_place_in_the_stream_was_trimmed_away_reads_the_results(server, url,
                                                                               views):
    """Entries after a watcher's mark trimmed (the stream keeps its newest ~100,000): the
    next look reads every watched id's result instead, so no result is missed."""
    writer, waiter = view(views, url), view(views, url)
    writer.submit([cmd(1), cmd(2)])
    watched = WatchSet([cmd(1).id, cmd(2).id])
    assert waiter.watch(watched, 0) == []
    first, second = writer.claim("w1", 2)
    writer.finish(first, done(first))
    with contextlib.closing(server.client()) as c:
        assert c.xtrim(writer.keys.finals, maxlen=0, approximate=False) == 1
    assert [r.job_id for r in waiter.watch(watched, 5)] == [first.job_id]
    watched.discard(first.job_id)
    writer.finish(second, done(second))
    assert [r.job_id for r in waiter.watch(watched, 5)] == [second.job_id]


# -- logs, progress and the config kept in Redis -------------------------------------------


def finish_with_log(queue: Queue, lease, text: bytes) -> None:
    """Finish `lease` as a worker does: the attempt wrote `text` to its local log."""
    path = queue.files.attempt_log(lease)
    path.write_bytes(text)
    queue.finish(lease, replace(done(lease), log=str(path)))
    assert not path.exists()  # shipped: the worker's copy is gone


def test_a_finished_jobs_log_is_read_by_shoal_logs_in_another_process(url, views):
    worker = view(views, url)
    worker.submit([cmd(1)])
    (lease,) = worker.claim("w1", 1)
    finish_with_log(worker, lease, b"hello from another host\n")
    shown = subprocess.run([sys.executable, "-m", "shoal", "logs", url, lease.job_id],
                           capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr.decode()
    assert shown.stdout == b"hello from another host\n"


def test_a_1_kib_log_costs_redis_about_1_5_kib_and_running_reports_go_with_the_lease(
        server, url, views):
    """Logs are the user's data: one costs about its size. A running job's tail and
    progress cost nothing once its lease ended."""
    worker = view(views, url)
    assert worker.settings.log_cap_bytes == defaults.MAX_SHIPPED_LOG_BYTES
    n = 2000
    worker.submit([cmd(i) for i in range(n)])
    leases = worker.claim("w1", n)
    for lease in leases[:10]:  # these report progress and a log so far first
        worker.files.progress_file(lease).write_bytes(b"1 2\n")
        worker.files.attempt_log(lease).write_bytes(b"so far\n")
    worker.beat(WorkerInfo("w1", "h1", 1, n), leases[:10])
    assert set(view(views, url).files.progress()) == {x.job_id for x in leases[:10]}
    before = queue_bytes(server, worker)
    for lease in leases:
        finish_with_log(worker, lease, b"x" * 1023 + b"\n")
    per_job = (queue_bytes(server, worker) - before) / n
    with contextlib.closing(server.client()) as c:
        assert c.hlen(worker.keys.tails) == 0 and c.hlen(worker.keys.progress) == 0
    assert 1024 < per_job < 1700, f"{per_job:.0f} bytes per finished job with a 1 KiB log"
    assert view(views, url).files.progress() == {}


@pytest.mark.parametrize("backend", sorted(REDIS_BACKENDS))
def test_a_queue_exists_once_redis_holds_any_of_its_keys(backend: str) -> None:
    """`open_queue(url, create=False)` (the reading commands): no key of the queue on the
    server is "no such queue", on a server, a Cluster and a Sentinel group alike; a
    registered worker alone, or a submitted job, makes it exist; looking writes nothing."""
    url = redis_queue_url(backend)
    for _ in range(2):
        with pytest.raises(NoSuchQueue, match="no such queue"):
            open_queue(url, create=False)
    with open_queue(url) as queue:
        queue.beat(WorkerInfo("w1", "host", 1, 1), [])
        with open_queue(url, create=False) as reader:
            assert [info.id for info in reader.workers()] == ["w1"]
    other = redis_queue_url(backend)
    with open_queue(other) as queue:
        queue.submit([Job.command_job("true")])
    with open_queue(other, create=False) as reader:
        assert reader.counts()[State.PENDING] == 1


def test_jobs_pending_in_a_queue_made_before_lanes_are_still_handed_out(server, url, views):
    """An older shoal kept pending jobs in one `pending` list: a claim adopts them (in
    their order), so upgrading shoal strands no job."""
    queue = view(views, url)
    queue.submit([cmd(i) for i in range(3)])
    client, prefix = queue.client, queue.keys.prefix
    ids = client.lrange(prefix + "line:p0", 0, -1)
    assert len(ids) == 3
    client.delete(prefix + "line:p0")  # what the old layout had instead of the lane
    client.zrem(prefix + "lanes", "p0")
    client.rpush(prefix + "pending", *ids)
    claimed = [lease.job_id for lease in view(views, url).claim("w1", 5)]
    assert claimed == [cmd(i).id for i in range(3)]
    assert not client.exists(prefix + "pending")
