"""The scheduling rules (`scheduling`) in a SQLite queue file: lanes, ranks, dependants.

Every function runs inside the caller's write transaction (`db`), so a claim, a finish
with what it releases, or a retry with what it brings back is one transaction.

- `lanes` lists each lane once (its priority, needs and labels); a pending job's row
  names its lane and has a `rank`. A claim reads the lanes (few), probes the partial
  index `jobs_lane (lane, rank) WHERE state='pending'` for the heads of those that fit,
  and merges: its cost does not grow with the pending jobs that do not fit.
- `dependants (dep, job)` is the reverse index of `Job.after`: a job ending reads the
  rows of its own dependants only.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Mapping

from ..job import Job, Kind, Result, State, dumps, loads
from .lanes import LaneNames
from .scheduling import Capacity, claim_key, dependency_reason, fits

# Each final state numbers its job after every final before it: watch() reads the finals
# since the number it saw last, not every watched id.
FINAL_SEQ = (", final_seq=(SELECT COALESCE(MAX(final_seq), 0) + 1 FROM jobs "
             "WHERE final_seq IS NOT NULL)")

SCHEMA = """
CREATE TABLE IF NOT EXISTS lanes (
    lane TEXT PRIMARY KEY, priority INTEGER NOT NULL, needs TEXT NOT NULL,
    labels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dependants (
    dep TEXT NOT NULL, job TEXT NOT NULL, PRIMARY KEY (dep, job)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dependants_job ON dependants(job, dep);
"""


def migrate(db: sqlite3.Connection) -> None:
    """Give a file of an older schema the lane and rank columns (its jobs: lane p0, rank
    = seq, as they were claimed before), the tables and the index."""
    db.executescript(SCHEMA)  # commits; each statement is idempotent
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    db.execute("BEGIN IMMEDIATE")
    try:
        if "lane" not in columns:
            db.execute("ALTER TABLE jobs ADD COLUMN lane TEXT NOT NULL DEFAULT 'p0'")
            db.execute("INSERT OR IGNORE INTO lanes(lane, priority, needs, labels) "
                       "VALUES ('p0', 0, '{}', '[]')")
        if "rank" not in columns:
            db.execute("ALTER TABLE jobs ADD COLUMN rank INTEGER")
            db.execute("UPDATE jobs SET rank=seq")
        db.execute("CREATE INDEX IF NOT EXISTS jobs_lane ON jobs(lane, rank) "
                   "WHERE state='pending'")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def add_lanes(db: sqlite3.Connection, names: LaneNames, plain: Iterable[int]) -> None:
    """Record the lanes `names` named (and the plain ones of these priorities)."""
    rows = [(f"p{priority}", priority, "{}", "[]") for priority in set(plain)]
    rows += [(name, job.priority, json.dumps(dict(job.needs)), json.dumps(list(job.labels)))
             for name, job in names.shapes.values()]
    db.executemany("INSERT OR IGNORE INTO lanes(lane, priority, needs, labels) "
                   "VALUES (?, ?, ?, ?)", rows)


@functools.lru_cache(maxsize=4096)
def _shape(priority: int, needs: str, labels: str) -> Job:
    """A job of a lane's shape (what `fits` reads), from its row in `lanes`."""
    return Job("", "", Kind.COMMAND, priority=priority, needs=json.loads(needs),
               labels=tuple(json.loads(labels)))


def pick(db: sqlite3.Connection, n: int, fit: Capacity | None) -> list[int]:
    """The seqs of up to `n` pending jobs a claim takes, in order (see the module)."""
    heads: dict[str, list[tuple[int, int]]] = {}  # lane -> (rank, seq), best first
    shapes: dict[str, Job] = {}
    for lane, priority, needs, labels in db.execute(
            "SELECT lane, priority, needs, labels FROM lanes").fetchall():
        shape = _shape(priority, needs, labels)
        if not fits(fit, shape):
            continue
        rows = db.execute("SELECT rank, seq FROM jobs WHERE state='pending' AND lane=? "
                          "ORDER BY rank LIMIT ?", (lane, n)).fetchall()
        if rows:
            heads[lane], shapes[lane] = rows[::-1], shape  # best last: pop() takes it
    chosen: list[int] = []
    while heads and len(chosen) < n:
        lane = min(heads, key=lambda name: claim_key(shapes[name].priority, heads[name][-1][0]))
        chosen.append(heads[lane].pop()[1])
        if fit is not None:
            fit = fit.minus(shapes[lane])
            heads = {name: rows for name, rows in heads.items() if fits(fit, shapes[name])}
        if not heads.get(lane, True):
            del heads[lane]
    return chosen


def dep_states(db: sqlite3.Connection, ids: Iterable[str]) -> dict[str, State]:
    """The stored state of each of these jobs (unknown ones left out)."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, State] = {}
    for first in range(0, len(wanted), 500):
        chunk = wanted[first:first + 500]
        marks = ",".join("?" * len(chunk))
        for job_id, state in db.execute(f"SELECT id, state FROM jobs WHERE id IN ({marks})",
                                        chunk):
            found[job_id] = State(state)
    return found


def after_of(db: sqlite3.Connection, job_id: str) -> dict[str, State]:
    """The states of the jobs `job_id` waits for."""
    return {dep: State(state) for dep, state in db.execute(
        "SELECT d.dep, j.state FROM dependants d JOIN jobs j ON j.id=d.dep WHERE d.job=?",
        (job_id,))}


def release_dependants(db: sqlite3.Connection, job_id: str) -> None:
    """`job_id` is done: its waiting dependants whose dependencies are all done now are
    pending, at the rank they waited with (seq, or a retry's first rank). One statement,
    reaching them by id: `+state` keeps SQLite from scanning every waiting job through the
    state index instead (here and below)."""
    db.execute(
        "UPDATE jobs SET state='pending' WHERE +state='waiting' AND id IN "
        "(SELECT job FROM dependants WHERE dep=?) AND NOT EXISTS (SELECT 1 FROM "
        "dependants d JOIN jobs j ON j.id=d.dep WHERE d.job=jobs.id AND j.state!='done')",
        (job_id,))


def end_dependants(db: sqlite3.Connection, job_id: str, state: State,
                   name: str | None = None) -> list[str]:
    """`job_id` ended in `state` (failed or cancelled): its waiting dependants end so too
    without running, and theirs in turn. Returns their ids. The job's `name` is read
    from its record unless given (a lease from the wire may not carry it)."""
    ended: list[str] = []
    stack: list[tuple[str, str | None]] = [(job_id, name)]
    while stack:
        dep_id, dep_name = stack.pop()
        rows = db.execute(
            "SELECT j.id, j.spec FROM dependants d JOIN jobs j ON j.id=d.job "
            "WHERE d.dep=? AND +j.state='waiting'", (dep_id,)).fetchall()
        if not rows:
            continue
        if dep_name is None:
            (spec,) = db.execute("SELECT spec FROM jobs WHERE id=?", (dep_id,)).fetchone()
            dep_name = str(json.loads(spec).get("name", ""))
        reason = dependency_reason(dep_id, dep_name, state)
        for waiting, spec in rows:
            data = json.loads(spec)
            end_unrun(db, waiting, data.get("name", ""), data.get("params", {}), state, reason)
            ended.append(waiting)
            stack.append((waiting, data.get("name", "")))
    return ended


def end_unrun(db: sqlite3.Connection, job_id: str, name: str, params: Mapping, state: State,
              reason: str) -> None:
    """Record a job's end without running (a dependency failed or was cancelled)."""
    result = Result(job_id, state, name=name, params=dict(params), reason=reason, attempt=0)
    db.execute(f"UPDATE jobs SET state=?, result=?{FINAL_SEQ} WHERE id=?",
               (state.value, dumps(result.to_dict()).decode(), job_id))


def ended_because_of(db: sqlite3.Connection, dep_id: str, dep_name: str) -> list[str]:
    """The dependants of `dep_id` that ended without running because it failed or was
    cancelled (their reason names it)."""
    found = []
    for job_id, text in db.execute(
            "SELECT j.id, j.result FROM dependants d JOIN jobs j ON j.id=d.job "
            "WHERE d.dep=? AND +j.state IN ('failed', 'cancelled')", (dep_id,)).fetchall():
        result = Result.from_dict(loads(text.encode())) if text else None
        if (result is not None and result.attempt == 0
                and result.reason == dependency_reason(dep_id, dep_name, result.state)):
            found.append(job_id)
    return found
