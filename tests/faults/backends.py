"""Where a fault run's queue lives: one fresh queue per iteration on each backend, with
the handles a fault needs (the coordinator process, the redis-server, a proxied target).

Every backend gives `shoal work` a target string, as a user would type it. memory:// is
left out where no other process can reach it (`Queue.in_process`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

from shoal.queue import open_queue
from shoal.queue.base import Queue
from tests.conftest import wait_for
from tests.faults.proxy import Proxy
from tests.procs import Procs
from tests.redisd import RedisServer, start_redis

LEASE_S = 1.0  # every row's lease but where a row says otherwise (Rows.run's lease_s)


def _reachable_from_other_processes(name: str) -> bool:
    """memory:// lives in one process (`Queue.in_process`): no worker process can reach
    it, so there is no process to kill and its rows do not apply (asked once, here)."""
    return name != "memory" or not open_queue("memory://").in_process


BACKENDS = [name for name in ("memory", "folder", "sqlite", "tcp", "redis")
            if _reachable_from_other_processes(name)]


class Backend:
    """A fresh queue in `folder` and what `shoal work` is given to reach it."""

    def __init__(self, name: str, folder: Path, procs: Procs, lease_s: float = LEASE_S) -> None:
        self.name, self.folder, self.procs, self.lease_s = name, folder, procs, lease_s
        self.server: RedisServer | None = None
        self.coordinator = None
        self.proxies: list[Proxy] = []
        self.lease_args: tuple[str, ...] = ("--lease", str(lease_s))
        if name == "folder":
            self.target = str(folder / "queue")
        elif name == "sqlite":
            self.target = f"sqlite://{folder / 'q.db'}"
        elif name == "tcp":
            self.status = folder / "status"
            self.lease_args = ()
            self.start_coordinator()
            self.target = str(self.status)
        elif name == "redis":
            self.server = start_redis(folder, appendfsync="always")
            self.target = self.server.url
        else:
            raise ValueError(f"no such backend {name}")

    @property
    def has_coordinator(self) -> bool:
        return self.name == "tcp"

    def open(self) -> Queue:
        """A client of the queue, as the submitting user has."""
        if self.name == "tcp":
            return open_queue(self.target)
        return open_queue(self.target, lease_s=self.lease_s)

    # -- the coordinator (tcp) ---------------------------------------------------

    def _contact(self) -> dict[str, object]:
        try:
            return json.loads((self.status / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def start_coordinator(self) -> None:
        """`shoal serve` on the same SQLite file and status directory (so the same port)."""
        before = self._contact().get("pid")
        self.coordinator = self.procs.shoal(
            "serve", f"sqlite://{self.folder / 'q.sqlite'}", "--status", str(self.status),
            "--lease", str(self.lease_s))
        wait_for(lambda: self._contact().get("pid") not in (None, before), 60,
                 message="the coordinator to write its status.json")

    def kill_coordinator(self) -> None:
        os.killpg(self.coordinator.pid, signal.SIGKILL)
        self.coordinator.wait(timeout=30)

    def signal_server(self, sig: int) -> None:
        """SIGSTOP/SIGCONT the coordinator (tcp) or the redis-server."""
        pid = self.coordinator.pid if self.coordinator is not None else self.server.pid
        os.kill(pid, sig)

    # -- the network -------------------------------------------------------------

    def proxied_target(self) -> tuple[str, Proxy]:
        """The same queue reached through a proxy of its own (tcp and Redis)."""
        if self.name == "tcp":
            contact = self._contact()
            host, _, port = str(contact["address"]).rpartition(":")
            proxy = Proxy(int(port), self.folder)
            folder = self.folder / f"status-via-{proxy.port}"
            folder.mkdir(mode=0o700)
            contact["address"] = f"{host}:{proxy.port}"
            card = folder / "status.json"
            card.write_text(json.dumps(contact))
            card.chmod(0o600)
            target = str(folder)
        elif self.server is not None:
            proxy = Proxy(self.server.port, self.folder)
            target = self.server.url.replace(f":{self.server.port}/", f":{proxy.port}/")
        else:
            raise ValueError(f"{self.name}: no network to cut")
        self.proxies.append(proxy)
        return target, proxy

    def close(self) -> None:
        for proxy in self.proxies:
            with contextlib.suppress(ProcessLookupError):
                proxy.heal()
            proxy.stop()
        if self.coordinator is not None and self.coordinator.poll() is None:
            os.kill(self.coordinator.pid, signal.SIGCONT)
        if self.server is not None:
            self.server.stop()
            shutil.rmtree(self.server.dir, ignore_errors=True)
