"""The Steps page: each step's runs, failures, failure rate and p50/p95 duration over a recent window.

The figures are `choreo stats`'s (index.step_stats); the page is kept up to date by server-sent
events as the workflows page is (static/ui.js swaps in the fragments rendered here).
"""

from __future__ import annotations

from urllib.parse import urlencode

from ..index._stats import StepStats
from ..index._summary import iso
from ._data import StepsView
from ._graph import duration_text
from ._html import Markup, join, render

# The windows offered as links (any other the `window` parameter names is shown all the same).
WINDOWS = ("1m", "5m", "15m", "1h", "24h")
DEFAULT_WINDOW = "5m"


def _ms(value: int | None) -> str:
    return "-" if value is None else duration_text(value)


def _bar(s: StepStats, scale: int) -> Markup:
    """p50 over p95, as widths of the row's bar; `scale` is the page's largest p95 (the full width)."""
    if s.p95_ms is None or scale <= 0:
        return Markup("")
    return render('<div class="lat" title="p50 {p50}, p95 {p95}"><span class="p95" style="width: {w95}%"></span>'
                  '<span class="p50" style="width: {w50}%"></span></div>', p50=_ms(s.p50_ms), p95=_ms(s.p95_ms),
                  w95=f"{100 * s.p95_ms / scale:.1f}", w50=f"{100 * (s.p50_ms or 0) / scale:.1f}")


def step_rows_html(view: StepsView) -> Markup:
    """The table's rows (what the live updates replace): compensations marked ↺, failures highlighted."""
    if view.problem is not None:
        return render('<tr><td colspan="8" class="problem">{problem}</td></tr>', problem=view.problem)
    if not view.stats:
        return render('<tr><td colspan="8" class="muted">No step run ended in the last {window}.</td></tr>',
                      window=view.window)
    scale = max((s.p95_ms or 0) for s in view.stats)
    return join(render(
        '<tr data-workflow="{workflow}" data-step="{step}" data-compensation="{comp}" class="{cls}">'
        '<td>{workflow}</td><td>{name}</td><td class="num">{count}</td><td class="num">{failed}</td>'
        '<td class="num rate">{rate}</td><td class="num">{p50}</td><td class="num">{p95}</td><td>{bar}</td></tr>',
        workflow=s.workflow, step=s.step, comp="1" if s.compensation else "0",
        cls=" ".join(c for c, on in (("compensation", s.compensation), ("failing", s.failed > 0)) if on),
        name=f"↺{s.step}" if s.compensation else s.step, count=s.count, failed=s.failed,
        rate=f"{s.failure_rate:.1%}", p50=_ms(s.p50_ms), p95=_ms(s.p95_ms), bar=_bar(s, scale))
        for s in view.stats)


def steps_fresh_html(view: StepsView) -> Markup:
    """How fresh the index is."""
    if view.problem is not None:
        return Markup("")
    return render('<span class="muted">index {path}, updated {when} UTC</span>', path=view.index,
                  when="never" if view.updated_ms is None else iso(view.updated_ms)[:19].replace("T", " "))


def steps_fragments(view: StepsView) -> dict[str, str]:
    """What a live update of the Steps page replaces: element id -> its new inner HTML."""
    return {"step-rows": step_rows_html(view), "fresh": steps_fresh_html(view)}


def steps_body(view: StepsView) -> Markup:
    """The page's content: the window's links, the table and how fresh the index is."""
    links = join(render('<a href="/steps?{q}"{cur}>{w}</a>', q=urlencode({"window": w}), w=w,
                        cur=Markup(' aria-current="true" class="current"') if w == view.window else "")
                 for w in WINDOWS)
    parts = steps_fragments(view)
    return render(
        '<h1>Steps</h1><p class="muted">Per workflow and step, the runs that ended in the last {window}: failures, '
        'failure rate and duration (p50, p95; from when the step\'s inputs were all in the log to its result, '
        'as <code>choreo stats</code>). Compensations are marked ↺.</p>'
        '<p class="windows">window {links}</p><p id="fresh">{fresh}</p>'
        '<table class="steps"><thead><tr><th>workflow</th><th>step</th><th class="num">runs</th>'
        '<th class="num">failed</th><th class="num">failure rate</th><th class="num">p50</th><th class="num">p95</th>'
        '<th>p50 / p95</th></tr></thead><tbody id="step-rows">{rows}</tbody></table>',
        window=view.window, links=links, fresh=Markup(parts["fresh"]), rows=Markup(parts["step-rows"]))
