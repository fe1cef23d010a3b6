"""Which job a user means by what they typed: `#3`, an exact id, an exact name, or an id
prefix long enough not to be a number or a short word by accident.

Rules, in order: `#N` is the job with seq N; a string that is a job's id is that job; a
string that is one job's name is that job (several: JobNotFound lists up to ten with seq,
id and state); else an id prefix of at least MIN_PREFIX characters that only one id has.
A short number is never an id prefix (`shoal logs Q 1` used to print job `a`): when no job
is named `1`, the error suggests `#1`. Six digits or more may start an id (one id in 17
does), so a prefix copied from `shoal results` always works.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import JobNotFound
from ..job import JobStatus
from ..queue.base import Queue

MIN_PREFIX = 6  # characters of an id prefix: below this, too easily a name or a number
CANDIDATES_SHOWN = 10


def resolve_jobs(queue: Queue, refs: Iterable[str]) -> list[JobStatus]:
    """The job each ref names (see the module docstring); JobNotFound says what is wrong."""
    found: list[JobStatus] = []
    listed: list[JobStatus] = []
    reach: int | None = 0  # how many jobs `listed` holds from the start (None: all)
    for ref in refs:
        direct = queue.get(ref) if _could_be_id(ref) else None
        if direct is not None:
            found.append(direct)
            continue
        needed = _reach(ref)
        if reach is not None and (needed is None or needed > reach):  # one listing for all
            listed, reach = list(queue.listing(limit=needed)), needed
        try:
            hit = _match(queue, ref, listed)
        except JobNotFound:
            if reach is None:
                raise
            listed, reach = list(queue.listing()), None  # jobs without a number come first
            hit = _match(queue, ref, listed)
        found.append(queue.get(hit.job.id) or hit)  # with its failed attempts (listing: none)
    return found


def _reach(ref: str) -> int | None:
    """How many jobs, from the first, a listing needs to hold the one `ref` names: `#N`
    is among the first N (numbers are distinct and start at 1; but for jobs a folder
    queue took before it numbered them: then the caller lists every job); None: all."""
    if ref.startswith("#") and ref[1:].isdigit():
        return int(ref[1:])
    return None


def _could_be_id(ref: str) -> bool:
    """Ids are file-name safe; a name with a slash (a job file in a sub-folder) is not
    looked up as one (a folder queue would read a path built from it)."""
    return bool(ref) and not ref.startswith("#") and "/" not in ref and "\0" not in ref


def _match(queue: Queue, ref: str, everything: list[JobStatus]) -> JobStatus:
    if ref.startswith("#"):
        if not ref[1:].isdigit():
            raise JobNotFound(f"{ref!r}: after # give a job's number (e.g. #3)")
        seq = int(ref[1:])
        hits = [s for s in everything if s.seq == seq and seq > 0]
        if not hits:
            raise JobNotFound(f"no job #{seq} in {queue.url} (jobs are numbered from 1 in "
                              "submission order; see `shoal results`)")
        if len(hits) > 1:  # numbers given again after a `clean --force` beside a live worker
            raise JobNotFound(_ambiguous(ref, hits, "jobs are numbered"))
        return hits[0]
    named = [s for s in everything if s.job.name == ref]
    if len(named) == 1:
        return named[0]
    if named:
        raise JobNotFound(_ambiguous(ref, named, "jobs are named"))
    if len(ref) >= MIN_PREFIX:  # digits too: one id in 17 starts with six of them
        prefixed = [s for s in everything if s.job.id.startswith(ref)]
        if len(prefixed) == 1:
            return prefixed[0]
        if prefixed:
            raise JobNotFound(_ambiguous(ref, prefixed, "job ids start with"))
    hint = f"; did you mean '#{ref}' (the job numbered {ref}; quoted, as a shell takes # " \
        "for a comment)?" if ref.isdigit() and len(ref) < MIN_PREFIX else \
        f" (an id prefix needs at least {MIN_PREFIX} characters)" if len(ref) < MIN_PREFIX \
        else ""
    raise JobNotFound(f"no job matching {ref!r} in {queue.url}: give #N, an id or a name{hint}")


def _ambiguous(ref: str, hits: list[JobStatus], how: str) -> str:
    lines = [f"{len(hits)} {how} {ref!r}; name one by #N or by its id:"]
    lines += [f"  #{s.seq}  {s.job.id}  {s.state.value}  {s.job.name}"
              for s in hits[:CANDIDATES_SHOWN]]
    if len(hits) > CANDIDATES_SHOWN:
        lines.append(f"  ... and {len(hits) - CANDIDATES_SHOWN} more")
    return "\n".join(lines)
