"""Long-lived interpreters that run Python call jobs, one per worker slot.

    worker slot thread                      python -m shoal.callhost  (own session)
    ------------------                      ---------------------------------------
    CallHost.call(request) ── frame ──►     read request; stdout+stderr -> the job's log;
                                            set context; fn(*args, **kwargs)
                           ◄── frame ──     value or exception (cloudpickled), traceback;
                                            a log left empty is removed
    EOF instead of a frame: the interpreter died (segfault, os._exit, SIGKILL, OOM,
    or we killed it for a timeout or a lost lease); the next call starts a fresh one.

Frames are an 8-byte length and a pickle. Requests come in on a private copy of
stdin (fd 0 itself becomes /dev/null, so a call that reads stdin cannot eat them)
and replies go out on a pipe whose number is the first argument.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
from typing import Any

_HEADER = struct.Struct(">Q")


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> Any | None:
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def write_frame(fd: int, message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(body)) + body)
    while view:
        view = view[os.write(fd, view):]


# -- the interpreter's side --------------------------------------------------------------


_functions: dict[bytes, Any] = {}  # unpickled callables by their pickle: load each once


def _load(payload: bytes) -> tuple[Any, tuple, dict[str, Any]]:
    import cloudpickle

    fn_blob, args, kwargs = cloudpickle.loads(payload)
    fn = _functions.get(fn_blob)
    if fn is None:
        fn = cloudpickle.loads(fn_blob)
        if len(_functions) > 256:
            _functions.clear()
        _functions[fn_blob] = fn
    return fn, args, kwargs


def _open_log(path: str) -> int:
    """Point stdout and stderr at the call's log, so `shoal logs` shows it as it runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, flags, 0o644)
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
    from . import calls, context

    log_fd = _open_log(request["log"])
    os.environ.update(request["env"])
    context.set_current(context.JobContext(**request["context"]))
    try:
        fn, args, kwargs = _load(request["payload"])
        value = fn(*args, **kwargs)
        try:
            blob, summary = calls.pack_value(value)
        except Exception as exc:
            raise TypeError(f"the return value cannot be pickled: {exc}") from exc
        reply = {"ok": True, "payload": blob, "summary": summary}
    except BaseException as exc:  # every failure, SystemExit included, goes to the caller
        blob, summary = calls.pack_exception(exc)
        reply = {"ok": False, "payload": blob, "summary": summary}
    finally:
        context.set_current(None)
    reply["log"] = _close_log(log_fd, request["log"])
    return reply


def serve(reply_fd: int) -> None:
    """Run requests until the worker closes the pipe."""
    request_fd = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides about stops
    while (request := read_frame(request_fd)) is not None:
        write_frame(reply_fd, _run_one(request))


# -- the worker's side --------------------------------------------------------------------


class CallHost:
    """One long-lived interpreter; `call` starts it on first use and after it died."""

    def __init__(self, env: dict[str, str], cwd: str) -> None:
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._replies = -1

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def ensure_started(self) -> None:
        if self.process is not None and self._replies >= 0:  # alive until a read says EOF
            return
        read_end, write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shoal.callhost", str(write_end)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(write_end,), start_new_session=True,
                env={**self.env, "SHOAL_CALLHOST": "1"}, cwd=self.cwd,
            )
        finally:
            os.close(write_end)
        self._replies = read_end

    def call(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Run one call; None if the interpreter died (see `exit_reason`)."""
        self.ensure_started()
        assert self.process is not None and self.process.stdin is not None
        try:
            write_frame(self.process.stdin.fileno(), request)
        except (BrokenPipeError, OSError):
            return None
        reply = read_frame(self._replies)
        if reply is None:
            self._reap()
        return reply

    def exit_reason(self) -> str:
        """Why the interpreter died, in a person's words."""
        from .runner import describe_exit

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
