"""What a folder claimer knows of the pending jobs: one ordered list per lane.

Pending markers live in one folder per lane (`scheduling.lane_of`: jobs that schedule
alike), so a claim compares the heads of a few lanes instead of reading every pending
job: lanes in order of priority, those whose jobs do not fit the claim's capacity
skipped unread (every job of a lane needs the same), the lowest rank among the heads of
the first priority that has any. A lane is read lazily, its lowest blocks only, up to
CLAIM_BATCH names, so a claim costs the same with 10^2 or 10^5 jobs pending.

The view is kept between claims (reading a block per claim would cost more than the
claim) and looked at afresh when it is older than VIEW_S or shows nothing; markers this
process makes (a release, a dependant set free, a retry) go straight into it, so what
one process does is seen by its next claim, what others do within VIEW_S.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ... import defaults
from ...fsutil import list_names
from ...job import Job
from ..scheduling import Capacity
from .layout import is_lane, is_marker, parse_pending, refresh_listing

VIEW_S = 1.0  # a view older than this is read again before a claim trusts it
SHUFFLED_LOADS = 8  # loads of a lane that start at a random place after a collision
LEGACY = ""  # the lane of markers from before lanes (pending/ itself)


def rotated(names: list[str]) -> list[str]:
    """`names` from a random place on, then the ones before it: a claimer that collided
    leaves the claimer it was trailing through the same names (each try would fail),
    and both still take the lowest names first, roughly in order."""
    if len(names) < 2:
        return names
    at = random.randrange(len(names))
    return names[at:] + names[:at]


def lane_blocks(folder: Path, prefix: str) -> Iterator[tuple[Path | None, list[str]]]:
    """A lane's markers block by block, lowest ranks first, as PREFIX + BLOCK/NAME (first
    `(None, names)`: markers of jobs without a seq); each block is listed fresh when the
    caller gets to it, so one that stops early reads little. Names that are no marker
    (stray files) are left out: nothing counts, claims or waits for them."""
    refresh_listing(folder)
    top = list_names(folder)
    yield None, [prefix + name for name in top if is_marker(name)]
    for block in sorted(name for name in top if name.lstrip("-").isdigit()):
        inside = folder / block
        refresh_listing(inside)
        yield inside, [f"{prefix}{block}/{name}" for name in sorted(list_names(inside))
                       if is_marker(name)]


def lane_folders(pending: Path) -> Iterator[tuple[str, Path, str]]:
    """(lane, folder, name prefix) of each lane under pending/, the legacy one first."""
    refresh_listing(pending)
    top = list_names(pending)
    if any(not is_lane(name) for name in top):
        yield LEGACY, pending, ""
    for name in sorted(top):
        if is_lane(name):
            yield name, pending / name, f"{name}/"


@dataclass
class Lane:
    """One lane as this claimer knows it: `names` (relative to pending/) ascending from
    `pos`, the next one to try first."""

    name: str
    folder: Path
    prefix: str
    template: Job  # needs, labels and priority of every job in the lane
    names: list[str] = field(default_factory=list)
    pos: int = 0
    loaded: bool = False
    complete: bool = False  # `names` held the whole lane when it was read
    mixed: bool = False  # `names` were rotated after a collision: not sorted

    def head(self) -> str | None:
        return self.names[self.pos] if self.pos < len(self.names) else None


class LaneView:
    """The lanes of one queue folder as one claimer sees them (see the module docstring).
    Not thread-safe: the queue calls it under its claim lock."""

    def __init__(self, pending: Path, template_of: Callable[[str], Job | None]) -> None:
        self.pending = pending
        self.template_of = template_of  # lane name -> a job like its jobs (None: unknown)
        self.lanes: dict[str, Lane] = {}
        self.order: list[list[Lane]] = []  # lanes grouped by priority, highest first
        self.read_at: float | None = None
        self.shuffled: dict[str, int] = {}  # lane -> loads left that start at random

    def stale(self) -> bool:
        return self.read_at is None or time.monotonic() - self.read_at > VIEW_S

    def forget(self) -> None:
        self.lanes, self.order, self.read_at = {}, [], None

    def read(self) -> None:
        """List the lanes afresh (not their contents: each is read when a claim needs it);
        a legacy lane, if any, schedules as a plain job."""
        self.lanes = {}
        for lane, folder, prefix in lane_folders(self.pending):
            template = self.template_of(lane)
            if template is not None:
                self.lanes[lane] = Lane(lane, folder, prefix, template)
        self._order()
        self.read_at = time.monotonic()

    def _order(self) -> None:
        groups: dict[int, list[Lane]] = {}
        for lane in self.lanes.values():
            groups.setdefault(lane.template.priority, []).append(lane)
        self.order = [groups[p] for p in sorted(groups, reverse=True)]

    def best(self, capacity: Capacity | None) -> tuple[Lane, str] | None:
        """The next marker to try: the lowest-ranked head among the lanes of the highest
        priority that fit `capacity` and have one."""
        for group in self.order:
            heads = []
            for lane in group:
                if capacity is not None and not capacity.fits(lane.template):
                    continue
                head = self._head(lane)
                if head is not None:
                    marker = parse_pending(head)
                    heads.append((marker.rank if marker else 0, head, lane))
            if heads:
                _, head, lane = min(heads, key=lambda h: (h[0], h[1]))
                return lane, head
        return None

    def _head(self, lane: Lane) -> str | None:
        head = lane.head()
        if head is None and not (lane.loaded and lane.complete):
            self._load(lane)
            head = lane.head()
        return head

    def _load(self, lane: Lane) -> None:
        """Read the lane's lowest blocks until CLAIM_BATCH names (removing blocks found
        empty; whoever puts a marker in a block that vanished makes it again). A lane's
        own folder stays: lanes are few, and a submitter on a mount that caches folders
        would see a removed one for a while (one level to make again, not two)."""
        names: list[str] = []
        complete = True
        blocks = 0
        for folder, inside in lane_blocks(lane.folder, lane.prefix):
            if folder is not None:
                blocks += 1
                if not inside:
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)
            names += inside
            if len(names) >= defaults.CLAIM_BATCH:
                complete = False
                break
        names = names[:defaults.CLAIM_BATCH]
        lane.mixed = False
        if self.shuffled.get(lane.name, 0) > 0:
            self.shuffled[lane.name] -= 1
            names, lane.mixed = rotated(names), True
        lane.names, lane.pos, lane.loaded, lane.complete = names, 0, True, complete

    def took(self, lane: Lane) -> None:
        """The head was tried (won or lost): move past it."""
        lane.pos += 1

    def collided(self, lane: Lane) -> None:
        """Another claimer reads the same names just ahead of us: jump elsewhere, and
        start the next loads of this lane at a random place for a while."""
        lane.names[lane.pos:] = rotated(lane.names[lane.pos:])
        lane.mixed = True
        self.shuffled[lane.name] = SHUFFLED_LOADS

    def add(self, lane_name: str, template: Job, name: str) -> None:
        """A marker this process just made (`name` relative to pending/): put it where a
        read would have found it, if the view holds that part of the lane."""
        if self.read_at is None:
            return
        lane = self.lanes.get(lane_name)
        if lane is None:  # a lane new to us: its folder holds just this (for all we know)
            lane = Lane(lane_name, self.pending / lane_name, f"{lane_name}/", template)
            self.lanes[lane_name] = lane
            self._order()
            return
        if not lane.loaded:
            return
        names = lane.names
        if lane.mixed:
            if name not in names[lane.pos:]:
                names.insert(lane.pos, name)
        elif lane.complete or (names and name < names[-1]):
            at = bisect.bisect_left(names, name, lo=lane.pos)
            if at == len(names) or names[at] != name:  # a read may have listed it already
                names.insert(at, name)
