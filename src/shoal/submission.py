"""Turning what a user typed (job files, a command template, a parameter table) into Jobs."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .defaults import JOBFILE_SUFFIXES
from .errors import UsageError
from .fsutil import create_exclusive
from .job import Job, content_id
from .jobfiles import JobFileSpec, check_job_files, is_job_file, load_job_file
from .queue.base import Queue
from .queue.folder import HIDDEN
from .queue.scheduling import check_after, find_cycle
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

    A table row's own scheduling columns win over `options`, its `after` adds to theirs;
    a row that waits for other rows is made after them, as its id holds theirs.
    """
    cwd = cwd or os.getcwd()
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    params_of = []
    for e in expanded:
        params = dict(e.params)
        key = (e.command, tuple(sorted(params.items())))
        if key in seen:
            params["#"] = str(e.seq)
        seen.add(key)
        params_of.append(params)
    by_seq = {e.seq: i for i, e in enumerate(expanded)}
    jobs: list[Job | None] = [None] * len(expanded)
    for i in _rows_in_order(expanded):
        e = expanded[i]
        mine = {**options, **{k: v for k, v in e.options.items() if k != "after_rows"}}
        after = [*options.get("after", ()), *e.options.get("after", ())]
        after += [_made(jobs[by_seq[seq]]).id for seq in e.options.get("after_rows", ())]
        if after:
            mine["after"] = tuple(dict.fromkeys(after))
        jobs[i] = Job.command_job(e.command, name=f"{e.seq}: {e.command}"[:80], cwd=cwd,
                                  params=params_of[i], **mine)
    return [_made(job) for job in jobs]


def _made(job: Job | None) -> Job:
    assert job is not None
    return job


def _rows_in_order(expanded: Sequence[Expanded]) -> list[int]:
    """Indices of `expanded`, each row after the rows it waits for (input order otherwise);
    UsageError naming the rows that wait for each other."""
    if not any(e.options.get("after_rows") for e in expanded):
        return list(range(len(expanded)))
    by_seq = {e.seq: i for i, e in enumerate(expanded)}
    edges = {e.seq: list(e.options.get("after_rows", ())) for e in expanded}
    cycle = find_cycle(edges)
    if cycle:
        rows = " -> ".join(str(seq) for seq in [*cycle, cycle[0]])
        raise UsageError(f"after: table rows wait for each other: {rows}")
    order: list[int] = []
    placed: set[int] = set()
    for e in expanded:  # depth first, iterative: a chain of 10^5 rows is fine
        stack = [e.seq]
        while stack:
            seq = stack[-1]
            if seq in placed:
                stack.pop()
                continue
            waiting = [dep for dep in edges[seq] if dep not in placed]
            if waiting:
                stack.extend(waiting)
                continue
            placed.add(seq)
            order.append(by_seq[seq])
            stack.pop()
    return order


def jobs_from_files(queue: Queue, paths: Sequence[str], **options: Any) -> list:
    """Jobs for job files; into a folder queue they are copied under a unique name.

    The copy keeps the file's name when it is free (or holds the same content), else
    gets NAME-HASH.EXT, so submitting the same file twice is one job and two files
    with the same name are two jobs. A file's own scheduling keys (priority, needs,
    requires) win over `options`; its `after` adds to theirs, each file it names being
    a job of this submission or one the queue holds already.
    """
    check_job_files(paths, queue.settings.interpreters,  # all of them, before any copy
                    log_dirs=queue.settings.trust.log_dirs,
                    copied_to=queue.settings.root if queue.keeps_job_files else None)
    sources = []
    for raw in paths:
        source = Path(raw)
        if not source.is_file():
            raise UsageError(f"{raw}: no such job file")
        if not is_job_file(source.name, queue.settings.interpreters):
            raise UsageError(f"{raw}: not a job file (known: {known_suffixes(queue)})")
        sources.append(source)
    specs = [_spec(queue, source) for source in sources]
    names = {os.path.abspath(source): _queue_name(queue, source, copy=True)
             for source in sources}  # planned: the copies are made once all is checked
    outside = {dep: _queue_name(queue, Path(dep), copy=False) for spec in specs if spec
               for dep in spec.after_files if dep not in names}
    held = queue.states([job_file_id(name) for name in outside.values() if name])
    jobs = []
    for raw, source, spec in zip(paths, sources, specs, strict=True):
        after = [*options.get("after", ()), *(spec.after_ids if spec else ())]
        for dep in spec.after_files if spec else ():
            name = names.get(dep) or outside[dep]
            if name is None or (dep in outside and job_file_id(name) not in held):
                raise UsageError(f"{raw}: after: {dep} is neither among the files submitted "
                                 "nor in the queue (submit it too)")
            after.append(job_file_id(name))
        mine = {**options, "after": tuple(dict.fromkeys(after))}
        if spec is not None:
            mine.update(spec.job_fields())
        name = names[os.path.abspath(source)]
        assert name is not None
        jobs.append(Job.file_job(name, **mine))
    check_after(jobs, lambda ids: set(queue.states(ids)))  # a copy is a drop-in: no stray
    if queue.keeps_job_files:
        for source in sources:
            if copy_into(queue.settings.root, source) != names[os.path.abspath(source)]:
                raise UsageError(f"{source}: another file took the name planned for its "
                                 "copy in the queue folder meanwhile; submit it again")
    return jobs


def job_file_id(name: str) -> str:
    """The id of the job a job file is in a queue, by its name there (Job.file_job)."""
    return content_id("file", name)


def _spec(queue: Queue, source: Path) -> JobFileSpec | None:
    """What an .ini/.toml file says (scripts say nothing of scheduling)."""
    if source.suffix.lower() not in JOBFILE_SUFFIXES:
        return None
    return load_job_file(source, interpreters=queue.settings.interpreters, worker_dir=".",
                         log_dirs=queue.settings.trust.log_dirs)


def _queue_name(queue: Queue, source: Path, *, copy: bool) -> str | None:
    """A job file's name in the queue: the one its copy into a folder queue will have
    (`copy`), or the one its copy already has there (None if it has none); its absolute
    path elsewhere."""
    if not queue.keeps_job_files:
        return str(source.absolute())
    if copy:
        return planned_name(queue.settings.root, source)
    return copied_name(queue.settings.root, source)


def known_suffixes(queue: Queue) -> str:
    return " ".join(sorted({*queue.settings.interpreters, ".ini", ".toml"}))


def _copy_names(source: Path, data: bytes) -> tuple[str, str]:
    """The names a job file's copy may have: its own, else NAME-HASH.EXT."""
    digest = hashlib.sha256(data).hexdigest()[:8]
    return source.name, f"{source.stem}-{digest}{source.suffix}"


def copied_name(folder: Path, source: Path) -> str | None:
    """The name of the copy of `source` already in the queue folder, or None."""
    if source.absolute().parent == folder:
        return source.name
    data = source.read_bytes()
    for name in _copy_names(source, data):
        target = folder / name
        if target.is_file() and target.read_bytes() == data:
            return name
    return None


def planned_name(folder: Path, source: Path) -> str:
    """The name `copy_into` will give the copy of `source` (nothing written)."""
    if source.absolute().parent == folder:
        return source.name
    data = source.read_bytes()
    for name in _copy_names(source, data):
        target = folder / name
        if not target.exists() or target.read_bytes() == data:
            return name
    raise UsageError(f"{source}: a different file named {source.name} and its hashed copy "
                     f"already exist in {folder}")


def copy_into(folder: Path, source: Path) -> str:
    """Copy a job file into the queue folder; return its name there."""
    data = source.read_bytes()
    if source.absolute().parent == folder:
        return source.name
    for name in _copy_names(source, data):
        target = folder / name
        if target.exists():
            if target.read_bytes() == data:
                return name
            continue
        if create_exclusive(target, data, folder / HIDDEN / "tmp"):
            # its mode, but writable by us only: a worker refuses what others may change
            os.chmod(target, stat.S_IMODE(source.stat().st_mode) & ~0o022)
            return name
        if target.read_bytes() == data:  # another submitter of the same file won
            return name
    raise UsageError(f"{source}: a different file named {source.name} and its hashed copy "
                     f"already exist in {folder}")


def scheduling_from_options(queue: Queue, *, after: Sequence[str] = (),
                            priority: str | None = None, cpus: str | None = None,
                            gpus: str | None = None, mem: str | None = None,
                            resources: Sequence[str] = (),
                            requires: Sequence[str] = ()) -> dict[str, Any]:
    """Job fields from `shoal submit`'s scheduling options, as typed; a bad value is a
    UsageError naming its option. `--after` takes what `shoal logs` takes (#N, an id, a
    name), each naming a job the queue holds."""
    from .errors import JobNotFound
    from .needs import needs_from, parse_priority, parse_resource, split_list
    from .views.lookup import resolve_jobs

    found: dict[str, Any] = {}
    if priority is not None:
        found["priority"] = parse_priority("--priority", priority)
    needs = needs_from(cpus, gpus, mem, [parse_resource("--resource", r) for r in resources],
                       where={"cpus": "--cpus", "gpus": "--gpus", "mem": "--mem"})
    if needs:
        found["needs"] = needs
    labels = [label for text in requires for label in split_list(text)]
    if labels:
        found["labels"] = tuple(dict.fromkeys(labels))
    if after:
        try:
            named = resolve_jobs(queue, after)
        except JobNotFound as exc:
            raise UsageError(f"--after: {exc}") from None
        found["after"] = tuple(dict.fromkeys(status.job.id for status in named))
    return found
