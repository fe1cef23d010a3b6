"""The signals that stopped the worker, so a job killed by the same stop goes back to the
queue instead of failing.

Slurm (scancel, the time limit) signals every process of its job at once: the worker and
the jobs it runs get the same SIGTERM. Such a run did not fail; it was stopped with the
worker, and another worker should run it again with the same attempt. Python runs signal
handlers in the main thread only, so a slot can see its job die before the worker heard
the signal that killed it: a run that died of a stop signal waits a little
(`SAME_STOP_WAIT_S`) for the worker to hear it too.
"""

from __future__ import annotations

import signal
import threading
import time

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1})
SAME_STOP_WAIT_S = 3.0  # a loaded machine may run the worker's handler this late


def died_of(exit_code: int | None) -> int | None:
    """The signal a process died of: -N (killed), or 128+N (a shell whose child was)."""
    if exit_code is None:
        return None
    if exit_code < 0:
        return -exit_code
    if 128 < exit_code < 128 + 65:
        return exit_code - 128
    return None


class StopSignals:
    """What stop signals the worker heard (see the module docstring)."""

    def __init__(self) -> None:
        self._heard: set[int] = set()
        self._cond = threading.Condition()  # reentrant: a second signal may come inside

    def heard(self, signum: int) -> None:
        """The worker got `signum` (its signal handler says so)."""
        with self._cond:
            self._heard.add(signum)
            self._cond.notify_all()

    def stopped_with_worker(self, exit_code: int | None,
                            wait_s: float = SAME_STOP_WAIT_S) -> bool:
        """Whether a run that ended with `exit_code` died of a stop signal the worker got
        too (waiting up to `wait_s` for the worker to hear it)."""
        signum = died_of(exit_code)
        if signum not in STOP_SIGNALS:
            return False
        deadline = time.monotonic() + wait_s
        with self._cond:
            while signum not in self._heard:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True
