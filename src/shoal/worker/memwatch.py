"""The memory of running jobs: the resident size of each job's process tree, sampled from
/proc, for killing a job that uses more than the `mem` it asked for.

A job leads its own session, so its tree is every process of that session (what it
started with a new session of its own escapes, as it escapes a kill). One pass over
/proc serves every job; the worker samples only while a job that asked for mem runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .resources import format_size

SAMPLE_S = 1.0  # how often the worker samples while a job with a mem need runs
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_RSS = 21  # rss (pages) among /proc/PID/stat's fields after the command's ")"
_SESSION = 3


def rss_of_sessions(sessions: Iterable[int]) -> dict[int, int]:
    """Resident bytes of every process in each session (by session id = leader pid).
    Empty where /proc is not there."""
    wanted = set(sessions)
    used = dict.fromkeys(wanted, 0)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
            session = int(fields[_SESSION])
            if session in wanted:
                used[session] += int(fields[_RSS]) * _PAGE
        except (OSError, ValueError, IndexError):  # gone meanwhile, or a kernel thread
            continue
    return used


def over_reason(used: float, limit: float) -> str:
    """The reason a job killed for its memory ends with."""
    return f"used {format_size(used)}, more than its mem={format_size(limit)}"
