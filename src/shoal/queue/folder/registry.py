"""Who works on a folder queue: worker records, their heartbeats, and control commands.

Liveness is judged by watching a worker's beat counter change, timed on the observer's
own monotonic clock: no two machines' clocks are ever compared. Ages shown to people
are the file server's clock minus the record's mtime (both the server's).
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import replace

from ...fsutil import atomic_write, claim_rename, list_names, read_bytes, unique_token, unlink_quiet
from ...job import WorkerInfo, dumps, loads
from .layout import Layout, refresh_listing


class LivenessObserver:
    """Judges workers dead by watching their beat counters on this process's clock."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self._seen: dict[str, tuple[object, float]] = {}

    def dead(self, worker: str, beat: object, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        last = self._seen.get(worker)
        if last is None or last[0] != beat:
            self._seen[worker] = (beat, now)
            return False
        return now - last[1] >= self.lease_s


class WorkerRegistry:
    """workers/WORKER.json (rewritten each beat) and control/WORKER.*.cmd of one folder."""

    def __init__(self, layout: Layout, lease_s: float) -> None:
        self.layout = layout
        self.lease_s = lease_s
        self.observer = LivenessObserver(lease_s)
        self._beats: dict[str, int] = {}

    def record(self, worker: str) -> dict:
        """The worker's last record ({} if it has none or it is unreadable)."""
        blob = read_bytes(self.layout.path("workers", f"{worker}.json"))
        try:
            return loads(blob) if blob is not None else {}
        except ValueError:
            return {}

    def write_beat(self, info: WorkerInfo) -> None:
        beat = self._beats.get(info.id, 0) + 1
        self._beats[info.id] = beat
        record = {**info.to_dict(), "beat": f"{beat}.{secrets.token_hex(3)}"}
        atomic_write(self.layout.path("workers", f"{info.id}.json"), dumps(record),
                     self.layout.tmp, fsync=False)

    def unregister(self, worker: str) -> None:
        unlink_quiet(self.layout.path("workers", f"{worker}.json"))

    def workers(self) -> list[WorkerInfo]:
        server_now = self.layout.server_now()
        found = []
        folder = self.layout.dirs["workers"]
        refresh_listing(folder)
        for name in list_names(folder):
            path = self.layout.path("workers", name)
            try:
                with open(path, "rb") as handle:  # open: fresh attributes even on NFS
                    data = loads(handle.read())
                    age = server_now - os.fstat(handle.fileno()).st_mtime
                info = WorkerInfo.from_dict(data)
            except (FileNotFoundError, ValueError, TypeError):  # TypeError: a field missing
                continue
            # +1 s: sshfs and some NFS servers report whole-second mtimes.
            found.append(replace(info, age_s=max(age, 0.0), lost=age > self.lease_s + 1.0))
        return found

    def send_control(self, worker: str, command: str) -> None:
        name = f"{worker}.{time.time_ns()}.{secrets.token_hex(2)}.cmd"
        atomic_write(self.layout.path("control", name), command.encode(), self.layout.tmp,
                     fsync=False)

    def take_commands(self, worker: str) -> tuple[str, ...]:
        """The worker's waiting commands, oldest first; each is renamed away before it is
        read, so two takers never both get one."""
        commands = []
        prefix = worker + "."
        for name in sorted(list_names(self.layout.dirs["control"])):
            if name.startswith(prefix) and name.endswith(".cmd"):
                taken = self.layout.path("tmp", f"{name}.{unique_token()}.taken")
                if not claim_rename(self.layout.path("control", name), taken):
                    continue
                blob = read_bytes(taken)
                unlink_quiet(taken)
                if blob is not None:
                    commands.append(blob.decode(errors="replace").strip())
        return tuple(commands)
