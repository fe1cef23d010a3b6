"""Turning files dropped into a folder into jobs.

A script, `.ini` or `.toml` file that appears in a queue's folder is a job whose
identity is its name there (`Job.file_job`), so dropping the same name twice, or
two workers scanning at once, submits it once. Which names count is
`jobfiles.is_job_file`: half-written copies, editor backups, hidden files and our
own logs never do.

A job file with its log beside it is done (`queue.files.log_names`: shoal's
NAME.EXT.log, the configured name, and the old job-folder tools' NAME.log), so a
folder that older tools or an earlier queue worked on keeps its meaning: a scan does
not submit it. A log that disappears (the user deleted it) is reported too, so the
queue can run that job again (`Scan.unlogged`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import defaults
from .fsutil import list_names
from .job import Job
from .jobfiles import is_job_file
from .queue.files import log_names

#: what a scanner knows of a job file it has seen
WAITING = "waiting"  # no log beside it: to run, running, failed, or done with its log gone
LOGGED = "logged"  # its log is beside it: done
ELSEWHERE = "elsewhere"  # done, with its log elsewhere (a name that was taken, `logfile`)


@dataclass
class Scan:
    """What one look at the folder found."""

    #: job files seen for the first time, without a log: to submit
    fresh: list[Job] = field(default_factory=list)
    #: job files whose log was there at the last look and is gone now: to submit (a
    #: file skipped for an old-style log) or to run again (a done one)
    unlogged: list[Job] = field(default_factory=list)
    #: every job file without a log beside it, by job id: the queue looks for done ones
    #: among them (a log placed and deleted between two looks is seen that way)
    waiting: dict[str, Job] = field(default_factory=dict)


class DropIns:
    """The job files in `folder` not seen by this scanner before, and those whose log
    went away since the last scan."""

    def __init__(self, folder: Path, interpreters: Mapping[str, Sequence[str]],
                 log_name: str = defaults.LOG_NAME) -> None:
        self.folder = folder
        self.interpreters = interpreters
        self.log_name = log_name
        self._seen: dict[str, str] = {}  # job file name -> WAITING, LOGGED or ELSEWHERE
        self._jobs: dict[str, Job] = {}  # job file name -> its job (ids cost a hash)

    def logged(self, name: str, names: set[str] | None = None) -> bool:
        """True if job file `name` has a log beside it (in `names`, a listing, if given)."""
        candidates = log_names(self.log_name, name)
        if names is not None:
            return any(candidate in names for candidate in candidates)
        return any((self.folder / candidate).exists() for candidate in candidates)

    def mark(self, name: str, state: str) -> None:
        """What the queue learnt of a job file (LOGGED, ELSEWHERE) since the scan."""
        if name in self._seen:
            self._seen[name] = state

    def scan(self) -> Scan:
        """One listing of the folder as the caller's mount shows it (make it fresh
        first); names that left the folder are forgotten, so a file dropped again under
        an old name is looked at again."""
        names = set(list_names(self.folder))
        found = Scan()
        for name in [n for n in self._seen if n not in names]:
            del self._seen[name]
            self._jobs.pop(name, None)
        for name in names:
            if not is_job_file(name, self.interpreters):
                continue
            logged = self.logged(name, names)
            before = self._seen.get(name)
            if before is None and not (self.folder / name).is_file():
                continue
            job = self._jobs.get(name) or self._jobs.setdefault(name, Job.file_job(name))
            if logged:
                state = LOGGED
            elif before == ELSEWHERE:
                state = ELSEWHERE
            else:
                state = WAITING
                if before is None:
                    found.fresh.append(job)
                elif before == LOGGED:
                    found.unlogged.append(job)
                found.waiting[job.id] = job
            self._seen[name] = state
        return found
