"""`--json PATH` for the bench scripts: the figures a script prints, as one JSON file.

bench/run_all.py runs the scripts and reads these files instead of parsing their tables.
A script writes the file after each part it finishes (`Figures.save`), so a part that
fails or is killed later does not lose the parts before it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH",
                        help="also write the figures printed, as JSON, to PATH")


class Figures(dict):
    """The figures of one run, by part; saved to PATH (if any) whenever a part is added."""

    def __init__(self, path: str | None, script: str) -> None:
        super().__init__(script=Path(script).name, python=sys.version.split()[0],
                         platform=platform.platform(), cpus=os.cpu_count(),
                         load_start=os.getloadavg()[0], started=time.time())
        self.path = path
        self.save()

    def part(self, name: str, figures: Any) -> None:
        self[name] = figures
        self.save()

    def save(self) -> None:
        if not self.path:
            return
        self["load_now"] = os.getloadavg()[0]
        self["elapsed_s"] = time.time() - self["started"]
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self, handle, indent=1)
        os.replace(tmp, self.path)  # a reader never sees half a file


def paired_ratio(walls: Mapping[str, list[float]], name: str, peer: str) -> float | None:
    """Median over repetitions of the per-repetition speed ratio name/peer (load drifts)."""
    pairs = [b / a for a, b in zip(walls[name], walls.get(peer, []), strict=False)]
    return statistics.median(pairs) if pairs else None


def variants(walls: Mapping[str, list[float]], skipped: Mapping[str, str], *,
             n: int | Mapping[str, int], peers: tuple[str, ...] = (),
             runs: Mapping[str, list[dict]] | None = None,
             ideal_s: float | None = None) -> dict[str, Any]:
    """Per variant: its wall times, median, rate (n / median), ratio against each peer
    (of the medians, and paired), medians of start-up/shut-down, and the efficiency when
    an ideal wall time is given; and the variants skipped, with the reason."""
    found: dict[str, Any] = {}
    for name, times in walls.items():
        if not times:
            continue
        count = n if isinstance(n, int) else n[name]
        median = statistics.median(times)
        entry: dict[str, Any] = {"n": count, "walls_s": times, "median_s": median,
                                 "per_s": count / median}
        for peer in peers:
            if walls.get(peer) and peer != name:
                peer_count = n if isinstance(n, int) else n[peer]
                entry[f"x_{peer}"] = (count / median) / (peer_count
                                                         / statistics.median(walls[peer]))
                entry[f"x_{peer}_paired"] = paired_ratio(walls, name, peer)
        for key in ("startup", "shutdown"):
            values = [run[key] for run in (runs or {}).get(name, []) if key in run]
            if values:
                entry[f"{key}_s"] = statistics.median(values)
        cpu = [run["cpu"] for run in (runs or {}).get(name, []) if run.get("cpu")]
        if cpu:
            entry["cpu_s_last_run"] = cpu[-1]
        if ideal_s is not None:
            entry["ideal_s"] = ideal_s
            entry["efficiency"] = ideal_s / median
            entry["worst_efficiency"] = ideal_s / max(times)
        found[name] = entry
    return {"variants": found,
            "skipped": {name: why for name, why in skipped.items() if not walls.get(name)}}
