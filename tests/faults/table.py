"""`python -m tests.faults.table REPORT.jsonl`: the markdown table of docs/reliability.md
from the JSON lines a run wrote to SHOAL_FAULTS_REPORT."""

from __future__ import annotations

import json
import sys

from tests.faults.backends import LEASE_S

HEADER = ("| Row | Backend | Iterations | Jobs | Lost | Duplicated | Unexpected "
          "| Other problems | Executions per job, mean (max) | Recovery s, median (max) "
          "| Lease s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def table(lines: list[dict[str, object]]) -> str:
    """One markdown row per (fault row, backend), in the order they ran. "Other problems"
    counts iterations with any problem of Report.problems() (a failed job not meant to
    fail, a failure without a reason, an orphan, or a row's own check)."""
    out = [HEADER]
    for r in lines:
        recovery = ("-" if r["recovery_median_s"] is None
                    else f"{r['recovery_median_s']} ({r['recovery_max_s']})")
        out.append(f"| {r['row']} | {r['backend']} | {r['iterations']} | {r['jobs']} "
                   f"| {r['lost']} | {r['duplicated']} | {r['unexpected']} "
                   f"| {r.get('wrong_iterations', 0)} "
                   f"| {r['executions_mean']} ({r['executions_max']}) | {recovery} "
                   f"| {r.get('lease_s', LEASE_S)} |")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(table([json.loads(line) for line in f if line.strip()]))
