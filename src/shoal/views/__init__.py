"""What `shoal status`, `results`, `logs` and `workers` show, and which job a user means.

lookup.py: `resolve_jobs` (#N, id, name); table.py: a table that fits the terminal;
results.py, status.py (and workers), logs.py: one command each.
"""

from __future__ import annotations

from .logs import show_log, show_outputs
from .lookup import resolve_jobs
from .results import parse_states, result_row, result_rows, show_results
from .status import show_status, show_workers, watch_status

__all__ = ["parse_states", "resolve_jobs", "result_row", "result_rows", "show_log",
           "show_outputs", "show_results", "show_status", "show_workers", "watch_status"]
