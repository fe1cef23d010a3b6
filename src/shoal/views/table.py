"""A plain-text table that fits the terminal: columns dropped by priority, long cells cut
with an ellipsis. Written by hand because rich's Table costs ~1 ms a row (16 s for 20,000)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass

ELLIPSIS = "…"
GAP = "  "
UNLIMITED = 10**9


@dataclass(frozen=True)
class Column:
    """A column: `keep` orders which go first when space is short (lower stays longer);
    `flex` columns share what is left and are cut to fit, the others keep their width."""

    title: str
    keep: int = 0  # 0: always shown; others only if some row has something in them
    flex: bool = False
    least: int = 6  # a flex column is never cut narrower than this
    right: bool = False


def terminal_width() -> int:
    """The width to fit: COLUMNS if set, else the terminal's; a pipe or file gets whole
    lines (no width: grep and scripts see every cell uncut)."""
    if os.environ.get("COLUMNS", "").isdigit():
        return max(20, int(os.environ["COLUMNS"]))
    if not sys.stdout.isatty():
        return UNLIMITED
    return max(20, shutil.get_terminal_size((80, 24)).columns)


def cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, with an ellipsis where it was cut."""
    if len(text) <= width:
        return text
    return text[:max(0, width - 1)] + ELLIPSIS if width > 0 else ""


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """The table's lines (header first), no line longer than `width`."""
    natural = [max([len(c.title)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    shown = [i for i, c in enumerate(columns) if c.keep == 0 or any(row[i] for row in rows)]

    def need(indices: list[int]) -> int:
        least = [min(natural[i], columns[i].least) if columns[i].flex else natural[i]
                 for i in indices]
        return sum(least) + len(GAP) * (len(indices) - 1)

    while len(shown) > 1 and need(shown) > width:
        shown.remove(max(shown, key=lambda i: (columns[i].keep, i)))
    widths = {i: natural[i] for i in shown}
    spare = width - sum(widths.values()) - len(GAP) * (len(shown) - 1)
    flexible = [i for i in shown if columns[i].flex]
    while spare < 0 and flexible:  # take from the widest flexible column, one at a time
        widest = max(flexible, key=lambda i: widths[i])
        floor = min(natural[widest], columns[widest].least)
        if widths[widest] <= floor:
            flexible.remove(widest)
            continue
        step = min(-spare, widths[widest] - floor,
                   max(1, widths[widest] - max(widths[i] for i in flexible if i != widest))
                   if len(flexible) > 1 else widths[widest] - floor)
        widths[widest] -= step
        spare += step

    # One format string for every row; only cells wider than their column are cut first.
    template = GAP.join(f"{{{n}:{'>' if columns[i].right else '<'}{widths[i]}}}"
                        for n, i in enumerate(shown))
    narrow = [i for i in shown if natural[i] > widths[i]]

    def line(cells: Sequence[str]) -> str:
        if narrow:
            cells = list(cells)
            for i in narrow:
                if len(cells[i]) > widths[i]:
                    cells[i] = cut(cells[i], widths[i])
        return template.format(*[cells[i] for i in shown]).rstrip()

    return [line([c.title for c in columns])] + [line(row) for row in rows]
