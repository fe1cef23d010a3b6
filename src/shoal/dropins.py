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

An .ini/.toml job file's scheduling keys (priority, needs, requires, and `after` by file
name) go on the job it submits. An `after` names only files of this folder: one seen
without a log waits (it is in the queue, or in the same scan), one with its log is done
(no wait). A fresh file that cannot be read, or whose `after` names a file this scanner
has not seen, is looked at again by the next scans for DEFER_S after it changed (the file
it names may be being copied in); then it is submitted plain: the worker that claims it
fails it with the reason (malformed), and the others run. Ids in a drop-in's `after` are
not looked up (a scan cannot tell whether the queue holds them; a submission naming an
unknown id would be refused whole): name files.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import defaults
from .errors import JobRefused, MalformedJob
from .fsutil import list_names
from .job import Job
from .jobfiles import is_job_file, load_job_file
from .queue.files import log_names
from .trust import link_out

# A line that may set a scheduling key (jobfiles.py reads it): a file without one is a
# plain job, known after one read rather than a parse (a scan of 10^4 fresh files: 1 s,
# not 20).
_SCHEDULING_KEY = re.compile(
    rb"(?im)^[ \t]*[\[\"']?[ \t]*(control\.)?(after|priority|cpus|gpus|mem|requires|resources?)\b")

#: how long a fresh job file whose `after` names a file not seen yet waits for it
DEFER_S = 30.0

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
    #: among them (a log placed and deleted between two looks is seen that way); the
    #: scanner's own, read-only
    waiting: dict[str, Job] = field(default_factory=dict)


class DropIns:
    """The job files in `folder` not seen by this scanner before, and those whose log
    went away since the last scan.

    A scan costs a listing and set differences with the last one; only names that came
    or went are looked at one by one, so a folder of 10^5 finished jobs is cheap to watch.
    """

    def __init__(self, folder: Path, interpreters: Mapping[str, Sequence[str]],
                 log_name: str = defaults.LOG_NAME, log_dirs: Sequence[str] = ()) -> None:
        self.folder = folder
        self.interpreters = interpreters
        self.log_name = log_name
        self.log_dirs = tuple(log_dirs)  # where a job file's `logfile` may be (trust.py)
        self._listed: set[str] = set()  # the names of the last listing
        self._logs: dict[str, tuple[str, ...]] = {}  # job file -> the names of its log
        self._owners: dict[str, list[str]] = {}  # a log's name -> job files it may be of
        self._state: dict[str, str] = {}  # job file -> WAITING, LOGGED or ELSEWHERE
        self._jobs: dict[str, Job] = {}  # job file -> its job, made when first needed
        self._waiting: dict[str, Job] = {}  # job id -> job, of the WAITING job files

    def logged(self, name: str) -> bool:
        """True if job file `name` has a log beside it now (a stat per name)."""
        candidates = self._logs.get(name) or log_names(self.log_name, name)
        return any((self.folder / candidate).exists() for candidate in candidates)

    def mark(self, name: str, state: str) -> None:
        """What the queue learnt of a job file (LOGGED, ELSEWHERE) since the scan."""
        if name in self._state:
            self._state[name] = state
            if state != WAITING:
                self._waiting.pop(self._job(name).id, None)

    def scan(self) -> Scan:
        """One listing of the folder as the caller's mount shows it (make it fresh
        first); names that left the folder are forgotten, so a file dropped again under
        an old name is looked at again."""
        names = set(list_names(self.folder))
        added, removed = names - self._listed, self._listed - names
        self._listed = names
        touched = set()  # job files whose log may have come or gone
        for name in removed:
            if name in self._logs:
                self._forget(name)
            touched.update(self._owners.get(name, ()))
        for name in added:
            if is_job_file(name, self.interpreters):
                self._add(name)
                touched.add(name)
            touched.update(self._owners.get(name, ()))
        found = Scan(waiting=self._waiting)
        for name in touched:
            if name in self._logs:
                self._look_at(name, any(log in names for log in self._logs[name]), found)
        fresh = []
        for job in found.fresh:
            scheduled = self._scheduled(job)
            if scheduled is None:  # it names a file not here yet: looked at next scan
                self._forget(job.path or "")
                self._listed.discard(job.path or "")
            else:
                fresh.append(scheduled)
        found.fresh = fresh
        found.unlogged = [self._scheduled(job, defer=False) or job for job in found.unlogged]
        return found

    def _scheduled(self, job: Job, *, defer: bool = True) -> Job | None:
        """`job` with what its file says of scheduling (module docstring); as it is if the
        file says nothing or cannot be read. None (with `defer`) while a young file names
        an `after` file this scanner has not seen: it may be being copied in just now, and
        a job submitted without that dependency would not wait for it."""
        name = job.path or ""
        if (os.path.splitext(name)[1].lower() not in defaults.JOBFILE_SUFFIXES
                or link_out(self.folder, name)):  # a link out is never read: its worker
            return job  # refuses it
        try:  # one read; the full parse only for a file that names a scheduling key
            with open(self.folder / name, "rb") as handle:
                if not _SCHEDULING_KEY.search(handle.read()):
                    return job
        except OSError:
            return job
        try:
            spec = load_job_file(self.folder / name, interpreters=self.interpreters,
                                 worker_dir=self.folder, log_dirs=self.log_dirs)
        except JobRefused:  # at once: its worker fails it, saying why
            return job
        except MalformedJob:
            return None if defer and self._young(name) else job
        after = []
        for path in spec.after_files:
            dep = os.path.relpath(path, self.folder)
            if dep not in self._state and defer and self._young(name):
                return None
            if self._state.get(dep) == WAITING:
                after.append(self._job(dep).id)
        return Job.file_job(name, after=after, **spec.job_fields())

    def _job(self, name: str) -> Job:
        job = self._jobs.get(name)
        if job is None:
            job = self._jobs[name] = Job.file_job(name)
        return job

    def _young(self, name: str) -> bool:
        """Whether job file `name` changed less than DEFER_S ago (a file that still names
        what is not there after that is submitted: its worker fails it, saying why)."""
        try:
            return time.time() - os.stat(self.folder / name).st_mtime < DEFER_S
        except OSError:
            return False

    def _add(self, name: str) -> None:
        self._logs[name] = log_names(self.log_name, name)
        for log in self._logs[name]:
            self._owners.setdefault(log, []).append(name)

    def _forget(self, name: str) -> None:
        for log in self._logs.pop(name, ()):
            owners = self._owners.get(log, [])
            if name in owners:
                owners.remove(name)
            if not owners:
                self._owners.pop(log, None)
        self._state.pop(name, None)
        job = self._jobs.pop(name, None)
        if job is not None:
            self._waiting.pop(job.id, None)

    def _look_at(self, name: str, logged: bool, found: Scan) -> None:
        """Move a job file on from what the last scan knew, given whether its log is there."""
        before = self._state.get(name)
        if logged:
            self._state[name] = LOGGED
            if before == WAITING:
                self._waiting.pop(self._job(name).id, None)
            return
        if before in (ELSEWHERE, WAITING):
            return
        if before is None:
            if not os.path.isfile(os.path.join(self.folder, name)):  # e.g. a folder x.py
                self._forget(name)
                return
            found.fresh.append(self._job(name))
        else:  # LOGGED: its log is gone
            found.unlogged.append(self._job(name))
        self._state[name] = WAITING
        self._waiting[self._job(name).id] = self._job(name)
