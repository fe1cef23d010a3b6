"""File operations that stay atomic on local disks, NFS and sshfs.

Only rename and exclusive create are trusted (no flock/fcntl). Writers write to a
temporary name, fsync, close, then rename or link into place; any error on the
way deletes the temporary file and the whole write is redone by the caller.

What shoal creates is private (files 0600, folders 0700: commands, logs and pickled
payloads are nobody else's business), or group-shared (0660, 02770) inside a setgid
folder: `chmod g+s` on a queue folder is how a team shares it (`shared`). The modes are
given at creation (never write-then-chmod), and set again where the umask would take
the group's bits.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .errors import no_space

# The name this machine goes by in shoal's records; SHOAL_HOST overrides it (containers
# that all call themselves "localhost", or tests that play two machines on one). uname's
# node name is what socket.gethostname() returns, without importing socket at every start.
HOST = os.environ.get("SHOAL_HOST") or os.uname().nodename

# Filesystem types where a SQLite file or flock must not be trusted, as named in
# /proc/self/mountinfo.
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "lustre", "gpfs", "ceph", "9p")


_PROCESS_TOKEN = os.urandom(4).hex()  # told apart from an earlier process with our pid
_COUNTER = itertools.count()


def unique_token() -> str:
    """A token no other call, process or host produces: pid + per-process random + counter.

    Cheaper than a random token per call (getrandom costs more than a `true` job's rename)."""
    return f"{os.getpid()}{_PROCESS_TOKEN}{next(_COUNTER):x}"


PathLike = str | Path  # hot paths use str: pathlib costs more than the syscalls here


PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700
SHARED_FILE, SHARED_DIR = 0o660, 0o2770
_SHARED: dict[str, bool] = {}  # folder -> setgid, as first seen (one stat per folder)
_SHARED_MAX = 4096


def shared(folder: PathLike) -> bool:
    """Whether what shoal creates in `folder` is group-shared: the folder is setgid."""
    key = str(folder)
    found = _SHARED.get(key)
    if found is None:
        try:
            found = bool(os.stat(key).st_mode & stat.S_ISGID)
        except OSError:
            return False  # not there yet: asked again once it is
        if len(_SHARED) >= _SHARED_MAX:  # one per dependency folder: keep it bounded
            _SHARED.clear()
        _SHARED[key] = found
    return found


def open_new(path: PathLike, flags: int) -> int:
    """os.open(path, flags) creating the file private, or group-shared in a setgid folder
    (module docstring)."""
    if not shared(os.path.dirname(path) or "."):
        return os.open(path, flags, PRIVATE_FILE)
    fd = os.open(path, flags, SHARED_FILE)
    try:
        os.fchmod(fd, SHARED_FILE)  # the umask may have taken the group's write bit
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dir(path: PathLike) -> None:
    """Make folder `path` (and missing parents) private, or group-shared in a setgid
    folder; a folder that exists is left as it is."""
    path = os.fspath(path).rstrip("/") or "/"
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path) or "."
    make_dir(parent)
    group = shared(parent)
    try:
        os.mkdir(path, SHARED_DIR if group else PRIVATE_DIR)
    except FileExistsError:
        if os.path.isdir(path):
            return
        raise
    if group:
        os.chmod(path, SHARED_DIR)  # mkdir's mode passes through the umask


def write_file(path: PathLike, data: bytes) -> None:
    """Replace `path`'s content in place (made with `open_new`'s mode if it is new), its
    folder made if missing: for files only their writer reads while they are written."""
    make_dir(os.path.dirname(path) or ".")
    fd = open_new(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextlib.contextmanager
def no_space_named(where: PathLike) -> Iterator[None]:
    """Inside, a full disk (ENOSPC, EDQUOT, SQLite's SQLITE_FULL) raises `NoSpace` naming
    the file, else `where`: one line a user reads, and a worker knows to wait on."""
    try:
        yield
    except Exception as exc:
        mapped = no_space(exc, where)
        if mapped is None:
            raise
        raise mapped from exc


F = TypeVar("F", bound=Callable[..., Any])


def names_full_disk(method: F) -> F:
    """A queue method whose full disk raises `NoSpace` naming the queue's root."""
    @functools.wraps(method)
    def named(self: Any, *args: Any, **kwargs: Any) -> Any:
        with no_space_named(self.settings.root or self.url):
            return method(self, *args, **kwargs)
    return named  # type: ignore[return-value]


def tmp_name(tmp_dir: PathLike, hint: str = "") -> str:
    """A temporary name no other host or process can pick (host + pid + random)."""
    return f"{tmp_dir}/{hint}.{HOST}.{unique_token()}.tmp"


def write_tmp(tmp_dir: PathLike, data: bytes, *, fsync: bool = True, hint: str = "") -> str:
    """Write `data` to a fresh temporary file and return its path (fsynced, closed)."""
    path = tmp_name(tmp_dir, hint)
    fd = open_new(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        _write_all(fd, data)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)  # on NFS, close reports write errors: let it raise
    return path


def atomic_write(path: PathLike, data: bytes, tmp_dir: PathLike, *, fsync: bool = True) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a part."""
    tmp = write_tmp(tmp_dir, data, fsync=fsync, hint=os.path.basename(path))
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def create_exclusive(path: PathLike, data: bytes, tmp_dir: PathLike, *,
                     fsync: bool = True) -> bool:
    """Create `path` with `data` only if it does not exist; True if we created it.

    Uses link(2) of a fully written temporary file, the portable create-if-absent
    that works on NFS too (open(2) recommends it), and never exposes a partial file.
    """
    tmp = write_tmp(tmp_dir, data, fsync=fsync, hint=os.path.basename(path))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        # sshfs without hard-link support: fall back to an exclusive create.
        if exc.errno not in (errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        return _create_exclusive_open(path, data, fsync=fsync)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_new(path: PathLike, data: bytes) -> bool:
    """Create `path` with `data` if it does not exist (O_EXCL); True if we created it.

    Readers may see it half-written, so use it only where nobody reads the file before
    the writer has closed it and published it another way (a marker created after).
    """
    return _create_exclusive_open(path, data, fsync=False)


def _create_exclusive_open(path: PathLike, data: bytes, *, fsync: bool) -> bool:
    try:
        fd = open_new(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return True


def sync_filesystem(folder: Path) -> None:
    """Make everything written under `folder` durable with one syncfs(2) (a group commit).

    Writing N files and syncing once costs one journal commit instead of N fsyncs.
    Falls back to sync(2) where syncfs is unavailable.
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        syncfs = _load_syncfs()
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@functools.cache
def _load_syncfs() -> Any:
    """libc's syncfs, looked up on first use: ctypes costs every start that needs none."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


def touch_exclusive(path: PathLike) -> bool:
    """Create an empty marker file if absent; True if we created it."""
    try:
        os.close(open_new(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def claim_rename(src: PathLike, dst: PathLike) -> bool:
    """Move `src` to `dst` if `src` is still there; True if this call moved it.

    ENOENT is the normal way to lose a race. On NFS a retransmitted rename can
    report ENOENT although the first transmission succeeded, so we check our own
    destination name before believing we lost.
    """
    try:
        os.rename(src, dst)
        return True
    except FileNotFoundError:
        return os.path.lexists(dst) and not os.path.lexists(src)


def read_bytes(path: PathLike) -> bytes | None:
    """The file's bytes, or None if it does not exist (open+read: fresh even on NFS)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def unlink_quiet(path: PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def list_names(folder: Path) -> list[str]:
    """Entry names in `folder`, without hidden and temporary names (.nfsXXXX included);
    none if it is gone or is a file (a stray one where a folder is expected)."""
    try:
        return [name for name in os.listdir(folder) if not name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def filesystem_type(path: Path) -> str:
    """The filesystem type holding `path`, from /proc/self/mountinfo ('' if unknown)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return ""
    target = os.path.realpath(path)
    best, best_type = "", ""
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right.split()[0]
    return best_type
