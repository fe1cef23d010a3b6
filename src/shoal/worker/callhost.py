"""Long-lived interpreters that run Python call jobs, one per worker slot.

    worker slot thread                      python -m shoal.worker.callhost (own session)
    ------------------                      ---------------------------------------
    CallHost.ensure_started()  ◄── frame ── "ready" once its imports are done (a call's
                                            timeout starts only after this)
    CallHost.call(request) ── frame ──►     read request; stdout+stderr -> the job's log;
      (with the function blobs              set context; load fn by digest (cached);
       it does not keep yet)                run the initializer once; fn(*args, **kwargs)
                           ◄── frame ──     value or exception (cloudpickled), traceback,
                                            digests it keeps; a log left empty is removed
    EOF instead of a frame: the interpreter died (segfault, os._exit, SIGKILL, OOM,
    or we killed it for a timeout or a lost lease); the next call starts a fresh one.

Frames are an 8-byte length and a pickle. Requests come in on a private copy of
stdin (fd 0 itself becomes /dev/null, so a call that reads stdin cannot eat them)
and replies go out on a pipe whose number is the first argument.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import signal
import struct
import sys
from typing import TYPE_CHECKING, Any

from .. import defaults
from ..fsutil import make_dir, open_new

if TYPE_CHECKING:  # the worker's side only: the interpreter itself starts nothing
    import subprocess

_HEADER = struct.Struct(">Q")


def _read_exact(fd: int, size: int) -> bytearray | None:
    """Read `size` bytes into one buffer (a big call is not held twice while it arrives)."""
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        got = os.readv(fd, [view[done:done + (1 << 24)]])
        if not got:
            return None
        done += got
    return buffer


def read_frame(fd: int) -> Any | None:
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def write_frame(fd: int, message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    for part in (_HEADER.pack(len(body)), body):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


# -- the interpreter's side --------------------------------------------------------------


class FunctionCache:
    """Unpickled functions by digest, least recently used first out, within `budget`
    pickled bytes; the latest is kept whatever its size (a big function loads once)."""

    def __init__(self, budget: int = defaults.CALLHOST_FUNCTION_BYTES) -> None:
        self.budget = budget
        self._kept: collections.OrderedDict[str, tuple[Any, int]] = collections.OrderedDict()
        self._size = 0

    def __contains__(self, digest: str) -> bool:
        return digest in self._kept

    def digests(self) -> list[str]:
        return list(self._kept)

    def get(self, digest: str, blobs: dict[str, bytes]) -> Any:
        kept = self._kept.get(digest)
        if kept is not None:
            self._kept.move_to_end(digest)
            return kept[0]
        import cloudpickle

        fn = cloudpickle.loads(_blob(digest, blobs))
        self._kept[digest] = (fn, len(blobs[digest]))
        self._size += len(blobs[digest])
        while len(self._kept) > 1 and self._size > self.budget:
            _, (_, size) = self._kept.popitem(last=False)
            self._size -= size
        return fn


def _blob(digest: str, blobs: dict[str, bytes]) -> bytes:
    blob = blobs.get(digest)
    if blob is None:  # the worker believed we kept it: a bug, said plainly
        raise LookupError(f"shoal: function blob {digest[:12]} was neither sent nor kept")
    return blob


_functions = FunctionCache()
_initialized: set[str] = set()  # digests of initializers (with their arguments) run here


def _load(request: dict[str, Any]) -> tuple[Any, tuple, dict[str, Any]]:
    """The call's function (cached by digest), arguments, and its initializer run once."""
    import cloudpickle

    blobs = request.get("blobs") or {}
    init = request.get("init")
    if init and init not in _initialized:
        # As ProcessPoolExecutor's initializer, once per interpreter; but if it raises,
        # only this call fails (with its exception) and the next call tries it again,
        # where the stdlib would break the whole pool for one bad start.
        cloudpickle.loads(_blob(init, blobs))()  # initializer(*initargs), pickled as one
        _initialized.add(init)
    if request.get("fn") is None:  # a job from before functions were stored apart
        fn_blob, args, kwargs = cloudpickle.loads(request["payload"])
        return cloudpickle.loads(fn_blob), args, kwargs
    args, kwargs = cloudpickle.loads(request["payload"])
    if request.get("dependencies"):  # the values of the calls this one takes results of
        from ..calls import resolve_dependencies

        args, kwargs = resolve_dependencies(args, kwargs, request["dependencies"])
    return _functions.get(request["fn"], blobs), args, kwargs


def _open_log(path: str) -> int:
    """Point stdout and stderr at the call's log, so `shoal logs` shows it as it runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    try:
        fd = open_new(path, flags)  # private, or group-shared (fsutil)
    except FileNotFoundError:
        make_dir(os.path.dirname(path))
        fd = open_new(path, flags)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    return fd


def _close_log(fd: int, path: str) -> str | None:
    """A call that printed nothing leaves no log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    size = os.fstat(fd).st_size
    os.close(fd)
    if size:
        return path
    with contextlib.suppress(OSError):
        os.unlink(path)
    return None


def _run_one(request: dict[str, Any]) -> dict[str, Any]:
    from .. import calls, context

    log_fd = _open_log(request["log"])
    os.environ.update(request["env"])
    context.set_current(context.JobContext(**request["context"]))
    try:
        fn, args, kwargs = _load(request)
        value = fn(*args, **kwargs)
        del fn, args, kwargs
        try:
            blob, summary = calls.pack_value(value)
        except Exception as exc:  # its own type, so the caller can tell what went wrong
            exc.add_note(f"shoal: the call's return value cannot be pickled (a "
                         f"{type(value).__qualname__}), so it cannot be sent back")
            raise
        reply = {"ok": True, "payload": blob, "summary": summary}
    except BaseException as exc:  # every failure, SystemExit included, goes to the caller
        blob, summary = calls.pack_exception(exc)
        reply = {"ok": False, "payload": blob, "summary": summary}
    finally:
        context.set_current(None)
    reply["log"] = _close_log(log_fd, request["log"])
    reply["known"] = [*_functions.digests(), *_initialized]
    return reply


def serve(reply_fd: int) -> None:
    """Run requests until the worker closes the pipe."""
    request_fd = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides about stops
    import cloudpickle  # noqa: F401 - imported before "ready": start-up is not a call's time

    from .. import calls, context  # noqa: F401

    write_frame(reply_fd, {"ready": os.getpid()})
    while True:
        request = read_frame(request_fd)
        if request is None:
            return
        reply = _run_one(request)
        del request  # not kept while we wait for the next one
        write_frame(reply_fd, reply)
        del reply


# -- the worker's side --------------------------------------------------------------------


class CallHost:
    """One long-lived interpreter; `call` starts it on first use and after it died."""

    def __init__(self, env: dict[str, str], cwd: str) -> None:
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._replies = -1
        self.known: set[str] = set()  # blob digests the interpreter keeps (loaded, run)
        self.tasks = 0  # calls run that carry max_tasks_per_child

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def ensure_started(self) -> bool:
        """Start the interpreter if needed and wait until it is ready; False if it died."""
        if self.process is not None and self._replies >= 0:  # alive until a read says EOF
            return True
        import subprocess

        read_end, write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shoal.worker.callhost", str(write_end)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(write_end,), start_new_session=True,
                env={**self.env, "SHOAL_CALLHOST": "1", "SHOAL_WORKER_PID": str(os.getpid())},
                cwd=self.cwd,
            )
        finally:
            os.close(write_end)
        self._replies = read_end
        self.known, self.tasks = set(), 0
        if read_frame(self._replies) is None:
            self._reap()
            return False
        return True

    def call(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Run one call; None if the interpreter died (see `exit_reason`)."""
        if not self.ensure_started():
            return None
        assert self.process is not None and self.process.stdin is not None
        try:
            write_frame(self.process.stdin.fileno(), request)
        except OSError:  # it died before reading the request (BrokenPipeError)
            self._reap()
            return None
        reply = read_frame(self._replies)
        if reply is None:
            self._reap()
        else:
            self.known = set(reply.get("known", ()))
        return reply

    def exit_reason(self) -> str:
        """Why the interpreter died, in a person's words."""
        from .launch import describe_exit

        code = self.process.returncode if self.process is not None else None
        if code is None:
            return "worker process died"
        return f"worker process died ({describe_exit(code) or 'exit status 0'})"

    def _reap(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything it left running
        self.process.wait()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        os.close(self._replies)
        self._replies = -1

    def close(self) -> None:
        """Stop the interpreter (closing its request pipe ends its loop)."""
        if self.process is None:
            return
        import subprocess

        if self.process.poll() is None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._replies >= 0:
            os.close(self._replies)
            self._replies = -1
        self.process = None


if __name__ == "__main__":
    serve(int(sys.argv[1]))
