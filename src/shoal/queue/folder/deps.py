"""Jobs that wait for other jobs, on a folder queue: waiting/ID markers and the reverse
index after/DEP/ID, which says whom to look at when DEP ends (no scan of all jobs).

Every move is a rename, so racing processes agree without a lock:

* A submitter writes the index entries, then the waiting marker, then looks at its
  dependencies' results; a finisher writes its result, then lists the index and looks
  at each waiting dependant. Whichever comes second sees the other's work, so a
  dependant is never left waiting for a job that is already done.
* Setting free is a rename of waiting/ID to its pending marker, ending one a rename of
  it to a fence: two processes may both decide, one rename wins.

A dependant ended this way gets a result like any other (attempt 0, no exit code, the
reason `scheduling.dependency_reason`), so results, watch and listings show it.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

from ...errors import MalformedJob
from ...fsutil import HOST, claim_rename, list_names, make_dir, touch_exclusive, unlink_quiet
from ...job import Job, Result, State
from ..scheduling import dependency_end, dependency_reason
from .layout import FINAL_DIRS, refresh_listing

if TYPE_CHECKING:
    from .queue import FolderQueue


def place(queue: FolderQueue, job: Job, rank: int) -> bool:
    """The first marker of a job whose spec is written: pending, or waiting (then
    settled at once: its dependencies may have ended already). False if another
    submitter of the same job made it (a failed submit must not take it back)."""
    if not job.after:
        return queue._to_pending(job, 1, rank)
    for dep in job.after:
        folder = queue.dirs["after"] / dep
        make_dir(folder)
        touch_exclusive(folder / job.id)
    made = touch_exclusive(queue.path("waiting", job.id))
    refresh_finals(queue)
    settle(queue, job)
    return made


def refresh_finals(queue: FolderQueue) -> None:
    """Make the final folders fresh before stat()s there decide: on NFS a result written
    by another host just now must not be missed (a cached "no such file")."""
    for folder in FINAL_DIRS.values():
        refresh_listing(queue.dirs[folder])


def final_state(queue: FolderQueue, job_id: str) -> State | None:
    """The job's final state, None if it is not final (a stat per final folder)."""
    return next((state for state, folder in FINAL_DIRS.items()
                 if os.path.exists(queue.path(folder, f"{job_id}.json"))), None)


def settle(queue: FolderQueue, job: Job, *, sample: bool = False) -> None:
    """A waiting job whose dependencies all ended well becomes pending; one whose
    dependency failed or was cancelled ends so; else it keeps waiting.

    With `sample` (a finisher looking, each time one of many dependencies is done), the
    dependencies are looked at in random order, stopping at the first not final: a
    reduce after 10^4 jobs costs O(n log n) stats over all their finishes, not O(n^2)."""
    if not os.path.exists(queue.path("waiting", job.id)):
        return
    order = list(job.after)
    if sample:
        random.shuffle(order)
    states: dict[str, State] = {}
    for dep in order:
        state = final_state(queue, dep)
        states[dep] = State.PENDING if state is None else state
        if sample and state is None:
            return
    ended = dependency_end(states)
    if ended is not None:
        end(queue, job, *ended)
    elif all(state is State.DONE for state in states.values()):
        free(queue, job)


def free(queue: FolderQueue, job: Job) -> None:
    """waiting -> pending at the job's seq (a rank a retry gave it stays)."""
    queue._to_pending(job, 1, queue._rank_of(job.id), queue.path("waiting", job.id))


def end(queue: FolderQueue, job: Job, state: State, dep_id: str,
        dep_name: str | None = None) -> None:
    """End a waiting job without running it, because `dep_id` ended in `state`; then its
    own waiting dependants, and theirs (a chain of 10^5 is a loop, not a recursion)."""
    names = {job.id: job.name}  # each dependency's name read once
    if dep_name is not None:
        names[dep_id] = dep_name
    todo = [(job, dep_id)]
    while todo:
        job, dep_id = todo.pop()
        fence = queue._fence_path(job.id, 0, f"after-{HOST}-{os.getpid()}")
        if not claim_rename(queue.path("waiting", job.id), fence):
            continue  # another process decided first
        if dep_id not in names:
            names[dep_id] = _name_of(queue, dep_id)
        result = Result(job.id, state, name=job.name, params=job.params,
                        reason=dependency_reason(dep_id, names[dep_id], state), attempt=0)
        queue._write_final(result)
        unlink_quiet(fence)
        todo += [(dependant, job.id) for dependant in waiting_dependants(queue, job.id)]


def ended(queue: FolderQueue, job_id: str, state: State) -> None:
    """`job_id` just became final: set free the waiting jobs it was the last to wait for
    (DONE), or end them with it (FAILED, CANCELLED)."""
    dependants = waiting_dependants(queue, job_id)
    if not dependants:
        return
    if state is State.DONE:
        refresh_finals(queue)
        for job in dependants:
            settle(queue, job, sample=True)
        return
    name = _name_of(queue, job_id)
    for dependant in dependants:
        end(queue, dependant, state, job_id, name)


def waiting_dependants(queue: FolderQueue, job_id: str) -> list[Job]:
    """The jobs in after/JOB_ID that are waiting (their specs read)."""
    found = []
    for dependant in list_names(queue.dirs["after"] / job_id):
        if os.path.exists(queue.path("waiting", dependant)):
            job = queue._job_or_none(dependant)
            if job is not None:
                found.append(job)
    return found


def bring_back(queue: FolderQueue, job: Job) -> None:
    """`job` is being retried: the jobs that had ended because of it (never run: attempt
    0 and its dependency reason), and theirs, wait again. Their results are set aside
    first; then each is settled (it may have another dependency that failed)."""
    back: list[Job] = []
    todo = [job]
    while todo:
        cause = todo.pop()
        for dependant_id in list_names(queue.dirs["after"] / cause.id):
            result = queue._final_result(dependant_id)
            if (result is None or result.attempt != 0 or result.state is State.DONE
                    or result.reason != dependency_reason(cause.id, cause.name, result.state)):
                continue
            dependant = queue._job_or_none(dependant_id)
            if dependant is None or not queue._park_final(dependant_id, result.state):
                continue
            touch_exclusive(queue.path("waiting", dependant_id))
            back.append(dependant)
            todo.append(dependant)
    refresh_finals(queue)
    for dependant in back:
        settle(queue, dependant)


def _name_of(queue: FolderQueue, job_id: str) -> str:
    try:
        return queue._read_job(job_id).name
    except MalformedJob:
        return ""
