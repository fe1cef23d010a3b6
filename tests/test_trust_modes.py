"""Private by default (issue 19, case 5): what a real run creates in a folder queue's
.shoal, beside its job files, and for a SQLite queue (its file, -wal/-shm, logs, the
default state folder) is 0600/0700; in a setgid folder it is group-shared (0660/02770)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal
from shoal.serve.locate import default_queue, state_dir

pytestmark = pytest.mark.timeout(180)

GROUP = 65534


def shoal_cli(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def created(*tops: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every file and folder under `tops` (and they), with its lstat."""
    for top in tops:
        yield top, top.lstat()
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                path = Path(folder) / name
                yield path, path.lstat()


def modes(*tops: Path) -> dict[str, set[str]]:
    """{'0700': {paths}, ...} of what is under `tops`: one glance says what is wrong."""
    found: dict[str, set[str]] = {}
    for path, info in created(*tops):
        found.setdefault(f"{stat.S_IMODE(info.st_mode):04o}", set()).add(str(path))
    return found


def run_every_kind(folder: Path) -> None:
    """Command jobs, a dropped script (its log placed beside it) and a call (a pickled
    payload), each run to its end by a real worker."""
    shoal_cli("submit", str(folder), "echo", ":::", "a", "b")
    (folder / "job.sh").write_text("echo from a script\n")
    shoal_cli("work", str(folder), "--drain")
    with shoal.Executor(str(folder), workers=1) as executor:
        assert executor.submit(pow, 2, 5).result(timeout=120) == 32
    assert (folder / "job.sh.log").read_text() == "from a script\n"


def make_setgid(folder: Path) -> None:
    folder.mkdir()
    try:
        os.chown(folder, -1, GROUP)
        os.chmod(folder, 0o2775)
    except PermissionError as exc:
        pytest.skip(f"cannot make a setgid folder of group {GROUP} here: {exc}")


def test_a_folder_queue_is_private_by_default(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    folder.mkdir()
    run_every_kind(folder)
    state = modes(folder / ".shoal", folder / "job.sh.log")
    assert set(state) == {"0700", "0600"}, state
    assert all(Path(p).is_dir() for p in state["0700"])
    assert any("/logs/" in p for p in state["0600"]) and any("/jobs/" in p for p in state["0600"])


def test_a_setgid_folder_queue_is_shared_with_its_group(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    make_setgid(folder)
    run_every_kind(folder)
    state = modes(folder / ".shoal", folder / "job.sh.log")
    assert set(state) == {"2770", "0660"}, state
    assert all(Path(p).is_dir() for p in state["2770"])
    assert {info.st_gid for _, info in created(folder / ".shoal")} == {GROUP}


def sqlite_files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def run_sqlite(path: Path) -> None:
    url = f"sqlite://{path}"
    shoal_cli("submit", url, "echo", ":::", "a", "b")
    shoal_cli("work", url, "--drain")
    with shoal.Executor(url, workers=1) as executor:
        assert executor.submit(pow, 2, 5).result(timeout=120) == 32
        # -wal and -shm exist while a connection is open: look at them now
        files = sqlite_files(path)
        assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {
            0o660 if path.parent.stat().st_mode & stat.S_ISGID else 0o600}, files
        assert len(files) == 3


def test_a_sqlite_queue_and_its_logs_are_private(tmp_path: Path) -> None:
    path = tmp_path / "made" / "q.sqlite"
    run_sqlite(path)
    logs = modes(path.parent / "q.sqlite.logs")
    assert set(logs) == {"0700", "0600"}, logs
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # shoal made it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_sqlite_queue_in_a_setgid_folder_is_shared(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    make_setgid(folder)
    path = folder / "q.sqlite"
    run_sqlite(path)
    assert set(modes(path.parent / "q.sqlite.logs")) == {"2770", "0660"}
    assert path.stat().st_gid == GROUP


def test_the_default_state_folder_and_queue_are_private(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    base = state_dir()
    assert base == tmp_path / "state" / "shoal"
    assert {stat.S_IMODE(p.stat().st_mode) for p in (base, base.parent)} == {0o700}
    url = default_queue(tmp_path / "status")
    path = Path(url.removeprefix("sqlite://"))
    run_sqlite(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
