"""Starting the dashboard: where it listens, the URL it prints, uvicorn running it (in
the foreground for `shoal dashboard`, on a thread beside a run or a coordinator)."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..queue.base import Queue

if TYPE_CHECKING:
    from .app import Dashboard
    from .auth import Guard

log = logging.getLogger("shoal.web")

DEFAULT_HOST = "127.0.0.1"  # this machine only, unless --bind says otherwise
DEFAULT_PORT = 8265  # taken: a free port is picked instead
SHUTDOWN_S = 3.0  # open event streams never end by themselves: cut them after this
JOIN_MARGIN_S = 5.0  # beyond SHUTDOWN_S, for a loaded machine


def parse_bind(text: str | None, option: str = "--bind") -> tuple[str, int | None]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (this machine only) as (host, port); None: the
    defaults (port None: DEFAULT_PORT, or any free one if taken). Errors name `option`."""
    if not text:
        return DEFAULT_HOST, None
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"{option}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8265, "
                         "0.0.0.0:8265 for every interface)")
    host = host.strip("[]") or DEFAULT_HOST
    return host, int(port_text)


def listen(host: str, port: int | None, option: str = "--bind") -> socket.socket:
    """A listening socket; --bind's port exactly, else DEFAULT_PORT or a free one."""
    try:
        infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"{option}: {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((address[0], DEFAULT_PORT if port is None else port, *address[2:]))
        except OSError as exc:
            if port is not None or exc.errno != errno.EADDRINUSE:
                raise
            sock.bind((address[0], 0, *address[2:]))
    except OSError as exc:
        sock.close()
        raise UsageError(f"{option}: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, token: str) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = socket.gethostname()
    return f"http://{shown}:{port}/?token={token}"


def _server_class() -> type:
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn's server, which also ends the dashboard's event streams when it stops
        (they would hold the shutdown until its timeout)."""

        def __init__(self, config: uvicorn.Config, web: Dashboard) -> None:
            super().__init__(config)
            self.web = web

        def handle_exit(self, sig: int, frame: object) -> None:
            self.web.stopping = True
            super().handle_exit(sig, frame)

        def stop(self) -> None:
            """Stop from another thread (no signal reaches a server off the main one)."""
            self.web.stopping = True
            self.should_exit = True

    return _Server


def _server(queue: Queue, guard: Guard, every_s: float) -> Any:
    """A uvicorn server of the dashboard over `queue`."""
    import uvicorn

    from .app import build_app

    app, web = build_app(queue, guard, every_s=every_s)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_S,
                            lifespan="on")
    return _server_class()(config, web)


def _guard(sock: socket.socket, read_only: bool) -> Guard:
    from .auth import Guard, new_token

    return Guard(new_token(), read_only=read_only, port=sock.getsockname()[1])


def _url_line(url: str, sock: socket.socket, guard: Guard) -> str:
    return (f"shoal dashboard{' (read-only)' if guard.read_only else ''} of {url}: "
            f"{url_of(sock, guard.token)}")


def serve(queue: Queue, bind: str | None, *, read_only: bool = False,
          every_s: float = 1.0, say: Callable[[str], None] = print) -> None:
    """Serve the dashboard over `queue` until interrupted; `say` the URL first."""
    sock = listen(*parse_bind(bind))
    guard = _guard(sock, read_only)
    server = _server(queue, guard, every_s)
    say(_url_line(queue.url, sock, guard))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class Beside:
    """The dashboard on a thread of its own, beside a `shoal run` or a coordinator in the
    same process (`--dashboard`): it takes its port when made (a bad or busy
    --dashboard-bind is told before the command starts), serves from `start` to `stop`,
    then closes what it opened.

    `start` gets the queue as a function, called on that thread: a coordinator's own
    client can only be opened once the coordinator serves (its main thread, later)."""

    def __init__(self, bind: str | None, *, option: str = "--dashboard-bind",
                 every_s: float = 1.0) -> None:
        self._every_s = every_s
        self._sock = listen(*parse_bind(bind, option), option)
        self._guard = _guard(self._sock, False)
        self._lock = threading.Lock()
        self._server: Any = None
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self, open_queue: Callable[[], Queue], url: str, *, close_queue: bool = False,
              say: Callable[[str], None] = print) -> Beside:
        """Serve the queue `open_queue` gives (closed at the end if `close_queue`); `say`
        the URL (`url`: the queue's, for the line) once."""
        self._thread = threading.Thread(target=self._serve, args=(open_queue, close_queue),
                                        name="shoal-dashboard", daemon=True)
        self._thread.start()
        say(_url_line(url, self._sock, self._guard))
        return self

    def _serve(self, open_queue: Callable[[], Queue], close_queue: bool) -> None:
        queue = None
        try:
            queue = open_queue()
            with self._lock:
                if self._stopped:
                    return
                self._server = _server(queue, self._guard, self._every_s)
            self._server.run(sockets=[self._sock])
        except Exception as exc:  # the run or the coordinator goes on without it
            log.warning("the dashboard stopped: %s", exc)
        finally:
            if queue is not None and close_queue:
                queue.close()

    def stop(self) -> None:
        """End open pages' streams, stop serving, wait for the thread (a bounded time).
        Once or more, from any thread."""
        with self._lock:
            self._stopped = True
            if self._server is not None:
                self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=SHUTDOWN_S + JOIN_MARGIN_S)
        self._sock.close()

    def __enter__(self) -> Beside:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
