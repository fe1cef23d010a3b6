"""The runner of call jobs: Python functions run in one long-lived interpreter per slot.

An interpreter (callhost.py) starts on a slot's first call and keeps the functions
it loaded, so a call pays neither Python's start-up nor the function's unpickling
again; only the blobs it does not keep yet travel with a call. A call that carries
`max_tasks_per_child` retires its interpreter after that many such calls, and a
killed or crashed interpreter is replaced at the next call. A call that takes other
calls' results (`job.after`) gets their pickled values, read from the queue here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import IncompatibleJob, JobNotFound, MalformedJob
from ..job import Job, Result, State
from ..queue import Queue
from .callhost import CallHost
from .kill import Deadlines
from .launch import job_context, job_environment
from .slot import Slot


class CallRunner:
    """Runs call jobs in each slot's interpreter; see the module docstring."""

    def __init__(self, queue: Queue, deadlines: Deadlines, worker_dir: Path) -> None:
        self.queue = queue
        self.deadlines = deadlines
        self.worker_dir = worker_dir
        self._hosts: dict[int, CallHost] = {}  # by slot index; a slot touches only its own

    def run(self, slot: Slot) -> Result:
        from ..calls import check_runtime  # here: a worker of shell jobs never unpickles

        lease = slot.lease
        log_path = str(self.queue.files.attempt_log(lease))
        try:
            check_runtime(lease.job)
        except IncompatibleJob as exc:
            return slot.result(State.FAILED, str(exc))
        host = self._host(slot)
        if not host.ensure_started():  # its start-up (imports) is no part of the call's time
            return slot.result(State.FAILED, host.exit_reason())
        context = job_context(self.queue, lease)
        request = {"payload": lease.job.payload, "fn": lease.job.meta.get("fn"),
                   "init": lease.job.meta.get("init"), "log": log_path,
                   "context": vars(context),
                   "env": {**context.environment(), "SHOAL_JOB_ID": lease.job_id,
                           "SHOAL_ATTEMPT": str(lease.attempt), **slot.env}}
        try:
            request["blobs"] = self._blobs(lease.job, host.known)
        except MalformedJob as exc:
            return slot.result(State.FAILED, f"malformed: {exc}")
        if lease.job.after:
            try:
                request["dependencies"] = self._dependency_values(lease.job)
            except JobNotFound as exc:
                return slot.result(State.FAILED, str(exc))
        reply = self._call(slot, host, request)
        del request
        slot.retries = lease.job.retries
        self._retire_if_spent(host, lease.job.meta.get("max_tasks_per_child"))
        if reply is None:
            timeout_s = lease.job.timeout_s
            timed_out = slot.timed_out(timeout_s)
            reason = f"timed out after {timeout_s:g} s" if timed_out else host.exit_reason()
            partial = log_path if os.path.exists(log_path) else None  # what it printed first
            died = host.process.returncode if host.process is not None else None
            return slot.result(State.FAILED, reason, log=partial, exit_code=died)
        if reply["ok"]:
            return slot.result(State.DONE, log=reply["log"], value=reply["summary"],
                               payload=reply["payload"])
        return slot.result(State.FAILED, reply["summary"], log=reply["log"],
                           payload=reply["payload"])

    def _host(self, slot: Slot) -> CallHost:
        host = self._hosts.get(slot.index)
        if host is None:
            env = job_environment(slot.lease, self.queue.url, {})
            host = self._hosts[slot.index] = CallHost(env, str(self.worker_dir))
        return host

    def _blobs(self, job: Job, known: set[str]) -> dict[str, bytes]:
        """The function blobs of `job` that its interpreter does not keep yet."""
        found = {}
        for digest in job.blob_refs:
            if digest in known:
                continue
            blob = job.blobs.get(digest) or self.queue.get_blob(digest)
            if blob is None:
                raise MalformedJob(f"job {job.id}: function blob {digest} is not in the queue")
            found[digest] = blob
        return found

    def _dependency_values(self, job: Job) -> dict[str, bytes]:
        """The pickled return value of each job `job` comes after, read from the queue in
        one look (`watch` without waiting): the call receives them in place of the
        futures it was given."""
        import cloudpickle

        results = {r.job_id: r for r in self.queue.watch(set(job.after), 0.0)}
        values = {}
        for dep_id in job.after:
            result = results.get(dep_id)
            if result is None or result.state is not State.DONE:
                # A watch that does not wait may not have heard yet (tcp pushes results
                # to watchers): the job's own record says.
                status = self.queue.get(dep_id)
                result = status.result if status is not None else None
                if result is None or result.state is not State.DONE:
                    state = status.state.value if status is not None else "unknown"
                    raise JobNotFound(f"dependency {dep_id} has no value to pass "
                                      f"(it is {state})")
            values[dep_id] = (result.payload if result.payload is not None
                              else cloudpickle.dumps(None))
        return values

    def _call(self, slot: Slot, host: CallHost, request: dict[str, Any]) -> dict | None:
        """Send the call to the ready interpreter under the job's deadline."""
        slot.process = host.process
        if slot.process is not None:
            slot.pin(slot.process.pid)
        slot.started = time.time()
        with slot.guarded(self.deadlines, slot.lease.job.timeout_s, lives_on=True):
            return host.call(request)

    def _retire_if_spent(self, host: CallHost, max_tasks: int | None) -> None:
        """Like ProcessPoolExecutor's max_tasks_per_child: a fresh interpreter after that
        many calls which carry the limit (the next call starts it)."""
        if not max_tasks or host.process is None:
            return
        host.tasks += 1
        if host.tasks >= max_tasks:
            host.close()

    def kill(self, slot: Slot) -> None:
        slot.kill_now(self.deadlines)

    def close(self) -> None:
        for host in self._hosts.values():
            host.close()
        self._hosts.clear()
