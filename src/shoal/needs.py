"""What a job asks of a worker, as people write it: `--mem 16G`, `license=1`, `gpus = 2`.

One reader for the command line, job files and parameter tables, so `16G` means the same
bytes everywhere (1024-based: K M G T), and one short writer back (`2 cpus, 1 gpu, 16G`)
for `shoal results` and `status`. Errors are `UsageError`s that start with where the value
came from (an option, or a file and key), the caller's `where`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import UsageError
from .queue.scheduling import CPUS, GPUS, MEM

UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_][\w.-]*")


def parse_mem(where: str, value: Any) -> float:
    """Bytes from `16G`, `512M`, `1.5T`, `2048` (plain bytes); units 1024-based."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        found = _SIZE.fullmatch(str(value))
        if found is None:
            raise UsageError(f"{where}: {value!r} is not an amount of memory "
                             "(e.g. 512M, 16G; units K M G T)")
        number, unit = float(found.group(1)), found.group(2).upper()
    if not math.isfinite(number) or number <= 0:
        raise UsageError(f"{where}: {value!r}: give an amount of memory > 0")
    return float(int(number * UNITS[unit]))


def parse_amount(where: str, value: Any, *, whole: bool = False) -> float:
    """A count of something (cpus, gpus, licences): a number >= 0, whole if `whole`."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise UsageError(f"{where}: {value!r} is not a number >= 0")
    if whole and number != int(number):
        raise UsageError(f"{where}: {value!r} is not a whole number")
    return number


def parse_priority(where: str, value: Any) -> int:
    """An integer, higher first; negative ones go after the default 0."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise UsageError(f"{where}: {value!r} is not a whole number (higher runs first)")


def parse_resource(where: str, text: str) -> tuple[str, float]:
    """`license=1` as (name, amount); `mem=16G` takes memory units."""
    name, sep, amount = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.fullmatch(name):
        raise UsageError(f"{where}: {text!r}: write NAME=AMOUNT (e.g. license=1)")
    return name, resource_amount(where, name, amount)


def resource_amount(where: str, name: str, value: Any) -> float:
    if name == MEM:
        return parse_mem(where, value)
    return parse_amount(where, value, whole=name in (CPUS, GPUS))


def split_list(value: Any) -> list[str]:
    """A list as written: a TOML array, or text separated by commas or whitespace."""
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value if str(item).strip()]
    return [word for word in re.split(r"[,\s]+", str(value)) if word]


def needs_from(cpus: Any = None, gpus: Any = None, mem: Any = None,
               resources: Iterable[tuple[str, float]] = (), *,
               where: Mapping[str, str] | None = None) -> dict[str, float]:
    """A Job's `needs` from what was given (None: not said); `where` names each source."""
    where = where or {}
    needs = dict(resources)
    for name, value in ((CPUS, cpus), (GPUS, gpus), (MEM, mem)):
        if value is not None and value != "":
            needs[name] = resource_amount(where.get(name, name), name, value)
    return needs


def size_text(amount: float) -> str:
    """Bytes as the shortest of 16G, 1.5G, 512M ... (1024-based, as written)."""
    for unit in ("T", "G", "M", "K"):
        scaled = amount / UNITS[unit]
        if scaled >= 1:  # 999.7 rounds to 3 digits as "1e+03": whole units then
            return f"{scaled:.3g}{unit}" if scaled < 999.5 else f"{scaled:.0f}{unit}"
    return f"{amount:g}"


def needs_text(needs: Mapping[str, float], labels: Iterable[str] = ()) -> str:
    """`2 cpus, 1 gpu, 16G, license=1, bigmem`: a job's needs in a narrow column."""
    parts = []
    for name, one in ((CPUS, "cpu"), (GPUS, "gpu")):
        if name in needs:
            count = needs[name]
            parts.append(f"{count:g} {one}{'' if count == 1 else 's'}")
    if MEM in needs:
        parts.append(size_text(needs[MEM]))
    parts += [f"{name}={amount:g}" for name, amount in sorted(needs.items())
              if name not in (CPUS, GPUS, MEM)]
    parts += sorted(labels)
    return ", ".join(parts)
