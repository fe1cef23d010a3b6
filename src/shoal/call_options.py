"""What `Executor.options(...)` accepts, checked and turned into the Job fields it sets.

Per-call settings cannot be keyword arguments of `submit` (they would clash with the
called function's own), so they live on a light view of the executor. The words are
the user's (`cpus`, `gpus`, `mem="4G"`, `requires=`); the Job stores them as `needs`
(mem in bytes) and `labels`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import needs
from .errors import UsageError
from .queue.scheduling import CPUS, GPUS, MEM

#: options that are plain Job fields, and their checks
RUN_OPTIONS = ("timeout_s", "retries", "max_attempts")
SCHEDULING_OPTIONS = ("priority", "cpus", "gpus", "mem", "requires", "resources")



def parse_mem(value: Any) -> int:
    """Bytes from a number of bytes or a size with a unit: "512M", "4G", "1.5GiB" (binary
    units, as Slurm reads them; the reader is `needs.parse_mem`, shared with the command
    line), with the errors a Python API raises."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"mem must be a size such as 4G or a number of bytes, not {value!r}")
    try:
        return int(needs.parse_mem("mem", value))
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def _amount(where: str, name: str, value: Any) -> float:
    """An amount as the command line reads it (`needs.resource_amount`: whole cpus and
    gpus, >= 0), with the errors a Python API raises."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where} must be a number, not {value!r}")
    try:
        return needs.resource_amount(where, name, value)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def _labels(value: Any) -> tuple[str, ...]:
    labels = (value,) if isinstance(value, str) else tuple(value) if isinstance(
        value, Iterable) else None
    if labels is None or not all(isinstance(label, str) and label for label in labels):
        raise TypeError(f"requires must be a label or a list of labels, not {value!r}")
    return labels


def job_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    """The Job fields these options set (unknown names: TypeError, like a bad keyword)."""
    unknown = set(options) - set(RUN_OPTIONS) - set(SCHEDULING_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))} (known: "
                        f"{', '.join(RUN_OPTIONS + SCHEDULING_OPTIONS)})")
    fields = {key: options[key] for key in RUN_OPTIONS if key in options}
    needs: dict[str, float] = {}
    for name, amount in (options.get("resources") or {}).items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"resources: a resource's name is a string, not {name!r}")
        needs[name] = _amount(f"resources[{name!r}]", name, amount)
    if "priority" in options:
        priority = options["priority"]
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be a whole number, not {priority!r}")
        fields["priority"] = priority
    if options.get("cpus") is not None:
        needs[CPUS] = _amount("cpus", CPUS, options["cpus"])
    if options.get("gpus") is not None:
        gpus = _amount("gpus", GPUS, options["gpus"])
        if gpus:
            needs[GPUS] = gpus
    if options.get("mem") is not None:
        needs[MEM] = parse_mem(options["mem"])
    if needs:
        fields["needs"] = needs
    if "requires" in options:
        fields["labels"] = _labels(options["requires"]) if options["requires"] else ()
    return fields


def merged(base: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """Job fields `base` with `more` on top; needs are merged resource by resource (a view
    of a view asking for gpus keeps the cpus its parent asked for)."""
    result = {**base, **more}
    if "needs" in base and "needs" in more:
        result["needs"] = {**base["needs"], **more["needs"]}
    return result
