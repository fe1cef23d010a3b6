"""`sqlite://PATH`: one SQLite file on local disk (WAL), for one machine and very many jobs.

Every operation is one short transaction (BEGIN IMMEDIATE for writes), so several
processes on this machine can share the file. Priorities, dependencies and resources
live in `sqlite_sched` (lanes, ranks, the dependants table). Lease deadlines are
wall-clock times of this one machine (behind a coordinator, times of its own
monotonic-based clock: `judge_leases_by`): the file must stay on a local disk
(SQLite's locking is unreliable on NFS, sshfs and CIFS), which we check when it is
opened.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

from .. import defaults
from ..errors import LeaseLost, NoSuchQueue, UsageError, no_space
from ..fsutil import NETWORK_FS, filesystem_type, make_dir, no_space_named, open_new
from ..job import (
    STATES,
    Beat,
    Job,
    JobStatus,
    JobSummary,
    Lease,
    Reaped,
    Result,
    State,
    WorkerInfo,
    dumps,
    loads,
    loads_many,
    record_text,
)
from . import sqlite_sched as sched
from .base import (
    GroupLost,
    Queue,
    blobs_of,
    cancelled_result,
    lost_reason,
    poll,
    reaped_keep_s,
)
from .batches import submit_in_batches
from .files import LocalFiles
from .lanes import LaneNames
from .scheduling import (
    Capacity,
    check_after,
    dependency_end,
    dependency_reason,
    first_state,
    retry_rank,
)
from .settings import QueueSettings

_FINAL_SEQ = sched.FINAL_SEQ

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    worker TEXT,
    token TEXT,
    deadline REAL,
    result TEXT,
    payload BLOB,
    lane TEXT NOT NULL DEFAULT 'p0',
    rank INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, info TEXT NOT NULL, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL, attempt INTEGER NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt));
CREATE TABLE IF NOT EXISTS reaped (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, job_id TEXT NOT NULL,
    worker TEXT NOT NULL, attempt INTEGER NOT NULL, host TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS control (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, worker TEXT NOT NULL, command TEXT NOT NULL);
"""


# The `spec` column holds `record_text(job)` (the job's compact JSON without the payload,
# which has its own BLOB column; older files hold dumps(job.to_dict()) with every field,
# some with the payload in base64): both decode alike.

SUBMIT_BATCH = 20_000  # jobs per submit transaction (submit streams: batches.py)
# Page cache per connection, in KiB (negative: SQLite's unit): the UNIQUE index on random
# ids is written all over, and with SQLite's 2 MiB default a big submit rewrites its
# pages to the WAL again and again (10^6 jobs: 1.4x slower). Pages are only cached as read.
CACHE_KIB = 64 * 1024


def _job(spec: str, payload: bytes | None) -> Job:
    data = json.loads(spec)
    if payload is not None:
        data["payload"] = payload
    return Job.from_dict(data)


# What `summaries` reads: a final job's fields come from its result's JSON (R: none if
# that does not parse, then the last column says the record is corrupt).
_R = "(CASE WHEN json_valid(result) THEN result END)"
_SUMMARY_SELECT = (
    f"SELECT seq, id, json_extract(spec, '$.name'), state,"
    f" COALESCE(json_extract({_R}, '$.attempt'), attempt),"
    f" COALESCE(NULLIF(json_extract({_R}, '$.worker'), ''), worker),"
    f" json_extract({_R}, '$.exit_code'), COALESCE(json_extract({_R}, '$.reason'), ''),"
    f" json_extract({_R}, '$.started'), json_extract({_R}, '$.ended'),"
    f" COALESCE(json_extract({_R}, '$.host'), ''), json_extract({_R}, '$.log'),"
    f" result IS NOT NULL AND NOT json_valid(result)"
    f" FROM jobs")


def _record(text: str, job_id: str, where: str) -> Result:
    """A stored result. Shoal writes whole rows in transactions, so one that does not
    decode was edited or damaged outside it: a failure that says so and where, never a
    traceback nor a row left out."""
    try:
        return Result.from_dict(loads(text.encode()))
    except (ValueError, KeyError, TypeError, AttributeError):
        return _corrupt(job_id, where)


def _corrupt(job_id: str, where: str) -> Result:
    return Result(job_id, State.FAILED, reason=f"corrupt record: {where}, job {job_id}")


def _filtered(select: str, states: Collection[State] | None, limit: int | None,
              offset: int = 0, *, search: str | None = None) -> tuple[str, list]:
    """`select` over jobs in seq order, only those in `states`, at most `limit`, the
    first `offset` skipped (by SQLite, along the seq index); with `search`, only those
    whose name, id or a parameter written `name=value` holds it (`Queue.search`)."""
    conditions, args = [], []
    if search is not None:
        conditions.append(_MATCH)
        args += [search.lower()] * 3
    if states is not None:
        values = sorted({State(s).value for s in states})
        conditions.append(f"state IN ({','.join('?' * len(values))})")
        args += values
    sql = select + (" WHERE " + " AND ".join(conditions) if conditions else "")
    sql += " ORDER BY seq"
    if limit is not None or offset > 0:
        sql += " LIMIT ?"
        args.append(-1 if limit is None else max(limit, 0))
    if offset > 0:
        sql += " OFFSET ?"
        args.append(offset)
    return sql, args


# `Queue.search` in SQL: the name, the id or a parameter as `name=value` holds the text
# base.search_text's rule in SQL: a parameter reads as Python writes it (True, None).
_MATCH = ("(instr(lower(json_extract(spec, '$.name')), ?) OR instr(lower(id), ?)"
          " OR EXISTS (SELECT 1 FROM json_each(jobs.spec, '$.params')"
          " WHERE instr(lower(key || '=' || CASE type WHEN 'true' THEN 'True'"
          " WHEN 'false' THEN 'False' WHEN 'null' THEN 'None' ELSE value END), ?)))")


def _summaries(rows: list[tuple], where: str) -> list[JobSummary]:
    """Rows of `_SUMMARY_SELECT` as summaries; an undecodable result shows as failed."""
    by_value = STATES
    return [JobSummary(seq, job_id, name, by_value[state], attempt, worker, *rest)
            if not bad else JobSummary(seq, job_id, name, State.FAILED, attempt, worker,
                                       reason=_corrupt(job_id, where).reason)
            for seq, job_id, name, state, attempt, worker, *rest, bad in rows]


LISTING_BATCH = 5000  # rows whose records `listing` decodes in one call


def _listed(rows: list[tuple], where: str) -> list[JobStatus]:
    """Statuses of listing rows (spec, payload, state, attempt, worker, result, seq), every
    spec and every result decoded in one call each; a row whose spec is unreadable is
    left out, one whose result is shows it corrupt (`_record`)."""
    specs = loads_many([row[0] for row in rows])
    results = iter(loads_many([row[5] for row in rows if row[5]]))
    job_of, result_of, by_value = Job.from_dict, Result.from_dict, STATES
    statuses = []
    for (_, payload, state, attempt, worker, result, seq), spec in zip(rows, specs,
                                                                         strict=True):
        record = next(results) if result else None
        if spec is None:
            continue
        if payload is not None:
            spec["payload"] = payload
        job = job_of(spec)
        found = _record(result, job.id, where) if result else None
        if found is None or record is not None:
            found = result_of(record) if record is not None else None
        statuses.append(JobStatus(job, by_value[state], attempt, worker, found, (), seq))
    return statuses


class SqliteQueue(Queue):
    """A queue in one SQLite file; see the module docstring."""

    blocking_claim = False
    cross_host = False

    def __init__(self, path: str | Path, *, lease_s: float = defaults.LEASE_S,
                 log_cap_bytes: int | None = None, allow_network_fs: bool = False,
                 create: bool = True) -> None:
        self.path = Path(path).absolute()
        # create=False: the file must exist, and nothing is made or written to open it.
        self._read_only = not create
        if self._read_only and not self.path.is_file():
            raise NoSuchQueue(f"{self.path} is a folder; a folder queue is dir://PATH"
                              if self.path.is_dir() else f"no file {self.path}")
        if create:
            make_dir(self.path.parent)
            if self.path.exists():  # one clear OSError (the CLI's one line), not SQLite's
                os.close(os.open(self.path, os.O_RDWR))  # "attempt to write a readonly
                # database" at the first write
            else:  # private (or group-shared) from the start: SQLite gives its -wal and
                with suppress(FileExistsError):  # -shm files the same mode
                    os.close(open_new(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        fs = filesystem_type(self.path.parent)
        if fs in NETWORK_FS and not allow_network_fs:
            raise UsageError(f"{self.path}: on a network filesystem ({fs}); SQLite's locking "
                             "is not safe there: keep the file on a local disk (or use a "
                             "folder queue for a shared folder)")
        settings = QueueSettings(lease_s=lease_s, log_cap_bytes=log_cap_bytes)
        # Logs and the shared config beside the file, where every process of this host
        # finds them, and they outlive us.
        log_dir = self.path.with_name(self.path.name + ".logs")
        if create:
            make_dir(log_dir)
        super().__init__(f"sqlite://{self.path}", settings,
                         LocalFiles(settings, log_dir=log_dir, running=self._running))
        self._local = threading.local()
        self._tokens = itertools.count(1)
        self._now = time.time  # what deadlines and beats are stamped with (judge_leases_by)
        self._token_prefix = f"{os.getpid()}-{id(self):x}"
        try:
            if create:
                self._upgrade(self._db())
            else:
                self._db().execute("SELECT count(*) FROM jobs").fetchone()
        except sqlite3.DatabaseError as exc:  # not a database, read-only file, no table
            raise no_space(exc, self.path) or UsageError(f"{self.path}: {exc}") from None

    def _running(self) -> list[tuple[str, int, str]]:
        """(job id, attempt, worker) of the running jobs: whose progress files to read."""
        return self._db().execute(
            "SELECT id, attempt, worker FROM jobs WHERE state='running'").fetchall()

    @staticmethod
    def _upgrade(db: sqlite3.Connection) -> None:
        """Make the tables, and bring a file of an older schema up to this one: made
        before payloads had their own column, or before finals were numbered for watch(),
        it gets the column (NULL in the rows already there); before priorities, see
        `sched.migrate`."""
        db.executescript(SCHEMA)  # its own transaction (executescript commits)
        db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            if "payload" not in columns:
                db.execute("ALTER TABLE jobs ADD COLUMN payload BLOB")
            if "final_seq" not in columns:
                db.execute("ALTER TABLE jobs ADD COLUMN final_seq INTEGER")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_final ON jobs(final_seq) "
                       "WHERE final_seq IS NOT NULL")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        sched.migrate(db)

    # -- connections -----------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """This thread's connection: read-only when opened with create=False."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect_read_only() if self._read_only else self._connect()
            self._local.db = db
        return db

    def _writer(self) -> sqlite3.Connection:
        """This thread's connection for a change: a queue opened without create (a CLI
        command's) opens a writable one only when it changes something (cancel, retry)."""
        if not self._read_only:
            return self._db()
        db = getattr(self._local, "writer", None)
        if db is None:
            db = self._local.writer = self._connect()
            self._upgrade(db)  # a file of an older schema: what a change needs
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        return db

    def _connect_read_only(self) -> sqlite3.Connection:
        """mode=ro; in a directory we may not write (where mode=ro cannot make the WAL's
        -shm file), immutable=1: a reader with read access only can still look."""
        uri = "file:" + quote(str(self.path))
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, isolation_level=None)
        try:
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return db
        except sqlite3.OperationalError:
            db.close()
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, all or nothing; a full disk raises `NoSpace` (the
        transaction rolled back, the connection fit for the next one). Inside `group`,
        a savepoint of the group's transaction instead."""
        if getattr(self._local, "group", False):
            with no_space_named(self.path), self._savepoint() as db:
                yield db
            return
        with no_space_named(self.path):
            db = self._writer()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")  # SQLITE_FULL may come here, leaving it open
            except BaseException:
                if db.in_transaction:
                    with suppress(sqlite3.Error):  # never hide why it failed
                        db.execute("ROLLBACK")
                raise

    @contextmanager
    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        """One call's writes inside the group's transaction: undone alone on an error.
        SQLite may have rolled the whole transaction back on its own (a full disk): then
        the group is lost, and its earlier calls' writes with it."""
        db = self._writer()
        if not db.in_transaction:
            raise GroupLost(f"{self.path}: the group's transaction was rolled back")
        db.execute("SAVEPOINT call")
        try:
            yield db
            db.execute("RELEASE call")
        except BaseException:
            if db.in_transaction:
                with suppress(sqlite3.Error):  # never hide why it failed
                    db.execute("ROLLBACK TO call")
                    db.execute("RELEASE call")
            raise

    @contextmanager
    def group(self) -> Iterator[None]:
        """See `Queue.group`: one BEGIN IMMEDIATE ... COMMIT around the block, each write
        call a savepoint in it. Not nested; a read-only queue writes nothing to group."""
        if self._read_only or getattr(self._local, "group", False):
            yield
            return
        db = self._writer()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise GroupLost(f"{self.path}: {exc}") from None
        self._local.group = True
        try:
            yield
        except BaseException:
            self._local.group = False
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        self._local.group = False
        if not db.in_transaction:
            raise GroupLost(f"{self.path}: the group's transaction was rolled back")
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise GroupLost(f"{self.path}: {exc}") from None

    # -- jobs ------------------------------------------------------------------------

    def submit(self, jobs: Iterable[Job]) -> list[str]:
        """In transactions of SUBMIT_BATCH jobs, read as they come (batches.py)."""
        return submit_in_batches(jobs, SUBMIT_BATCH, self._submit_batch)

    def _submit_batch(self, jobs: list[Job]) -> list[str]:
        # The records are encoded before the write lock is taken. Under it, the ids
        # already stored are looked up (and repeats within the batch dropped), and the
        # rest inserted by one executemany, numbered on from the largest seq (rank = seq):
        # no row is ignored, so no number is used up.
        lanes = LaneNames()
        rows = [[job.id, record_text(job), job.payload, "pending", lanes(job)] for job in jobs]
        plain = {job.priority for job in jobs if not job.needs and not job.labels}
        named = {dep for job in jobs for dep in job.after}
        blobs = blobs_of(jobs)
        with self._write() as db:
            ends = self._first_states(db, jobs, rows, named) if named else []
            if blobs:
                self._put_blobs_in(db, blobs)
            sched.add_lanes(db, lanes, plain)
            stored = sched.dep_states(db, (row[0] for row in rows))
            fresh = {row[0]: row for row in reversed(rows) if row[0] not in stored}
            (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()
            new = [row[0] for row in rows if fresh.get(row[0]) is row]
            db.executemany(
                "INSERT INTO jobs(seq, id, spec, payload, state, lane, rank) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?1)",
                [(last + k, *fresh[job_id]) for k, job_id in enumerate(new, 1)])
            if named:
                db.executemany("INSERT OR IGNORE INTO dependants(dep, job) VALUES (?, ?)",
                               [(dep, job.id) for job in jobs for dep in job.after])
            if ends:
                added = set(new)
                for job, dep_id, state in ends:
                    if job.id in added:  # it ends at once, and what waits for it
                        self._end_unrun(db, job, dep_id, state)
            return new

    @staticmethod
    def _first_states(db: sqlite3.Connection, jobs: list[Job], rows: list[list],
                      named: set[str]) -> list[tuple[Job, str, State]]:
        """Check the dependencies (`check_after`) and set each row's first state from
        theirs (a job of this submission counts as not final). Returns the jobs that end
        at once, with the dependency that failed or was cancelled and how it ended."""
        stored = sched.dep_states(db, named)
        check_after(jobs, lambda ids: set(ids) & stored.keys())
        ends = []
        for job, row in zip(jobs, rows, strict=True):
            if not job.after:
                continue
            deps = {dep: stored.get(dep, State.WAITING) for dep in job.after}
            state = first_state(deps)
            row[3] = "pending" if state is State.PENDING else "waiting"
            ended = dependency_end(deps)
            if ended is not None:
                ends.append((job, ended[1], ended[0]))
        return ends

    def _end_unrun(self, db: sqlite3.Connection, job: Job, dep_id: str, state: State) -> None:
        """`job` ends without running because `dep_id` ended in `state`; so do the jobs
        waiting for it."""
        row = db.execute("SELECT spec FROM jobs WHERE id=?", (dep_id,)).fetchone()
        dep_name = json.loads(row[0]).get("name", "") if row else ""
        sched.end_unrun(db, job.id, job.name, job.params, state,
                        dependency_reason(dep_id, dep_name, state))
        sched.end_dependants(db, job.id, state, job.name)

    # -- function blobs -----------------------------------------------------------------

    @staticmethod
    def _put_blobs_in(db: sqlite3.Connection, blobs: Mapping[str, bytes]) -> None:
        for digest, blob in blobs.items():  # look first: binding a big blob copies it
            if db.execute("SELECT 1 FROM blobs WHERE digest=?", (digest,)).fetchone() is None:
                db.execute("INSERT INTO blobs(digest, data) VALUES (?, ?)", (digest, blob))

    def put_blobs(self, blobs: Mapping[str, bytes]) -> None:
        with self._write() as db:
            self._put_blobs_in(db, blobs)

    def get_blob(self, digest: str) -> bytes | None:
        row = self._db().execute("SELECT data FROM blobs WHERE digest=?", (digest,)).fetchone()
        return None if row is None else bytes(row[0])

    def missing_blobs(self, digests: Iterable[str]) -> list[str]:
        db = self._db()
        return [digest for digest in digests
                if db.execute("SELECT 1 FROM blobs WHERE digest=?", (digest,)).fetchone() is None]

    def claim(self, worker: str, n: int = 1, *, wait_s: float = 0.0,
              fit: Capacity | None = None) -> list[Lease]:
        return poll(lambda: self._claim_once(worker, n, fit), wait_s)

    def _claim_once(self, worker: str, n: int, fit: Capacity | None) -> list[Lease]:
        with self._write() as db:
            return self._claim_in(db, worker, n, fit)

    def _claim_in(self, db: sqlite3.Connection, worker: str, n: int,
                  fit: Capacity | None) -> list[Lease]:
        """Lease the jobs `sched.pick` chooses (lane heads that fit), in this transaction."""
        leases = []
        deadline = self._now() + self.settings.lease_s
        for seq in sched.pick(db, n, fit) if n > 0 else []:
            spec, payload, attempt = db.execute(
                "SELECT spec, payload, attempt FROM jobs WHERE seq=?", (seq,)).fetchone()
            token = f"{attempt}.{self._token_prefix}.{next(self._tokens)}"
            db.execute("UPDATE jobs SET state='running', worker=?, token=?, deadline=? "
                       "WHERE seq=?", (worker, token, deadline, seq))
            leases.append(Lease(_job(spec, payload), attempt, worker, token, seq))
        return leases

    def beat(self, info: WorkerInfo, leases: Iterable[Lease]) -> Beat:
        """Register the worker, extend its current leases, take its commands: one
        transaction."""
        lost = []
        with self._write() as db:
            now = self._now()
            db.execute("INSERT OR REPLACE INTO workers(id, info, seen) VALUES (?, ?, ?)",
                       (info.id, dumps(info.to_dict()).decode(), now))
            for lease in leases:
                cursor = db.execute("UPDATE jobs SET deadline=? WHERE id=? AND token=? "
                                    "AND state='running'",
                                    (now + self.settings.lease_s, lease.job_id, lease.token))
                if not cursor.rowcount:
                    lost.append(lease)
            rows = db.execute("SELECT seq, command FROM control WHERE worker=? ORDER BY seq",
                              (info.id,)).fetchall()
            if rows:
                db.execute("DELETE FROM control WHERE worker=? AND seq<=?",
                           (info.id, rows[-1][0]))
        return Beat(tuple(lost), tuple(command for _, command in rows))

    def _end(self, db: sqlite3.Connection, lease: Lease, state: str, attempt: int,
             result: Result | None) -> None:
        cursor = db.execute(
            "UPDATE jobs SET state=?, attempt=?, worker=NULL, token=NULL, deadline=NULL, "
            f"result=?{_FINAL_SEQ if result else ''} WHERE id=? AND token=? AND "
            "state='running'",
            (state, attempt, dumps(result.to_dict()).decode() if result else None,
             lease.job_id, lease.token))
        if not cursor.rowcount:
            raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer current")

    def finish(self, lease: Lease, result: Result, *, then_claim: int = 0,
               fit: Capacity | None = None) -> list[Lease]:
        """Finish, then claim up to `then_claim` jobs for the same worker: one transaction."""
        with self._write() as db:  # the write lock is the fence: check, move the log, record
            if result.log:  # a log moves only while we are sure the lease is current
                current = db.execute("SELECT 1 FROM jobs WHERE id=? AND token=? AND "
                                     "state='running'", (lease.job_id, lease.token)).fetchone()
                if current is None:
                    raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer "
                                    "current")
                result = self.files.place_log(lease, result)
            self._end(db, lease, result.state.value, lease.attempt, result)
            if result.state is State.DONE:
                sched.release_dependants(db, lease.job_id)
            else:
                sched.end_dependants(db, lease.job_id, result.state)
            return self._claim_in(db, lease.worker, then_claim, fit)

    def release(self, lease: Lease, *, failed: Result | None = None) -> None:
        with self._write() as db:
            if failed is None:
                self._end(db, lease, "pending", lease.attempt, None)
                return
            self._end(db, lease, "pending", lease.attempt + 1, None)
            db.execute("INSERT OR REPLACE INTO attempts(job_id, attempt, result) VALUES "
                       "(?, ?, ?)", (lease.job_id, lease.attempt,
                                     dumps(failed.to_dict()).decode()))

    def cancel(self, job_ids: Iterable[str]) -> list[str]:
        """Cancel each job, and what waits for it (`sched.end_dependants`); a job cancelled
        that way earlier in `job_ids` counts as cancelled by this call."""
        done = []
        with_them: set[str] = set()
        with self._write() as db:
            for job_id in dict.fromkeys(job_ids):
                row = db.execute("SELECT spec, attempt, worker, state FROM jobs WHERE id=? "
                                 "AND state IN ('pending', 'running', 'waiting')",
                                 (job_id,)).fetchone()
                if row is None:
                    if job_id in with_them:
                        done.append(job_id)
                    continue
                job = Job.from_dict(json.loads(row[0]))
                result = cancelled_result(self.files, job, row[1],
                                          (row[2] or "") if row[3] == "running" else "")
                db.execute("UPDATE jobs SET state='cancelled', worker=NULL, token=NULL, "
                           f"result=?{_FINAL_SEQ} WHERE id=?",
                           (dumps(result.to_dict()).decode(), job_id))
                with_them.update(sched.end_dependants(db, job_id, State.CANCELLED, job.name))
                done.append(job_id)
        return done

    def retry(self, job_ids: Iterable[str], *, force: bool = False,
              first: bool = True) -> list[str]:
        again = []
        states = "('failed', 'cancelled', 'done')" if force else "('failed', 'cancelled')"
        with self._write() as db:
            for job_id in job_ids:
                row = db.execute(f"SELECT spec, seq FROM jobs WHERE id=? AND state IN {states}",
                                 (job_id,)).fetchone()
                if row is None:
                    continue
                job = _job(row[0], None)
                if self._start_again(db, job, retry_rank(row[1], first)):
                    self._bring_back(db, job)
                    again.append(job_id)
        return again

    def _start_again(self, db: sqlite3.Connection, job: Job, rank: int) -> bool:
        """A final job afresh (attempt 1, no result nor old attempt records) where its
        dependencies put it: pending at `rank`, or waiting; False if one of them failed
        or was cancelled, which ends it again at once."""
        db.execute("DELETE FROM attempts WHERE job_id=?", (job.id,))
        deps = sched.after_of(db, job.id)
        state = first_state(deps)
        db.execute("UPDATE jobs SET state=?, attempt=1, result=NULL, rank=? WHERE id=?",
                   ("pending" if state is State.PENDING else "waiting", rank, job.id))
        ended = dependency_end(deps)
        if ended is not None:
            self._end_unrun(db, job, ended[1], ended[0])
            return False
        return True

    def _bring_back(self, db: sqlite3.Connection, job: Job) -> None:
        """The jobs that ended without running because `job` failed or was cancelled (and
        theirs in turn) start again, now that it is no longer final."""
        back = [job]
        while back:
            dep = back.pop()
            for job_id in sched.ended_because_of(db, dep.id, dep.name):
                spec, seq = db.execute("SELECT spec, seq FROM jobs WHERE id=?",
                                       (job_id,)).fetchone()
                waiting = _job(spec, None)
                if self._start_again(db, waiting, seq):
                    back.append(waiting)

    def _purge(self) -> int:
        """One transaction empties the job tables (numbering starts again at 1); the logs
        their records name go once it committed."""
        with self._write() as db:
            logs = [Result.from_dict(loads(text.encode())) for (text,) in db.execute(
                "SELECT result FROM jobs WHERE result IS NOT NULL UNION ALL "
                "SELECT result FROM attempts")]
            (removed,) = db.execute("SELECT COUNT(*) FROM jobs").fetchone()
            for table in ("jobs", "attempts", "reaped", "blobs", "lanes", "dependants"):
                db.execute(f"DELETE FROM {table}")
            db.execute("DELETE FROM sqlite_sequence WHERE name='jobs'")
        self.files.forget_logs(logs)
        return removed

    def _status(self, row: tuple) -> JobStatus:
        spec, payload, state, attempt, worker, result, seq = row
        job = _job(spec, payload)
        records: tuple[Result, ...] = ()
        if attempt > 1:  # only a job tried again has records of failed attempts
            records = tuple(Result.from_dict(loads(text.encode())) for (text,) in self._db(
                ).execute("SELECT result FROM attempts WHERE job_id=? AND attempt<? "
                          "ORDER BY attempt", (job.id, attempt)))
        return JobStatus(job, State(state), attempt, worker,
                         _record(result, job.id, self.url) if result else None, records, seq)

    def get(self, job_id: str) -> JobStatus | None:
        row = self._db().execute("SELECT spec, payload, state, attempt, worker, result, seq "
                                 "FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else self._status(row)

    def jobs(self) -> Iterator[JobStatus]:
        rows = self._db().execute("SELECT spec, payload, state, attempt, worker, result, seq "
                                  "FROM jobs ORDER BY seq").fetchall()
        return iter([self._status(row) for row in rows])

    def listing(self, states: Collection[State] | None = None,
                limit: int | None = None) -> Iterator[JobStatus]:
        """One SELECT in seq order (the state filter and the limit in SQL), no attempts
        table read."""
        sql, args = _filtered("SELECT spec, payload, state, attempt, worker, result, seq "
                              "FROM jobs", states, limit)
        rows = self._db().execute(sql, args).fetchall()
        statuses: list[JobStatus] = []
        for first in range(0, len(rows), LISTING_BATCH):
            statuses += _listed(rows[first:first + LISTING_BATCH], self.url)
        return iter(statuses)

    def summaries(self, states: Collection[State] | None = None, limit: int | None = None,
                  offset: int = 0) -> Iterator[JobSummary]:
        """The fields a table row shows, picked out of the stored JSON by SQLite itself
        (json_extract): no record decoded in Python; LIMIT and OFFSET in the SQL."""
        sql, args = _filtered(_SUMMARY_SELECT, states, limit, offset)
        return iter(_summaries(self._db().execute(sql, args).fetchall(), self.url))

    def search(self, text: str, states: Collection[State] | None = None) -> Iterator[JobSummary]:
        """One SELECT: SQLite matches the name, the id and each parameter (json_each)."""
        sql, args = _filtered(_SUMMARY_SELECT, states, None, search=text)
        return iter(_summaries(self._db().execute(sql, args).fetchall(), self.url))

    def counts(self) -> dict[State, int]:
        counts = dict.fromkeys(State, 0)
        for state, number in self._db().execute(
                "SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[State(state)] = number
        return counts

    def states(self, job_ids: Iterable[str]) -> dict[str, State]:
        wanted = list(job_ids)
        found: dict[str, State] = {}
        for first in range(0, len(wanted), 500):
            chunk = wanted[first:first + 500]
            marks = ",".join("?" * len(chunk))
            for job_id, state in self._db().execute(
                    f"SELECT id, state FROM jobs WHERE id IN ({marks})", chunk):
                found[job_id] = State(state)
        return found

    def results(self) -> Iterator[Result]:
        rows = self._db().execute("SELECT id, result FROM jobs WHERE result IS NOT NULL "
                                  "ORDER BY seq").fetchall()
        return iter([_record(text, job_id, self.url) for job_id, text in rows])

    def _final_results(self, job_ids: list[str]) -> list[Result]:
        found = []
        for first in range(0, len(job_ids), 500):
            chunk = job_ids[first:first + 500]
            marks = ",".join("?" * len(chunk))
            found += [_record(text, job_id, self.url) for job_id, text in self._db().execute(
                f"SELECT id, result FROM jobs WHERE id IN ({marks}) AND result IS NOT NULL",
                chunk)]
        return found

    def _finals_mark(self) -> object | None:
        return self._db().execute("SELECT COALESCE(MAX(final_seq), 0) FROM jobs "
                                 "WHERE final_seq IS NOT NULL").fetchone()[0]

    def _finals_since(self, mark: object) -> tuple[list[str], object] | None:
        """Jobs numbered final after `mark` (the index makes an idle look one cheap read)."""
        rows = self._db().execute("SELECT final_seq, id FROM jobs WHERE final_seq > ? "
                                  "ORDER BY final_seq", (mark,)).fetchall()
        return ([job_id for _, job_id in rows], rows[-1][0]) if rows else ([], mark)

    def judge_leases_by(self, clock: Callable[[], float]) -> None:
        """Deadlines and beats on `clock` (a coordinator's); workers that open the file
        themselves stamp wall-clock times of this machine, as before."""
        self._now = clock

    def reap(self) -> list[Reaped]:
        """One transaction: take expired leases back, log them in `reaped` (shared by every
        process on the file), forget records older than reaped_keep_s, read the rest."""
        with self._write() as db:
            now = self._now()
            rows = db.execute("SELECT id, spec, attempt, worker FROM jobs WHERE "
                              "state='running' AND deadline < ?", (now,)).fetchall()
            for job_id, spec, attempt, worker in rows:
                self._take_back(db, job_id, Job.from_dict(json.loads(spec)), attempt, worker,
                                now)
            db.execute("DELETE FROM reaped WHERE at < ?",
                       (now - reaped_keep_s(self.settings.lease_s),))
            return [Reaped(*row) for row in db.execute(
                "SELECT job_id, worker, attempt, host FROM reaped ORDER BY seq")]

    def _take_back(self, db: sqlite3.Connection, job_id: str, job: Job, attempt: int,
                   worker: str, now: float) -> None:
        """Reap one expired lease: back to pending, or failed at the last attempt."""
        info = db.execute("SELECT info FROM workers WHERE id=?", (worker,)).fetchone()
        host = str(loads(info[0].encode()).get("host", "")) if info else ""
        db.execute("INSERT INTO reaped(at, job_id, worker, attempt, host) VALUES (?, ?, ?, ?, ?)",
                   (now, job_id, worker, attempt, host))
        if attempt < job.max_attempts:
            db.execute("UPDATE jobs SET state='pending', attempt=?, worker=NULL, "
                       "token=NULL, deadline=NULL WHERE id=?", (attempt + 1, job_id))
            return
        result = Result(job_id, State.FAILED, name=job.name, params=job.params,
                        reason=lost_reason(attempt, worker), attempt=attempt, worker=worker)
        db.execute("UPDATE jobs SET state='failed', worker=NULL, token=NULL, "
                   f"result=?{_FINAL_SEQ} WHERE id=?", (dumps(result.to_dict()).decode(), job_id))
        sched.end_dependants(db, job_id, State.FAILED, job.name)

    # -- workers and control -----------------------------------------------------------

    def unregister(self, worker: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM workers WHERE id=?", (worker,))
            db.execute("DELETE FROM control WHERE worker=?", (worker,))

    def workers(self) -> list[WorkerInfo]:
        now = self._now()
        found = []
        for info, seen in self._db().execute("SELECT info, seen FROM workers"):
            worker = WorkerInfo.from_dict(loads(info.encode()))
            found.append(replace(worker, age_s=max(0.0, now - seen),
                                 lost=now - seen > self.settings.lease_s))
        return found

    def send_control(self, worker: str, command: str) -> None:
        with self._write() as db:
            db.execute("INSERT INTO control(worker, command) VALUES (?, ?)", (worker, command))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
