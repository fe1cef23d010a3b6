"""The rules every backend's claim follows for dependencies, resources and priorities.

A job's scheduling fields (`Job.priority`, `after`, `needs`, `labels`) are read here and
nowhere else in the queue layer, so the five backends agree by construction:

- order: higher `priority` first; within a priority, the lower *rank* first. A job's rank
  is its `seq` (input order), or a negative number when `retry(first=True)` put it back,
  so retried jobs go before every job never run of the same priority;
- dependencies: a job whose `after` jobs are not all done is WAITING, not claimable; when
  the last one is done it becomes PENDING; when one fails or is cancelled, the job ends
  FAILED (or CANCELLED) with `dependency_reason`, without running, and so do its own
  dependants. Ids must exist (in the queue or the same submission) and form no cycle
  (`check_after`);
- resources: a claim carries the worker's free `Capacity`; a job is handed out only if
  its `needs` fit (and its `labels` are the worker's), each claimed job taking its share
  before the next is chosen. A job with no `cpus` need takes one cpu: a worker's cpus are
  its slots.

Backends keep jobs of the same *lane* (`lane_of`: priority, needs, labels) together, so a
claim looks at a few lanes' heads instead of every pending job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import UsageError
from ..job import Job, Result, State

CPUS = "cpus"
GPUS = "gpus"
MEM = "mem"


class DependencyError(UsageError):
    """A submission names jobs that do not exist, or jobs that wait for each other."""


def needs_of(job: Job) -> dict[str, float]:
    """What a job takes from a worker while it runs: its `needs`, one cpu if not said."""
    needs = dict(job.needs)
    needs.setdefault(CPUS, 1)
    return needs


@dataclass(frozen=True)
class Capacity:
    """What a worker can still give: free amounts of each resource, and its labels.

    A resource the worker does not list counts as 0: a job asking for `license=1` never
    goes to a worker without licences. (A claim without a capacity, None, takes any job.)"""

    free: Mapping[str, float] = field(default_factory=dict)
    labels: frozenset[str] = frozenset()

    def fits(self, job: Job) -> bool:
        if job.labels and not self.labels.issuperset(job.labels):
            return False
        free = self.free
        return all(amount <= free.get(name, 0) for name, amount in needs_of(job).items())

    def minus(self, job: Job) -> Capacity:
        """What is left once `job` runs here."""
        free = dict(self.free)
        for name, amount in needs_of(job).items():
            free[name] = free.get(name, 0) - amount
        return Capacity(free, self.labels)

    def to_dict(self) -> dict:
        return {"free": dict(self.free), "labels": sorted(self.labels)}

    @classmethod
    def from_dict(cls, data: Mapping | None) -> Capacity | None:
        if data is None:
            return None
        return cls(dict(data.get("free", {})), frozenset(data.get("labels", ())))


def fits(capacity: Capacity | None, job: Job) -> bool:
    """Whether a claim with `capacity` may take `job` (None: any job fits)."""
    return capacity is None or capacity.fits(job)


def after_taking(capacity: Capacity | None, job: Job) -> Capacity | None:
    return None if capacity is None else capacity.minus(job)


def lane_of(job: Job) -> str:
    """A short stable name for the jobs that schedule alike (same priority, needs and
    labels): backends keep one ordered pending list per lane. Readable for the common
    case (`p0`), a digest of the needs otherwise."""
    if not job.needs and not job.labels:
        return f"p{job.priority}"
    shape = json.dumps([dict(sorted(job.needs.items())), sorted(job.labels)],
                       separators=(",", ":"))
    return f"p{job.priority}-{hashlib.sha256(shape.encode()).hexdigest()[:12]}"


#: how far before its seq `retry(first=True)` ranks a job: before every job never run
FIRST = 2 ** 40


def retry_rank(seq: int, first: bool) -> int:
    """The rank a retried job goes back at: its seq, or before every never-run job."""
    return seq - FIRST if first and seq else seq


def claim_key(priority: int, rank: float) -> tuple[int, float]:
    """Sort key of a pending job: the smallest is claimed first."""
    return (-priority, rank)


def check_after(jobs: Iterable[Job], known: Callable[[list[str]], set[str]]) -> None:
    """Refuse a submission whose jobs name unknown ids in `after` or wait in a cycle.

    `known(ids)` answers which of `ids` the queue already holds. Only the new jobs can
    form a cycle (a stored job never gains dependencies), so the check is over them.
    """
    new = {job.id: job for job in jobs}
    named = sorted({dep for job in new.values() for dep in job.after} - new.keys())
    missing = sorted(set(named) - known(named)) if named else []
    if missing:
        waiting = sorted(job.name for job in new.values() if set(job.after) & set(missing))
        raise DependencyError(f"after: no job {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''} in the queue "
                              f"(named by {', '.join(waiting[:5])})")
    cycle = find_cycle({job_id: [d for d in job.after if d in new]
                        for job_id, job in new.items()})
    if cycle:
        names = [new[job_id].name or job_id for job_id in cycle]
        raise DependencyError("after: these jobs wait for each other: "
                              + " -> ".join([*names, names[0]]))


def find_cycle(edges: Mapping[str, list[str]]) -> list[str] | None:
    """One cycle in a directed graph (node -> nodes it waits for), or None. Iterative,
    so a chain of 10^5 jobs does not hit the recursion limit."""
    colour: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in edges:
        if colour.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterable[str]]] = [(start, iter(edges.get(start, ())))]
        colour[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            for child in children:
                if colour.get(child) == 1:
                    return path[path.index(child):]
                if not colour.get(child):
                    colour[child] = 1
                    path.append(child)
                    stack.append((child, iter(edges.get(child, ()))))
                    break
            else:
                colour[node] = 2
                path.pop()
                stack.pop()
    return None


def first_state(deps: Mapping[str, State]) -> State:
    """Where a job with these dependencies' states starts: PENDING if all are done,
    WAITING if some are not final yet; FAILED or CANCELLED (see `dependency_end`) if one
    of them ended so."""
    ended = dependency_end(deps)
    if ended is not None:
        return ended[0]
    return State.PENDING if all(s is State.DONE for s in deps.values()) else State.WAITING


def dependency_end(deps: Mapping[str, State]) -> tuple[State, str] | None:
    """If a dependency failed or was cancelled: the state the dependant ends in (the
    same) and the id of that dependency; else None."""
    for dep_id, state in deps.items():
        if state in (State.FAILED, State.CANCELLED):
            return state, dep_id
    return None


DEPENDENCY = "dependency "  # how every dependency_reason starts


def dependency_reason(dep_id: str, dep_name: str, state: State) -> str:
    """The reason a dependant ends with, without running."""
    verb = "was cancelled" if state is State.CANCELLED else "failed"
    label = f"{dep_name} ({dep_id})" if dep_name and dep_name != dep_id else dep_id
    return f"{DEPENDENCY}{label} {verb}"


def ended_by_dependency(result: Result) -> bool:
    """Whether a job's result says it never ran because a dependency failed or was
    cancelled (it comes back when that dependency is retried)."""
    return result.attempt == 0 and result.reason.startswith(DEPENDENCY)
