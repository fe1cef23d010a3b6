"""Starting the dashboard: where it listens, the URL it prints, uvicorn running it."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..queue.base import Queue

if TYPE_CHECKING:
    from .app import Dashboard

DEFAULT_HOST = "127.0.0.1"  # this machine only, unless --bind says otherwise
DEFAULT_PORT = 8265  # taken: a free port is picked instead
SHUTDOWN_S = 3.0  # open event streams never end by themselves: cut them after this


def parse_bind(text: str | None) -> tuple[str, int | None]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (this machine only) as (host, port); None: the
    defaults (port None: DEFAULT_PORT, or any free one if taken)."""
    if not text:
        return DEFAULT_HOST, None
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"--bind: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8265, "
                         "0.0.0.0:8265 for every interface)")
    host = host.strip("[]") or DEFAULT_HOST
    return host, int(port_text)


def listen(host: str, port: int | None) -> socket.socket:
    """A listening socket; --bind's port exactly, else DEFAULT_PORT or a free one."""
    try:
        infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--bind: {host}: {exc.strerror}") from None
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
        raise UsageError(f"--bind: cannot listen on {host}:{port}: {exc.strerror}") from None
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
        """uvicorn's server, which also ends the dashboard's event streams on Ctrl-C (they
        would hold the shutdown until its timeout)."""

        def __init__(self, config: uvicorn.Config, web: Dashboard) -> None:
            super().__init__(config)
            self.web = web

        def handle_exit(self, sig: int, frame: object) -> None:
            self.web.stopping = True
            super().handle_exit(sig, frame)

    return _Server


def serve(queue: Queue, bind: str | None, *, read_only: bool = False,
          every_s: float = 1.0, say: Callable[[str], None] = print) -> None:
    """Serve the dashboard over `queue` until interrupted; `say` the URL first."""
    import uvicorn

    from .app import build_app
    from .auth import Guard, new_token

    Server = _server_class()

    sock = listen(*parse_bind(bind))
    guard = Guard(new_token(), read_only=read_only, port=sock.getsockname()[1])
    app, web = build_app(queue, guard, every_s=every_s)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_S,
                            lifespan="on")
    say(f"shoal dashboard{' (read-only)' if read_only else ''} of {queue.url}: "
        f"{url_of(sock, guard.token)}")
    try:
        Server(config, web).run(sockets=[sock])
    finally:
        sock.close()
