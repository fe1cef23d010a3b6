"""`shoal hire`: start detached workers here, on other hosts over SSH, or through Slurm.

A hired worker runs in its own session (no controlling terminal, so closing the
terminal does not stop it; no screen or tmux needed) and logs to LOG_DIR/HOST-PID.log.
Before starting anything on a remote host we check, in one SSH round trip, that it
answers, that its Python imports a compatible shoal, and that it can reach the queue;
a host that fails gets one clear line and the others start anyway.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import UsageError
from .fsutil import HOST
from .providers import Handle, retire
from .providers.slurm import SlurmOptions, SlurmProvider

LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", HOST, HOST.split(".")[0]}
CHECK_TIMEOUT_S = 30.0

# Run on the remote host by its own Python: version, and whether the queue folder is there.
_CHECK = (
    "import json, os, sys\n"
    "try:\n"
    "    import shoal\n"
    "    version = shoal.__version__\n"
    "except Exception as exc:\n"
    "    version = 'missing: %s' % exc\n"
    "queue = sys.argv[1]\n"
    "reachable = '://' in queue or os.path.exists(queue)\n"
    "print(json.dumps({'version': version, 'queue': reachable,\n"
    "                  'python': '%d.%d' % sys.version_info[:2]}))\n"
)


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


def hire_local(queue: str, count: int, slots: int | None, log_dir: str) -> list[int]:
    """Start `count` detached workers on this host; return their pids."""
    pids = []
    for _ in range(count):
        process = subprocess.Popen(
            worker_command(sys.executable, queue, log_dir, slots), start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        pids.append(process.pid)
    return pids


def check_remote(host: Host, queue: str, ssh: list[str], python: str) -> str | None:
    """None if the host can run workers for `queue`, else why not (one line)."""
    command = [*ssh, host.name, shlex.join([python, "-c", _CHECK, queue])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"no answer over ssh within {CHECK_TIMEOUT_S:g} s"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no message)"]
        return f"ssh failed (exit {done.returncode}): {lines[-1]}"
    try:
        facts = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"unexpected answer from {python}: {done.stdout.strip()[:200]!r}"
    return _judge(facts, queue, python)


def _judge(facts: dict, queue: str, python: str) -> str | None:
    version = str(facts.get("version", ""))
    if version.startswith("missing"):
        return f"shoal is not importable by {python} there ({version})"
    if version.split(".")[:2] != __version__.split(".")[:2]:
        return f"shoal {version} there, {__version__} here: install the same version"
    if not facts.get("queue"):
        return f"queue {queue} is not reachable there (not the same shared folder?)"
    return None


def send_status(host: Host, status_file: Path, ssh: list[str]) -> str | None:
    """Copy a coordinator's status file to the same path on `host`, private (0700 dir,
    0600 file), so machines that share no folder can join; None, or why it failed."""
    folder = shlex.quote(str(status_file.parent))
    target = shlex.quote(str(status_file))
    script = (f"umask 077 && mkdir -p {folder} && chmod 700 {folder} && "
              f"cat > {target}.tmp && mv {target}.tmp {target}")
    done = subprocess.run([*ssh, host.name, script], input=status_file.read_bytes(),
                          capture_output=True, timeout=CHECK_TIMEOUT_S)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        return f"copying the status file failed (exit {done.returncode}): " + (
            lines[-1] if lines else "(no message)")
    return None


def hire_remote(host: Host, queue: str, count: int, log_dir: str, ssh: list[str],
                python: str) -> str | None:
    """Start `count` detached workers on a remote host (setsid + nohup, no terminal)."""
    start = shlex.join(worker_command(python, queue, log_dir, host.slots))
    script = " ".join([f"setsid nohup {start} </dev/null >/dev/null 2>&1 &"] * count)
    done = subprocess.run([*ssh, host.name, script], capture_output=True, text=True,
                          timeout=CHECK_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no message)"]
        return f"starting workers failed (exit {done.returncode}): {lines[-1]}"
    return None


def default_log_dir(queue: str) -> str:
    """Workers' own logs: beside a folder queue (every host sees them), else ~/.cache."""
    from .net.contact import is_contact_file

    if ("://" not in queue and not is_contact_file(queue)) or queue.startswith("dir://"):
        folder = queue.removeprefix("dir://")
        return str(Path(folder).absolute() / ".shoal" / "worker-logs")
    return str(Path(os.path.expanduser("~/.cache/shoal/worker-logs")))


def hire_slurm(queue: str, count: int, log_dir: str, *, partition: str | None = None,
               walltime: str | None = None, cpus_per_task: int | None = None,
               mem: str | None = None, gres: str | None = None, account: str | None = None,
               sbatch_args: tuple[str, ...] = ()) -> list[Handle]:
    """Submit `count` workers for `queue` as one Slurm job array; a handle per worker."""
    options = SlurmOptions(partition=partition, time=walltime, cpus_per_task=cpus_per_task,
                           mem=mem, gres=gres, account=account, extra=tuple(sbatch_args))
    return SlurmProvider(queue, log_dir).start(count, options)


def fire_slurm(queue: str, log_dir: str, wait_s: float) -> tuple[int, int]:
    """After the queue asked this queue's Slurm workers to stop: cancel those not started
    yet, wait up to `wait_s` for the others to leave, scancel the rest. Returns how many
    were cancelled before they started, and how many late."""
    provider = SlurmProvider(queue, log_dir)
    unstarted = provider.pending()
    late = retire(provider, provider.handles(), unstarted, wait_s)
    return len(unstarted), len(late)
