"""Requests that wait for something to happen, and clients watching jobs.

A claim that finds no job is parked here and answered the moment a job appears
(or at its deadline, with nothing): workers never poll. A client watching jobs
(`CoordinatorQueue.watch`) gets each one's result pushed to it once, on its latest route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..job import Lease, Result
from ..net import wire
from ..queue.base import Queue, WatchSet
from ..queue.scheduling import Capacity

Key = tuple[bytes, int]  # (client id, request id): one request, and its repeats
Answer = Callable[[bytes, Key, Any], bool]  # (route, key, value) -> reached the client?
Push = Callable[[bytes, dict], bool]  # (route, result record) -> reached the client?


def leases_out(queue: Queue, leases: list[Lease]) -> list[dict[str, Any]]:
    """Lease records for a reply, each with the shared config's stamp, so the worker
    fetches a changed config before it starts the job (see queue/files.py)."""
    if not leases:
        return []
    stamp = queue.files.config_stamp()
    return [{**wire.lease_out(lease), "config": stamp} for lease in leases]


@dataclass
class Parked:
    """A claim that found nothing yet."""

    route: bytes
    key: Key
    deadline: float
    args: dict[str, Any] = field(default_factory=dict)


class Parking:
    """Parked claims and watchers of `queue`, answered through `answer` (a parked
    request's reply) and `push` (a result the client watches)."""

    def __init__(self, queue: Queue, *, answer: Answer, push: Push) -> None:
        self.queue = queue
        self._answer = answer
        self._push = push
        self.claims: list[Parked] = []
        self._watchers: dict[str, set[bytes]] = {}  # job id -> clients watching it
        # The same ids, as the queue's watch() reads them: see Service.look_for_ends.
        self.watching = WatchSet()
        self._routes: dict[bytes, bytes] = {}  # client id -> its latest routing id

    def seen(self, client: bytes, route: bytes) -> None:
        """`client` last spoke from `route`: pushes to it go there."""
        self._routes[client] = route

    def deadlines(self) -> list[float]:
        return [p.deadline for p in self.claims]

    def reroute(self, key: Key, route: bytes) -> None:
        """A parked claim repeated from a new route is answered on that route."""
        for parked in self.claims:
            if parked.key == key:
                parked.route = route

    # -- parking ---------------------------------------------------------------------

    def park_claim(self, route: bytes, key: Key, deadline: float, worker: str, n: int,
                   fit: Capacity | None = None) -> None:
        self.claims.append(Parked(route, key, deadline, {"worker": worker, "n": n,
                                                         "fit": fit}))

    def any_job_would_do(self) -> bool:
        """Whether some parked claim takes any job (no `fit`): then nothing is pending,
        or `serve_claims` would have given it to that claim."""
        return any(parked.args["fit"] is None for parked in self.claims)

    def watch(self, client: bytes, ids: list[str]) -> None:
        """Push these jobs' results to `client` when they land."""
        for job_id in ids:
            self._watchers.setdefault(job_id, set()).add(client)
            self.watching.add(job_id)

    def watched_among(self, ids: set[str]) -> set[str]:
        """Those of these jobs some client watches."""
        return {job_id for job_id in ids if job_id in self._watchers}

    # -- answering -------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Answer the parked requests whose deadline has come with nothing."""
        for parked in [p for p in self.claims if p.deadline <= now]:
            self.claims.remove(parked)
            self._answer(parked.route, parked.key, [])

    def serve_claims(self) -> None:
        """Lease pending jobs to parked claims, oldest first, while there are jobs. A
        claim with a `fit` that no pending job fits waits on; the next may take a job
        that fits it; a claim without one that gets nothing means nothing is pending."""
        for parked in list(self.claims):
            args = parked.args
            leases = self.queue.claim(args["worker"], args["n"], fit=args["fit"])
            if not leases:
                if args["fit"] is None:
                    return
                continue
            self.claims.remove(parked)
            if not self._answer(parked.route, parked.key, leases_out(self.queue, leases)):
                for lease in leases:  # the worker went away while waiting
                    self.queue.release(lease)

    def deliver(self, finals: list[Result]) -> None:
        """Results that just became final: push them to their watchers."""
        for result in finals:
            self.watching.discard(result.job_id)
            for client in self._watchers.pop(result.job_id, ()):
                route = self._routes.get(client)
                if route is not None:
                    self._push(route, wire.result_out(result))
