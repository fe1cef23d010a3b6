"""What a worker's jobs hold of its resources: the free `Capacity` a claim carries, and
the GPUs and cores each job gets.

Claims run without a lock (two slots may claim at once, one of them inside a finish), so
each claim carries what was free when it started and `take` checks every lease again
as it comes back: a lease that no longer fits (another claim took the room meanwhile)
is refused, and the worker gives it back to the queue. A job's GPUs are specific ids,
never two running jobs' at once; with `pin`, so are its cores.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

from ..job import Job, Lease
from ..queue.scheduling import CPUS, GPUS, MEM, Capacity, needs_of
from .resources import Resources


@dataclass(frozen=True)
class Share:
    """What one job holds while it runs here."""

    needs: dict[str, float]
    gpus: tuple[str, ...] = ()
    cores: tuple[int, ...] = ()
    env: dict[str, str] | None = None  # what the job's process is told of its share


class Ledger:
    """The worker's resources minus what its leased jobs hold; see the module docstring."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.totals = resources.totals()
        self.labels = resources.labels
        self._shares: dict[tuple[str, int], Share] = {}  # by attempt: running, or claimed
        self._held: dict[str, float] = dict.fromkeys(self.totals, 0.0)  # cpus among them
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0  # slots waiting for room: a share given back wakes them
        # A job that does not state its cpus keeps the worker's own OMP_NUM_THREADS.
        self._omp_default = os.environ.get("OMP_NUM_THREADS")
        # The share of a job with no needs, when it is the same for all (no pinning).
        self._plain = None if resources.pin else Share(
            {CPUS: 1}, env=self._environment(Job.command_job(["true"]), {CPUS: 1}, (), ()))

    def capacity(self, leaving: Lease | None = None) -> Capacity:
        """What a claim may take now; with `leaving`, as if that job were over (the
        claim made with its finish)."""
        with self._cond:
            free = {name: total - self._held.get(name, 0) for name, total in self.totals.items()}
            share = self._shares.get(_key(leaving)) if leaving is not None else None
            if share is not None:
                for name, amount in share.needs.items():
                    free[name] = free.get(name, 0) + amount
        return Capacity(free, self.labels)

    def room(self, leaving: Lease | None = None) -> int:
        """How many more jobs may start: each takes at least one cpu."""
        free_cpus = self._free_cpus()
        if leaving is not None:
            share = self._shares.get(_key(leaving))
            free_cpus += share.needs.get(CPUS, 0) if share is not None else 0
        return max(0, math.floor(free_cpus + 1e-9))

    def take(self, lease: Lease) -> bool:
        """Hold `lease`'s share if it still fits; False if it does not (give it back)."""
        job = lease.job
        key = (lease.job_id, lease.attempt)
        with self._cond:
            if key in self._shares:
                return True
            if self._plain is not None and not job.needs and not job.labels:
                # The common case: one cpu, nothing else to hand out; a share made once.
                if self._held[CPUS] + 1 > self.totals[CPUS] + 1e-9:
                    return False
                self._shares[key] = self._plain
                self._held[CPUS] += 1
                return True
            needs = needs_of(job)
            if job.labels and not self.labels.issuperset(job.labels):
                return False
            held, totals = self._held, self.totals
            if any(amount > totals.get(name, 0) - held.get(name, 0) + 1e-9
                   for name, amount in needs.items()):
                return False
            if needs.get(GPUS):  # a GPU is not shared: half a GPU holds a whole one
                needs[GPUS] = math.ceil(needs[GPUS])
            gpus = self._free_gpus(int(needs.get(GPUS, 0)))
            if len(gpus) < needs.get(GPUS, 0):
                return False
            cores = self._free_cores(needs.get(CPUS, 1)) if self.resources.pin else ()
            share = Share(needs, gpus, cores, self._environment(job, needs, gpus, cores))
            self._shares[key] = share
            for name, amount in needs.items():
                self._held[name] = self._held.get(name, 0) + amount
            return True

    def give_back(self, lease: Lease) -> None:
        """The job is over (or was never run): its share is free again."""
        with self._cond:
            share = self._shares.pop(_key(lease), None)
            if share is None:
                return
            for name, amount in share.needs.items():
                self._held[name] -= amount
            if self._waiting:
                self._cond.notify_all()

    def share(self, lease: Lease) -> Share | None:
        with self._cond:
            return self._shares.get(_key(lease))

    def holds(self, name: str) -> bool:
        """Whether a running job holds some of `name` (cheap: no job asks, no work)."""
        return self._held.get(name, 0) > 0

    def wait_for_room(self, timeout_s: float) -> bool:
        """Wait until a job may start (a cpu is free), at most `timeout_s`."""
        with self._cond:
            self._waiting += 1
            try:
                return self._cond.wait_for(lambda: self._free_cpus() >= 1 - 1e-9, timeout_s)
            finally:
                self._waiting -= 1

    def _free_cpus(self) -> float:
        return self.totals[CPUS] - self._held.get(CPUS, 0)

    def _free_gpus(self, count: int) -> tuple[str, ...]:
        if not count:
            return ()
        used = {gpu for share in self._shares.values() for gpu in share.gpus}
        return tuple(gpu for gpu in self.resources.gpus if gpu not in used)[:count]

    def _free_cores(self, cpus: float) -> tuple[int, ...]:
        """The least used cores (free ones first), as many as the job's cpus."""
        wanted = max(1, math.ceil(cpus))
        cores = self.resources.cores
        use = dict.fromkeys(cores, 0)
        for share in self._shares.values():
            for core in share.cores:
                use[core] = use.get(core, 0) + 1
        return tuple(sorted(sorted(cores, key=lambda core: use[core])[:wanted]))

    def _environment(self, job: Job, needs: dict[str, float], gpus: tuple[str, ...],
                     cores: tuple[int, ...]) -> dict[str, str]:
        """SHOAL_CPUS and OMP_NUM_THREADS (its cpus, at least 1), its GPUs in
        CUDA_VISIBLE_DEVICES and SHOAL_GPUS when it asked for some, its cores in
        SHOAL_CPU_LIST when pinned. The job's own `env` still wins over these."""
        cpus = str(max(1, math.ceil(needs.get(CPUS, 1))))
        env = {"SHOAL_CPUS": cpus, "OMP_NUM_THREADS": cpus}
        if self._omp_default is not None and CPUS not in job.needs:
            env["OMP_NUM_THREADS"] = self._omp_default
        if GPUS in job.needs:
            env["CUDA_VISIBLE_DEVICES"] = env["SHOAL_GPUS"] = ",".join(gpus)
        if cores:
            env["SHOAL_CPU_LIST"] = ",".join(map(str, cores))
        if MEM in job.needs:
            env["SHOAL_MEM"] = str(int(needs[MEM]))
        return env


def _key(lease: Lease) -> tuple[str, int]:
    """A share is an attempt's: the next attempt of a job released to be tried again may
    be claimed here before the last one's share is given back."""
    return (lease.job_id, lease.attempt)
