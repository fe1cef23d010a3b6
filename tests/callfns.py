"""Importable functions that tests submit as calls (a worker's interpreter imports them).

Calls that must wait for the test block on a gate file, never on a bare sleep, and
give up after GATE_MAX_S so a failing test cannot hang a worker forever.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import shoal

GATE_MAX_S = 30.0


class CustomError(Exception):
    """An exception type the caller must get back as itself."""


class TwoArgError(Exception):
    """A common pattern that plain pickle cannot rebuild: __init__ takes other arguments
    than the message it passes on."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"error {code}: {detail}")
        self.code = code


def identity(value: object) -> object:
    return value


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return seconds if value is None else value


def sleep_ignoring_sigterm(seconds: float, value: object = None) -> object:
    """sleep_then, in a function that keeps on through SIGTERM (as one that catches it
    to clean up and carry on would)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        time.sleep(seconds)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return seconds if value is None else value


def touch(path: str | Path, value: object = None) -> object:
    """Leave a marker that this call ran."""
    Path(path).touch()
    return value


def touch_then_wait(path: str | Path, gate: str | Path | None) -> str:
    """Leave a marker that this call ran, then wait for the gate if one is given."""
    Path(path).touch()
    if gate is not None:
        wait_gate(gate)
    return Path(path).name


def wait_gate(gate: str | Path, value: object = None, started: str | Path | None = None) -> object:
    """Write our pid to `started` (if given), then block until the gate file exists."""
    if started is not None:
        Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + GATE_MAX_S
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.01)
    return value


def gated_square(gate: str | Path, x: int, blocked: int) -> int:
    """square(x), but the item `blocked` waits for the gate first."""
    if x == blocked:
        wait_gate(gate)
    return x * x


def boom(message: str) -> None:
    raise ValueError(message)


def raise_two_arg(code: int, detail: str) -> None:
    raise TwoArgError(code, detail)


def talk(text: str, started: str | Path | None = None, gate: str | Path | None = None,
         exit_code: int | None = None) -> str:
    """Print to stdout and stderr; then mark `started`, wait for `gate`, exit if asked."""
    print(text, flush=True)
    print(f"{text} (stderr)", file=sys.stderr, flush=True)
    if started is not None:
        Path(started).write_text(str(os.getpid()))
    if gate is not None:
        wait_gate(gate)
    if exit_code is not None:
        os._exit(exit_code)
    return text


def boom_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"item {x}")
    return x


def raise_custom(message: str) -> None:
    raise CustomError(message)


def fail_first_attempt(marker: str | Path, value: object) -> object:
    """Fail on the first run (no marker yet), succeed on the next; counts runs in the marker."""
    path = Path(marker)
    runs = int(path.read_text()) if path.exists() else 0
    path.write_text(str(runs + 1))
    if runs == 0:
        raise RuntimeError("first attempt fails")
    return value


def exit_now(code: int) -> None:
    os._exit(code)


def sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def segfault() -> None:
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the worker's folder
    ctypes.string_at(0)


def out_of_memory() -> None:
    raise MemoryError("cannot allocate the moon")


def unpicklable_result() -> object:
    return threading.Lock()


def unpicklable_exception() -> None:
    error = ValueError("carries a lock")
    error.lock = threading.Lock()  # type: ignore[attr-defined]
    raise error


def draws(n: int = 3) -> list[float]:
    generator = shoal.random()
    return [generator.random() for _ in range(n)]


def worker_and_draws(n: int = 3) -> tuple[str, int, list[float]]:
    """Who ran this call (worker id, interpreter pid) and what shoal.random() gave."""
    return os.environ.get("SHOAL_WORKER", ""), os.getpid(), draws(n)


def rendezvous_draws(folder: str | Path, gate: str | Path,
                     n: int = 3) -> tuple[str, int, list[float]]:
    """Check in under `folder`, wait for the gate, then report who ran and what it drew."""
    Path(folder, shoal.job_id()).touch()
    wait_gate(gate)
    return worker_and_draws(n)


def draws_fail_first(marker: str | Path) -> list[float]:
    """Draw, record the draws of each attempt, fail on the first attempt."""
    numbers = draws()
    path = Path(marker)
    earlier = path.read_text().splitlines() if path.exists() else []
    path.write_text("\n".join([*earlier, repr(numbers)]) + "\n")
    if not earlier:
        raise RuntimeError("first attempt fails")
    return numbers


def progress_then_wait(gate: str | Path, done: float, total: float) -> str:
    shoal.progress(done, total)
    wait_gate(gate)
    return "finished"


def read_config() -> dict:
    return shoal.config()


def job_context() -> tuple[str, int]:
    return shoal.job_id(), os.getpid()


class Box:
    """A value that can be weakly referenced: tests check who keeps results alive."""

    def __init__(self, value: object) -> None:
        self.value = value


def box(value: object) -> Box:
    return Box(value)


# -- initializers, interpreter restarts, pickling, memory ------------------------------

_INITIALIZED: object = None


def initialize(marker: str | Path, value: object) -> None:
    """An initializer: note our pid in `marker` (one line per run) and keep `value`."""
    global _INITIALIZED
    with open(marker, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    _INITIALIZED = value


def initialized_value() -> tuple[object, int]:
    return _INITIALIZED, os.getpid()


def failing_initializer(message: str) -> None:
    raise CustomError(message)


def pid() -> int:
    return os.getpid()


def rss_bytes() -> int:
    """This interpreter's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class RefusesPickling:
    """A value whose pickling fails with pickle.PicklingError."""

    def __reduce__(self) -> tuple:
        import pickle

        raise pickle.PicklingError("RefusesPickling will not be pickled")


def refuses_pickling() -> RefusesPickling:
    return RefusesPickling()


_INIT_STATE: str | None = None


def record_init(folder: str, state: str) -> None:
    """An initializer: leaves one file per interpreter and a state its calls can read."""
    global _INIT_STATE
    _INIT_STATE = state
    Path(folder, str(os.getpid())).touch(exist_ok=False)


def init_state(_: object = None) -> tuple[int, str | None]:
    return os.getpid(), _INIT_STATE
