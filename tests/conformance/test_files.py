"""What travels beside the state machine, on every backend: logs, progress, shared config.

A worker runs in a thread on one view; the test reads through another, as `shoal logs`,
`shoal status` or an Executor on another host would. Running jobs wait on a gate file.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.calls import call_job, outcome
from shoal.job import Job, Result, State
from shoal.queue.base import Queue
from shoal.queue.folder import FolderQueue
from shoal.worker import Worker
from tests.conformance import jobfns
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(90)

#: No test here is about reaping: a lease long enough that a worker thread starved on a
#: loaded machine keeps its job (attempt numbers are asserted exactly).
FILES_LEASE_S = 10.0


@pytest.fixture(autouse=True)
def _long_leases(queue_factory):
    queue_factory.lease_s = FILES_LEASE_S



@contextlib.contextmanager
def worker_in_thread(view: Queue, gate: Path) -> Iterator[Worker]:
    """A draining one-slot worker on `view`; on the way out the gate opens and it drains."""
    worker = Worker(view, slots=1, drain=True)
    thread = threading.Thread(target=worker.run, name="conformance-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        gate.touch()
        thread.join(60)
        if thread.is_alive():
            worker.stop(now=True)
            thread.join(30)
    assert not thread.is_alive() and worker.exit_reason == "drained"


def wait_gate_command(gate: Path) -> str:
    return f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.02; done"


def talking_job(kind: str, gate: Path) -> Job:
    """A job that prints `first-line` (and a line on stderr), waits, prints `last-line`."""
    if kind == "call":
        return call_job(jobfns.say_then_wait, (str(gate), "first-line", "last-line"))
    return Job.command_job(f"echo first-line; echo first-line on stderr >&2; "
                           f"{wait_gate_command(gate)}; echo last-line")


def running(queue: Queue, job_id: str) -> bool:
    status = queue.get(job_id)
    return status is not None and status.state is State.RUNNING


# -- logs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["command", "call"])
def test_a_running_jobs_log_so_far_is_readable_from_another_view(queue_factory, tmp_path,
                                                                   kind):
    reader, gate = queue_factory(), tmp_path / "gate"
    job = talking_job(kind, gate)
    reader.submit([job])
    with worker_in_thread(queue_factory(), gate):
        wait_for(lambda: running(reader, job.id), message="the job to start")

        def log_so_far() -> bytes | None:
            return reader.files.read_log(reader.get(job.id))

        text = wait_for(lambda: b"first-line on stderr" in (log_so_far() or b"")
                        and log_so_far(), 5, message="the running job's log to show its "
                                                     "first lines")
        assert b"last-line" not in text
        assert reader.get(job.id).state is State.RUNNING


@pytest.mark.parametrize("kind", ["command", "call"])
def test_a_cancelled_running_jobs_log_so_far_stays_readable(queue_factory, tmp_path, kind):
    """`shoal cancel` of a running job: the worker kills it, and `shoal logs` still shows
    what it printed (the record names the worker that ran it)."""
    reader, gate = queue_factory(), tmp_path / "gate"
    job = talking_job(kind, gate)
    reader.submit([job])
    worker = Worker(queue_factory(), slots=1, drain=True)
    thread = threading.Thread(target=worker.run, name="conformance-worker", daemon=True)
    thread.start()
    try:
        wait_for(lambda: b"first-line on stderr" in
                 (reader.files.read_log(reader.get(job.id)) or b""), 30,
                 message="the running job's first lines")
        assert reader.cancel([job.id]) == [job.id]
        thread.join(60)  # the worker kills the job at its next beat, then is drained
        assert not thread.is_alive() and worker.exit_reason == "drained"
    finally:
        gate.touch()
        if thread.is_alive():
            worker.stop(now=True)
            thread.join(30)
    status = reader.get(job.id)
    assert status.state is State.CANCELLED
    assert status.result.worker == worker.id
    text = reader.files.read_log(status)
    assert text is not None and b"last-line" not in text
    assert text.splitlines()[:2] == [b"first-line", b"first-line on stderr"]


def test_keep_log_keeps_a_cancelled_attempts_whole_log(queue_factory):
    """What the worker does once a cancel killed its job (`Queue.keep_log`): the whole log
    replaces the tail the cancel kept; another job's lease is left alone."""
    reader, view = queue_factory(), queue_factory()
    cancelled, other = Job.command_job("echo a"), Job.command_job("echo b")
    reader.submit([cancelled, other])
    leases = {lease.job_id: lease for lease in view.claim("w1", 2)}
    for lease in leases.values():
        path = view.files.attempt_log(lease)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"every line of " + lease.job_id.encode() + b"\n")
    assert reader.cancel([cancelled.id]) == [cancelled.id]
    for lease in leases.values():
        ended = Result(lease.job_id, State.FAILED, reason="killed", attempt=lease.attempt,
                       worker="w1", log=str(view.files.attempt_log(lease)))
        view.keep_log(lease, ended)
    status = reader.get(cancelled.id)
    assert (status.state, status.result.worker, status.result.attempt) == (
        State.CANCELLED, "w1", leases[cancelled.id].attempt)
    assert reader.files.read_log(status) == b"every line of " + cancelled.id.encode() + b"\n"
    assert reader.get(other.id).state is State.RUNNING  # its lease is still current


@pytest.mark.parametrize("kind", ["command", "call"])
def test_a_finished_jobs_log_is_readable_from_another_view(queue_factory, tmp_path, kind):
    reader, gate = queue_factory(), tmp_path / "gate"
    gate.touch()
    job = talking_job(kind, gate)
    reader.submit([job])
    with worker_in_thread(queue_factory(), gate):
        pass
    status = reader.get(job.id)
    assert status.state is State.DONE and status.result.log
    text = reader.files.read_log(status)
    assert text is not None
    assert text.splitlines() == [b"first-line", b"first-line on stderr", b"last-line"]


def test_a_job_that_printed_nothing_has_no_log_and_read_log_says_so(queue_factory, tmp_path):
    reader = queue_factory()
    job = call_job(jobfns.shared_config)  # prints nothing
    reader.submit([job])
    with worker_in_thread(queue_factory(), tmp_path / "gate"):
        pass
    status = reader.get(job.id)
    assert status.state is State.DONE
    assert reader.files.read_log(status) in (None, b"")


def test_a_job_files_log_is_NAME_log_beside_it_in_the_folder(tmp_path):
    """A shared-folder rule (docs/architecture.md): the log of job file NAME is NAME.log."""
    root = tmp_path / "queue"
    submitter = FolderQueue(root, lease_s=FILES_LEASE_S)
    (root / "sub").mkdir()
    (root / "sub" / "hello.sh").write_text("echo hello from a job file\n")
    job = Job.file_job("sub/hello.sh")
    named = Job.command_job("echo named log", log="logs/named.txt")
    assert submitter.files.final_log_path(job) == root / "sub" / "hello.sh.log"
    assert submitter.files.final_log_path(named) == root / "logs" / "named.txt"
    submitter.submit([job, named])
    with worker_in_thread(FolderQueue(root, lease_s=FILES_LEASE_S), tmp_path / "gate"):
        pass
    reader = FolderQueue(root, lease_s=FILES_LEASE_S)
    for each, path, text in ((job, root / "sub" / "hello.sh.log", b"hello from a job file\n"),
                             (named, root / "logs" / "named.txt", b"named log\n")):
        status = reader.get(each.id)
        assert status.state is State.DONE
        assert status.result.log == str(path) and path.read_bytes() == text
        assert reader.files.read_log(status) == text


def test_a_long_log_keeps_its_tail_within_the_cap(queue_factory, tmp_path):
    queue_factory.log_cap_bytes = 200
    reader = queue_factory()
    job = Job.command_job("for i in $(seq 1 500); do echo line $i; done")
    reader.submit([job])
    with worker_in_thread(queue_factory(), tmp_path / "gate"):
        pass
    status = reader.get(job.id)
    assert status.state is State.DONE
    text = reader.files.read_log(status)
    assert text is not None and text.endswith(b"line 499\nline 500\n")
    assert b"line 1\n" not in text
    first, kept = text.split(b"\n", 1)
    assert b"cut" in first and len(kept) <= 200


def test_a_failed_attempts_log_is_kept_beside_the_final_one(queue_factory, tmp_path):
    reader = queue_factory()
    job = Job.command_job('if [ "$SHOAL_ATTEMPT" = 1 ]; then echo first try went wrong; '
                          'exit 3; fi; echo second try', retries=1)
    reader.submit([job])
    with worker_in_thread(queue_factory(), tmp_path / "gate"):
        pass
    status = reader.get(job.id)
    assert status.state is State.DONE and status.attempt == 2
    assert [r.attempt for r in status.attempts] == [1]
    assert reader.files.read_log(status, attempt=1) == b"first try went wrong\n"
    assert reader.files.read_log(status) == b"second try\n"


# -- progress -------------------------------------------------------------------------------


def progress_job(kind: str, gate: Path) -> Job:
    if kind == "call":
        return call_job(jobfns.report_then_wait, (str(gate), 3, 10))
    return Job.command_job(f'printf "3 10\\n" > "$SHOAL_PROGRESS_FILE"; '
                           f"{wait_gate_command(gate)}")


@pytest.mark.parametrize("kind", ["command", "call"])
def test_a_running_jobs_progress_is_seen_from_another_view(queue_factory, tmp_path, kind):
    reader, gate = queue_factory(), tmp_path / "gate"
    job = progress_job(kind, gate)
    reader.submit([job])
    with worker_in_thread(queue_factory(), gate):
        report = wait_for(lambda: reader.files.progress().get(job.id), 10,
                          message="the job's progress to be seen")
        assert report == (3.0, 10.0)
        assert running(reader, job.id)
    assert job.id not in reader.files.progress()  # only running jobs report


# -- shared configuration ---------------------------------------------------------------------


def config_job(kind: str) -> Job:
    if kind == "call":
        return call_job(jobfns.shared_config)
    return Job.command_job('cat "$SHOAL_CONFIG"')


@pytest.mark.parametrize("worker_opened", ["before", "after"])
@pytest.mark.parametrize("kind", ["command", "call"])
def test_the_shared_config_set_on_one_view_reaches_jobs_run_from_another(
        queue_factory, tmp_path, kind, worker_opened):
    owner = queue_factory()
    worker_view = queue_factory() if worker_opened == "before" else None
    source = tmp_path / "settings.toml"
    source.write_text('greeting = "hello"\n[model]\nlayers = 3\n')
    owner.files.set_config_file(source)
    source.unlink()  # the queue keeps its own copy
    assert owner.files.config_file() is not None
    assert queue_factory().files.config() == b'greeting = "hello"\n[model]\nlayers = 3\n'
    job = config_job(kind)
    owner.submit([job])
    with worker_in_thread(worker_view or queue_factory(), tmp_path / "gate"):
        pass
    result = owner.get(job.id).result
    assert result.state is State.DONE, result.reason
    if kind == "call":
        assert outcome(result) == {"greeting": "hello", "model": {"layers": 3}}
    else:
        text = owner.files.read_log(owner.get(job.id))
        assert text == b'greeting = "hello"\n[model]\nlayers = 3\n'
