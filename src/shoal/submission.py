"""Turning what a user typed (job files, a command template, a parameter table) into Jobs."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError
from .fsutil import create_exclusive
from .jobfiles import check_job_files, is_job_file
from .queue.base import Queue
from .queue.folder import HIDDEN
from .templates import Expanded, check_table_alone, has_inputs


def is_template(words: Sequence[str]) -> bool:
    """True when the words carry GNU parallel input markers (`:::`, `::::`...)."""
    return has_inputs(words)


def jobs_from_template(words: Sequence[str], *, table: str | None = None,
                       cwd: str | None = None, **options: Any) -> list:
    """Jobs from `cmd ::: args` words, or from a template plus a CSV/JSON table."""
    from .templates import expand_command_line, expand_table

    cwd = cwd or os.getcwd()
    if table is not None:
        check_table_alone(words)
        expanded = expand_table(list(words), Path(table))
    else:
        expanded = expand_command_line(list(words), base_dir=Path(cwd))
    return jobs_from_expanded(expanded, cwd=cwd, **options)


def jobs_from_expanded(expanded: Sequence[Expanded], *, cwd: str | None = None,
                       **options: Any) -> list:
    """One Job per expanded command line, in input order.

    A job's id is its content, so a command line that comes again with the same arguments
    (`echo ::: a a`) would be one job; GNU parallel runs it twice, so the repeat gets its
    sequence number as the parameter `#` (stable across reruns of the same input).
    """
    from .job import Job

    cwd = cwd or os.getcwd()
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    jobs = []
    for e in expanded:
        params = dict(e.params)
        key = (e.command, tuple(sorted(params.items())))
        if key in seen:
            params["#"] = str(e.seq)
        seen.add(key)
        jobs.append(Job.command_job(e.command, name=f"{e.seq}: {e.command}"[:80], cwd=cwd,
                                    params=params, **options))
    return jobs


def jobs_from_files(queue: Queue, paths: Sequence[str], **options: Any) -> list:
    """Jobs for job files; into a folder queue they are copied under a unique name.

    The copy keeps the file's name when it is free (or holds the same content), else
    gets NAME-HASH.EXT, so submitting the same file twice is one job and two files
    with the same name are two jobs.
    """
    from .job import Job

    check_job_files(paths, queue.settings.interpreters)  # all of them, before any copy
    jobs = []
    for raw in paths:
        source = Path(raw)
        if not source.is_file():
            raise UsageError(f"{raw}: no such job file")
        if not is_job_file(source.name, queue.settings.interpreters):
            raise UsageError(f"{raw}: not a job file (known: {known_suffixes(queue)})")
        if queue.keeps_job_files:
            name = copy_into(queue.settings.root, source)
            jobs.append(Job.file_job(name, **options))
        else:
            jobs.append(Job.file_job(str(source.absolute()), **options))
    return jobs


def known_suffixes(queue: Queue) -> str:
    return " ".join(sorted({*queue.settings.interpreters, ".ini", ".toml"}))


def copy_into(folder: Path, source: Path) -> str:
    """Copy a job file into the queue folder; return its name there."""
    data = source.read_bytes()
    if source.absolute().parent == folder:
        return source.name
    digest = hashlib.sha256(data).hexdigest()[:8]
    for name in (source.name, f"{source.stem}-{digest}{source.suffix}"):
        target = folder / name
        if target.exists():
            if target.read_bytes() == data:
                return name
            continue
        if create_exclusive(target, data, folder / HIDDEN / "tmp"):
            shutil.copymode(source, target)
            return name
        if target.read_bytes() == data:  # another submitter of the same file won
            return name
    raise UsageError(f"{source}: a different file named {source.name} and its hashed copy "
                     f"already exist in {folder}")
