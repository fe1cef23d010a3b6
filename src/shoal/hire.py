"""`shoal hire` and `shoal fire`, whatever the provider (SSH hosts, this host, Slurm).

Hiring asks a provider for workers; firing first asks the workers through the queue to
stop (they finish or give back their jobs), then, per provider, drops the workers that
never started and stops the hard way those that did not leave in time (`retire`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .job import WorkerInfo
from .providers import Handle, Provider, retire


def default_log_dir(queue: str) -> str:
    """Workers' own logs: beside a folder queue (every host sees them), else ~/.cache."""
    from .net.contact import is_contact_file

    if ("://" not in queue and not is_contact_file(queue)) or queue.startswith("dir://"):
        folder = queue.removeprefix("dir://")
        return str(Path(folder).absolute() / ".shoal" / "worker-logs")
    return str(Path(os.path.expanduser("~/.cache/shoal/worker-logs")))


@dataclass
class Fired:
    """What the hard part of a fire did: workers dropped before they started, and workers
    stopped because they had not left after the wait."""

    unstarted: int = 0
    late: int = 0


def owners(providers: Sequence[Provider], workers: Sequence[WorkerInfo]
           ) -> dict[str, list[Handle]]:
    """The handles of `workers`, by the name of the first provider that owns each."""
    found: dict[str, list[Handle]] = {p.name: [] for p in providers}
    for worker in workers:
        for provider in providers:
            handle = provider.handle_of(worker)
            if handle is not None:
                found[provider.name].append(handle)
                break
    return found


def hard_stop(providers: Sequence[Provider], workers: Sequence[WorkerInfo], wait_s: float,
              *, everything: Sequence[Provider] = ()) -> Fired:
    """After the queue asked `workers` to stop: per provider, drop its workers that never
    started, give the others `wait_s` to leave, then stop those still there. A provider in
    `everything` retires every worker it holds for the queue, registered or not."""
    fired = Fired()
    mine = owners(providers, workers)
    for provider in providers:
        running = list(mine[provider.name])
        unstarted: list[Handle] = []
        if provider in everything:
            unstarted = provider.unstarted()
            running += [h for h in provider.hired() if h not in running]
        if not running and not unstarted:
            continue
        fired.unstarted += len(unstarted)
        fired.late += len(retire(provider, running, unstarted, wait_s))
    return fired
