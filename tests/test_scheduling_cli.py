"""Issue 15 from the command line: what `shoal submit`, job files, parameter tables and
drop-ins put on the jobs (after, priority, needs, requires), what `retry`, `status` and
`results` show of it, and bad values refused with one line naming the option or file.

Most tests read back the Job fields the queue holds (`get`); the ones that need the claim
rules (WAITING, claim order) run on an in-process memory queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal.cli import main
from shoal.dropins import DEFER_S
from shoal.job import Job, Result, State, WorkerInfo, content_id
from shoal.needs import needs_text, parse_mem
from shoal.parallel_args import parse_run_words
from shoal.queue import open_queue

pytestmark = pytest.mark.timeout(180)
T = 60.0
G = 1024**3


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def ok(*args: str) -> str:
    done = cli(*args)
    assert done.exit_code == 0, done.output
    return done.output


def refused(*args: str) -> str:
    """The one line a bad command prints (exit 2, no traceback)."""
    done = cli(*args)
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1, done.output
    return lines[0]


@pytest.fixture(params=["folder", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "folder":
        return str(tmp_path / "q")
    return f"sqlite://{tmp_path / 'q.sqlite'}"


def jobs_of(url: str) -> dict[str, Job]:
    """The jobs the queue holds, by name."""
    with open_queue(url) as queue:
        return {status.job.name: status.job for status in queue.listing()}


def ruled_memory_url() -> str:
    """A fresh in-process memory queue, for tests that need the claim rules."""
    return f"memory://sched-{uuid.uuid4().hex[:8]}"


# -- shoal submit's options --------------------------------------------------------------

def test_submit_puts_priority_needs_labels_and_after_on_its_jobs(url):
    ok("submit", url, "echo", ":::", "map-a", "map-b")
    ok("submit", "--after", "#1", "--after", "2: echo map-b", "--priority", "5", "--cpus", "2",
       "--gpus", "1", "--mem", "16G", "--resource", "license=1", "--requires", "bigmem",
       url, "echo", ":::", "reduce")
    jobs = jobs_of(url)
    reduce = jobs["1: echo reduce"]
    assert reduce.after == (jobs["1: echo map-a"].id, jobs["2: echo map-b"].id)
    assert reduce.priority == 5
    assert reduce.needs == {"cpus": 2, "gpus": 1, "mem": 16 * G, "license": 1}
    assert reduce.labels == ("bigmem",)
    assert jobs["1: echo map-a"].priority == 0 and not jobs["1: echo map-a"].needs


def test_after_by_id_and_id_prefix(url):
    ok("submit", url, "echo", ":::", "first")
    first = jobs_of(url)["1: echo first"]
    ok("submit", "--after", first.id[:8], url, "echo", ":::", "second")
    ok("submit", "--after", first.id, url, "echo", ":::", "third")
    jobs = jobs_of(url)
    assert jobs["1: echo second"].after == jobs["1: echo third"].after == (first.id,)


@pytest.mark.parametrize(("option", "value"), [
    ("--mem", "lots"), ("--mem", "0"), ("--mem", "-1G"), ("--cpus", "1.5"), ("--cpus", "x"),
    ("--gpus", "-1"), ("--priority", "high"), ("--resource", "license"),
    ("--resource", "license=many"), ("--after", "nosuchjob"), ("--after", "#9"),
])
def test_bad_scheduling_values_are_one_line_naming_the_option(url, option, value):
    ok("submit", url, "echo", ":::", "a")
    line = refused("submit", option, value, url, "echo", ":::", "b")
    assert line.startswith(f"shoal: error: {option}: "), line
    assert len(jobs_of(url)) == 1  # nothing of the refused submission stored


def test_options_after_the_queue_are_refused_not_run_as_the_command(url):
    line = refused("submit", url, "--priority", "5", "echo", ":::", "a")
    assert "--priority" in line and "before QUEUE" in line
    assert refused("submit", url, "--after=#1", "echo", ":::", "a")


def test_mem_units_are_1024_based():
    assert parse_mem("--mem", "16G") == 16 * G
    assert parse_mem("--mem", "512m") == 512 * 1024**2
    assert parse_mem("--mem", "1.5T") == 1.5 * 1024**4
    assert parse_mem("--mem", "2048") == 2048
    assert parse_mem("--mem", "4GiB") == 4 * G
    assert needs_text({"cpus": 2, "gpus": 1, "mem": 16 * G, "license": 1}, ["bigmem"]) == \
        "2 cpus, 1 gpu, 16G, license=1, bigmem"


def test_run_priority_goes_on_every_job_of_the_run():
    args = parse_run_words(["--priority", "7", "echo", ":::", "a"])
    assert args.job_options()["priority"] == 7
    assert "priority" not in parse_run_words(["echo", ":::", "a"]).job_options()
    with pytest.raises(Exception, match="--priority"):
        parse_run_words(["--priority", "soon", "echo", ":::", "a"])


# -- job files ---------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def ini(*lines: str) -> str:
    return "\n".join(["[control]", "executable = echo", *lines]) + "\n"


def test_job_files_after_by_name_and_glob_map_to_the_jobs_of_those_files(url, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write(src / "prepare.ini", ini())
    write(src / "a.sim.ini", ini("after = prepare.ini", "priority = 2"))
    write(src / "b.sim.ini", ini("after = prepare.ini", "cpus = 4", "mem = 2G"))
    write(src / "reduce.toml", '[control]\nexecutable = "echo"\nafter = ["*.sim.ini"]\n'
          'requires = "bigmem"\n[resources]\nlicense = 1\n')
    ok("submit", url, *(str(src / n) for n in ("prepare.ini", "a.sim.ini", "b.sim.ini")))
    ok("submit", "--priority", "9", url, str(src / "reduce.toml"))  # across submissions
    jobs = jobs_of(url)
    names = sorted(jobs)
    prepare = next(jobs[n] for n in names if n.endswith("prepare.ini"))
    sims = sorted(jobs[n].id for n in names if ".sim." in n)
    reduce = next(jobs[n] for n in names if n.endswith("reduce.toml"))
    assert all(jobs[n].after == (prepare.id,) for n in names if ".sim." in n)
    assert sorted(reduce.after) == sims
    assert reduce.labels == ("bigmem",) and reduce.needs == {"license": 1}
    assert reduce.priority == 9  # the file says none: the option's
    a_sim = next(jobs[n] for n in names if n.endswith("a.sim.ini"))
    b_sim = next(jobs[n] for n in names if n.endswith("b.sim.ini"))
    assert a_sim.priority == 2 and b_sim.needs == {"cpus": 4, "mem": 2 * G}
    if not url.startswith("sqlite"):  # a folder queue: ids are those of the copies' names
        assert prepare.id == content_id("file", "prepare.ini") == Job.file_job("prepare.ini").id


def test_a_job_files_own_keys_win_and_its_after_adds_to_the_options(url, tmp_path):
    ok("submit", url, "echo", ":::", "before")
    before = jobs_of(url)["1: echo before"]
    write(tmp_path / "first.ini", ini())
    write(tmp_path / "then.ini", ini("after = first.ini", "priority = 1"))
    ok("submit", "--after", "#1", "--priority", "5", url, str(tmp_path / "first.ini"),
       str(tmp_path / "then.ini"))
    jobs = jobs_of(url)
    first = next(job for name, job in jobs.items() if name.endswith("first.ini"))
    then = next(job for name, job in jobs.items() if name.endswith("then.ini"))
    assert (first.after, first.priority) == ((before.id,), 5)
    assert (set(then.after), then.priority) == ({before.id, first.id}, 1)


@pytest.mark.parametrize(("lines", "problem"), [
    (("after = nothere.ini",), "after: nothere.ini: no such job file"),
    (("after = *.sim.ini",), "after: '*.sim.ini' matches no job file"),
    (("after = data.csv",), "after: data.csv: not a job file"),
    (("mem = lots",), "mem: 'lots' is not an amount of memory"),
    (("priority = soon",), "priority: 'soon' is not a whole number"),
    (("resource.license = x",), "resource.license: 'x' is not a number"),
    (("gpus = 0.5",), "gpus: '0.5' is not a whole number"),
])
def test_bad_scheduling_keys_in_a_job_file_are_refused_at_submit(url, tmp_path, lines,
                                                                 problem):
    write(tmp_path / "data.csv", "x\n1\n")
    job = write(tmp_path / "bad.ini", ini(*lines))
    line = refused("submit", url, str(job))
    assert f"bad.ini:3: {problem}" in line, line


def test_a_file_waiting_for_a_file_never_submitted_is_refused(url, tmp_path):
    write(tmp_path / "prepare.ini", ini())
    job = write(tmp_path / "then.ini", ini("after = prepare.ini"))
    line = refused("submit", url, str(job))
    assert "then.ini: after:" in line and "prepare.ini" in line and "submit it too" in line


def test_a_file_waiting_for_itself_is_a_cycle(url, tmp_path):
    job = write(tmp_path / "self.ini", ini("after = self.ini"))
    line = refused("submit", url, str(job))
    assert "wait for each other" in line and "self.ini" in line
    assert not (Path(url) / "self.ini").exists()  # no copy left: it would be a drop-in


# -- parameter tables --------------------------------------------------------------------

def test_table_columns_schedule_each_row(url, tmp_path):
    table = write(tmp_path / "t.csv", "step,after,priority,cpus,mem,requires,resource.license\n"
                  "map1,,,1,1G,,\nmap2,,,1,1G,,\nreduce,1-3,3,2,,bigmem,1\n")
    ok("submit", "--table", str(table), url, "echo {step}")
    jobs = jobs_of(url)
    map1, map2, reduce = (jobs[f"{n}: echo {s}"] for n, s in
                          ((1, "map1"), (2, "map2"), (3, "reduce")))
    assert reduce.after == (map1.id, map2.id)  # a range leaves the row itself out
    assert (reduce.priority, reduce.labels) == (3, ("bigmem",))
    assert reduce.needs == {"cpus": 2, "license": 1}
    assert map1.needs == {"cpus": 1, "mem": G} and map1.after == ()


def test_a_row_may_wait_for_a_later_row(url, tmp_path):
    table = write(tmp_path / "t.json", json.dumps([{"x": "late", "after": "2"}, {"x": "early"}]))
    ok("submit", "--table", str(table), url, "echo {x}")
    jobs = jobs_of(url)
    assert jobs["1: echo late"].after == (jobs["2: echo early"].id,)


@pytest.mark.parametrize(("rows", "problem"), [
    ("x,after\na,2\nb,1\n", "after: table rows wait for each other: 1 -> 2 -> 1"),
    ("x,after\na,7\n", "row 1, column 'after': '7': the table has rows 1-1"),
    ("x,after\na,soon\n", "row 1, column 'after': 'soon' is neither a row number"),
    ("x,mem\na,big\n", "row 1, column 'mem': 'big' is not an amount of memory"),
    ("x,priority\na,1.5\n", "row 1, column 'priority': '1.5' is not a whole number"),
])
def test_bad_table_cells_are_one_line_naming_row_and_column(url, tmp_path, rows, problem):
    table = write(tmp_path / "t.csv", rows)
    line = refused("submit", "--table", str(table), url, "echo {x}")
    assert problem in line, line


# -- drop-ins ----------------------------------------------------------------------------

def work_drain(folder: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoal", "work", str(folder), "--drain"],
                          capture_output=True, text=True, timeout=T, cwd=cwd)


def test_drop_ins_carry_their_keys_and_a_missing_after_fails_only_that_job(tmp_path):
    folder, worker = tmp_path / "drop", tmp_path / "worker"
    folder.mkdir()
    worker.mkdir()
    write(folder / "prepare.ini", ini())
    write(folder / "sim.ini", ini("after = prepare.ini", "priority = 3", "gpus = 0"))
    orphan = write(folder / "orphan.ini", ini("after = nothere.ini"))
    old = time.time() - 2 * DEFER_S  # long enough for its `after` file to have come
    os.utime(orphan, (old, old))
    with open_queue(str(folder)) as queue:
        queue.refresh()  # what a worker's scan submits
        jobs = {status.job.name: status.job for status in queue.listing()}
    assert jobs["sim.ini"].after == (jobs["prepare.ini"].id,)
    assert (jobs["sim.ini"].priority, jobs["sim.ini"].needs) == (3, {"gpus": 0})
    assert jobs["orphan.ini"].after == ()
    done = work_drain(folder, worker)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in map(json.loads, ok(
        "results", str(folder), "--format", "json").splitlines())}
    assert rows["orphan.ini"]["state"] == "failed"
    assert "nothere.ini: no such job file" in rows["orphan.ini"]["reason"]
    assert rows["prepare.ini"]["state"] == rows["sim.ini"]["state"] == "done"


def test_a_drop_in_waits_for_the_file_its_after_names_to_be_copied_in(tmp_path):
    """`cp then.ini first.ini folder/`: a scan between the two copies must not submit
    then.ini without its dependency (it would run at once)."""
    folder = tmp_path / "drop"
    folder.mkdir()
    write(folder / "then.ini", ini("after = first.ini"))
    with open_queue(str(folder)) as queue:
        queue.refresh()
        assert [s.job.name for s in queue.listing()] == []  # put off: first.ini not there
        write(folder / "first.ini", ini())
        queue.refresh()
        jobs = {status.job.name: status for status in queue.listing()}
    assert jobs["then.ini"].job.after == (jobs["first.ini"].job.id,)
    assert jobs["then.ini"].state is State.WAITING


# -- status and results ------------------------------------------------------------------

def beat(url: str, worker: str, resources: dict, labels: tuple[str, ...] = ()) -> None:
    with open_queue(url) as queue:
        queue.beat(WorkerInfo(id=worker, host="box", pid=1, slots=1, resources=resources,
                              labels=labels), [])


def test_status_tells_jobs_waiting_for_resources_with_what_they_need(url):
    ok("submit", url, "echo", ":::", "small")
    ok("submit", "--gpus", "4", "--mem", "64G", url, "echo", ":::", "big-a", "big-b")
    ok("submit", "--requires", "bigmem", url, "echo", ":::", "labelled")
    text = ok("status", url)  # no worker: nothing to compare with, nothing flagged
    assert "4 pending" in text and "waiting (resources)" not in text
    beat(url, "w1", {"cpus": 8, "gpus": 2, "mem": 32 * G})
    beat(url, "w2", {"cpus": 4, "gpus": 1, "mem": 128 * G}, labels=("fast",))
    text = ok("status", url)
    assert "0 waiting (dependencies), 3 waiting (resources), 1 pending" in text, text
    assert "2 x 4 gpus, 64G (1: echo big-a, 2: echo big-b)" in text, text
    assert "1 x 1 cpu, bigmem (1: echo labelled)" in text or \
        "1 x bigmem (1: echo labelled)" in text, text
    data = json.loads(ok("status", url, "--format", "json"))
    assert data["waiting"]["resources"] == 3 and data["counts"]["pending"] == 4
    assert data["waiting"]["needs"][0] == {
        "needs": {"gpus": 4, "mem": 64 * G}, "labels": [], "text": "4 gpus, 64G", "count": 2,
        "jobs": ["1: echo big-a", "2: echo big-b"]}
    workers = ok("workers", url)
    assert "8 cpus, 2 gpus, 32G" in workers and "4 cpus, 1 gpu, 128G, fast" in workers
    beat(url, "w3", {})  # a worker that does not say what it has may fit anything
    assert "waiting (resources)" not in ok("status", url)


def test_results_csv_and_json_have_priority_after_and_needs(url):
    ok("submit", url, "echo", ":::", "a")
    ok("submit", "--after", "#1", "--priority", "2", "--cpus", "2", "--mem", "1.5G", url,
       "echo", ":::", "b")
    rows = [json.loads(line) for line in ok("results", url, "--format", "json").splitlines()]
    assert [(r["priority"], r["after"], r["needs"]) for r in rows] == [
        (0, [], ""), (2, [rows[0]["id"]], "2 cpus, 1.5G")]
    lines = ok("results", url, "--format", "csv").splitlines()
    header = lines[0].split(",")
    assert header[15:18] == ["priority", "after", "needs"]
    assert f',2,{rows[0]["id"]},"2 cpus, 1.5G"' in lines[2]


# -- with the claim rules (a backend that follows them) ----------------------------------

def test_waiting_jobs_show_in_status_and_results():
    url = ruled_memory_url()
    ok("submit", url, "echo", ":::", "map")
    ok("submit", "--after", "#1", url, "echo", ":::", "reduce")
    assert "1 waiting (dependencies), 1 pending" in ok("status", url)
    assert json.loads(ok("status", url, "--format", "json"))["waiting"]["dependencies"] == 1
    table = ok("results", url)
    assert any(line.split()[-0:] and "waiting" in line and "reduce" in line
               for line in table.splitlines()), table


def test_retry_puts_retried_jobs_first_unless_keep_order():
    for keep_order, expected in ((False, ["b", "c", "a", "d"]), (True, ["a", "b", "c", "d"])):
        url = ruled_memory_url()
        ok("submit", url, "echo", ":::", "a", "b", "c", "d")
        queue = open_queue(url)
        a, b, c = queue.claim("w", 3)
        queue.release(a)  # a worker stopping: back to pending in its place (#1)
        for lease in (b, c):
            queue.finish(lease, _failed(lease))
        ok("retry", url, "--failed", *(["--keep-order"] if keep_order else []))
        order = []
        while leases := queue.claim("w", 1):
            order.append(leases[0].job.params["1"])
            queue.finish(leases[0], _done(leases[0]))
        assert order == expected, (keep_order, order)


def test_retry_brings_back_the_jobs_a_failure_ended():
    url = ruled_memory_url()
    ok("submit", url, "echo", ":::", "map")
    ok("submit", "--after", "#1", url, "echo", ":::", "reduce")
    queue = open_queue(url)
    (lease,) = queue.claim("w", 1)
    queue.finish(lease, _failed(lease))
    rows = [json.loads(line) for line in ok("results", url, "--format", "json").splitlines()]
    assert rows[1]["state"] == "failed" and rows[1]["reason"].startswith("dependency ")
    out = ok("retry", url, "--failed")
    assert "1 job(s) back to pending, 1 waiting for them again" in out, out
    assert queue.states([rows[1]["id"]]) == {rows[1]["id"]: State.WAITING}


def _failed(lease):
    from shoal.job import Result

    return Result(lease.job_id, State.FAILED, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=1, reason="exit status 1")


def _done(lease):
    from shoal.job import Result

    return Result(lease.job_id, State.DONE, name=lease.job.name, attempt=lease.attempt,
                  worker=lease.worker, exit_code=0)


# -- the README's examples ---------------------------------------------------------------

def test_the_readme_examples_submit_what_they_say(tmp_path):
    from tests.test_readme import readme_block

    heading = "### Dependencies, resources and priorities"
    here, queue = tmp_path / "here", tmp_path / "sweep"
    here.mkdir()
    for name in ("part-1.csv", "part-2.csv"):
        write(here / name, "1\n")
    for name in ("map.sh", "reduce.sh", "urgent.sh"):
        write(here / name, "#!/bin/sh\necho $0 \"$@\"\n")
    lines = [line.split("  #")[0].replace("/shared/sweep", str(queue))
             for line in readme_block(heading, "bash").splitlines()
             if line.startswith(("shoal submit", "shoal retry"))]
    assert len(lines) == 5, lines
    script = f"shoal() {{ {sys.executable} -m shoal \"$@\"; }}\nset -e\n" + "\n".join(lines)
    done = subprocess.run(["bash", "-c", script], cwd=here, capture_output=True, text=True,
                          timeout=T)
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = jobs_of(str(queue))
    maps = [job for name, job in jobs.items() if "map.sh" in name]
    (reduce,) = [job for name, job in jobs.items() if name == "reduce.sh"]
    assert reduce.after == tuple(job.id for job in maps) and len(maps) == 2
    trains = [job for name, job in jobs.items() if "train.py" in name]
    assert len(trains) == 2 and all(job.needs == {"gpus": 1, "mem": 16 * G} for job in trains)
    assert [job.priority for name, job in jobs.items() if "urgent" in name] == [10, 10, 10]

    folder = tmp_path / "files"
    folder.mkdir()
    for name in ("a.sim.ini", "b.sim.ini"):
        write(folder / name, ini())
    write(folder / "reduce.ini", readme_block(heading, "ini"))
    ok("submit", str(queue), *(str(folder / n) for n in ("a.sim.ini", "b.sim.ini",
                                                          "reduce.ini")))
    jobs = jobs_of(str(queue))
    assert sorted(jobs["reduce.ini"].after) == sorted(jobs[n].id for n in ("a.sim.ini",
                                                                          "b.sim.ini"))
    assert jobs["reduce.ini"].needs == {"cpus": 4, "mem": 8 * G, "license": 1}
    assert (jobs["reduce.ini"].priority, jobs["reduce.ini"].labels) == (5, ("bigmem",))


@pytest.mark.parametrize(("text", "needs", "priority"), [
    ('[control]\nexecutable = "echo"\n[resources]\nlicense = 2\n', {"license": 2}, 0),
    ('control.executable = "echo"\ncontrol.priority = 4\n', {}, 4),
    ("[control]\nexecutable = echo\nMEM = 1K\n", {"mem": 1024}, 0),
])
def test_a_drop_in_scan_finds_keys_however_they_are_written(tmp_path, text, needs, priority):
    from shoal.dropins import DropIns

    name = "job.toml" if "control.executable" in text or '"echo"' in text else "job.ini"
    write(tmp_path / name, text)
    (job,) = DropIns(tmp_path, {}).scan().fresh
    assert (job.needs, job.priority) == (needs, priority)


def test_a_priority_submit_overtakes_the_queue_and_a_table_row_waits_for_its_rows(tmp_path):
    url = ruled_memory_url()
    ok("submit", url, "echo", ":::", *(f"old{i}" for i in range(20)))
    ok("submit", "--priority", "5", url, "echo", ":::", "urgent")
    table = write(tmp_path / "t.csv", "x,after,priority\nmap,,9\nreduce,1,9\n")
    ok("submit", "--table", str(table), url, "echo {x}")
    queue = open_queue(url)
    order = []
    while len(order) < 4 and (leases := queue.claim("w", 1)):
        order.append(leases[0].job.name.split(": ", 1)[1])
        queue.finish(leases[0], _done(leases[0]))
    assert order == ["echo map", "echo reduce", "echo urgent", "echo old0"]


def test_a_job_file_runs_once_its_dependency_is_done_even_if_that_file_is_gone(tmp_path):
    """The worker runs a file with the `after` it was submitted with: the file a finished
    dependency came from may be cleaned away meanwhile."""
    url = f"sqlite://{tmp_path / 'q.sqlite'}"
    first = write(tmp_path / "first.ini", ini())
    write(tmp_path / "then.ini", ini("after = first.ini"))
    ok("submit", url, str(first), str(tmp_path / "then.ini"))
    with open_queue(url) as queue:
        (lease,) = queue.claim("by-hand", 5)
        assert lease.job.path.endswith("first.ini")
        queue.finish(lease, Result(lease.job_id, State.DONE, attempt=1, worker="by-hand"))
    first.unlink()
    done = subprocess.run([sys.executable, "-m", "shoal", "work", url, "--drain", "-q"],
                          capture_output=True, text=True, timeout=T, check=False)
    assert done.returncode == 0, done.stderr
    status = next(s for name, s in _statuses(url).items() if name.endswith("then.ini"))
    assert status.state is State.DONE, status.result


def _statuses(url: str) -> dict:
    with open_queue(url) as queue:
        return {status.job.name: status for status in queue.listing()}
