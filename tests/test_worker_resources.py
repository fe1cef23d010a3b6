"""A worker's resources (issue 15): jobs run while their needs fit in its cpus, GPUs,
memory and named resources; each gets its own GPU ids and cores; a job over its mem is
killed with that reason; labels route jobs; bad `shoal work` options are one line.

Real processes throughout: each job is a small Python program that records what it saw
(its environment, its affinity) and when it ran, in a file of its own."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal.cli import main
from shoal.job import Job, State
from shoal.queue import open_queue
from shoal.queue.base import Queue
from shoal.worker import Worker
from shoal.worker.memwatch import rss_of_sessions
from shoal.worker.resources import (
    ResourceError,
    Resources,
    format_size,
    parse_gpus,
    parse_resources,
    parse_size,
)
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(180)

# What a job records: `record.py FOLDER NAME HOLD_S PEERS` waits (60 s at most) until PEERS
# jobs have started, so "they ran at the same time" is seen, not hoped for.
RECORD = """
import json, os, sys, time
folder, name, hold_s, peers = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
start = time.time()
open(os.path.join(folder, name + ".started"), "w").close()
def started():
    return len([f for f in os.listdir(folder) if f.endswith(".started")])
deadline = time.monotonic() + 60
while started() < peers and time.monotonic() < deadline:
    time.sleep(0.01)
met = started() >= peers
time.sleep(hold_s)
keys = ("CUDA_VISIBLE_DEVICES", "SHOAL_GPUS", "SHOAL_CPUS", "OMP_NUM_THREADS", "SHOAL_CPU_LIST")
with open(os.path.join(folder, name + ".json"), "w") as out:
    json.dump({"start": start, "end": time.time(), "met": met,
               "env": {key: os.environ.get(key) for key in keys},
               "cores": sorted(os.sched_getaffinity(0))}, out)
"""


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    (tmp_path / "record.py").write_text(RECORD)
    return folder


def recording(out: Path, name: str, *, hold_s: float = 0.0, peers: int = 0,
              **options) -> Job:
    """A job that records what it saw in OUT/NAME.json."""
    script = str(out.parent / "record.py")
    return Job.command_job([sys.executable, script, str(out), name, str(hold_s), str(peers)],
                           name=name, params={"name": name}, **options)


def seen(out: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in out.glob("*.json")}


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def most_at_once(records: list[dict]) -> int:
    edges = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def run_drained(queue: Queue, resources: Resources, **options) -> Worker:
    """Run a worker with these resources until the queue is drained."""
    worker = Worker(queue, drain=True, resources=resources, **options)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    thread.join(timeout=150)
    if thread.is_alive():
        worker.stop(now=True)
        thread.join(timeout=30)
        pytest.fail("the worker did not drain the queue in 150 s")
    return worker


@pytest.fixture
def queue() -> Iterator[Queue]:
    q = open_queue("memory://")
    yield q
    q.close()


# -- GPUs ------------------------------------------------------------------------------

def test_two_gpu_jobs_run_at_once_each_on_its_own_device(queue, out):
    queue.submit([recording(out, f"train{i}", peers=2, needs={"gpus": 1}) for i in range(2)])
    run_drained(queue, Resources.detect(cpus=4, gpus="0,1"))
    runs = seen(out)
    assert all(r["met"] for r in runs.values()), "the two jobs did not run at the same time"
    devices = sorted(r["env"]["CUDA_VISIBLE_DEVICES"] for r in runs.values())
    assert devices == ["0", "1"]
    assert all(r["env"]["SHOAL_GPUS"] == r["env"]["CUDA_VISIBLE_DEVICES"] for r in runs.values())


def test_three_gpu_jobs_on_two_gpus_never_share_one(queue, out):
    queue.submit([recording(out, f"train{i}", hold_s=0.5, needs={"gpus": 1})
                  for i in range(3)])
    run_drained(queue, Resources.detect(cpus=4, gpus="0,1"))
    runs = list(seen(out).values())
    assert len(runs) == 3
    assert all(r["env"]["CUDA_VISIBLE_DEVICES"] in ("0", "1") for r in runs)
    for a, b in combinations(runs, 2):
        if a["env"]["CUDA_VISIBLE_DEVICES"] == b["env"]["CUDA_VISIBLE_DEVICES"]:
            assert not overlap(a, b), (a, b)
    assert most_at_once(runs) <= 2


def test_a_job_asking_for_two_gpus_gets_both_and_runs_alone(queue, out):
    queue.submit([recording(out, "big", hold_s=0.3, needs={"gpus": 2}),
                  recording(out, "small", hold_s=0.3, needs={"gpus": 1})])
    run_drained(queue, Resources.detect(cpus=4, gpus="3,5"))
    runs = seen(out)
    assert runs["big"]["env"]["CUDA_VISIBLE_DEVICES"] == "3,5"
    assert runs["small"]["env"]["CUDA_VISIBLE_DEVICES"] in ("3", "5")
    assert not overlap(runs["big"], runs["small"])


def test_a_job_without_gpus_keeps_the_environment_it_had(queue, out):
    queue.submit([recording(out, "plain")])
    run_drained(queue, Resources.detect(cpus=2, gpus="0,1"))
    env = seen(out)["plain"]["env"]
    assert env["SHOAL_GPUS"] is None
    assert env["CUDA_VISIBLE_DEVICES"] == os.environ.get("CUDA_VISIBLE_DEVICES")


# -- cpus ------------------------------------------------------------------------------

def test_cpus_2_runs_at_most_two_one_cpu_jobs_at_once(queue, out):
    queue.submit([recording(out, f"j{i}", hold_s=0.3, peers=2 if i < 2 else 0)
                  for i in range(5)])
    run_drained(queue, Resources.detect(cpus=2))
    runs = list(seen(out).values())
    assert len(runs) == 5
    assert most_at_once(runs) == 2
    assert all(r["env"]["SHOAL_CPUS"] == "1" for r in runs)


def test_jobs_run_while_their_cpus_fit_not_a_fixed_number_of_slots(queue, out):
    """4 cpus: two 2-cpu jobs at once (never a third), then four 1-cpu jobs at once."""
    queue.submit([recording(out, f"wide{i}", hold_s=0.3, needs={"cpus": 2}) for i in range(3)])
    run_drained(queue, Resources.detect(cpus=4))
    wide = list(seen(out).values())
    assert most_at_once(wide) == 2
    assert all(r["env"]["SHOAL_CPUS"] == "2" and r["env"]["OMP_NUM_THREADS"] == "2"
               for r in wide)
    for path in out.iterdir():
        path.unlink()
    queue.submit([recording(out, f"narrow{i}", peers=4) for i in range(4)])
    run_drained(queue, Resources.detect(cpus=4))
    assert all(r["met"] for r in seen(out).values()), "four 1-cpu jobs did not run at once"


def test_a_small_job_goes_while_a_bigger_one_waits_for_room(queue, out):
    """2 cpus, one busy: the 2-cpu job at the head waits, the 1-cpu job behind it runs."""
    queue.submit([
        recording(out, "busy", peers=2), recording(out, "big", needs={"cpus": 2}),
        recording(out, "small", peers=2)])
    run_drained(queue, Resources.detect(cpus=2))
    runs = seen(out)
    assert runs["busy"]["met"] and runs["small"]["met"]  # ran together, before "big"
    assert runs["big"]["start"] >= max(runs["busy"]["end"], runs["small"]["end"])
    assert runs["big"]["env"]["SHOAL_CPUS"] == "2"


def test_pin_keeps_each_job_on_its_own_cores(queue, out):
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip(f"pinning two jobs apart needs 2 cores; this process may use {cores}")
    try:
        os.sched_setaffinity(0, cores)
    except OSError as exc:
        pytest.skip(f"the kernel refuses sched_setaffinity here: {exc}")
    queue.submit([recording(out, f"p{i}", peers=2) for i in range(2)])
    run_drained(queue, Resources.detect(cpus=2, pin=True))
    runs = list(seen(out).values())
    assert all(r["met"] for r in runs)
    assert sorted(r["env"]["SHOAL_CPU_LIST"] for r in runs) == sorted(map(str, cores[:2]))
    assert sorted(r["cores"] for r in runs) == sorted([[core] for core in cores[:2]])


# -- memory ----------------------------------------------------------------------------

HOG = ("import time\n"
       "block = b'x' * (200 << 20)  # written, so resident\n"
       "time.sleep(120)\n")


def test_a_job_over_its_mem_is_killed_with_the_reason(queue, out):
    hog, = queue.submit([Job.command_job([sys.executable, "-c", HOG], name="hog",
                                         needs={"mem": 50 << 20})])
    queue.submit([recording(out, "modest", needs={"mem": 500 << 20})])
    run_drained(queue, Resources.detect(cpus=2, mem="4G"), kill_grace_s=1)
    result = queue.get(hog).result
    assert result is not None and result.state is State.FAILED
    assert result.reason.startswith("used "), result.reason
    assert result.reason.endswith(", more than its mem=50 MiB"), result.reason
    amount, unit = result.reason.split()[1:3]
    assert unit == "MiB," and 50 < float(amount) < 1024, result.reason
    assert result.ended - result.started < 60  # killed, not run to its end
    assert "modest" in seen(out)  # a job within its mem runs to its end


def test_rss_of_a_session_counts_its_whole_tree():
    used = rss_of_sessions([os.getsid(0)])
    assert used[os.getsid(0)] > 10 << 20  # this Python interpreter, at least


# -- labels and named resources --------------------------------------------------------

def test_labels_route_jobs_to_the_workers_that_have_them(queue, out):
    big, plain = queue.submit([recording(out, "big", labels=("bigmem",)),
                               recording(out, "plain")])
    small_box = Worker(queue, resources=Resources.detect(cpus=2))
    thread = threading.Thread(target=small_box.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: queue.get(plain).state is State.DONE, timeout_s=60,
                 message="the plain job to run")
        assert queue.get(big).state is State.PENDING and "big" not in seen(out)
    finally:
        small_box.stop()
        thread.join(timeout=30)
    run_drained(queue, Resources.detect(cpus=2, labels=["bigmem"]))
    result = queue.get(big).result
    assert result is not None and result.state is State.DONE
    assert result.worker != small_box.id
    assert set(seen(out)) == {"big", "plain"}


def test_a_named_resource_bounds_how_many_such_jobs_run_at_once(queue, out):
    queue.submit([recording(out, f"lic{i}", hold_s=0.3, needs={"license": 1})
                  for i in range(4)])
    run_drained(queue, Resources.detect(cpus=4, resources=["license=2"]))
    runs = list(seen(out).values())
    assert len(runs) == 4
    assert most_at_once(runs) <= 2


def test_the_worker_tells_the_queue_what_it_has(queue):
    worker = Worker(queue, resources=Resources.detect(
        cpus=3, gpus="0,1", mem="2G", resources=["license=2"], labels=["bigmem", "ssd"]))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        info, = wait_for(queue.workers, message="the worker to register")
        assert dict(info.resources) == {"cpus": 3, "gpus": 2, "mem": 2 << 30, "license": 2}
        assert info.labels == ("bigmem", "ssd")
        assert info.slots == 3
    finally:
        worker.stop()
        thread.join(timeout=30)


# -- options ---------------------------------------------------------------------------

def test_sizes_gpus_and_resources_as_typed():
    assert parse_size("64G", "--mem") == 64 << 30
    assert parse_size("1.5k", "--mem") == 1536
    assert parse_size("512MiB", "--mem") == 512 << 20
    assert parse_size("100", "--mem") == 100
    assert parse_gpus("0,1") == ("0", "1")
    assert parse_gpus("3,") == ("3",)
    assert len(parse_gpus("2")) == 2
    assert parse_gpus("0") == ()
    assert parse_resources(["license=2", "scratch=0.5"]) == {"license": 2, "scratch": 0.5}
    assert format_size(1.2 * (1 << 30)) == "1.2 GiB"
    assert format_size(50 << 20) == "50 MiB"
    with pytest.raises(ResourceError, match="--mem"):
        parse_size("lots", "--mem")


def test_slots_alone_are_the_cpus():
    assert Resources.detect(slots=3).cpus == 3
    assert Resources.detect(slots=3, cpus=8).cpus == 8


@pytest.mark.parametrize(("args", "words"), [
    (["--mem", "64X"], ["--mem", "64X", "not an amount of memory"]),
    (["--gpus", "many"], ["--gpus", "many"]),
    (["--gpus", "0,0"], ["--gpus", "twice"]),
    (["--resource", "license"], ["--resource", "NAME=AMOUNT"]),
    (["--resource", "license=-1"], ["--resource", ">= 0"]),
    (["--resource", "gpus=2"], ["--resource", "--gpus"]),
    (["--label", "big mem"], ["--label", "big mem"]),
    (["--cpus", "0"], ["--cpus", "0"]),
])
def test_bad_resource_options_are_one_line_naming_the_option(tmp_path, args, words):
    result = CliRunner().invoke(main, ["work", str(tmp_path), "--drain", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shoal: error: "), result.output
    for word in words:
        assert word in lines[0]


def test_shoal_work_hands_out_the_gpus_and_cpus_it_was_given(tmp_path, out, procs):
    """The whole path from the command line: `shoal work Q --cpus 2 --gpus 4,7`."""
    from shoal.queue.folder import FolderQueue

    queue = FolderQueue(tmp_path / "queue")
    queue.submit([recording(out, f"train{i}", hold_s=0.3, needs={"gpus": 1})
                  for i in range(3)])
    worker = procs.shoal("work", str(queue.root), "--cpus", "2", "--gpus", "4,7", "--drain")
    assert worker.wait(timeout=150) == 0, procs.output(worker)
    runs = list(seen(out).values())
    assert len(runs) == 3
    assert {r["env"]["CUDA_VISIBLE_DEVICES"] for r in runs} <= {"4", "7"}
    for a, b in combinations(runs, 2):
        if a["env"]["CUDA_VISIBLE_DEVICES"] == b["env"]["CUDA_VISIBLE_DEVICES"]:
            assert not overlap(a, b), (a, b)
    assert most_at_once(runs) <= 2


def test_a_python_call_sees_its_gpus_and_cpus_too(queue):
    from shoal.calls import call_job

    gpus, cpus = queue.submit([call_job(os.getenv, ("CUDA_VISIBLE_DEVICES",), needs={"gpus": 1}),
                               call_job(os.getenv, ("SHOAL_CPUS",), needs={"cpus": 2})])
    run_drained(queue, Resources.detect(cpus=2, gpus="5,"))
    assert "'5'" in queue.get(gpus).result.value
    assert "'2'" in queue.get(cpus).result.value
