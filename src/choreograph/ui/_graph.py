"""The step graph (a DAG laid out by dependency depth) and the timeline (a Gantt chart), as inline SVG.

No JavaScript graph library: a workflow has a handful of steps, so columns by depth (a step one
column right of its deepest dependency) and rows in graph order read well and cost nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..index._summary import StepRun, Summary
from ._html import Markup, join, render

# The states a step is drawn in (the CSS colours each: static/ui.css).
STATES = ("pending", "running", "completed", "failed", "compensating", "compensated", "abandoned", "skipped")

_NODE_W, _NODE_H, _GAP_X, _GAP_Y, _PAD = 150, 44, 60, 18, 10
_BAR_LABEL_W, _BAR_W, _BAR_H, _BAR_GAP = 170, 560, 18, 8


def step_state(summary: Summary, step: str) -> str:
    """What a step of the workflow is doing now: one of STATES.

    Its compensation, once requested, says more than its run: `compensating` until it is done
    (`compensated`), `failed` if the compensation failed. A run whose inputs are all in is
    `running` (an agent has it, or will as soon as one is up) until it completes or fails;
    `abandoned` if the workflow ended first. A step whose inputs never all came in is `pending`
    while the workflow runs and `skipped` once it ended (a failure before it, or a cancel).
    """
    undo = summary.runs.get((step, True))
    if undo is not None:
        return {"pending": "compensating", "compensated": "compensated",
                "compensation_failed": "failed"}.get(undo.status, "abandoned")
    run = summary.runs.get((step, False))
    if run is None:
        return "skipped" if summary.finished else "pending"
    return {"pending": "running", "completed": "completed", "failed": "failed"}.get(run.status, "abandoned")


def _depths(graph: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each step's column: 0 without dependencies, else one more than its deepest dependency's."""
    depths: dict[str, int] = {}

    def depth(step: str, seen: frozenset[str]) -> int:
        if step in depths:
            return depths[step]
        deps = [d for d in graph.get(step, ()) if d in graph and d not in seen]  # a cycle is cut, not followed
        depths[step] = 0 if not deps else 1 + max(depth(d, seen | {step}) for d in deps)
        return depths[step]

    for step in graph:
        depth(step, frozenset())
    return depths


def dag_svg(summary: Summary) -> Markup:
    """The workflow's step graph: a box per step (class and `data-state` its state), an arrow per dependency."""
    if not summary.graph:
        return Markup('<p class="muted">No step graph yet: the coordinator has not started this workflow.</p>')
    return graph_svg(summary.graph, {step: step_state(summary, step) for step in summary.graph})


def graph_svg(graph: Mapping[str, Sequence[str]], states: Mapping[str, str]) -> Markup:
    """A step graph: a box per step in its column by depth, its class and `data-state` from `states`."""
    depths = _depths(graph)
    columns: dict[int, list[str]] = {}
    for step in graph:
        columns.setdefault(depths[step], []).append(step)
    where = {step: (_PAD + col * (_NODE_W + _GAP_X), _PAD + row * (_NODE_H + _GAP_Y))
             for col, steps in columns.items() for row, step in enumerate(steps)}
    width = _PAD * 2 + len(columns) * _NODE_W + (len(columns) - 1) * _GAP_X
    height = _PAD * 2 + max(len(s) for s in columns.values()) * (_NODE_H + _GAP_Y) - _GAP_Y
    edges = [render('<line class="edge" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" marker-end="url(#arrow)"/>',
                    x1=where[dep][0] + _NODE_W, y1=where[dep][1] + _NODE_H // 2,
                    x2=where[step][0] - 2, y2=where[step][1] + _NODE_H // 2)
             for step, deps in graph.items() for dep in deps if dep in where]
    nodes = []
    for step, (x, y) in where.items():
        state = states.get(step, "pending")
        nodes.append(render(
            '<g class="node state-{state}" data-step="{step}" data-state="{state}">'
            '<title>{step}: {state}</title>'
            '<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6"/>'
            '<text x="{tx}" y="{ty1}" class="name">{label}</text>'
            '<text x="{tx}" y="{ty2}" class="state">{state}</text></g>',
            state=state, step=step, x=x, y=y, w=_NODE_W, h=_NODE_H, tx=x + _NODE_W // 2, ty1=y + 18, ty2=y + 35,
            label=step if len(step) <= 20 else step[:19] + "…"))
    return render(
        '<svg class="dag" role="img" aria-label="step graph" width="{width}" height="{height}" '
        'viewBox="0 0 {width} {height}"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/></marker>'
        '</defs>{edges}{nodes}</svg>', width=width, height=height, edges=join(edges), nodes=join(nodes))


def duration_text(ms: int) -> str:
    """A duration for people: `850 ms`, `2.4 s`, `3m05s`."""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000}m{ms % 60_000 // 1000:02d}s"


def gantt_svg(summary: Summary, now_ms: int) -> Markup:
    """The timeline: a bar per step run and per compensation, from when it could start to its end.

    A run still going is drawn to now (to the last event once the workflow has ended).
    """
    runs = sorted((r for r in summary.runs.values() if r.started_ms is not None or r.finished_ms is not None),
                  key=lambda r: (_start(r), r.compensation, r.step))
    if not runs:
        return Markup('<p class="muted">No step has run yet.</p>')
    t0 = summary.started_ms
    end_of_open = summary.last_event_ms if summary.finished else max(now_ms, summary.last_event_ms)
    t1 = max([end_of_open, *(r.finished_ms or 0 for r in runs)])
    span = max(1, t1 - t0)
    rows = []
    for i, run in enumerate(runs):
        start, end = _start(run), run.finished_ms if run.finished_ms is not None else end_of_open
        x = _BAR_LABEL_W + round((start - t0) / span * _BAR_W)
        w = max(2, round((end - start) / span * _BAR_W))
        y = _PAD + i * (_BAR_H + _BAR_GAP)
        state = _bar_state(run)
        label = f"↺ {run.step}" if run.compensation else run.step
        took = duration_text(max(0, end - start)) + ("" if run.finished_ms is not None else " …")
        rows.append(render(
            '<g class="bar state-{state}" data-step="{step}" data-compensation="{comp}" data-state="{state}">'
            '<title>{label}: {state}, {took}</title>'
            '<text x="0" y="{ty}" class="label">{label}</text>'
            '<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="3"/>'
            '<text x="{dx}" y="{ty}" class="took">{took}</text></g>',
            state=state, step=run.step, comp="true" if run.compensation else "false", label=label, took=took,
            ty=y + _BAR_H - 4, x=x, y=y, w=w, h=_BAR_H, dx=x + w + 6))
    height = _PAD * 2 + len(runs) * (_BAR_H + _BAR_GAP)
    width = _BAR_LABEL_W + _BAR_W + 90
    return render('<svg class="gantt" role="img" aria-label="timeline" width="{width}" height="{height}" '
                  'viewBox="0 0 {width} {height}">{rows}</svg>', width=width, height=height, rows=join(rows))


def _start(run: StepRun) -> int:
    return run.started_ms if run.started_ms is not None else (run.finished_ms or 0)


def _bar_state(run: StepRun) -> str:
    if run.compensation:
        return {"pending": "compensating", "compensated": "compensated",
                "compensation_failed": "failed"}.get(run.status, "abandoned")
    return {"pending": "running", "completed": "completed", "failed": "failed"}.get(run.status, "abandoned")
