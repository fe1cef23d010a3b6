"""Other users' files must not run as you (issue 19, case 5): real folders, real
`shoal work` processes, files owned by uid 65534 and world-writable ones, symlinks that
leave the folder, and job files that point their log outside it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shoal.errors import JobRefused
from shoal.queue.folder import FolderQueue
from shoal.trust import Trust, check_job_file
from tests.procs import run_shoal

pytestmark = pytest.mark.timeout(180)

NOBODY = 65534
# A job that says it ran (in ran.txt beside it).
COUNTING = 'echo "$SHOAL_JOB_NAME" >> ran.txt\n'


def shoal(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    return run_shoal(*args, check=check, timeout=120)


def ran(folder: Path) -> list[str]:
    path = folder / "ran.txt"
    return sorted(path.read_text().split()) if path.exists() else []


def rows(folder: Path) -> dict[str, dict]:
    return rows_of(str(folder))


def rows_of(queue: str) -> dict[str, dict]:
    """The queue's results by job name (its file's name), as `shoal results` prints them."""
    out = shoal("results", queue, "--format", "json").stdout
    return {os.path.basename(row["name"]): row for row in map(json.loads, out.splitlines())}


def chown_or_skip(path: Path, uid: int, gid: int = -1) -> None:
    """Give `path` to another user; skip (saying why) where the kernel refuses."""
    try:
        os.chown(path, uid, gid, follow_symlinks=False)
    except PermissionError as exc:
        pytest.skip(f"cannot chown to uid {uid} here: {exc}")


def queue_with(tmp_path: Path, settings: str = "") -> Path:
    folder = tmp_path / "shared"
    folder.mkdir()
    FolderQueue(folder)
    if settings:
        (folder / ".shoal" / "queue.toml").write_text(settings)
    return folder


def drop_strangers(folder: Path, outside: Path) -> None:
    """mine.sh (ours), theirs.sh (uid 65534), open.sh (0666), link.sh -> a script
    outside the folder, passwd.sh -> /etc/passwd."""
    for name in ("mine.sh", "theirs.sh", "open.sh"):
        (folder / name).write_text(COUNTING)
    chown_or_skip(folder / "theirs.sh", NOBODY)
    os.chmod(folder / "open.sh", 0o666)
    outside.write_text(f'echo escaped > {outside.parent / "escaped.txt"}\n')
    (folder / "link.sh").symlink_to(outside)
    (folder / "passwd.sh").symlink_to("/etc/passwd")


def test_other_users_and_writable_files_are_refused_and_the_rest_run(tmp_path: Path) -> None:
    folder = queue_with(tmp_path)
    drop_strangers(folder, tmp_path / "outside.sh")
    shoal("work", str(folder), "--drain")
    assert ran(folder) == ["mine.sh"]
    assert not (tmp_path / "escaped.txt").exists()
    found = rows(folder)
    assert {name: row["state"] for name, row in found.items()} == {
        "mine.sh": "done", "theirs.sh": "failed", "open.sh": "failed", "link.sh": "failed",
        "passwd.sh": "failed"}
    assert found["theirs.sh"]["reason"].startswith("refused: ")
    assert "owned by uid 65534" in found["theirs.sh"]["reason"]
    assert "see README 'Security'" in found["theirs.sh"]["reason"]
    assert "writable by others" in found["open.sh"]["reason"]
    for name in ("link.sh", "passwd.sh"):
        assert "leaves the queue folder" in found[name]["reason"], found[name]
    assert "root:" not in shoal("logs", str(folder), "passwd.sh").stdout


def test_trust_any_runs_other_owners_but_never_follows_links_out(tmp_path: Path) -> None:
    folder = queue_with(tmp_path, 'trust = "any"\n')
    drop_strangers(folder, tmp_path / "outside.sh")
    shoal("work", str(folder), "--drain")
    assert ran(folder) == ["mine.sh", "open.sh", "theirs.sh"]
    assert not (tmp_path / "escaped.txt").exists()
    assert rows(folder)["link.sh"]["state"] == "failed"


def test_trust_group_runs_files_of_the_queue_group_only(tmp_path: Path) -> None:
    folder = queue_with(tmp_path, f'trust = "group"\ngroup = {NOBODY}\n')
    for name in ("ours.sh", "lab.sh", "stranger.sh", "mine.sh"):
        (folder / name).write_text(COUNTING)
    chown_or_skip(folder / "ours.sh", NOBODY, NOBODY)  # another member of the group
    os.chmod(folder / "ours.sh", 0o664)  # group-writable: the group is the trusted one
    chown_or_skip(folder / "lab.sh", 0, NOBODY)
    os.chmod(folder / "lab.sh", 0o664)
    chown_or_skip(folder / "stranger.sh", NOBODY, 0)
    shoal("work", str(folder), "--drain")
    assert ran(folder) == ["lab.sh", "mine.sh", "ours.sh"]
    assert "owned by uid 65534" in rows(folder)["stranger.sh"]["reason"]


def test_group_writable_is_refused_for_a_group_that_is_not_configured(tmp_path: Path) -> None:
    folder = queue_with(tmp_path)
    (folder / "gw.sh").write_text(COUNTING)
    chown_or_skip(folder / "gw.sh", os.geteuid(), NOBODY)
    os.chmod(folder / "gw.sh", 0o664)
    shoal("work", str(folder), "--drain")
    assert ran(folder) == []
    assert "writable by group 65534" in rows(folder)["gw.sh"]["reason"]


@pytest.mark.parametrize("setting", ['trust = "everyone"\n', 'trust = "group"\n',
                                     'group = "no-such-group-xyz"\ntrust = "group"\n',
                                     'log_dirs = "relative/x"\n'])
def test_a_bad_trust_setting_is_one_line_naming_the_file(tmp_path: Path, setting: str) -> None:
    folder = queue_with(tmp_path, setting)
    done = shoal("status", str(folder), check=2)
    assert "queue.toml" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- logfile ------------------------------------------------------------------------------


def ini(logfile: str) -> str:
    return f"[control]\nexecutable = sh -c 'echo hello'\nlogfile = {logfile}\n"


@pytest.mark.parametrize("logfile", ["../../../escaped.log", "ABSOLUTE", ".shoal/done/x.json"])
def test_a_logfile_outside_the_queue_folder_is_refused_at_submit(tmp_path: Path,
                                                                 logfile: str) -> None:
    folder = queue_with(tmp_path)
    logfile = logfile.replace("ABSOLUTE", str(tmp_path / "escaped.log"))
    job = tmp_path / "job.ini"
    job.write_text(ini(logfile))
    done = shoal("submit", str(folder), str(job), check=2)
    assert f"{job}:3: logfile:" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not list(folder.glob("*.ini"))


def test_a_dropped_logfile_outside_fails_its_job_and_writes_nothing(tmp_path: Path) -> None:
    folder = queue_with(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (folder / "a.ini").write_text(ini("../victim.txt"))
    (folder / "b.ini").write_text(ini(str(victim)))
    (folder / "c.ini").write_text(ini("logs/c.out"))  # inside: fine
    (folder / "logs").mkdir()
    shoal("work", str(folder), "--drain")
    assert victim.read_text() == "keep me\n"
    found = rows(folder)
    assert found["c.ini"]["state"] == "done"
    assert (folder / "logs" / "c.out").read_text() == "hello\n"
    for name in ("a.ini", "b.ini"):
        assert found[name]["state"] == "failed"
        assert f"{name}:3: logfile:" in found[name]["reason"]


def test_log_dirs_setting_allows_a_logfile_there(tmp_path: Path) -> None:
    logs = tmp_path / "scratch"
    logs.mkdir()
    folder = queue_with(tmp_path, f'log_dirs = ["{logs}"]\n')
    (folder / "a.ini").write_text(ini(str(logs / "a.out")))
    (folder / "b.ini").write_text(ini(str(tmp_path / "b.out")))
    shoal("work", str(folder), "--drain")
    assert (logs / "a.out").read_text() == "hello\n"
    assert not (tmp_path / "b.out").exists()
    assert rows(folder)["b.ini"]["state"] == "failed"


def test_a_submitted_world_writable_file_is_copied_safe_and_runs(tmp_path: Path) -> None:
    folder = queue_with(tmp_path)
    source = tmp_path / "mine.sh"
    source.write_text(COUNTING)
    os.chmod(source, 0o666)  # a umask 000 user's file: the copy is ours alone
    shoal("submit", str(folder), str(source))
    assert oct((folder / "mine.sh").stat().st_mode & 0o777) == "0o644"
    shoal("work", str(folder), "--drain")
    assert ran(folder) == ["mine.sh"]


def test_a_sqlite_queue_refuses_a_file_another_user_owns(tmp_path: Path) -> None:
    """A queue that runs job files where they are (not copied) checks them the same way."""
    url = f"sqlite://{tmp_path / 'q.sqlite'}"
    for name in ("mine.sh", "theirs.sh"):
        (tmp_path / name).write_text(f"echo {name} >> {tmp_path / 'ran.txt'}\n")
    chown_or_skip(tmp_path / "theirs.sh", NOBODY)
    shoal("submit", url, str(tmp_path / "mine.sh"), str(tmp_path / "theirs.sh"))
    shoal("work", url, "--drain")
    assert ran(tmp_path) == ["mine.sh"]
    reason = rows_of(url)["theirs.sh"]["reason"]
    assert reason.startswith("refused: ") and "owned by uid 65534" in reason, reason


def test_a_folder_link_on_the_way_out_is_refused_too(tmp_path: Path) -> None:
    """`sub` -> a folder outside: `sub/x.sh` leaves the queue folder though x.sh itself
    is no link (a folder swapped for a link after the scan must not run what it leads to)."""
    folder = queue_with(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.sh").write_text(COUNTING)
    (folder / "sub").symlink_to(outside)
    with pytest.raises(JobRefused, match="leaves the queue folder"):
        check_job_file(folder, "sub/x.sh", Trust())
    (folder / "own").mkdir()
    (folder / "own" / "y.sh").write_text(COUNTING)
    check_job_file(folder, "own/y.sh", Trust())  # a real folder inside: fine


# -- what a job file's folder and command let others change --------------------------------


@pytest.mark.parametrize("mode,runs", [(0o777, False), (0o1777, True), (0o755, True)])
def test_a_job_file_others_could_swap_in_its_folder_is_refused(tmp_path: Path, mode: int,
                                                                runs: bool) -> None:
    """An others-writable folder without the sticky bit lets anyone replace your file
    between the check and the run: refused; with the sticky bit (as /tmp) it runs."""
    folder = queue_with(tmp_path)
    os.chmod(folder, mode)
    (folder / "mine.sh").write_text(COUNTING)
    shoal("work", str(folder), "--drain")
    assert ran(folder) == (["mine.sh"] if runs else [])
    row = rows(folder)["mine.sh"]
    if runs:
        assert row["state"] == "done"
    else:
        assert row["state"] == "failed"
        assert "writable by others without the sticky bit" in row["reason"], row
        assert str(folder) in row["reason"]


@pytest.mark.parametrize("how", ["theirs", "open", "mine"])
def test_a_job_file_running_someone_elses_script_is_refused(tmp_path: Path, how: str) -> None:
    """Your own .ini that runs `sh sim.step` (not a job file itself): sim.step is what
    runs, so it is checked too."""
    folder = queue_with(tmp_path)
    (folder / "sim.step").write_text(COUNTING)
    if how == "theirs":
        chown_or_skip(folder / "sim.step", NOBODY)
    elif how == "open":
        os.chmod(folder / "sim.step", 0o666)
    (folder / "job.ini").write_text("[control]\nexecutable = sh sim.step\ncwd = .\n")
    shoal("work", str(folder), "--drain")
    row = rows(folder)["job.ini"]
    if how == "mine":
        assert row["state"] == "done", row
        assert ran(folder) == ["job.ini"]
        return
    assert row["state"] == "failed"
    assert ran(folder) == []
    assert row["reason"].startswith("refused: job.ini: runs sim.step, which is"), row
    assert ("owned by uid 65534" if how == "theirs" else "writable by others") in row["reason"]
