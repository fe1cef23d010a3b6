"""Turning files dropped into a folder into jobs.

A script, `.ini` or `.toml` file that appears in a queue's folder is a job whose
identity is its name there (`Job.file_job`), so dropping the same name twice, or
two workers scanning at once, submits it once. Which names count is
`jobfiles.is_job_file`: half-written copies, editor backups, hidden files and our
own logs never do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .fsutil import list_names
from .job import Job
from .jobfiles import is_job_file


class DropIns:
    """The job files in `folder` not seen by this scanner before."""

    def __init__(self, folder: Path, interpreters: Mapping[str, Sequence[str]]) -> None:
        self.folder = folder
        self.interpreters = interpreters
        self._seen: set[str] = set()

    def scan(self) -> list[Job]:
        """Jobs for the job files that appeared since the last scan (a listing of the
        folder as the caller's mount shows it: make that listing fresh first)."""
        fresh = []
        for name in list_names(self.folder):
            if name in self._seen or not is_job_file(name, self.interpreters):
                continue
            if (self.folder / name).is_file():
                self._seen.add(name)
                fresh.append(Job.file_job(name))
        return fresh
