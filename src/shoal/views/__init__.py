"""What `shoal status`, `results`, `logs` and `workers` show, and which job a user means.

lookup.py: `resolve_jobs` (#N, id, name); table.py: a table that fits the terminal;
results.py, status.py (and workers), logs.py: one command each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .logs import show_log, show_outputs
    from .lookup import resolve_jobs
    from .results import parse_states, result_row, result_rows, show_results
    from .status import show_status, show_workers, watch_status

__all__ = ["parse_states", "resolve_jobs", "result_row", "result_rows", "show_log",
           "show_outputs", "show_results", "show_status", "show_workers", "watch_status"]
# imported on first use: `shoal status` needs neither the results nor the logs view
__getattr__, __dir__ = exports(globals(), {
    "show_log": ".logs", "show_outputs": ".logs", "resolve_jobs": ".lookup",
    "parse_states": ".results", "result_row": ".results", "result_rows": ".results",
    "show_results": ".results", "show_status": ".status", "show_workers": ".status",
    "watch_status": ".status"})
