"""Importable job functions for the conformance suite (a worker's interpreter imports them).

Jobs that must stay running while the test looks at them wait on a gate file, and give
up after tests.callfns.GATE_MAX_S, so a failing test cannot hang a worker.
"""

from __future__ import annotations

import sys

import shoal
from tests.callfns import wait_gate


def say_then_wait(gate: str, first: str, last: str) -> str:
    """Print `first`, wait for the gate, print `last`: a log that grows while it runs."""
    print(first, flush=True)
    print(f"{first} on stderr", file=sys.stderr, flush=True)
    wait_gate(gate)
    print(last, flush=True)
    return last


def report_then_wait(gate: str, done: float, total: float) -> str:
    """Report progress through shoal.progress, then wait for the gate."""
    shoal.progress(done, total)
    wait_gate(gate)
    return "reported"


def shared_config() -> dict:
    """The queue's shared configuration as a running job sees it."""
    return shoal.config()
