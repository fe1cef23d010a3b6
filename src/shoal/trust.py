"""Which job files a worker runs, and where their logs may go.

On a shared folder anyone who may write there can drop a job file, and the worker runs
it as itself (root, on some clusters). So by default (`trust = "owner"`) a worker runs a
job file only if it is owned by the worker's user (or by root, like sshd's StrictModes:
root could change it anyway) and nobody else may write it: not writable by others, and
group-writable only for the user's private group (a group of that name with no other
members). `trust = "group"` also trusts files whose group is the queue's group (`group`
in the settings, else the group of a setgid queue folder), which may be group-writable
too; `trust = "any"` trusts every owner and mode. A file is also refused when a folder it
lies in lets others swap it (writable by others, or by an untrusted group, without the sticky
bit), and when its command runs a file of the queue folder that would be refused (`sim.py`
in `python3 sim.py`). Whatever the setting, a job file of the
queue folder never runs through a link that leaves it (`x.sh -> /etc/passwd`), and an
.ini/.toml file's `logfile` stays in the job file's folder or a `log_dirs` entry.

A file refused is a failed job whose reason starts "refused: " (`JobRefused`); the
others run. The check is made when the worker is about to run the file: what counts is
who owns it then.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import JobRefused, UsageError

TRUST_LEVELS = ("owner", "group", "any")
SEE = "see README 'Security'"
QUEUE_STATE = ".shoal"  # a folder queue's state (queue/folder/layout.HIDDEN): never a log


@dataclass(frozen=True)
class Trust:
    """A queue's trust settings; see the module docstring."""

    #: whose job files run: "owner" (yours), "group" (also the queue group's), "any"
    level: str = "owner"
    #: the queue's group (a gid) that `level = "group"` trusts
    group: int | None = None
    #: absolute folders a job file's `logfile` may name besides the job file's own
    log_dirs: tuple[str, ...] = ()


def trust_from_config(config: Mapping[str, Any], folder: Path, where: str) -> Trust:
    """The Trust a queue's settings (`trust`, `group`, `log_dirs`) say; UsageError naming
    `where` (the settings file) for a bad value."""
    level = config.get("trust", "owner")
    if level not in TRUST_LEVELS:
        raise UsageError(f"{where}: trust {level!r}: give one of "
                         f"{', '.join(repr(t) for t in TRUST_LEVELS)}")
    group = _group_id(config["group"], where) if "group" in config else None
    if level == "group" and group is None:
        group = _setgid_group(folder)
        if group is None:
            raise UsageError(f'{where}: trust = "group" needs group = "NAME" (or a setgid '
                             f"queue folder: chmod g+s {folder})")
    return Trust(level, group, _log_dirs(config.get("log_dirs", []), where))


def _group_id(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        try:
            return grp.getgrnam(value).gr_gid
        except KeyError:
            pass
    raise UsageError(f"{where}: group {value!r}: no such group on this machine")


def _setgid_group(folder: Path) -> int | None:
    try:
        found = os.stat(folder)
    except OSError:
        return None
    return found.st_gid if found.st_mode & stat.S_ISGID else None


def _log_dirs(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and os.path.isabs(v)
                                              for v in value):
        raise UsageError(f"{where}: log_dirs {value!r} must be a list of absolute folders, "
                         'e.g. ["/scratch/logs"]')
    return tuple(os.path.realpath(v) for v in value)


# -- job files ---------------------------------------------------------------------------


def check_job_file(root: Path, name: str, trust: Trust) -> None:
    """Raise JobRefused unless a worker may run job file `name` (relative: in the queue
    folder `root`; absolute: a file the submitter named) as `trust` says."""
    path = os.path.join(root, name)
    try:
        link = os.lstat(path)
        target = os.stat(path)
    except OSError:
        return  # missing or a dangling link: reading it says so (malformed)
    outside = link_out(root, name)  # the file or a folder on its way may be the link
    if outside:
        raise JobRefused(f"{name}: a link to {outside}, which leaves the queue folder; {SEE}")
    if trust.level == "any":
        return
    _check_owner_and_mode(name, link, target, trust)
    _check_folders(root, name, trust)


def check_named_files(root: Path, name: str, command: Sequence[str], cwd: str,
                      trust: Trust) -> None:
    """Raise JobRefused if job file `name`'s command names a file inside the queue folder
    (`sim.py` in `python3 sim.py`, `./tool`) that the worker would not run as a job file:
    the job file is yours, but what it runs could still be someone else's."""
    if trust.level == "any":
        return
    base = os.path.realpath(root)
    for word in command:
        if not word or word.startswith("-"):
            continue
        path = os.path.realpath(os.path.join(cwd, word))
        if not _inside(path, base) or path == base:
            continue
        try:
            link = os.lstat(os.path.join(cwd, word))
            target = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISREG(target.st_mode):
            continue
        named = os.path.relpath(path, base)
        _check_owner_and_mode(f"{name}: runs {named}, which is", link, target, trust)
        _check_folders(root, named, trust)


def _check_owner_and_mode(name: str, link: os.stat_result, target: os.stat_result,
                          trust: Trust) -> None:
    for found in (link, target) if stat.S_ISLNK(link.st_mode) else (target,):
        if not _trusted_owner(found, trust):
            raise JobRefused(f"{name}: owned by {_user(found.st_uid)}, not you; {SEE}")
    if target.st_mode & stat.S_IWOTH:
        raise JobRefused(f"{name}: writable by others (mode {stat.S_IMODE(target.st_mode):04o}"
                         f"); {SEE}")
    if target.st_mode & stat.S_IWGRP and not _trusted_group(target.st_gid, trust):
        raise JobRefused(f"{name}: writable by group {_group(target.st_gid)}, not the "
                         f"queue's group; {SEE}")


def _check_folders(root: Path, name: str, trust: Trust) -> None:
    """Refuse a file whose folder (any folder from it up to the queue folder; for an
    absolute name, its own folder) lets others replace it: writable by others, or by a
    group that is not trusted, without the sticky bit (as sshd's StrictModes). The check
    of the file itself would be worthless there: it could be swapped after it. The group
    of a setgid (group-shared) queue folder counts as trusted here: its members may write
    the queue's state anyway."""
    base = os.path.realpath(root)
    shared = _setgid_group(Path(base))
    folder = os.path.dirname(os.path.realpath(os.path.join(root, name)))
    while True:
        try:
            found = os.stat(folder)
        except OSError:
            return
        if not found.st_mode & stat.S_ISVTX:
            mode = stat.S_IMODE(found.st_mode)
            if found.st_mode & stat.S_IWOTH:
                raise JobRefused(f"{name}: its folder {folder} is writable by others without "
                                 f"the sticky bit (mode {mode:04o}); {SEE}")
            if (found.st_mode & stat.S_IWGRP and found.st_gid != shared
                    and not _trusted_group(found.st_gid, trust)):
                raise JobRefused(f"{name}: its folder {folder} is writable by group "
                                 f"{_group(found.st_gid)}, not the queue's group (mode "
                                 f"{mode:04o}); {SEE}")
        if os.path.isabs(name) or not _inside(folder, base) or folder == base:
            return
        folder = os.path.dirname(folder)


def link_out(root: Path, name: str) -> str | None:
    """Where job file `name` of queue folder `root` leads if that is outside the folder
    (a link out), else None; None for an absolute name (the submitter named it)."""
    if os.path.isabs(name):
        return None
    real = os.path.realpath(os.path.join(root, name))
    return None if _inside(real, os.path.realpath(root)) else real


def _trusted_owner(found: os.stat_result, trust: Trust) -> bool:
    if found.st_uid in (os.geteuid(), 0):
        return True
    return trust.level == "group" and found.st_gid == trust.group


def _trusted_group(gid: int, trust: Trust) -> bool:
    return (trust.level == "group" and gid == trust.group) or gid == _private_group(
        os.geteuid())


@lru_cache(maxsize=4)
def _private_group(uid: int) -> int | None:
    """The user's own group (same name, no other members), where group-writable files
    are as safe as the user's own; None if the user has none."""
    try:
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(user.pw_gid)
    except KeyError:
        return None
    if group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}:
        return group.gr_gid
    return None


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"{gid} ({grp.getgrgid(gid).gr_name})"
    except KeyError:
        return str(gid)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


# -- logs ----------------------------------------------------------------------------------


def log_path_problem(log: str, folder: Path, log_dirs: Sequence[str]) -> str | None:
    """Why a job file in `folder` may not name `log` (absolute) as its log, or None: it
    must stay in that folder (not in its queue state) or in one of `log_dirs`."""
    real, base = os.path.realpath(log), os.path.realpath(folder)
    if _inside(real, base) and not _inside(real, os.path.join(base, QUEUE_STATE)):
        return None
    if any(_inside(real, allowed) for allowed in log_dirs):
        return None
    return (f"{log} is outside the job file's folder (allowed there, or in the queue's "
            f"log_dirs); {SEE}")
