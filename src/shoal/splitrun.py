"""Running one machine's share of a static split, writing its results file, merging them.

Each machine runs its share on a local folder queue (`.shoal-split-NAME`), so a rerun
skips what is done, and writes `results-NAME.csv`: job-splitter's timing columns first,
then shoal's, and on every row the plan's checksum, the job's index in the job list and
the plan's size, so `merge` can check that all files come from one plan and say which
jobs are missing without being given the job list again.
"""

from __future__ import annotations

import csv
import hashlib
import json
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .context import job_seed
from .errors import UsageError
from .job import Job, Result, State, content_id
from .queue import Queue, open_queue
from .split import Machine, Plan, load_machines, make_plan, share_for

SPLITTER_COLUMNS = ("Run Start Time", "Job Running Time", "Job Start Time")
COLUMNS = (*SPLITTER_COLUMNS, "plan", "index", "plan_jobs", "machine", "id", "name", "params",
           "state", "exit_code", "attempts", "host", "duration_s", "log", "reason", "value")


def choose_machine(machines: Sequence[Machine], name: str | None) -> str:
    """The machine named, or the one whose name is this host's name."""
    known = [m.name for m in machines]
    if name is None:
        host = socket.gethostname()
        for candidate in (host, host.split(".")[0]):
            if candidate in known:
                return candidate
        raise UsageError(f"this host ({host}) is not in the machines file; give --machine "
                         f"(one of: {', '.join(known)})")
    if name not in known:
        raise UsageError(f"unknown machine {name!r} (known: {', '.join(known)})")
    return name


def job_key(job: Job, root: Path | None = None) -> str:
    """What identifies a job in the plan on every machine: its command and parameters
    (not its working directory), and for a job file its name and bytes (paths differ
    between machines, contents do not)."""
    if job.path is None:
        return content_id("split", job.command, dict(job.env), dict(job.params))
    path = Path(job.path) if root is None else root / job.path
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"file:{path.name}:{digest}"


def seeded(jobs: Sequence[Job], root: Path | None = None) -> list[Job]:
    """Jobs whose shoal.random() seed comes from their plan key, not their id (which holds
    the working directory): the same numbers on every machine."""
    return [replace(job, meta={**job.meta, "seed": job_seed(0, job_key(job, root))})
            for job in jobs]


def plan_for(jobs: Sequence[Job], machines_file: str | Path, config: str | Path | None = None,
             root: Path | None = None) -> tuple[Plan, list[Machine]]:
    machines = load_machines(machines_file)
    config_bytes = Path(config).read_bytes() if config else b""
    return make_plan([job_key(job, root) for job in jobs], machines, config_bytes), machines


def _stamp(epoch: float | None) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch).isoformat(sep=" ")


def _row(result: Result, plan: Plan, index: int, machine: str, run_started: float) -> dict:
    duration = result.duration_s
    return {
        "Run Start Time": _stamp(run_started), "Job Running Time": "" if duration is None
        else f"{duration:.3f}", "Job Start Time": _stamp(result.started),
        "plan": plan.checksum, "index": index, "plan_jobs": len(plan.order), "machine": machine,
        "id": result.job_id, "name": result.name, "params": json.dumps(dict(result.params)),
        "state": result.state.value, "exit_code": result.exit_code, "attempts": result.attempt,
        "host": result.host, "duration_s": "" if duration is None else f"{duration:.3f}",
        "log": result.log or "", "reason": result.reason,
        "value": "" if result.value is None else result.value,
    }


def run_share(jobs: Sequence[Job], plan: Plan, machine: str, *, slots: int,
              workdir: Path, config: str | Path | None = None,
              runner: Callable[[Queue, list[Job], int], None]) -> Path:
    """Run this machine's share on a local queue and write results-MACHINE.csv."""
    import time

    queue = open_queue(f"dir://{workdir / f'.shoal-split-{machine}'}")
    if config:
        queue.files.set_config_file(config)
    mine = share_for(plan, machine)
    started = time.time()
    runner(queue, [jobs[i] for i in mine], slots)
    results = {r.job_id: r for r in queue.results()}
    path = workdir / f"results-{machine}.csv"
    _write_rows(path, plan, machine, started,
                [(i, results[jobs[i].id]) for i in mine if jobs[i].id in results])
    return path


def merge(files: Iterable[str | Path], output: str | Path) -> tuple[int, list[int], list[int]]:
    """Combine results files of one plan into `output` (rows in job-list order).

    Returns (rows written, indices missing, indices that failed); UsageError if the
    files come from different plans.
    """
    rows: dict[int, dict[str, str]] = {}
    plans: set[tuple[str, str]] = set()
    for file in files:
        with open(file, newline="") as handle:
            for row in csv.DictReader(handle):
                plans.add((row["plan"], row["plan_jobs"]))
                rows[int(row["index"])] = row
    if not plans:
        raise UsageError("no results in the given files")
    if len(plans) > 1:
        raise UsageError("the files come from different plans (checksums "
                         f"{', '.join(sorted(p for p, _ in plans))}): same job list, machines "
                         "file and config on every machine?")
    total = int(next(iter(plans))[1])
    with open(output, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for index in sorted(rows):
            writer.writerow(rows[index])
    missing = [i for i in range(total) if i not in rows]
    failed = [i for i, row in rows.items() if row["state"] != State.DONE.value]
    return len(rows), missing, sorted(failed)


def split_map(fn: Callable[..., Any], iterable: Iterable[Any], *,
              machines: str | Path | Sequence[Machine], machine: str | None = None,
              config: str | Path | None = None, workers: int | None = None,
              seed: int | str = 0,
              results_dir: str | Path | None = ".") -> list[tuple[int, Any]]:
    """Run this machine's share of `map(fn, iterable)`; return (index, result) pairs in
    input order, and write results-MACHINE.csv into `results_dir` (None: no file) for
    `shoal split merge`; its `value` column holds each call's returned value (shortened).

    Every machine computes the same plan from the items (by index and repr), the machines
    and the config, so together they cover the list exactly once with no communication.
    shoal.random() in an item's call is seeded from (seed, the item's key), the same on
    whichever machine runs it.
    """
    from .executor import Executor

    items = list(iterable)
    machine_list = (load_machines(machines) if isinstance(machines, str | Path)
                    else sorted(machines, key=lambda m: m.name))
    keys = [f"{i}:{item!r}" for i, item in enumerate(items)]
    config_bytes = Path(config).read_bytes() if config else b""
    plan = make_plan(keys, machine_list, config_bytes)
    name = choose_machine(machine_list, machine)
    cores = next(m.cores for m in machine_list if m.name == name)
    mine = share_for(plan, name)
    import time

    started = time.time()
    with Executor(workers=workers or cores, seed=seed, config=config) as executor:
        futures = [(i, executor._submit(fn, (items[i],), {}, executor.call_options,
                                        seed_key=f"split-{keys[i]}")) for i in sorted(mine)]
        pairs = [(i, future.result()) for i, future in futures]
        if results_dir is not None:
            recorded = {r.job_id: r for r in executor.results()}
            _write_rows(Path(results_dir) / f"results-{name}.csv", plan, name, started,
                        [(i, recorded[f.job_id]) for i, f in futures if f.job_id in recorded])
    return pairs


def _write_rows(path: Path, plan: Plan, machine: str, started: float,
                rows: list[tuple[int, Result]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for index, result in rows:
            writer.writerow(_row(result, plan, index, machine, started))
