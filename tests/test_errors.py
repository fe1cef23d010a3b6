"""Errors as a user meets them: one line `shoal: error: WHAT: problem`, exit 2, no traceback
(unless `shoal --debug`); commands that only read create nothing and work for a reader
with read access only, on a read-only mount too; a URL that names no queue is an error.

Permissions are tested for real: as root (which ignores them) the reader runs without
CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv), a read-only mount is a bind mount in a
private mount namespace (unshare), a full disk a tiny tmpfs there; each is tried first
and the test skips with the kernel's reason if it refuses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.queue import open_queue

pytestmark = pytest.mark.timeout(180)

READERS = ["status", "results", "logs", "workers"]
ROOT_AS_READER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def shoal(*args: str, prefix: list[str] | None = None, cwd: Path | None = None,
          check: int | None = None) -> subprocess.CompletedProcess:
    """The real `shoal` command in a subprocess (after `prefix`, e.g. setpriv)."""
    done = subprocess.run([*(prefix or []), sys.executable, "-m", "shoal", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


def one_error_line(done: subprocess.CompletedProcess, *parts: str) -> str:
    """Assert exit 2 and a single `shoal: error:` line holding every part; return it."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shoal: error: "), done.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def reader_args(command: str, url: str) -> list[str]:
    return [command, url, "0123abcd"] if command == "logs" else [command, url]


def tree(folder: Path) -> set[str]:
    """Every path under `folder`, relative."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(params=["folder", "sqlite"])
def finished_queue(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A queue (URL) in tmp_path/data whose two jobs ran and are done."""
    data = tmp_path / "data"
    url = str(data / "q") if request.param == "folder" else f"sqlite://{data}/q.sqlite"
    shoal("submit", url, "echo {}", ":::", "a", "b", check=0)
    shoal("work", url, "--drain", "--slots", "2", check=0)
    return url


def first_job(url: str) -> str:
    """The id of one job of `url`; call it before any snapshot (opened here, as the
    owner, an SQLite queue may get its -wal/-shm files)."""
    return min(status.job.id for status in open_queue(url, create=False).jobs())


def check_reading(url: str, job_id: str, prefix: list[str] | None = None) -> None:
    """Every read-only command works on `url` and shows what is there."""
    assert "2 done" in shoal("status", url, prefix=prefix, check=0).stdout
    assert shoal("results", url, prefix=prefix, check=0).stdout.count("done") == 2
    assert shoal("logs", url, job_id, prefix=prefix, check=0).stdout in ("a\n", "b\n")
    shoal("workers", url, prefix=prefix, check=0)


# -- bad values -----------------------------------------------------------------------


@pytest.mark.parametrize("args, option", [
    (["submit", "--timeout", "-1", "Q", "echo", ":::", "a"], "--timeout"),
    (["submit", "--timeout", "0", "Q", "echo", ":::", "a"], "--timeout"),
    (["run", "--queue", "Q", "--timeout", "-1", "echo", ":::", "a"], "--timeout"),
    (["run", "--queue", "Q", "--timeout", "1e999", "echo", ":::", "a"], "--timeout"),
    (["run", "--queue", "Q", "--timeout", "nan", "echo", ":::", "a"], "--timeout"),
    (["work", "Q", "--lease", "-1"], "--lease"),
    (["work", "Q", "--lease", "0"], "--lease"),
    (["serve", "sqlite://Q", "--lease", "-1"], "--lease"),
])
def test_bad_seconds_are_refused_naming_the_option(tmp_path: Path, args: list[str],
                                                   option: str) -> None:
    args = [a.replace("Q", str(tmp_path / "q")) for a in args]
    done = shoal(*args, cwd=tmp_path, check=2)
    assert f"Invalid value for '{option}'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "q").exists()


def test_click_usage_errors_print_as_click_prints_them(tmp_path: Path) -> None:
    done = shoal("status", cwd=tmp_path, check=2)
    assert done.stderr.startswith("Usage: ") and "Missing argument 'QUEUE'" in done.stderr


# -- queues that do not exist ---------------------------------------------------------


@pytest.mark.parametrize("command", READERS)
@pytest.mark.parametrize("url", ["dir://{tmp}/typo", "sqlite://{tmp}/typo.sqlite",
                                 "sqlite://{tmp}/missing/typo.sqlite", "typo", "{tmp}/typo"])
def test_a_url_that_names_no_queue_is_an_error(tmp_path: Path, command: str,
                                               url: str) -> None:
    url = url.format(tmp=tmp_path)
    (tmp_path / "plain").mkdir()  # a folder with no queue in it
    before = tree(tmp_path)
    done = shoal(*reader_args(command, url), cwd=tmp_path)
    one_error_line(done, f"shoal: error: {url}: no such queue")
    assert tree(tmp_path) == before, "a look at a typo created something"


@pytest.mark.parametrize("command", READERS)
def test_a_folder_with_no_queue_in_it_is_no_queue(tmp_path: Path, command: str) -> None:
    (tmp_path / "plain").mkdir()
    done = shoal(*reader_args(command, "plain"), cwd=tmp_path)
    one_error_line(done, "plain: no such queue", f"no .shoal folder in {tmp_path / 'plain'}")
    assert tree(tmp_path) == {"plain"}


# -- reading creates nothing ----------------------------------------------------------


def test_reading_creates_nothing(finished_queue: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    job_id = first_job(finished_queue)
    before = tree(data)
    check_reading(finished_queue, job_id)
    # SQLite's mode=ro makes the WAL's -wal/-shm files when the directory lets it (any
    # reader or writer would); nothing else, and nothing at all in a folder queue.
    made = {p for p in tree(data) - before if not p.endswith(("-wal", "-shm"))}
    assert made == set()


# -- read access only -----------------------------------------------------------------


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[list[str]]:
    """Makes tmp_path/data read-only; yields the prefix that runs a command as a reader
    whom its permissions bind (for root: setpriv without the capabilities that skip
    them). Skips, with the reason, where that cannot be done."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: permissions cannot bind")
        prefix = ROOT_AS_READER
    yield prefix
    subprocess.run(["chmod", "-R", "u+w", str(tmp_path)], check=True)


def make_read_only(folder: Path, prefix: list[str]) -> None:
    subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
    probe = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True,
                           text=True)
    if probe.returncode == 0:
        pytest.skip(f"permissions do not bind here ({' '.join(prefix) or 'this user'} "
                    "could write a read-only folder)")


def test_a_reader_with_read_access_only(finished_queue: str, tmp_path: Path,
                                        read_only: list[str]) -> None:
    data = tmp_path / "data"
    job_id = first_job(finished_queue)
    make_read_only(data, read_only)
    before = tree(data)
    check_reading(finished_queue, job_id, read_only)
    assert tree(data) == before


def test_writing_without_write_access_is_one_line(finished_queue: str, tmp_path: Path,
                                                  read_only: list[str]) -> None:
    data = tmp_path / "data"
    make_read_only(data, read_only)
    for args in (["submit", finished_queue, "echo {}", ":::", "c"],
                 ["run", "--queue", finished_queue, "--no-progress", "echo {}", ":::", "d"]):
        line = one_error_line(shoal(*args, prefix=read_only))
        assert str(data) in line, line
        assert "Permission denied" in line or "readonly database" in line, line
    debug = shoal("--debug", "submit", finished_queue, "echo {}", ":::", "c", prefix=read_only)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_new_queue_in_a_folder_without_write_access(tmp_path: Path,
                                                      read_only: list[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    make_read_only(locked, read_only)
    for url in (str(locked / "q"), f"sqlite://{locked}/q.sqlite"):
        one_error_line(shoal("submit", url, "echo {}", ":::", "a", prefix=read_only),
                       f"{locked}", "Permission denied")


# -- read-only mount and full disk (a private mount namespace) -------------------------


def in_mount_namespace(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a shell `script` as root in a private mount namespace (skip if refused)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", script,
                           "sh", sys.executable, *args], capture_output=True, text=True,
                          timeout=120)
    if done.returncode == 99:
        pytest.skip(f"the kernel refused the mount: {done.stderr.strip()}")
    return done


def test_a_read_only_mount(finished_queue: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = f"""
        mount --bind {data} {data} && mount -o remount,bind,ro {data} || exit 99
        for c in status results workers; do "$1" -m shoal $c "$2" > /dev/null; done
        "$1" -m shoal logs "$2" "$3"
        "$1" -m shoal submit "$2" "echo {{}}" ::: c || echo "submit exit $?"
    """
    done = in_mount_namespace(script, finished_queue, first_job(finished_queue))
    assert done.stdout in ("a\nsubmit exit 2\n", "b\nsubmit exit 2\n"), \
        done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(data) in lines[0], done.stderr
    assert "Read-only file system" in lines[0] or "readonly database" in lines[0], lines[0]


def test_a_full_disk(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"""
        mount -t tmpfs -o size=512k tmpfs {disk} || exit 99
        "$1" -m shoal submit {disk}/q "echo {{}}" ::: a > /dev/null
        cat /dev/zero > {disk}/filler 2>/dev/null || true
        "$1" -m shoal submit {disk}/q "echo {{}}" ::: $(seq 200) || echo "submit exit $?"
    """
    done = in_mount_namespace(script)
    assert done.stdout == "submit exit 2\n", done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"shoal: error: {disk}/q"), done.stderr
    assert "No space left on device" in lines[0], lines[0]


def test_a_sqlite_file_given_as_a_bare_path_says_how_to_name_it(tmp_path: Path) -> None:
    shoal("submit", f"sqlite://{tmp_path}/q.sqlite", "echo {}", ":::", "a", check=0)
    done = shoal("status", str(tmp_path / "q.sqlite"))
    one_error_line(done, "no such queue", "a SQLite queue is sqlite://PATH")
