"""RQ and Celery on the bench's redis-server: the peers a Redis user would pick.

Their workers import tasks by module name (they do not ship functions by value), so the
task functions and the Celery app live in this importable module; bench_redis.py starts
the workers with this folder on PYTHONPATH. The redis-server URL comes from the
environment (URL_ENV), set by bench_redis.py before anything imports this module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench_calls import Skip, Variant

URL_ENV = "SHOAL_BENCH_REDIS"
HERE = Path(__file__).resolve().parent


def inc(x: int) -> int:
    return x + 1


def pid(_: Any) -> int:
    return os.getpid()


def nap(item: tuple[int, float]) -> int:
    time.sleep(item[1])
    return item[0]


TASKS = {"inc": inc, "pid": pid, "nap": nap}

# -- Celery: an app on the bench's server (broker and result backend), when installed ----
try:
    from celery import Celery
except ImportError:  # the variant reports the skip
    app = None
else:
    app = Celery("redis_peers", broker=os.environ.get(URL_ENV, "redis://127.0.0.1:1/0"),
                 backend=os.environ.get(URL_ENV, "redis://127.0.0.1:1/0"))
    app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
                    task_ignore_result=False, result_expires=3600)
    celery_tasks = {name: app.task(fn, name=f"bench.{name}") for name, fn in TASKS.items()}


class _Workers(Variant):
    """Worker processes started in their own session, stopped by their PIDs' groups."""

    def _spawn(self, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.logs = [open(self.tmp / f"worker{i}.log", "wb") for i in range(len(argv))]  # noqa: SIM115
        self.procs = [subprocess.Popen(cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=log, start_new_session=True)
                      for cmd, log in zip(argv, self.logs, strict=True)]

    def stop(self) -> None:
        for proc in self.procs:
            with _gone():
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with _gone():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            with _gone():  # forked children left in the group
                os.killpg(proc.pid, signal.SIGKILL)
        for log in self.logs:
            log.close()


class _gone:
    """Suppress ProcessLookupError: the process (group) has already exited."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError)


class Rq(_Workers):
    """RQ: W `rq worker` processes on a fresh queue (`rq`: the default Worker, a fork per
    job; `rq-simple`: SimpleWorker, jobs run in the worker process); enqueue one by one,
    then block on each job's latest result (a stream read)."""

    def start(self) -> None:
        try:
            import redis
            import rq
        except ImportError as exc:
            raise Skip(f"rq not installed ({exc}): pip install rq") from exc
        self.rq = rq
        url = os.environ[URL_ENV]
        name = f"bench-{uuid.uuid4().hex[:8]}"
        self.conn = redis.Redis.from_url(url)
        self.queue = rq.Queue(name, connection=self.conn)
        rq_bin = str(Path(sys.executable).with_name("rq"))
        kind = ["--worker-class", "rq.worker.SimpleWorker"] if self.name == "rq-simple" else []
        self._spawn([[rq_bin, "worker", "--url", url, "--quiet", *kind, name]
                     for _ in range(self.workers)])

    def submit_all(self, fn: Any, items: list) -> list:
        jobs = [self.queue.enqueue(f"redis_peers.{fn.__name__}", x) for x in items]
        out = []
        for job in jobs:
            result = job.latest_result(timeout=120)
            if result is None or result.type != result.Type.SUCCESSFUL:
                raise RuntimeError(f"rq job {job.id}: {result and result.exc_string}")
            out.append(result.return_value)
        return out

    def stop(self) -> None:
        super().stop()
        self.conn.close()


class CeleryPeer(_Workers):
    """Celery: one `celery worker --concurrency W` (prefork pool) on its own queue, the
    Redis broker and result backend; `delay` one by one, then `get` each result."""

    def start(self) -> None:
        if app is None:
            raise Skip("celery not installed: pip install celery")
        self.qname = f"bench-{uuid.uuid4().hex[:8]}"
        celery_bin = str(Path(sys.executable).with_name("celery"))
        self._spawn([[celery_bin, "-A", "redis_peers", "worker", "-Q", self.qname,
                      "--concurrency", str(self.workers), "--pool", "prefork",
                      "--without-gossip", "--without-mingle", "--without-heartbeat",
                      "--loglevel", "WARNING", "-n", f"{self.qname}@%h"]])

    def submit_all(self, fn: Any, items: list) -> list:
        task = celery_tasks[fn.__name__]
        pending = [task.apply_async((x,), queue=self.qname) for x in items]
        return [p.get(timeout=120) for p in pending]


def rq_enqueue_many(url: str, client: Any, jobs: int, batch: int) -> dict[str, Any]:
    """RQ's bulk enqueue, the peer of bench_redis.py (b): `Queue.enqueue_many` of `jobs`
    calls of inc, one pipeline a batch; building the EnqueueData is timed apart."""
    import redis
    from rq import Queue

    connection = redis.Redis.from_url(url)
    queue = Queue(f"enqueue-rq-{uuid.uuid4().hex[:8]}", connection=connection)
    client.execute_command("MEMORY", "PURGE")
    before = client.info("memory")["used_memory"]
    build = send = 0.0
    for first in range(0, jobs, batch):
        t0 = time.perf_counter()
        datas = [Queue.prepare_data(inc, (i,)) for i in range(first, min(first + batch, jobs))]
        t1 = time.perf_counter()
        with connection.pipeline() as pipe:
            queue.enqueue_many(datas, pipeline=pipe)
            pipe.execute()
        send += time.perf_counter() - t1
        build += t1 - t0
    per_job = (client.info("memory")["used_memory"] - before) / jobs
    queued = queue.count
    connection.close()
    client.flushdb()
    if queued != jobs:
        raise RuntimeError(f"RQ queued {queued} of {jobs} jobs")
    return {"backend": "rq-enqueue_many", "jobs": jobs, "batch": batch, "build_s": build,
            "submit_s": send, "total_s": build + send, "bytes_per_job": per_job}

