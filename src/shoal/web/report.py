"""`shoal report`: one self-contained HTML file about a queue, to keep or mail after a run.

Everything is inside the file (styles inline, no script, nothing fetched), so it opens
from disk anywhere: the counts by state, a histogram of durations per state, the
failures grouped by reason, and the results table in input order. Reads each job's
summary once (`summaries`), never its log. Needs no web extra.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from ..job import JobSummary, State
from ..queue.base import Queue
from ..views.results import duration_text
from ..views.status import failure_reasons
from .data import timeline_of

BINS = 12  # bars of the duration histogram
ROWS_MOST = 10_000  # rows of the results table (a browser takes ~25 s to lay out 10^5)
SVG_WIDTH = 1000  # the timeline's own units across
LANE_PX = 10


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def write_report(queue: Queue, path: Path) -> int:
    """Write the report of `queue` to `path`; return how many jobs it covers."""
    rows = list(queue.summaries())
    page = render(queue.url, rows, failure_reasons(queue))
    path.write_text(page, encoding="utf-8")
    return len(rows)


def render(url: str, rows: Sequence[JobSummary], failures: list[dict]) -> str:
    css = resources.files(__package__).joinpath("static", "dashboard.css").read_text("utf-8")
    counts = {state: 0 for state in State}
    for row in rows:
        counts[row.state] += 1
    made = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>shoal report: {esc(url)}</title><style>{css}</style></head><body>",
        f"<header><h1>shoal report</h1><span class='muted'>{esc(url)}</span>",
        f"<span class='muted'>made {esc(made)}</span></header><main>",
        _summary(counts, rows), _timeline(rows), _histogram(rows), _failures(failures),
        _table(rows),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _summary(counts: dict[State, int], rows: Sequence[JobSummary]) -> str:
    cards = "".join(f"<div class='card state-{s.value}'><span class='n' id='count-{s.value}'>"
                    f"{n}</span>{s.value}</div>" for s, n in counts.items())
    starts = [r.started for r in rows if r.started is not None]
    ends = [r.ended for r in rows if r.ended is not None]
    span = duration_text(max(ends) - min(starts)) if starts and ends else "-"
    return (f"<section id='summary'><div class='cards'>{cards}</div><p class='facts'>"
            f"<span><b id='total'>{len(rows)}</b> jobs</span>"
            f"<span>first start to last end <b>{esc(span)}</b></span></p></section>")


def _timeline(rows: Sequence[JobSummary]) -> str:
    """The jobs as bars on their workers' lanes (`timeline_of`), an inline SVG."""
    line = timeline_of(rows)
    if not line["bars"]:
        return "<section id='timeline'><h2>Timeline</h2><p>no job has started</p></section>"
    span, lanes = line["span"] or 1.0, len(line["lanes"])
    rects = "".join(
        f"<rect x='{start * SVG_WIDTH / span:.1f}' y='{lane * LANE_PX + 1}' "
        f"width='{max(0.5, (end - start) * SVG_WIDTH / span):.1f}' height='{LANE_PX - 2}' "
        f"class='b-{state}'/>" for lane, start, end, state, *_ in line["bars"])
    fills = "".join(f".b-{s.value}{{fill:var(--{s.value})}}" for s in State)
    return (f"<section id='timeline'><h2>Timeline</h2><p class='muted'>{len(line['bars'])} "
            f"jobs on {lanes} lanes over {esc(duration_text(line['span']))}</p>"
            f"<style>{fills}</style><svg viewBox='0 0 {SVG_WIDTH} {lanes * LANE_PX}' "
            f"width='100%' preserveAspectRatio='none' style='height:{lanes * LANE_PX}px;"
            f"background:#fff'>{rects}</svg></section>")


def _histogram(rows: Sequence[JobSummary]) -> str:
    """Durations of the final jobs, one row of bars per state, on a shared scale."""
    took = [(r.state, r.ended - r.started) for r in rows
            if r.started is not None and r.ended is not None and r.state.final]
    if not took:
        return "<section id='durations'><h2>Durations</h2><p>no job has ended</p></section>"
    most = max(d for _, d in took) or 1.0
    width = most / BINS
    lines = ["<section id='durations'><h2>Durations</h2><table><thead><tr><th>state</th>"]
    lines += [f"<th>≤ {esc(_short(width * (i + 1)))}</th>" for i in range(BINS)]
    lines.append("</tr></thead><tbody>")
    for state in (s for s in State if s.final):
        bins = [0] * BINS
        for s, d in took:
            if s is state:
                bins[min(BINS - 1, int(d / width))] += 1
        if not any(bins):
            continue
        top = max(bins)
        cells = "".join(
            f"<td title='{n} job(s)'><span style='display:block;height:{_bar(n, top)}px;"
            f"background:var(--{state.value})'></span>{n or ''}</td>" for n in bins)
        lines.append(f"<tr><td>{state.value}</td>{cells}</tr>")
    lines.append("</tbody></table></section>")
    return "".join(lines)


def _bar(n: int, top: int) -> int:
    """A bar's height in pixels: none for an empty bin, 4 to 40 otherwise."""
    return 4 + 36 * n // top if n else 0


def _short(seconds: float) -> str:
    """A bin's bound: milliseconds below a second (sub-second jobs are common)."""
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else duration_text(seconds)


def _failures(failures: Iterable[dict]) -> str:
    items = "".join(f"<tr><td class='n'>{f['count']}</td><td>{esc(f['reason'])}</td>"
                    f"<td>{esc(', '.join(f['jobs']))}</td></tr>" for f in failures)
    if not items:
        return "<section id='failures'><h2>Failures</h2><p>no job failed</p></section>"
    return ("<section id='failures'><h2>Failures by reason</h2><table><thead><tr><th>jobs</th>"
            f"<th>reason</th><th>for example</th></tr></thead><tbody>{items}</tbody></table>"
            "</section>")


def _table(rows: Sequence[JobSummary]) -> str:
    body = "".join(
        f"<tr><td>{r.seq}</td><td>{esc(r.name or r.id)}</td>"
        f"<td class='st {r.state.value}'>{r.state.value}</td><td>{esc(r.exit_code)}</td>"
        f"<td>{esc(r.reason)}</td><td>{esc(_took(r))}</td><td>{esc(r.host)}</td></tr>"
        for r in rows[:ROWS_MOST])
    more = (f"<p>and {len(rows) - ROWS_MOST} more (see shoal results)</p>"
            if len(rows) > ROWS_MOST else "")
    return ("<section id='results'><h2>Results</h2><table><thead><tr><th>#</th><th>name</th>"
            "<th>state</th><th>exit</th><th>reason</th><th>took</th><th>host</th></tr></thead>"
            f"<tbody id='result-rows'>{body}</tbody></table>{more}</section>")


def _took(row: JobSummary) -> str:
    if row.started is None or row.ended is None:
        return ""
    return duration_text(row.ended - row.started)
