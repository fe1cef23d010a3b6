"""Files in a queue folder's state folders that shoal did not make there (a user's
`touch`, an editor's backup, a copy's leftovers): every reader ignores them (layout's
`is_record`, `is_marker`), and `status` names them, once per folder, so a user is not left
wondering why a count or a drain seems off."""

from __future__ import annotations

import os
from pathlib import Path

from .layout import FINAL_DIRS, Layout, is_lane, is_marker, is_record

RECORD_KINDS = ("waiting", "claimed", "committing", *FINAL_DIRS.values())


def stray_files(layout: Layout) -> dict[str, list[str]]:
    """Folder (relative to the queue's root, e.g. `.shoal/pending`) -> the stray names in
    it, sorted; folders without any are left out."""
    found: dict[str, list[str]] = {}
    for kind in RECORD_KINDS:
        _note(found, layout, layout.dirs[kind],
              [entry.name for entry in _entries(layout.dirs[kind])
               if not is_record(kind, entry.name)])
    _pending(found, layout, layout.dirs["pending"], depth=0)
    return found


def _pending(found: dict[str, list[str]], layout: Layout, folder: Path, depth: int) -> None:
    """pending/ holds lane folders and (from before lanes) blocks and markers; a lane
    holds blocks and markers; a block holds markers."""
    strays = []
    for entry in _entries(folder):
        name = entry.name
        if entry.is_dir():
            inner = (1 if depth == 0 and is_lane(name)
                     else 2 if depth < 2 and name.lstrip("-").isdigit() else None)
            if inner is not None:
                _pending(found, layout, folder / name, inner)
                continue
        elif is_marker(name):
            continue
        strays.append(name)
    _note(found, layout, folder, strays)


def _note(found: dict[str, list[str]], layout: Layout, folder: Path, names: list[str]) -> None:
    if names:
        found[str(folder.relative_to(layout.root))] = sorted(names)


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return [entry for entry in entries if not entry.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
