"""The conformance suite's own marks: where a backend disagrees with the contract today.

`@pytest.mark.disagrees(folder="issue 12: ...", tcp="...")` keeps a test asserting the
target behaviour and makes the named backends' cases `xfail(strict=True)`: CI stays
green while they fail, and turns red the day one passes, so the mark is removed with
the fix. The backend of a case is the param of `queue_factory` (or of any fixture whose
param is a backend name, such as `shared_queue`).
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "disagrees(**reasons): backend name -> why it fails this test today "
        "(the case becomes xfail(strict=True))")


def backend_of(item: pytest.Item) -> str | None:
    """The backend a parametrised case runs on, or None."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for name in ("queue_factory", "shared_queue", "served_factory"):
        if name in callspec.params:
            return str(callspec.params[name])
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        mark = item.get_closest_marker("disagrees")
        if mark is None:
            continue
        reason = mark.kwargs.get(backend_of(item) or "")
        if reason:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
