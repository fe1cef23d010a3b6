"""The SSH provider: detached workers on hosts reached over ssh, or on this host.

A hired worker runs in its own session (no controlling terminal, so closing the
terminal or the ssh connection does not stop it; no screen or tmux needed) and logs to
LOG_DIR/HOST-PID.log. Before starting anything on a remote host we check, in one SSH
round trip, that it answers, that its Python imports a compatible shoal, and that it can
reach the queue. Starting, checking and stopping are each one small Python program run
by the host's own Python (here: this one), so a handle is simply `HOST:PID`.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import UsageError
from ..fsutil import HOST, write_file
from ..job import WorkerInfo
from . import Handle

PROVIDER = "ssh"
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", HOST, HOST.split(".")[0]}
CHECK_TIMEOUT_S = 30.0
# How long a worker told to stop by `stop` (a double SIGTERM: release its jobs) gets
# before SIGKILL.
STOP_GRACE_S = 15.0

# Run on the host by its own Python: version, and whether the queue folder is there.
_CHECK = (
    "import json, os, sys\n"
    "try:\n"
    "    import shoal.executor  # the worker and call modules: `import shoal` is lazy\n"
    "    version = shoal.__version__\n"
    "except Exception as exc:\n"
    "    version = 'missing: %s' % exc\n"
    "queue = sys.argv[1]\n"
    "reachable = '://' in queue or os.path.exists(queue)\n"
    "print(json.dumps({'version': version, 'queue': reachable,\n"
    "                  'python': '%d.%d' % sys.version_info[:2]}))\n"
)

# Start COUNT copies of a command, each in a new session with no terminal; print their pids
# and the host name the workers will register under (fsutil.HOST's rule).
_LAUNCH = (
    "import json, os, subprocess, sys\n"
    "count, command = int(sys.argv[1]), sys.argv[2:]\n"
    "pids = [subprocess.Popen(command, start_new_session=True,\n"
    "    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,\n"
    "    stderr=subprocess.DEVNULL).pid for _ in range(count)]\n"
    "host = os.environ.get('SHOAL_HOST') or os.uname().nodename\n"
    "print(json.dumps({'host': host, 'pids': pids}))\n"
)
# LOG_DIR/TARGETS: the ssh target each registered host name was hired through, so `fire`
# reaches a worker by the name the user gave (user@alias), not by the host's own name.
TARGETS = "ssh-targets.json"

# ACTION (alive | stop) on the given pids, only those that are still shoal workers (a
# reused pid is left alone); print the pids still alive at the end.
_SIGNAL = (
    "import json, os, signal, sys, time\n"
    "action, grace = sys.argv[1], float(sys.argv[2])\n"
    "def worker(pid):\n"
    "    try:\n"
    "        with open('/proc/%d/cmdline' % pid, 'rb') as f:\n"
    "            words = f.read().split(b'\\0')\n"
    "    except OSError:\n"
    "        try:\n"
    "            os.kill(pid, 0)\n"
    "        except OSError:\n"
    "            return False\n"
    "        return not os.path.isdir('/proc/self')\n"
    "    return b'shoal' in words and b'work' in words\n"
    "pids = [p for p in map(int, sys.argv[3:]) if worker(p)]\n"
    "if action == 'stop':\n"
    "    for sig in (signal.SIGTERM, signal.SIGTERM):\n"  # the second stop releases jobs
    "        for pid in pids:\n"
    "            try: os.kill(pid, sig)\n"
    "            except OSError: pass\n"
    "        time.sleep(0.2)\n"
    "    end = time.monotonic() + grace\n"
    "    while time.monotonic() < end and any(worker(p) for p in pids):\n"
    "        time.sleep(0.2)\n"
    "    for pid in [p for p in pids if worker(p)]:\n"
    "        try: os.kill(pid, signal.SIGKILL)\n"
    "        except OSError: pass\n"
    "    time.sleep(0.2)\n"
    "print(json.dumps([p for p in pids if worker(p)]))\n"
)


class NotHired(Exception):
    """A host could not get workers: why, in one line."""


@dataclass(frozen=True)
class Host:
    """Where to hire: a host name (user@host for SSH) and slots per worker (None: its CPUs)."""

    name: str
    slots: int | None = None

    @property
    def local(self) -> bool:
        return self.name in LOCAL_NAMES


def parse_host(text: str) -> Host:
    """HOST or HOST:SLOTS."""
    name, sep, slots = text.rpartition(":")
    if sep and slots.isdigit() and name and not name.endswith(":"):
        return Host(name, int(slots))
    return Host(text)


def read_hosts_file(path: str | Path) -> list[Host]:
    """job-splitter's machines.json (name -> [speed, cores]) or one `HOST [SLOTS]` a line."""
    text = Path(path).read_text()
    if text.lstrip().startswith("{"):
        try:
            machines = json.loads(text)
            return [Host(name, int(value[1])) for name, value in machines.items()]
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise UsageError(f"{path}: not a machines file (name -> [speed, cores]): "
                             f"{exc}") from exc
    hosts = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
            raise UsageError(f"{path}:{number}: expected `HOST [SLOTS]`, got {line.strip()!r}")
        hosts.append(Host(words[0], int(words[1])) if len(words) == 2 else parse_host(words[0]))
    return hosts


def worker_command(python: str, queue: str, log_dir: str, slots: int | None) -> list[str]:
    command = [python, "-m", "shoal", "work", queue, "--log-dir", log_dir]
    return command + (["--slots", str(slots)] if slots else [])


def _judge(facts: dict, queue: str, python: str) -> str | None:
    version = str(facts.get("version", ""))
    if version.startswith("missing"):
        return f"shoal is not importable by {python} there ({version})"
    if version.split(".")[:2] != __version__.split(".")[:2]:
        return f"shoal {version} there, {__version__} here: install the same version"
    if not facts.get("queue"):
        return f"queue {queue} is not reachable there (not the same shared folder?)"
    return None


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no message)"


class SshProvider:
    """Workers for `queue` started over `ssh` with the hosts' `python` (here: this one)."""

    name = PROVIDER

    def __init__(self, queue: str, log_dir: str, *, ssh: Sequence[str] = ("ssh",),
                 python: str = "python3", status_file: Path | None = None) -> None:
        self.queue = queue
        self.log_dir = log_dir
        self.ssh = list(ssh)
        self.python = python
        self.status_file = status_file  # a coordinator's: copied to remote hosts first

    def _python_on(self, host: str) -> str:
        return sys.executable if Host(host).local else self.python

    def _run(self, host: str, code: str, args: Sequence[str], *, what: str,
             input: bytes | None = None, timeout_s: float = CHECK_TIMEOUT_S) -> str:
        """Run a Python program on `host` (here without ssh); its stdout, or NotHired."""
        argv = [self._python_on(host), "-c", code, *args]
        if not Host(host).local:
            argv = [*self.ssh, host, shlex.join(argv)]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout_s, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise NotHired(f"no answer over ssh within {timeout_s:g} s") from exc
        except OSError as exc:  # the ssh program (or this python) cannot be run
            raise NotHired(f"{argv[0]}: {exc.strerror}") from exc
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise NotHired(f"{what} failed (exit {done.returncode}): {_last_line(err or out)}")
        return out

    def check(self, host: Host) -> None:
        """Raise NotHired unless `host` can run workers for the queue (one round trip)."""
        if host.local:
            return
        out = self._run(host.name, _CHECK, [self.queue], what="ssh")
        try:
            facts = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise NotHired(f"unexpected answer from {self.python}: "
                           f"{out.strip()[:200]!r}") from None
        problem = _judge(facts, self.queue, self.python)
        if problem:
            raise NotHired(problem)

    def send_status(self, host: Host) -> None:
        """Copy the coordinator's status file to the same path on `host`, private (0700
        dir, 0600 file), so machines that share no folder can join."""
        if self.status_file is None or host.local:
            return
        folder = shlex.quote(str(self.status_file.parent))
        target = shlex.quote(str(self.status_file))
        script = (f"umask 077 && mkdir -p {folder} && chmod 700 {folder} && "
                  f"cat > {target}.tmp && mv {target}.tmp {target}")
        done = subprocess.run([*self.ssh, host.name, script], capture_output=True,
                              input=self.status_file.read_bytes(), timeout=CHECK_TIMEOUT_S)
        if done.returncode != 0:
            raise NotHired(f"copying the status file failed (exit {done.returncode}): "
                           + _last_line(done.stderr.decode(errors="replace")))

    def start(self, count: int, options: Host) -> list[Handle]:
        """Check the host, then start `count` workers there; a handle (HOST:PID) each."""
        self.send_status(options)
        self.check(options)
        command = worker_command(self._python_on(options.name), self.queue, self.log_dir,
                                 options.slots)
        out = self._run(options.name, _LAUNCH, [str(count), *command],
                        what="starting workers")
        try:
            answer = json.loads(out.strip().splitlines()[-1])
            pids, registered = [int(pid) for pid in answer["pids"]], str(answer["host"])
        except (ValueError, IndexError, TypeError, KeyError):
            raise NotHired(f"starting workers: unexpected answer {out.strip()[:200]!r}") \
                from None
        if not options.local:
            self._remember_target(registered, options.name)
        return [Handle(PROVIDER, f"{options.name}:{pid}") for pid in pids]

    def _targets(self) -> dict[str, str]:
        try:
            found = json.loads((Path(self.log_dir) / TARGETS).read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def _remember_target(self, registered: str, target: str) -> None:
        targets = self._targets()
        if targets.get(registered) != target:
            targets[registered] = target
            write_file(Path(self.log_dir) / TARGETS, json.dumps(targets, indent=1).encode())

    def _signal(self, action: str, handles: Iterable[Handle], grace_s: float) -> list[Handle]:
        by_host: dict[str, list[str]] = defaultdict(list)
        for handle in handles:
            if handle.provider == PROVIDER:
                host, _, pid = handle.id.rpartition(":")
                by_host[host].append(pid)
        alive = []
        for host, pids in by_host.items():
            try:
                out = self._run(host, _SIGNAL, [action, str(grace_s), *pids], what="ssh",
                                timeout_s=CHECK_TIMEOUT_S + grace_s)
                alive += [Handle(PROVIDER, f"{host}:{pid}")
                          for pid in json.loads(out.strip().splitlines()[-1])]
            except (NotHired, ValueError, IndexError):  # unreachable: cannot tell, keep them
                alive += [Handle(PROVIDER, f"{host}:{pid}") for pid in pids]
        return alive

    def stop(self, handles: Sequence[Handle]) -> None:
        """A double SIGTERM (running jobs go back to the queue), SIGKILL after STOP_GRACE_S."""
        self._signal("stop", handles, STOP_GRACE_S)

    def alive(self, handles: Iterable[Handle]) -> list[Handle]:
        return self._signal("alive", handles, 0.0)

    def hired(self) -> list[Handle]:
        """SSH workers are found through the queue's workers (`handle_of`), not here."""
        return []

    def unstarted(self) -> list[Handle]:
        return []  # an SSH worker starts at once

    def handle_of(self, worker: WorkerInfo) -> Handle | None:
        """A hired worker (its log in our LOG_DIR) on its host: HOST:PID."""
        if worker.log and Path(worker.log).parent == Path(self.log_dir):
            host = "localhost" if worker.host == HOST else self._targets().get(
                worker.host, worker.host)
            return Handle(PROVIDER, f"{host}:{worker.pid}")
        return None
