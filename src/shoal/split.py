"""Split one job list over machines that cannot talk to each other.

Every machine gets the same job list, the same config and the same machines file,
computes the same plan on its own, and runs only its share. Nothing is exchanged,
so the plan must come out identical everywhere: it depends only on the job keys,
the config bytes and the machines (sorted by name), never on the host name, the
hash seed, dict order or the Python version. That is why the shuffle is our own
Fisher-Yates over a sha256 stream rather than ``random.shuffle`` (whose algorithm
may change between Python versions), and why weights are split with exact
fractions rather than floats. Each machine prints the plan's checksum, so a person
can see at a glance that all machines agree before trusting the results.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from shoal.errors import UsageError

_VERSION = b"shoal-split-v1"  # part of every hash: a new algorithm must not match an old plan


@dataclass(frozen=True)
class Machine:
    """One machine: relative single-thread speed and core count; weight = speed * cores."""

    name: str
    speed: float
    cores: int

    @property
    def weight(self) -> float:
        return self.speed * self.cores


@dataclass(frozen=True)
class Plan:
    """Who runs what: ``order`` is the shuffled job indices, ``shares`` slices of it."""

    machines: list[Machine]
    order: list[int]
    shares: dict[str, list[int]]
    checksum: str


# ---------------------------------------------------------------- machines file


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a repeated name would silently drop a machine, so refuse it."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _number(value: Any) -> float | None:
    """A finite JSON number (not a bool, which Python counts as an int), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _parse_machine(where: str, name: str, value: Any) -> Machine:
    """One entry: ``[speed, cores]`` or ``{"speed": x, "cores": n}``."""
    if isinstance(value, dict):
        if set(value) != {"speed", "cores"}:
            raise UsageError(f"{where}: machine {name!r} needs exactly the keys speed and cores")
        raw_speed, raw_cores = value["speed"], value["cores"]
    elif isinstance(value, list) and len(value) == 2:
        raw_speed, raw_cores = value
    else:
        raise UsageError(f"{where}: machine {name!r} must be [speed, cores] or "
                         '{"speed": x, "cores": n}')
    speed, cores = _number(raw_speed), _number(raw_cores)
    if speed is None or speed <= 0:
        raise UsageError(f"{where}: machine {name!r} speed must be a number > 0, "
                         f"got {raw_speed!r}")
    if cores is None or cores < 1 or not cores.is_integer():
        raise UsageError(f"{where}: machine {name!r} cores must be a whole number >= 1, "
                         f"got {raw_cores!r}")
    if not name.strip():
        raise UsageError(f"{where}: machine names must not be empty")
    return Machine(name=name, speed=speed, cores=int(cores))


def load_machines(path: str | Path) -> list[Machine]:
    """Read ``{"name": [speed, cores], ...}``; machines come back sorted by name.

    Sorting here means the key order in the file cannot change the plan.
    """
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: cannot read machines file: {exc}") from exc
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except ValueError as exc:
        raise UsageError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{where}: must be a JSON object of name -> [speed, cores]")
    if not data:
        raise UsageError(f"{where}: lists no machines")
    return sorted((_parse_machine(where, k, v) for k, v in data.items()), key=lambda m: m.name)


# ---------------------------------------------------------------- hashing and shuffle


def _hash_parts(tag: bytes, parts: Sequence[bytes]) -> bytes:
    """sha256 of length-prefixed parts, so ``["ab", "c"]`` and ``["a", "bc"]`` differ."""
    digest = hashlib.sha256(_VERSION + b"\0" + tag)
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def _words(seed: bytes) -> Iterator[int]:
    """An endless stream of 64-bit words: sha256(seed, counter), four words per block."""
    counter = 0
    while True:
        block = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        for i in range(0, 32, 8):
            yield int.from_bytes(block[i:i + 8], "big")
        counter += 1


def _below(words: Iterator[int], n: int) -> int:
    """Uniform integer in [0, n): rejection sampling, so no modulo bias."""
    limit = (1 << 64) - (1 << 64) % n
    while True:
        word = next(words)
        if word < limit:
            return word % n


def _shuffled(n: int, seed: bytes) -> list[int]:
    """Fisher-Yates over the sha256 stream: the same permutation on every machine."""
    order = list(range(n))
    words = _words(seed)
    for i in range(n - 1, 0, -1):
        j = _below(words, i + 1)
        order[i], order[j] = order[j], order[i]
    return order


# ---------------------------------------------------------------- shares


def _share_sizes(n: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder split of n by weight: each size within one job of n*w/W, sum n.

    Exact fractions (floats convert exactly) keep the rounding identical everywhere;
    ties in the remainder go to the machine earlier by name.
    """
    exact = [Fraction(w) for w in weights]
    total = sum(exact)
    quotas = [n * w / total for w in exact]
    sizes = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - sizes[i]), i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def _checksum(machines: Sequence[Machine], keys: Sequence[bytes], config: bytes) -> str:
    """12 hex chars of everything the plan depends on, grouped for reading aloud."""
    described = json.dumps([[m.name, m.speed, m.cores] for m in machines]).encode()
    digest = _hash_parts(b"checksum", [described, config, *keys]).hex()[:12]
    return f"{digest[:4]}-{digest[4:8]}-{digest[8:12]}"


def make_plan(job_keys: Sequence[str], machines: Sequence[Machine], config: bytes = b"") -> Plan:
    """The plan every machine computes alike: shuffle jobs, then cut weighted slices.

    The shuffle spreads long and short jobs (often adjacent in a job list) evenly over
    machines; the slices are contiguous in the shuffled order so each machine's share
    is a simple range of it.
    """
    if isinstance(job_keys, (str, bytes)):
        raise UsageError("job_keys must be a sequence of strings, not one string")
    if not job_keys:
        raise UsageError("no jobs to split")
    if not machines:
        raise UsageError("no machines to split the jobs over")
    if not all(isinstance(k, str) for k in job_keys):
        raise UsageError("every job key must be a string")
    ordered = sorted(machines, key=lambda m: m.name)
    names = [m.name for m in ordered]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"duplicate machine names: {', '.join(duplicates)}")
    for m in ordered:
        if not (m.speed > 0 and math.isfinite(m.speed)) or m.cores < 1:
            raise UsageError(f"machine {m.name!r} needs speed > 0 and cores >= 1")

    keys = [k.encode("utf-8") for k in job_keys]
    order = _shuffled(len(keys), _hash_parts(b"shuffle", [config, *keys]))
    shares: dict[str, list[int]] = {}
    start = 0
    sizes = _share_sizes(len(keys), [m.weight for m in ordered])
    for machine, size in zip(ordered, sizes, strict=True):
        shares[machine.name] = order[start:start + size]
        start += size
    return Plan(machines=ordered, order=order, shares=shares,
                checksum=_checksum(ordered, keys, config))


def share_for(plan: Plan, machine_name: str) -> list[int]:
    """This machine's job indices, in plan order; a typo in the name is an error, not []."""
    if machine_name not in plan.shares:
        known = ", ".join(plan.shares)
        raise UsageError(f"machine {machine_name!r} is not in the plan; known: {known}")
    return list(plan.shares[machine_name])


def describe(plan: Plan) -> str:
    """A table for people: who gets how much, and the checksum to compare across machines."""
    total = sum(m.weight for m in plan.machines)
    width = max(len("machine"), *(len(m.name) for m in plan.machines))
    lines = [f"{'machine':<{width}}  {'speed':>8}  {'cores':>5}  {'weight':>7}  {'jobs':>6}"]
    for m in plan.machines:
        lines.append(f"{m.name:<{width}}  {m.speed:>8g}  {m.cores:>5d}  "
                     f"{100 * m.weight / total:>6.1f}%  {len(plan.shares[m.name]):>6d}")
    lines.append(f"{len(plan.order)} jobs over {len(plan.machines)} machines; "
                 f"checksum {plan.checksum}")
    return "\n".join(lines)
