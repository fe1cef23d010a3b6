"""Real "machines" for tests: a loopback OpenSSH server and sshfs mounts of it. No mocks.

Every sshfs mount of the same server folder behaves like a separate host sharing that
folder: its own FUSE connection, its own ssh session and sftp server process, and its own
caches. A worker pointed at mount A and one pointed at mount B only meet on the server's
disk, exactly as two machines mounting one sshfs share do.

Use from a test module with `from tests.machines import sshd, sshfs_mount  # noqa: F401`,
or once for every module with `pytest_plugins = ["tests.machines"]` in tests/conftest.py.

Scope: `sshd` and `sshfs_mount` are function-scoped on purpose. conftest.py's autouse
`no_leftover_children` fails a test that leaves a child process of the test runner behind
when the test ends, and both sshd and `sshfs -f` are such children; a session-scoped server
would trip it. Starting sshd costs a few milliseconds; the keys (the slow part) are made
once per session.

If FUSE or sshfs cannot work here the tests are skipped with the reason, except when the
environment variable CI is "true": there FUSE must work, so the same reason fails the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

SSHD = Path("/usr/sbin/sshd")
SSHFS = Path("/usr/bin/sshfs")
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it

TOOLS_WAIT_S = 240.0  # the packages may still be being installed when the tests start
SSHD_START_S = 15.0
MOUNT_S = 20.0
STOP_S = 10.0
UNMOUNT_BUSY_S = 5.0

# ssh options of every mount: the throwaway key only, no prompts, no known_hosts, no
# ~/.ssh/config of whoever runs the tests.
SSH_OPTIONS = [
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "IdentitiesOnly=yes",
    "BatchMode=yes",
    "LogLevel=ERROR",
]

# sshfs options, chosen to be what a person typing `sshfs -o reconnect host:dir mnt`
# gets, so the tests see the caches a real deployment sees:
#   * renames use OpenSSH's posix-rename@openssh.com extension (sshfs's default when the
#     server offers it, which every OpenSSH server does). SHOAL NEEDS THIS: a claim is
#     rename(pending/X, claimed/X.W) and must be atomic on the server, with exactly one of
#     two racing renames of X succeeding and the loser getting ENOENT; a plain SFTP rename
#     would also refuse to replace an existing target, which atomic_write relies on.
#     Hence no `-o workaround=rename` (a non-atomic unlink+rename emulation).
#   * hard links stay enabled (hardlink@openssh.com), used by create_exclusive; shoal
#     falls back to O_EXCL create if they are not, so `disable_hardlink` would also do.
#   * file data is read through at every open(): sshfs opens the file on the server each
#     time and FUSE drops the page cache on open unless `kernel_cache`/`auto_cache` are
#     given. SHOAL NEEDS THIS: heartbeats, specs and results are read with open()+read()
#     of a file replaced by rename; so never add `kernel_cache`.
#   * default directory/attribute caching is kept on purpose (dir_cache=yes, 20 s
#     dcache_timeout; FUSE entry/attr timeouts 1 s): a listing made through mount A can be
#     up to 20 s stale about changes made through mount B (a change made through the
#     same mount, or a create/unlink in that folder through it, refreshes the listing).
#     Shoal must stay correct with that: claims are settled by the server's rename, never
#     by a listing. Known gap: `--drain` can exit on a stale empty listing (see
#     test_drained_worker_sees_jobs_submitted_through_another_mount, xfail). Deployments
#     that want no staleness can add `dir_cache=no` (or a small `dcache_timeout`).
#   * `reconnect` (plus keep-alives) as any long-lived mount would use.
SSHFS_OPTIONS = ["reconnect", "ServerAliveInterval=15", "ServerAliveCountMax=3"]


def unavailable(reason: str) -> NoReturn:
    """Skip: this machine cannot run real mounts; but on CI that is a broken runner."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and FUSE/sshfs must work here, but: {reason}")
    pytest.skip(reason)


def _wait_for_tools() -> None:
    """The packages may still be installing: wait for the programs, then give up."""
    wanted = [SSHD, SSHFS]
    deadline = time.monotonic() + TOOLS_WAIT_S
    while True:
        missing = [str(p) for p in wanted if not os.access(p, os.X_OK)]
        if shutil.which(SSH_KEYGEN) is None:
            missing.append(SSH_KEYGEN)
        if not missing:
            return
        if time.monotonic() > deadline:
            unavailable(f"not installed after {TOOLS_WAIT_S:g} s: {', '.join(missing)} "
                        "(Debian packages openssh-server, openssh-client, sshfs)")
        time.sleep(1.0)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop one process we started, by its PID: `sig`, then SIGKILL if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        try:
            process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_S)


# -- keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshKeys:
    """A throwaway host key and client key, and an authorized_keys allowing the client."""

    folder: Path
    host_key: Path
    client_key: Path
    authorized_keys: Path


def _keygen(path: Path) -> None:
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "shoal-tests",
                    "-f", str(path)], check=True, stdin=subprocess.DEVNULL,
                   capture_output=True)


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> SshKeys:
    _wait_for_tools()
    folder = tmp_path_factory.mktemp("ssh-keys")
    os.chmod(folder, 0o700)
    keys = SshKeys(folder, folder / "host_ed25519", folder / "client_ed25519",
                   folder / "authorized_keys")
    _keygen(keys.host_key)
    _keygen(keys.client_key)
    keys.authorized_keys.write_bytes(keys.client_key.with_suffix(".pub").read_bytes())
    os.chmod(keys.authorized_keys, 0o600)
    return keys


# -- sshd -------------------------------------------------------------------------------


@dataclass
class Sshd:
    """A running sshd on 127.0.0.1:port that accepts root with the client key."""

    port: int
    keys: SshKeys
    process: subprocess.Popen[bytes]
    log: Path
    user: str = "root"
    host: str = "127.0.0.1"

    def describe(self) -> str:
        return f"sshd pid {self.process.pid} on {self.host}:{self.port}; log:\n{_tail(self.log)}"


def _sshd_config(folder: Path, port: int, keys: SshKeys) -> Path:
    config = folder / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {keys.host_key}",
        f"AuthorizedKeysFile {keys.authorized_keys}",
        f"PidFile {folder / 'sshd.pid'}",
        "StrictModes no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "UseDNS no",
        "MaxStartups 50:30:100",
        "Subsystem sftp internal-sftp",
        "LogLevel INFO",
        "",
    ]))
    return config


def _answers_ssh(port: int) -> bool:
    """True once something on the port sends an SSH identification string."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _start_sshd(folder: Path, keys: SshKeys) -> Sshd:
    """Start sshd on a free port; a port taken between probe and bind means: try another."""
    try:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        unavailable(f"cannot create sshd's privilege separation folder: {exc} "
                    "(these tests run sshd and log in as root)")
    problems = []
    for attempt in range(5):
        port = _free_port()
        config = _sshd_config(folder, port, keys)
        log = folder / f"sshd.{attempt}.log"
        check = subprocess.run([str(SSHD), "-t", "-f", str(config)], capture_output=True,
                               text=True, stdin=subprocess.DEVNULL)
        if check.returncode != 0:
            unavailable(f"sshd rejects its test config: {check.stderr.strip()}")
        with open(log, "wb") as sink:
            process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                                       stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
        server = Sshd(port, keys, process, log)
        deadline = time.monotonic() + SSHD_START_S
        while process.poll() is None and time.monotonic() < deadline:
            if _answers_ssh(port):
                return server
            time.sleep(0.02)
        _stop(process)
        problems.append(server.describe())
    pytest.fail("sshd did not start:\n" + "\n---\n".join(problems))


@pytest.fixture
def sshd(ssh_keys: SshKeys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A loopback sshd, a child of the test runner, stopped by PID at teardown."""
    server = _start_sshd(tmp_path_factory.mktemp("sshd"), ssh_keys)
    yield server
    alive_before = server.process.poll() is None
    _stop(server.process)
    assert server.process.poll() is not None, f"sshd did not exit: {server.describe()}"
    assert alive_before, f"sshd died during the test: {server.describe()}"


# -- sshfs ------------------------------------------------------------------------------


def _mounted(point: Path) -> str | None:
    """The filesystem type mounted exactly at `point`, from /proc/self/mountinfo."""
    target = os.path.realpath(point)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 5 and fields[4].replace("\\040", " ") == target:
            found = right.split()[0]  # the last one listed is the one on top
    return found


def _fusermount() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


@dataclass
class Mount:
    remote: Path
    point: Path
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class SshfsMounts:
    """`sshfs_mount(remote_dir) -> mount point`: one more "host" seeing remote_dir."""

    server: Sshd
    folder: Path
    mounts: list[Mount] = field(default_factory=list)

    def __call__(self, remote_dir: str | Path, name: str | None = None,
                 options: Sequence[str] = ()) -> Path:
        """Mount `remote_dir` of the server at a new mount point named `name`; `options`
        are extra `-o` options (e.g. "dir_cache=no") after the defaults above."""
        if not os.path.exists("/dev/fuse"):
            unavailable("/dev/fuse is missing: no FUSE in this machine or container "
                        "(a container needs --device /dev/fuse --cap-add SYS_ADMIN)")
        if _fusermount() is None:
            unavailable("neither fusermount3 nor fusermount is installed (package fuse3)")
        remote = Path(remote_dir).absolute()
        label = name or f"host{len(self.mounts) + 1}"
        point = self.folder / label
        point.mkdir()
        log = self.folder / f"{label}.sshfs.log"
        argv = [str(SSHFS), "-f", f"{self.server.user}@{self.server.host}:{remote}", str(point),
                "-p", str(self.server.port), "-F", "/dev/null",
                "-o", ",".join([*SSH_OPTIONS, f"IdentityFile={self.server.keys.client_key}",
                                *SSHFS_OPTIONS, *options])]
        with open(log, "wb") as sink:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink,
                                       stderr=sink)
        mount = Mount(remote, point, process, log)
        self.mounts.append(mount)  # unmounted at teardown whatever happens next
        deadline = time.monotonic() + MOUNT_S
        while _mounted(point) != "fuse.sshfs":
            if process.poll() is not None:
                unavailable(f"sshfs could not mount (exit status {process.returncode}): "
                            f"{' '.join(argv)}\n{_tail(log)}\n{self.server.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"sshfs did not mount within {MOUNT_S:g} s: {' '.join(argv)}\n"
                            f"{_tail(log)}\n{self.server.describe()}")
            time.sleep(0.02)
        try:
            os.listdir(point)  # the first real round trip through FUSE, ssh and sftp
        except OSError as exc:
            unavailable(f"sshfs mounted {point} but it cannot be read: {exc}\n{_tail(log)}")
        return point

    def unmount_all(self) -> list[str]:
        """Unmount every mount (newest first); the problems met on the way."""
        problems = []
        for mount in reversed(self.mounts):
            problems += _unmount(mount)
        self.mounts.clear()
        return problems


def _unmount(mount: Mount) -> list[str]:
    problems = []
    if _mounted(mount.point) is not None:
        tool = _fusermount()
        deadline = time.monotonic() + UNMOUNT_BUSY_S
        done = False
        while tool is not None and not done:  # EBUSY while a dying process lets go
            done = subprocess.run([tool, "-u", str(mount.point)], capture_output=True,
                                  stdin=subprocess.DEVNULL).returncode == 0
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not done:
            # Still busy (a process kept a file open) or no fusermount: detach lazily.
            problems.append(f"fusermount -u {mount.point} failed; used umount -l")
            subprocess.run(["umount", "-l", str(mount.point)], capture_output=True,
                           stdin=subprocess.DEVNULL)
    try:
        mount.process.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        problems.append(f"sshfs pid {mount.process.pid} stayed after unmount; killed")
        _stop(mount.process, signal.SIGTERM)
    if _mounted(mount.point) is not None:  # a dead FUSE daemon leaves "not connected"
        subprocess.run(["umount", "-l", str(mount.point)], capture_output=True,
                       stdin=subprocess.DEVNULL)
        problems.append(f"{mount.point} still mounted after sshfs exited")
    return problems


@pytest.fixture
def sshfs_mount(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshfsMounts]:
    """Mounts folders of the loopback server; each call is one more "host". All are
    unmounted at teardown (processes using them must be gone by then)."""
    mounts = SshfsMounts(sshd, tmp_path_factory.mktemp("mnt"))
    yield mounts
    problems = mounts.unmount_all()
    assert not problems, "unclean unmount: " + "; ".join(problems)
