"""Who may see the dashboard and act on the queue.

As Jupyter does: a random token in the printed URL; the first visit with it stores it in
a cookie, and every request (pages, API, the event stream) must carry it in the cookie,
the query or the `X-Shoal-Token` header. An action (cancel, retry) must be a POST with
the token in the header: a cookie alone does not do, so another site's page cannot make
the browser act (no CSRF), and a GET never acts. `read_only` refuses every action.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = "x-shoal-token"
SAFE_METHODS = frozenset({"GET", "HEAD"})
ACTION_METHODS = frozenset({"POST"})


def new_token() -> str:
    """A token nobody can guess (128 bits)."""
    return secrets.token_hex(16)


class Guard:
    """The token, the read-only switch and the cookie's name (per port: cookies are kept
    per host, so two dashboards on one machine each keep their own)."""

    def __init__(self, token: str, *, read_only: bool = False, port: int = 0) -> None:
        self.token = token
        self.read_only = read_only
        self.cookie = f"shoal_token_{port}"

    def matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def cookie_header(self) -> tuple[bytes, bytes]:
        value = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        return b"set-cookie", value.encode()


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookie(headers: dict[str, str], name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header is no token
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


async def _refuse(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class TokenCheck:
    """ASGI middleware: refuses (403) what `Guard` does not allow, sets the cookie on the
    first visit with the token in the URL."""

    def __init__(self, app: App, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        method = scope.get("method", "GET")
        in_query = self.guard.matches(_query_token(scope))
        in_header = self.guard.matches(headers.get(HEADER))
        in_cookie = self.guard.matches(_cookie(headers, self.guard.cookie))
        if method not in SAFE_METHODS | ACTION_METHODS:
            await _refuse(send, 405, "method not allowed")
            return
        if not (in_query or in_header or in_cookie):
            await _refuse(send, 403, "forbidden: open the URL `shoal dashboard` printed "
                          "(it carries the token)")
            return
        if method in ACTION_METHODS and not in_header:
            await _refuse(send, 403, f"forbidden: an action needs the {HEADER} header")
            return
        if method in ACTION_METHODS and self.guard.read_only:
            await _refuse(send, 403, "forbidden: this dashboard is read-only")
            return
        if not in_query or in_cookie:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  self.guard.cookie_header()]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
