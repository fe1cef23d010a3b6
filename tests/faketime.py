"""A process on a faked wall clock, its monotonic clock left true (libfaketime).

The library comes from the pip package `libfaketime` (a test dependency: it ships the
library in its wheel), so a fresh machine has it after `pip install -e '.[test]'`.
Debian's faketime 0.9.10 is not used: with only the wall clock faked it makes Python's
`time.sleep` fail with EINVAL. Missing: the test skips saying so, and fails under CI=true.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def library() -> str:
    """The preload library's path."""
    spec = importlib.util.find_spec("libfaketime")
    found = (Path(spec.origin).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
             if spec is not None and spec.origin else None)
    if found is None or not found.exists():
        reason = "libfaketime is not installed (pip install libfaketime: a test dependency)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return str(found)


def fixed_offset(offset: str) -> dict[str, str]:
    """The environment of a process whose wall clock is `offset` ("+600s") off; checked
    once on a Python child, so a row never passes on a clock that was not moved."""
    env = {"LD_PRELOAD": library(), "FAKETIME": offset, "FAKETIME_NO_CACHE": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    _check_moved(env, offset)
    return env


def _check_moved(env: dict[str, str], offset: str) -> None:
    """Fail unless a Python child under `env` sees its wall clock `offset` off."""
    seen = subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)
    off = float(seen.stdout) - time.time()
    wanted = float(offset.removesuffix("s"))
    assert abs(off - wanted) < 30, f"libfaketime {offset}: the child's clock was {off:+.0f} s off"


def controlled(control: Path) -> dict[str, str]:
    """The environment of a process whose wall clock is off by what `control` says (an
    offset such as "+600s", read at each clock read: `jump` moves it). Checked once on a
    Python child, so a jump test never passes on a clock that cannot move."""
    env = {"LD_PRELOAD": library(), "FAKETIME_TIMESTAMP_FILE": str(control),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    jump(control, "+3600s")
    _check_moved(env, "+3600s")
    jump(control, "+0s")
    return env


def jump(control: Path, offset: str) -> None:
    """Move a controlled clock at once (a rename: never a half-written file)."""
    fresh = control.with_suffix(".new")
    fresh.write_text(f"{offset}\n")
    fresh.rename(control)
