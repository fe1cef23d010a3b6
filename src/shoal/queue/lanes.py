"""Pending jobs kept by lane, for backends that hold their queue in this process (memory),
and `LaneNames`, the lane of many jobs at the cost of one per shape (memory, sqlite).

A claim with a worker's free `Capacity` must not cost more the more pending jobs do not
fit it. Jobs of one lane (`scheduling.lane_of`: same priority, needs and labels) schedule
alike, so each lane is a heap ordered by rank, and choosing the next job looks at the
heads of the lanes that fit: lanes are few, whatever the number of jobs.

Removing a job (claimed, cancelled) only forgets its live entry; a stale entry is dropped
when it reaches the head of its heap.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field, replace

from ..job import Job
from .scheduling import Capacity, claim_key, fits, lane_of


class LaneNames:
    """`lane_of` for many jobs of few shapes: one digest per shape, not per job."""

    def __init__(self) -> None:
        #: each shape's lane name and a job of that shape (lanes of plain jobs left out)
        self.shapes: dict[tuple, tuple[str, Job]] = {}

    def __call__(self, job: Job) -> str:
        if not job.needs and not job.labels:
            return f"p{job.priority}"
        shape = (job.priority, tuple(sorted(job.needs.items())), tuple(sorted(job.labels)))
        found = self.shapes.get(shape)
        if found is None:  # the sample keeps no call arguments alive
            found = self.shapes[shape] = (lane_of(job), replace(job, payload=None, blobs={}))
        return found[0]


@dataclass
class _Lane:
    sample: Job  # any job of the lane: all need the same
    heap: list[tuple[float, int, str]] = field(default_factory=list)  # rank, tie, job id


class PendingLanes:
    """Which pending job a claim takes next: the smallest `claim_key` among lane heads
    that fit."""

    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}
        self._live: dict[str, tuple[float, int, str]] = {}  # job id -> its entry
        self._ties = itertools.count()
        self._names = LaneNames()

    def push(self, job: Job, rank: float) -> None:
        """Make `job` pending at `rank` (replacing an entry it had)."""
        name = self._names(job)
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(replace(job, payload=None, blobs={}))
        entry = (rank, next(self._ties), job.id)
        self._live[job.id] = entry
        heapq.heappush(lane.heap, entry)

    def discard(self, job_id: str) -> None:
        """The job is no longer pending."""
        self._live.pop(job_id, None)

    def pop(self, fit: Capacity | None) -> str | None:
        """Take the next job that fits `fit` (None: any), or None if no pending job does."""
        best: tuple[tuple[int, float], str] | None = None
        for name, lane in list(self._lanes.items()):
            head = self._head(name, lane)
            if head is None or not fits(fit, lane.sample):
                continue
            key = claim_key(lane.sample.priority, head[0])
            if best is None or key < best[0]:
                best = (key, name)
        if best is None:
            return None
        lane = self._lanes[best[1]]
        _, _, job_id = heapq.heappop(lane.heap)
        del self._live[job_id]
        return job_id

    def _head(self, name: str, lane: _Lane) -> tuple[float, int, str] | None:
        """The lane's first live entry (stale ones dropped); an empty lane goes."""
        heap = lane.heap
        while heap and self._live.get(heap[0][2]) is not heap[0]:
            heapq.heappop(heap)
        if not heap:
            del self._lanes[name]
            return None
        return heap[0]

    def clear(self) -> None:
        self._lanes.clear()
        self._live.clear()
