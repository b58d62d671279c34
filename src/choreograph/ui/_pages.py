"""The pages, as HTML strings built from templates (see _html): workflows, one workflow, steps, agents, dead letters.

Pure: each function takes what the page shows and returns its HTML; the app (_app) fetches the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from ..index._summary import COMPENSATING, RUNNING, iso
from ..saga._entries import HistoryEntry
from ._data import Agents, Filters, Overview, StepsView, WorkflowView
from ._graph import dag_svg, duration_text, gantt_svg, graph_svg
from ._html import Markup, join, render
from ._steps import steps_body

# What the status filter offers (a status the index holds that is not here is listed all the same).
STATUSES = ("running", "compensating", "completed", "compensated", "failed", "timed_out", "cancelled")
# The dead letters page shows the newest this many (a page of thousands of rows helps nobody).
MAX_LETTERS = 500
_PAGES = (("/", "Workflows"), ("/steps", "Steps"), ("/agents", "Agents"), ("/dead-letters", "Dead letters"))


def page(title: str, body: Markup, *, active: str = "", live: str = "") -> Markup:
    """A whole page: the navigation, `body`, the stylesheet and the script (served from the package)."""
    nav = join(render('<a href="{href}"{current}>{label}</a>', href=href, label=label,
                      current=Markup(' aria-current="page"') if href == active else "")
               for href, label in _PAGES)
    return render(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · choreo ui</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/ui.css"></head>'
        '<body data-live="{live}"><header><span class="brand">choreo ui</span><nav>{nav}</nav></header>'
        '<main>{body}</main><script src="/static/ui.js"></script></body></html>',
        title=title, nav=nav, body=body, live=live)


def status_badge(status: str) -> Markup:
    """A status in its colour (static/ui.css: `.status-<status>`)."""
    return render('<span class="status status-{status}" data-status="{status}">{status}</span>', status=status)


def workflow_link(workflow_id: str) -> Markup:
    """A link to one workflow's page."""
    return render('<a href="/workflow/{path}">{wid}</a>', path=quote(workflow_id, safe=""), wid=workflow_id)


# Workflows ---------------------------------------------------------------------------------------


def counts_html(counts: dict[str, int]) -> Markup:
    """The counts by status, each a link to the workflows with that status."""
    if not counts:
        return Markup('<span class="muted">no workflows</span>')
    return join(render('<a class="count" href="/?status={status}">{badge} <b data-count="{status}">{n}</b></a>',
                       status=status, badge=status_badge(status), n=n) for status, n in sorted(counts.items()))


def rows_html(rows: Sequence[dict[str, Any]]) -> Markup:
    """The workflows table's rows (what the live updates replace)."""
    if not rows:
        return Markup('<tr><td colspan="7" class="muted">No workflow matches.</td></tr>')
    out = []
    for r in rows:
        step = f"{r['failed_step']} failed" if r["failed_step"] else ", ".join(r["current_steps"]) or "-"
        out.append(render(
            '<tr data-workflow-id="{wid}" class="row-{status}"><td class="id">{link}</td><td>{workflow}</td>'
            '<td>{badge}</td><td>{started}</td><td>{duration}</td><td>{step}</td><td class="reason">{reason}</td>'
            '</tr>', wid=r["workflow_id"], link=workflow_link(r["workflow_id"]), workflow=r["workflow"],
            status=r["status"], badge=status_badge(r["status"]), started=r["started"][:19].replace("T", " "),
            duration=duration_text(r["duration_ms"]), step=step, reason=r["reason"] or ""))
    return join(out)


def fresh_html(overview: Overview) -> Markup:
    """How fresh the index is, or why nothing is listed."""
    if overview.problem is not None:
        return render('<p class="problem">{problem}</p>', problem=overview.problem)
    updated = None if overview.listing is None else overview.listing.updated_ms
    return render('<span class="muted">index {path}, updated {when} UTC</span>', path=overview.index,
                  when="never" if updated is None else iso(updated)[:19].replace("T", " "))


def fragments(overview: Overview) -> dict[str, str]:
    """What a live update of the workflows page replaces: element id -> its new inner HTML."""
    rows = [] if overview.listing is None else overview.listing.rows
    return {"rows": rows_html(rows), "counts": counts_html(overview.counts), "fresh": fresh_html(overview)}


def workflows_page(overview: Overview, filters: Filters) -> Markup:
    """The workflows: filters, counts by status, and the table, kept up to date by server-sent events."""
    options = join(render('<option value="{s}"{sel}>{s}</option>', s=s,
                          sel=Markup(" selected") if s == filters.status else "") for s in ("", *STATUSES))
    parts = fragments(overview)
    query = urlencode([(k, v) for k, v in (("workflow", filters.workflow), ("status", filters.status),
                                            ("since", filters.since)) if v])
    body = render(
        '<h1>Workflows</h1>'
        '<form class="filters" method="get" action="/">'
        '<label>workflow <input name="workflow" value="{workflow}" placeholder="any"></label>'
        '<label>status <select name="status">{options}</select></label>'
        '<label>since <input name="since" value="{since}" placeholder="10m, 2h, 1d or ISO time"></label>'
        '<button type="submit">Filter</button> <a href="/">clear</a></form>'
        '<p id="counts" class="counts">{counts}</p><p id="fresh">{fresh}</p>'
        '<table class="workflows"><thead><tr><th>workflow id</th><th>workflow</th><th>status</th>'
        '<th>started (UTC)</th><th>duration</th><th>step</th><th>reason</th></tr></thead>'
        '<tbody id="rows">{rows}</tbody></table>',
        workflow=filters.workflow, since=filters.since, options=options, counts=Markup(parts["counts"]),
        fresh=Markup(parts["fresh"]), rows=Markup(parts["rows"]))
    return page("Workflows", body, active="/", live="/live/workflows" + (f"?{query}" if query else ""))


# One workflow ------------------------------------------------------------------------------------


def _payload(entry: HistoryEntry) -> Markup:
    if entry.error:
        return render('<span class="problem">unreadable payload: {error}</span>', error=entry.error)
    if entry.data is None:
        return Markup("")
    text = orjson.dumps(entry.data, option=orjson.OPT_INDENT_2, default=repr).decode()
    return render("<details><summary>payload</summary><pre>{text}</pre></details>", text=text)


def events_html(entries: Sequence[HistoryEntry]) -> Markup:
    """The events table: each row an anchor (`#ev-<id>`), its cause a link to the event that caused it."""
    if not entries:
        return Markup('<p class="muted">No events.</p>')
    rows = []
    for e in entries:
        cause = render('<a href="#ev-{c}">{short}</a>', c=e.causation_id, short=e.causation_id[:13] + "…") \
            if e.causation_id else "-"
        flag = render(' <span class="problem">REJECTED: {why}</span>', why=e.rejected) if e.rejected else ""
        rows.append(render(
            '<tr id="ev-{eid}" class="kind-{kind}"><td>{time}</td><td>{offset}</td><td>{kind}{flag}</td>'
            '<td>{step}</td><td>{type}</td><td>{source}</td><td class="id">{eid}</td><td>{cause}</td>'
            '<td>{payload}</td></tr>', eid=e.event_id, kind=e.kind, flag=flag, time=iso(e.timestamp)[11:23],
            offset=f"{e.partition}@{e.offset}", step=e.step or "", type=e.type.rsplit(".", 1)[-1],
            source=e.source, cause=cause, payload=_payload(e)))
    return render('<table class="events"><thead><tr><th>time (UTC)</th><th>offset</th><th>kind</th><th>step</th>'
                  '<th>type</th><th>source</th><th>event id</th><th>caused by</th><th>payload</th></tr></thead>'
                  '<tbody>{rows}</tbody></table>', rows=join(rows))


def letters_html(letters: Sequence[HistoryEntry]) -> Markup:
    """The workflow's dead letters: where, why, who."""
    if not letters:
        return Markup('<p class="muted">No dead letters.</p>')
    rows = [render('<tr><td>{id}</td><td>{time}</td><td>{consumer}</td><td>{kind}</td><td>{step}</td>'
                   '<td><a href="#ev-{cause}">{cause}</a></td><td class="reason">{reason}</td></tr>',
                   id=(e.data or {}).get("id"), time=e.time, consumer=e.source, kind=(e.data or {}).get("kind"),
                   step=e.step or "", cause=e.causation_id or "", reason=(e.data or {}).get("reason"))
            for e in letters]
    return render('<table class="letters"><thead><tr><th>dlq id</th><th>time</th><th>consumer</th><th>kind</th>'
                  '<th>step</th><th>event</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table>',
                  rows=join(rows))


def cancel_html(view: WorkflowView) -> Markup:
    """The cancel form, for a workflow still running (an ended one says so instead)."""
    if view.summary.status not in (RUNNING, COMPENSATING):
        return Markup("")
    return render('<form class="cancel" method="post" action="/workflow/{path}/cancel">'
                  '<input name="reason" placeholder="reason (optional)" aria-label="reason">'
                  '<button type="submit" id="cancel">Cancel workflow</button></form>',
                  path=quote(view.workflow_id, safe=""))


def workflow_page(view: WorkflowView, now_ms: int, notice: str = "", notice_ok: bool = True, seen: int = 0) -> Markup:
    """One workflow: status, trace id, cancel, the step graph, the timeline, dead letters and events.

    The page reloads itself (static/ui.js) when the index holds more of its events than `data-events`
    says: the events shown, or `seen` (what the index held when the page last reloaded itself).
    """
    s = view.summary
    reason = render('<p class="reason">{failed}{reason}</p>', failed=f"{s.failed_step} failed: " if s.failed_step
                    else "", reason=s.reason or "") if s.failed_step or s.reason else ""
    note = render('<p id="notice" class="notice {ok}">{text}</p>', ok="ok" if notice_ok else "problem",
                  text=notice) if notice else ""
    body = render(
        '<h1>{workflow} <span class="id">{wid}</span></h1>{note}'
        '<p class="facts" id="facts" data-events="{known}">status {badge} · started {started} UTC · '
        '{events} events · trace id <code id="trace">{trace}</code></p>{reason}{cancel}'
        '<h2>Steps</h2>{dag}<h2>Timeline</h2>{gantt}'
        '<h2>Dead letters</h2>{letters}<h2>Events</h2>{events_table}',
        workflow=s.workflow or "workflow", wid=view.workflow_id, note=note, events=s.events, known=max(s.events, seen),
        badge=status_badge(s.status), started=iso(s.started_ms)[:19].replace("T", " ") if s.started_ms else "?",
        trace=view.trace_id or "none", reason=reason, cancel=cancel_html(view), dag=dag_svg(s),
        gantt=gantt_svg(s, now_ms), letters=letters_html(view.dead_letters), events_table=events_html(view.events))
    return page(view.workflow_id, body, live=f"/live/workflow/{quote(view.workflow_id, safe='')}")


def steps_page(view: StepsView) -> Markup:
    """Each step's runs, failures and p50/p95 duration over the window, kept up to date by server-sent events."""
    return page("Steps", steps_body(view), active="/steps", live="/live/steps?" + urlencode({"window": view.window}))


# Agents and dead letters -------------------------------------------------------------------------


def _instances(row: dict[str, Any]) -> Markup:
    live = [i for i in row["instances"] if i.get("live")]
    if not live:
        return Markup('<span class="muted">none</span>')
    return join(render("<div>{instance} pid {pid} on {host}, running {running}</div>", instance=i.get("instance"),
                        pid=i.get("pid"), host=i.get("host"), running=i.get("running")) for i in live)


def _liveness(row: dict[str, Any]) -> str:
    if row["no_live_agent"] is None:
        return "unknown"
    return "no-agent" if row["no_live_agent"] else "live"


def _recent(steps: StepsView | None, workflow: str, step: str) -> Markup:
    """The step's runs, failure rate and p95 over the Steps page's default window, from `steps`."""
    found = None if steps is None else next((s for s in steps.stats if (s.workflow, s.step, s.compensation)
                                             == (workflow, step, False)), None)
    if found is None:
        return Markup('<span class="muted">-</span>')
    return render('<span class="{cls}">{n} runs, {rate} failed, p95 {p95}</span>', n=found.count,
                  rate=f"{found.failure_rate:.1%}", cls="problem" if found.failed else "",
                  p95="-" if found.p95_ms is None else duration_text(found.p95_ms))


def agents_page(agents: Agents, steps: StepsView | None = None) -> Markup:
    """Announced step contracts per workflow: graph, inputs and output, live instances, consumer lag, recent runs.

    `steps`: each step's runs over the Steps page's default window, shown per row (None: not shown).
    """
    rows = agents.rows
    if not rows:
        body = Markup('<h1>Agents</h1><p class="muted">No step is announced.</p>')
        return page("Agents", body, active="/agents")
    sections = []
    for workflow in dict.fromkeys(r["workflow"] for r in rows):
        mine = [r for r in rows if r["workflow"] == workflow]
        trs = []
        for r in mine:
            consumes, completes = agents.io.get((workflow, r["step"]), ([], ""))
            trs.append(render(
                '<tr data-step="{step}" class="{flag}"><td>{step}</td><td>{agent}</td><td class="types">{consumes}'
                '</td><td class="types">{completes}</td><td>{live}</td><td>{inst}</td><td>{group}</td><td>{lag}</td>'
                '<td>{breaker}</td><td>{timeout}</td><td class="recent">{recent}</td><td>{note}</td></tr>',
                recent=_recent(steps, workflow, r["step"]), step=r["step"], agent=r["agent"] or "-",
                consumes=", ".join(t.rsplit(".", 1)[-1] for t in consumes),
                completes=completes.rsplit(".", 1)[-1], live="?" if r["live"] is None else r["live"],
                inst=_instances(r), group=r["group"], lag="n/a" if r["lag"] is None else r["lag"],
                breaker=r["breaker"] or "-", flag="no-agent" if r["no_live_agent"] else "",
                timeout="-" if r["timeout_ms"] is None else duration_text(r["timeout_ms"]),
                note=("NO LIVE AGENT " if r["no_live_agent"] else "") + (f"refused: {r['refused']}" if r["refused"]
                                                                           else "")))
        graph = agents.graphs.get(workflow)
        drawn = graph_svg(graph, {r["step"]: _liveness(r) for r in mine}) if graph else Markup("")
        sections.append(render(
            '<section data-workflow="{workflow}"><h2>{workflow}</h2>{graph}<table class="agents"><thead><tr>'
            '<th>step</th><th>agent</th><th>consumes</th><th>completes with</th><th>live</th><th>instances</th>'
            '<th>consumer group</th><th>lag</th><th>breaker</th><th>timeout</th><th>{recent}</th><th></th></tr>'
            '</thead><tbody>{rows}</tbody></table></section>', workflow=workflow, graph=drawn, rows=join(trs),
            recent=render('<a href="/steps?window={w}">runs, last {w}</a>', w=steps.window) if steps else ""))
    lagless = any(r["lag"] is None for r in rows)
    note = Markup('<p class="muted">lag n/a: this broker does not report the consumer group\'s committed '
                  'offsets or ends.</p>') if lagless else ""
    body = render('<h1>Agents</h1><p class="muted">Announced step contracts (the graph the coordinator assembles '
                  'from them: a step depends on the steps whose completion it consumes), live instances (presence '
                  'on the status topic) and each step\'s consumer group lag (records behind the events topic\'s '
                  'end).</p>{sections}{note}', sections=join(sections), note=note)
    return page("Agents", body, active="/agents")


def dead_letters_page(letters: Sequence[dict[str, Any]]) -> Markup:
    """Every dead letter: id, time, consumer, origin coordinates, workflow, kind, step, reason, redrives."""
    help_text = Markup('<p class="muted">A dead letter is a record a consumer could not read. After fixing '
                       'the cause, <code>choreo dlq redrive ID</code> (or <code>--workflow ID</code>, '
                       '<code>--all</code>, <code>--dry-run</code>) sends it back once; see README, '
                       '“When things go wrong”, and <code>choreo dlq redrive --help</code>.</p>')
    if not letters:
        return page("Dead letters", render("<h1>Dead letters</h1>{h}<p class=\"muted\">No dead letters.</p>",
                                           h=help_text), active="/dead-letters")
    shown = letters[-MAX_LETTERS:]
    more = render('<p class="muted">The newest {n} of {total}: `choreo dlq ls --since TIME` lists the rest.</p>',
                  n=len(shown), total=len(letters)) if len(shown) < len(letters) else ""
    rows = []
    for x in shown:
        origin = "?" if x["topic"] is None else f"{x['topic']}:{x['origin_partition']}@{x['origin_offset']}"
        rows.append(render(
            '<tr data-letter="{id}"><td>{id}</td><td>{time}</td><td>{consumer}</td><td>{origin}</td><td>{wf}</td>'
            '<td>{kind}</td><td>{step}</td><td>{redrives}</td><td class="reason">{reason}</td></tr>',
            id=x["id"], time=(x["time"] or "")[:19].replace("T", " "), consumer=x["consumer"] or "?", origin=origin,
            wf=workflow_link(x["workflow_id"]) if x["workflow_id"] else "-", kind=x["kind"] or "-",
            step=x["step"] or "-", redrives=x["redrive_count"],
            reason=x["reason"] + (" [truncated]" if x["truncated"] else "")))
    body = render('<h1>Dead letters</h1>{h}{more}<table class="letters"><thead><tr><th>id</th><th>time (UTC)</th>'
                  '<th>consumer</th><th>origin</th><th>workflow id</th><th>kind</th><th>step</th><th>redrives</th>'
                  '<th>reason</th></tr></thead><tbody>{rows}</tbody></table>', h=help_text, more=more,
                  rows=join(rows))
    return page("Dead letters", body, active="/dead-letters")


def error_page(title: str, message: str) -> Markup:
    """A page that says what went wrong (no broker, no such workflow)."""
    return page(title, render('<h1>{title}</h1><p class="problem">{message}</p>', title=title, message=message))
