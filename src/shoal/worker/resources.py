"""What a worker has: cpus, memory, GPUs, named resources and labels (issue 15).

Detected once per process (cores from the affinity mask, memory from /proc/meminfo,
GPUs from CUDA_VISIBLE_DEVICES or `nvidia-smi -L`), or given with `shoal work --cpus
--gpus --mem --resource --label`. The totals go to the queue in `WorkerInfo.resources`
(what `status` compares pending jobs with); the worker's `Ledger` hands them out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from ..errors import UsageError
from ..needs import parse_mem, parse_resource
from ..queue.scheduling import CPUS, GPUS, MEM

NVIDIA_SMI_TIMEOUT_S = 5.0  # a hung driver must not hang the worker's start
_NAME = re.compile(r"[A-Za-z_][\w.-]*")


class ResourceError(UsageError):
    """A worker resource option (--cpus, --gpus, --mem, --resource, --label) is wrong."""


@dataclass(frozen=True)
class Resources:
    """What a worker has in all, and whether its jobs are pinned to their cores."""

    cpus: int
    mem: float = 0.0  # bytes; 0: unknown (a job asking for mem never fits)
    gpus: tuple[str, ...] = ()  # device ids, as CUDA_VISIBLE_DEVICES names them
    named: Mapping[str, float] = field(default_factory=dict)
    labels: frozenset[str] = frozenset()
    pin: bool = False
    cores: tuple[int, ...] = ()  # the cores jobs are pinned to (with `pin`)

    def totals(self) -> dict[str, float]:
        """Every amount by name, as `Capacity` and `WorkerInfo.resources` hold them."""
        totals: dict[str, float] = {CPUS: self.cpus}
        if self.mem:
            totals[MEM] = self.mem
        if self.gpus:
            totals[GPUS] = len(self.gpus)
        totals.update(self.named)
        return totals

    @classmethod
    def detect(cls, *, cpus: int | None = None, slots: int | None = None,
               gpus: str | None = None, mem: str | None = None,
               resources: Iterable[str] = (), labels: Iterable[str] = (),
               pin: bool = False) -> Resources:
        """This machine's resources, with what the options say instead (texts as typed
        on the command line; ResourceError naming the option if one is wrong)."""
        cores = detect_cores()
        if cpus is not None and cpus < 1:
            raise ResourceError(f"--cpus: {cpus} is not a number of cpus (1 or more)")
        return cls(
            cpus=cpus or slots or len(cores),
            mem=parse_size(mem, "--mem") if mem is not None else detect_mem(),
            gpus=parse_gpus(gpus) if gpus is not None else detect_gpus(),
            named=parse_resources(resources),
            labels=frozenset(parse_label(label) for label in labels),
            pin=pin,
            cores=cores,
        )


# -- options ---------------------------------------------------------------------------

def parse_size(text: str, option: str) -> float:
    """`64G`, `512M`, `1.5T`, `1048576`: bytes (K M G T are 1024-based), as everywhere
    (`needs.parse_mem`)."""
    try:
        return parse_mem(option, text)
    except UsageError as exc:
        raise ResourceError(str(exc)) from None


def parse_gpus(text: str) -> tuple[str, ...]:
    """`0,1` (device ids; one id alone: `3,`) or a count (`2`: the first two GPUs found,
    else ids 0 and 1)."""
    text = text.strip()
    if "," not in text:
        if not text.isdigit():
            raise ResourceError(f"--gpus: {text!r} is neither a count nor device ids "
                                "(e.g. --gpus 2 or --gpus 0,1)")
        count = int(text)
        found = detect_gpus()
        return found[:count] if len(found) >= count else tuple(str(i) for i in range(count))
    ids = tuple(part.strip() for part in text.split(",") if part.strip())
    if not ids or any(not re.fullmatch(r"[\w-]+", gpu) for gpu in ids):
        raise ResourceError(f"--gpus: {text!r} is not a list of device ids (e.g. --gpus 0,1)")
    if len(set(ids)) != len(ids):
        raise ResourceError(f"--gpus: {text!r} names a device twice")
    return ids


def parse_resources(texts: Iterable[str]) -> dict[str, float]:
    """`license=2` options (repeatable, amounts add up): named amounts a job's `needs` may
    ask for. Read by `needs.parse_resource`, as a job's own `--resource` is."""
    named: dict[str, float] = {}
    for text in texts:
        try:
            name, value = parse_resource("--resource", text)
        except UsageError as exc:
            raise ResourceError(str(exc)) from None
        if name in (CPUS, GPUS, MEM):
            raise ResourceError(f"--resource: give {name} with --{name}, not --resource")
        named[name] = named.get(name, 0) + value
    return named


def parse_label(text: str) -> str:
    label = text.strip()
    if not _NAME.fullmatch(label):
        raise ResourceError(f"--label: {text!r} is not a label (a word: letters, digits, "
                            "_ . -)")
    return label


# -- detection -------------------------------------------------------------------------

@lru_cache(maxsize=1)
def detect_cores() -> tuple[int, ...]:
    """The cores this process may run on (its affinity mask: what a container or
    taskset left it), in order."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


@lru_cache(maxsize=1)
def detect_mem() -> float:
    """MemTotal in bytes; 0 where /proc/meminfo cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


@lru_cache(maxsize=1)
def detect_gpus() -> tuple[str, ...]:
    """GPU ids: CUDA_VISIBLE_DEVICES if set (empty or -1: none), else the indexes
    `nvidia-smi -L` lists, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = tuple(part.strip() for part in visible.split(",") if part.strip())
        return () if ids[:1] == ("-1",) else ids
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True,
                                 timeout=NVIDIA_SMI_TIMEOUT_S, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(re.findall(r"^GPU (\d+):", listing, re.MULTILINE))


def format_size(amount: float) -> str:
    """Bytes in a person's units: `1.2 GiB`, `50 MiB`."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024:
            return f"{amount:.1f}".removesuffix(".0") + f" {unit}"
        amount /= 1024
    return f"{amount:.1f}".removesuffix(".0") + " TiB"
