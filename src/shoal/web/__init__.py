"""The web dashboard (`shoal dashboard`): a small Starlette app over a `Queue`.

It needs the `web` extra (starlette, uvicorn); `require_web` says so in one line when
they are missing, so the rest of shoal never imports them.
"""

from __future__ import annotations

from ..errors import UsageError


def require_web(what: str = "shoal dashboard") -> None:
    """Fail with one line naming `what` (the command or option) if the `web` extra is
    not installed."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"{what} needs the web extra ({exc.name} is missing): "
                         "pip install 'shoal[web]'") from None
