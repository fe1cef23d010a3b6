"""The worker: a loop of slots that claim jobs and hand each to the runner of its kind.

    loop.py       Worker: slots, claim, heartbeat (beat + reap), orphans, control, stop
    slot.py       Slot (one lease in flight) and the Runner protocol both runners keep
    handout.py    Handout: idle slots share one claim(worker, n)
    resources.py  Resources: what the worker has (cpus, mem, GPUs, named, labels)
    ledger.py     Ledger: what its jobs hold; the Capacity a claim carries; GPU ids, cores
    memwatch.py   the RSS of a job's process tree, for killing a job over its mem
    processes.py  ProcessRunner: command and job-file jobs as process groups
    calls.py      CallRunner: Python calls in one long-lived interpreter per slot
    callhost.py   that interpreter (`python -m shoal.worker.callhost`) and its client
    launch.py     what a job starts with (argv, environment, context) and its start
    kill.py       deadlines, kills, and the orphans of dead workers
    walltime.py   Walltime: only jobs expected to end before the worker must leave
    stops.py      StopSignals: a job killed by the signal that stopped the worker
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .loop import Worker, new_worker_id
    from .slot import Runner, Slot

__all__ = ["Runner", "Slot", "Worker", "new_worker_id"]
# imported on first use: a call interpreter (python -m shoal.worker.callhost) imports
# this package but needs none of the worker loop
__getattr__, __dir__ = exports(globals(), {"Runner": ".slot", "Slot": ".slot",
                                           "Worker": ".loop", "new_worker_id": ".loop"})
