"""`choreo ui`'s pages (issue 14, part 6) rendered by the real ASGI app over a fake source: what a person
sees on each page, the step states, the cancel form and its result, the live stream's first update, and
hostile values escaped everywhere. No broker, no server: the app is called as an ASGI server calls it."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest

from choreograph import HistoryEntry, Settings
from choreograph.index import IndexedEvent, IndexStore, StepRun, Summary
from choreograph.ui import (
    Agents,
    Filters,
    Markup,
    Source,
    StepsView,
    WorkflowView,
    escape,
    fold_entries,
    make_app,
    render,
)
from choreograph.ui._graph import dag_svg, step_state
from choreograph.ui._pages import dead_letters_page

HOSTILE = '<script>alert("x")</script>'
T0 = 1_790_000_000_000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GRAPH = [{"name": "research", "depends_on": []}, {"name": "analyze", "depends_on": ["research"]},
         {"name": "chart", "depends_on": ["analyze"]}, {"name": "draft", "depends_on": ["research"]},
         {"name": "review", "depends_on": ["chart", "draft"]}]


def entry(offset: int, kind: str, step: str | None = None, data: dict[str, Any] | None = None,
          type_: str = "report.Event", cause: str | None = None, wid: str = "wf-comp") -> HistoryEntry:
    return HistoryEntry(topic="t.events", partition=0, offset=offset, timestamp=T0 + offset * 100, time="",
                        type=type_, kind=kind, step=step, event_id=f"ev-{offset}", causation_id=cause,
                        source="agent://x", traceparent=f"00-{TRACE}-00f067aa0ba902b7-01", data=data,
                        workflow_id=wid, workflow="report")


def compensated() -> list[HistoryEntry]:
    """A report saga whose draft failed: research and analyze compensated, a hostile payload, a dead letter."""
    return [
        entry(0, "goal", data={"topic": HOSTILE}),
        entry(1, "other", data={"steps": GRAPH}, type_="choreograph.WorkflowStarted", cause="ev-0"),
        entry(2, "step_completed", "research", {"facts": [HOSTILE]}, cause="ev-0"),
        entry(3, "step_completed", "analyze", {"summary": "ok"}, cause="ev-2"),
        entry(4, "step_failed", "draft", {"reason": f"boom {HOSTILE}", "error_type": "ValueError"}, cause="ev-2"),
        entry(5, "compensation_requested", "analyze", {"step": "analyze", "failed_step": "draft"}, cause="ev-4"),
        entry(6, "compensation_completed", "analyze", {"step": "analyze"}, cause="ev-5"),
        entry(7, "compensation_requested", "research", {"step": "research", "failed_step": "draft"}, cause="ev-4"),
        entry(8, "dead_letter", "research", {"id": "0:3", "kind": "step_completed", "reason": f"bad {HOSTILE}"},
              cause="ev-2"),
    ]


class FakeSource(Source):
    """The real index reading (a file this test writes); workflows, agents, letters and cancel made up."""

    def __init__(self, home: Path, views: dict[str, list[HistoryEntry]]) -> None:
        super().__init__(Settings("localhost:1", namespace="uitest"), home)
        self.views = views
        self.cancelled: list[tuple[str, str]] = []

    async def workflow(self, workflow_id: str) -> WorkflowView:
        entries = self.views.get(workflow_id, [])
        return WorkflowView(workflow_id, entries, fold_entries(workflow_id, entries))

    async def agents(self) -> Agents:
        research = {"workflow": "report", "step": "research", "agent": "research-agent",
                    "group": "uitest.report.research", "live": 1, "live_by": "presence", "no_live_agent": False,
                    "instances": [{"instance": "i-1", "pid": 42, "host": "box", "running": 0, "live": True}],
                    "lag": None, "breaker": "closed", "timeout_ms": 30000, "refused": None}
        draft = {"workflow": "report", "step": "draft", "agent": HOSTILE, "group": "uitest.report.draft", "live": 0,
                 "live_by": "presence", "no_live_agent": True, "instances": [], "lag": 3, "breaker": None,
                 "timeout_ms": None, "refused": None}
        return Agents([research, draft], {"report": {"research": [], "draft": ["research"]}},
                      {("report", "research"): (["report.ReportGoal"], "report.ResearchCompleted")})

    async def dead_letters(self) -> list[dict[str, Any]]:
        return [{"id": "0:7", "time": "2026-11-22T10:00:00.000Z", "consumer": "uitest.coordinator",
                 "topic": "uitest.events", "origin_partition": 2, "origin_offset": 41, "workflow_id": "wf-comp",
                 "kind": "goal", "step": None, "redrive_count": 0, "reason": f"unsigned {HOSTILE}",
                 "truncated": False}]

    async def cancel(self, workflow_id: str, reason: str) -> tuple[bool, str]:
        self.cancelled.append((workflow_id, reason))
        return True, f"Cancellation requested for {workflow_id}"


def indexed(wid: str, kind: str, at: int, workflow: str = "report", data: dict[str, Any] | None = None,
            step: str | None = None) -> IndexedEvent:
    return IndexedEvent(wid, workflow, kind, "report.Event", step, T0 + at, data)


@pytest.fixture
def source(tmp_path: Path) -> FakeSource:
    store = IndexStore(tmp_path / "index" / "uitest.sqlite")
    events = [indexed("wf-done", "goal", 0), indexed("wf-done", "outcome", 900, data={"status": "completed"}),
              indexed("wf-comp", "goal", 1000), indexed("wf-comp", "step_failed", 1500, step="draft",
                                                        data={"reason": HOSTILE}),
              indexed("wf-comp", "outcome", 2000, data={"status": "compensated", "failed_step": "draft"}),
              indexed("wf-run", "goal", 3000, workflow=HOSTILE)]
    store.fold_batch("uitest.events", [(0, i, e) for i, e in enumerate(events)])
    store.close()
    done = [entry(0, "goal", wid="wf-done"), entry(1, "outcome", data={"status": "completed"}, wid="wf-done")]
    return FakeSource(tmp_path, {"wf-comp": compensated(), "wf-run": [entry(0, "goal", wid="wf-run")], "wf-done": done})


async def call(app: Any, method: str, target: str, body: bytes = b"",
               headers: tuple[tuple[bytes, bytes], ...] = (), hang_up: bool = True) -> tuple[int, dict[str, str], str]:
    """One request to the ASGI app; a streaming response is read to its first chunk, then disconnected
    (unless not `hang_up`: then the client never leaves, and only the response can end the request)."""
    path, _, query = target.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": unquote(path), "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8765"), *headers], "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 8765)}
    status, got, chunks = 0, {}, []
    first = asyncio.Event()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await first.wait()
        if not hang_up:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, got
        if message["type"] == "http.response.start":
            status = message["status"]
            got = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if message.get("body"):
                first.set()

    await asyncio.wait_for(app(scope, receive, send), 10)
    return status, got, b"".join(chunks).decode()


def text_of(html: str) -> str:
    """What a person reads: the tags dropped, entities kept as written."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def no_raw_script(html: str) -> None:
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert" in html


async def test_the_workflows_page_lists_each_workflow_with_its_status_colour_and_counts(source: FakeSource) -> None:
    status, _, html = await call(make_app(source), "GET", "/")
    assert status == 200
    for wid, state in (("wf-done", "completed"), ("wf-comp", "compensated"), ("wf-run", "running")):
        row = re.search(rf'<tr data-workflow-id="{wid}".*?</tr>', html)
        assert row is not None, wid
        assert f'class="status status-{state}"' in row.group(0)
        assert f'href="/workflow/{wid}"' in row.group(0)
    assert 'data-count="completed">1<' in html
    assert 'data-count="compensated">1<' in html
    assert "draft failed" in text_of(html)
    assert 'data-live="/live/workflows"' in html
    assert '<script src="/static/ui.js"></script>' in html
    no_raw_script(html)


async def test_the_filters_select_by_status_workflow_and_since(source: FakeSource) -> None:
    app = make_app(source)
    _, _, html = await call(app, "GET", "/?status=compensated")
    assert re.findall(r'data-workflow-id="([^"]+)"', html) == ["wf-comp"]
    assert '<option value="compensated" selected>' in html
    assert 'data-live="/live/workflows?status=compensated"' in html
    _, _, html = await call(app, "GET", "/?workflow=nothing")
    assert "No workflow matches." in html
    _, _, html = await call(app, "GET", "/?since=yesterday")
    assert "since &#x27;yesterday&#x27;" in html
    recent = source.overview(Filters(since="1d"), now_ms=T0 + 86_400_000 + 2500).listing
    assert recent is not None
    assert [r["workflow_id"] for r in recent.rows] == ["wf-run"]


async def test_the_workflows_page_without_an_index_says_how_to_get_one(tmp_path: Path) -> None:
    _, _, html = await call(make_app(FakeSource(tmp_path, {})), "GET", "/")
    assert "No workflow index here" in html
    assert "choreo up" in html


async def test_the_live_stream_sends_the_rows_as_they_are_now(source: FakeSource) -> None:
    status, headers, body = await call(make_app(source, poll_s=0.05), "GET", "/live/workflows?status=running")
    assert (status, headers["content-type"].split(";")[0]) == (200, "text/event-stream")
    assert body.startswith("event: update\ndata: ")
    parts = orjson.loads(body.split("data: ", 1)[1].split("\n", 1)[0])
    assert set(parts) == {"rows", "counts", "fresh"}
    assert re.findall(r'data-workflow-id="([^"]+)"', parts["rows"]) == ["wf-run"]
    _, _, body = await call(make_app(source, poll_s=0.05), "GET", "/live/workflow/wf-comp")
    assert orjson.loads(body.split("data: ", 1)[1].split("\n", 1)[0]) == {"status": "compensated", "events": 3}


async def test_a_live_stream_ends_when_the_server_stops(source: FakeSource) -> None:
    stopping = False

    def stop_after_first() -> bool:
        nonlocal stopping
        stopping, was = True, stopping
        return was

    status, _, body = await call(make_app(source, poll_s=30, stopping=stop_after_first), "GET", "/live/workflows",
                                 hang_up=False)
    assert status == 200
    assert body.count("event: update") == 1, "one update, then the stream ends (no 30 s wait)"


async def test_one_workflow_shows_step_states_timeline_events_causes_dead_letters_and_trace(
        source: FakeSource) -> None:
    status, _, html = await call(make_app(source), "GET", "/workflow/wf-comp")
    assert status == 200
    states = dict(re.findall(r'<g class="node state-\w+" data-step="(\w+)" data-state="(\w+)"', html))
    assert states == {"research": "compensating", "analyze": "compensated", "draft": "failed", "chart": "running",
                      "review": "pending"}
    bars = re.findall(r'<g class="bar state-(\w+)" data-step="(\w+)" data-compensation="(\w+)"', html)
    assert ("compensated", "analyze", "true") in bars
    assert ("completed", "research", "false") in bars
    assert html.count('marker-end="url(#arrow)"') == 5  # one arrow per dependency
    assert f'<code id="trace">{TRACE}</code>' in html
    assert '<tr id="ev-ev-4" class="kind-step_failed">' in html
    assert '<a href="#ev-ev-2">' in html  # draft's failure links to research's completion, its cause
    assert "bad &lt;script&gt;" in html  # the dead letter's reason
    assert 'id="cancel"' in html, "no outcome yet: it can still be cancelled"
    no_raw_script(html)


async def test_a_running_workflow_has_a_cancel_button_whose_post_cancels_and_says_so(source: FakeSource) -> None:
    app = make_app(source)
    _, _, html = await call(app, "GET", "/workflow/wf-run")
    assert '<form class="cancel" method="post" action="/workflow/wf-run/cancel">' in html
    status, headers, _ = await call(app, "POST", "/workflow/wf-run/cancel", b"reason=enough+already",
                                    ((b"origin", b"http://127.0.0.1:8765"),))
    assert status == 303
    assert source.cancelled == [("wf-run", "enough already")]
    _, _, html = await call(app, "GET", headers["location"])
    assert '<p id="notice" class="notice ok">Cancellation requested for wf-run</p>' in html
    _, _, html = await call(app, "GET", "/workflow/wf-done")
    assert 'data-status="completed"' in html
    assert 'id="cancel"' not in html, "an ended workflow has no cancel button"


async def test_a_cancel_posted_from_another_site_is_refused(source: FakeSource) -> None:
    status, _, html = await call(make_app(source), "POST", "/workflow/wf-run/cancel", b"",
                                 ((b"origin", b"http://evil.example"),))
    assert status == 403
    assert source.cancelled == []
    assert "own page" in html


async def test_an_unknown_workflow_is_a_404_page(source: FakeSource) -> None:
    status, _, html = await call(make_app(source), "GET", "/workflow/nope")
    assert status == 404
    assert "No events of workflow &#x27;nope&#x27;" in html


async def test_the_agents_page_shows_contracts_instances_and_lag(source: FakeSource) -> None:
    status, _, html = await call(make_app(source), "GET", "/agents")
    assert status == 200
    text = text_of(html)
    assert "i-1 pid 42 on box" in text
    assert "NO LIVE AGENT" in text
    assert "uitest.report.draft 3" in text
    assert "lag n/a: this broker does not report" in text
    assert "ReportGoal ResearchCompleted" in text  # what research consumes and completes with
    states = dict(re.findall(r'<g class="node state-[\w-]+" data-step="(\w+)" data-state="([\w-]+)"', html))
    assert states == {"research": "live", "draft": "no-agent"}
    no_raw_script(html)


async def test_the_dead_letters_page_shows_reason_and_coordinates(source: FakeSource) -> None:
    status, _, html = await call(make_app(source), "GET", "/dead-letters")
    assert status == 200
    assert "uitest.events:2@41" in html
    assert '<a href="/workflow/wf-comp">wf-comp</a>' in html
    assert "choreo dlq redrive ID" in html
    no_raw_script(html)


async def test_the_script_and_stylesheet_are_served_from_the_package(source: FakeSource) -> None:
    app = make_app(source)
    status, _, body = await call(app, "GET", "/static/ui.js")
    assert (status, "EventSource" in body) == (200, True)
    status, _, css = await call(app, "GET", "/static/ui.css")
    assert status == 200
    for state in ("pending", "running", "completed", "failed", "compensating", "compensated"):
        assert f".node.state-{state} rect" in css


def step_runs(home: Path, now_ms: int) -> None:
    """An index whose report runs ended 20 s ago (research ok, analyze failed in 1 of 2, research compensated)
    or 10 min ago (one more research run), and a hostile workflow whose hostile step ended 20 s ago."""
    graph = {"steps": [{"name": "research", "depends_on": []}, {"name": "analyze", "depends_on": ["research"]}]}
    events: list[IndexedEvent] = []
    for wid, at, fails in (("wf-a", now_ms - 21_000, False), ("wf-b", now_ms - 21_000, True),
                           ("wf-old", now_ms - 601_000, False)):
        events += [IndexedEvent(wid, "report", "goal", "report.Goal", None, at, None),
                   IndexedEvent(wid, "report", "other", "choreograph.WorkflowStarted", None, at, graph),
                   IndexedEvent(wid, "report", "step_completed", "report.R", "research", at + 400, None)]
        if wid == "wf-old":
            continue
        if fails:
            events += [IndexedEvent(wid, "report", "step_failed", "report.A", "analyze", at + 500, {"reason": "x"}),
                       IndexedEvent(wid, "report", "compensation_requested", "report.C", "research", at + 510,
                                    {"step": "research", "failed_step": "analyze"}),
                       IndexedEvent(wid, "report", "compensation_completed", "report.C", "research", at + 540, None)]
        else:
            events.append(IndexedEvent(wid, "report", "step_completed", "report.A", "analyze", at + 550, None))
    hostile = {"steps": [{"name": HOSTILE, "depends_on": []}]}
    events += [IndexedEvent("wf-h", HOSTILE, "goal", "x.Goal", None, now_ms - 20_500, None),
               IndexedEvent("wf-h", HOSTILE, "other", "choreograph.WorkflowStarted", None, now_ms - 20_500, hostile),
               IndexedEvent("wf-h", HOSTILE, "step_completed", "x.Done", HOSTILE, now_ms - 20_000, None)]
    store = IndexStore(home / "index" / "uitest.sqlite")
    store.fold_batch("uitest.events", [(0, i, e) for i, e in enumerate(events)])
    store.close()


def step_row(html: str, workflow: str, step: str, compensation: bool = False) -> list[str]:
    """The cells a person reads in the Steps page's row of that step (or its compensations)."""
    found = re.search(rf'<tr data-workflow="{re.escape(workflow)}" data-step="{re.escape(step)}" '
                      rf'data-compensation="{int(compensation)}"[^>]*>(.*?)</tr>', html)
    assert found is not None, (workflow, step, compensation)
    return [text_of(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", found.group(1))]


@pytest.fixture
def steps_home(tmp_path: Path) -> FakeSource:
    step_runs(tmp_path, time.time_ns() // 1_000_000)
    return FakeSource(tmp_path, {})


async def test_the_steps_page_shows_each_steps_runs_failures_and_percentiles(steps_home: FakeSource) -> None:
    status, _, html = await call(make_app(steps_home), "GET", "/steps")
    assert status == 200
    assert step_row(html, "report", "research") == ["report", "research", "2", "0", "0.0%", "400 ms", "400 ms", ""]
    assert step_row(html, "report", "analyze") == ["report", "analyze", "2", "1", "50.0%", "100 ms", "150 ms", ""]
    assert step_row(html, "report", "research", compensation=True)[:4] == ["report", "↺research", "1", "0"]
    assert re.search(r'<tr data-workflow="report" data-step="analyze" data-compensation="0" class="failing">', html)
    assert '<tr data-workflow="report" data-step="research" data-compensation="0" class="">' in html
    assert 'class="lat" title="p50 400 ms, p95 400 ms"' in html  # research: the longest p95, the full bar
    assert '<span class="p95" style="width: 100.0%">' in html
    assert '<a href="/steps" aria-current="page">Steps</a>' in html
    assert 'data-live="/live/steps?window=5m"' in html
    assert '<a href="/steps?window=5m" aria-current="true" class="current">5m</a>' in html


async def test_the_steps_window_parameter_selects_the_runs_that_ended_in_it(steps_home: FakeSource) -> None:
    app = make_app(steps_home)
    _, _, html = await call(app, "GET", "/steps?window=15m")
    assert step_row(html, "report", "research")[2] == "3", "wf-old's research ended 10 min ago"
    assert '<a href="/steps?window=15m" aria-current="true" class="current">15m</a>' in html
    assert 'data-live="/live/steps?window=15m"' in html
    _, _, html = await call(app, "GET", "/steps?window=10s")
    assert "No step run ended in the last 10s." in html
    status, headers, body = await call(app, "GET", "/live/steps?window=1h")
    assert (status, headers["content-type"].split(";")[0]) == (200, "text/event-stream")
    parts = orjson.loads(body.split("data: ", 1)[1].split("\n", 1)[0])
    assert set(parts) == {"step-rows", "fresh"}
    assert step_row(parts["step-rows"], "report", "research")[2] == "3"
    _, _, html = await call(make_app(FakeSource(steps_home.index.parent.parent / "none", {})), "GET", "/steps")
    assert "No workflow index here" in html


async def test_a_bad_window_is_a_400_that_says_what_a_window_is(steps_home: FakeSource) -> None:
    app = make_app(steps_home)
    for window, why in (("soon", "expected a duration such as 30s, 10m or 1h30m"), ("0", "expected a duration > 0")):
        for path in ("/steps", "/live/steps"):
            status, _, html = await call(app, "GET", f"{path}?window={window}")
            assert status == 400, (path, window)
            assert f"window &#x27;{window}&#x27;: {escape(why)}" in html


async def test_open_steps_pages_on_one_window_share_one_computation_per_poll(steps_home: FakeSource,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[float] = []
    real = steps_home.steps

    def counted(window: str, window_s: float, now_ms: int | None = None) -> StepsView:
        computed.append(window_s)
        return real(window, window_s, now_ms)

    monkeypatch.setattr(steps_home, "steps", counted)
    app = make_app(steps_home, stats_poll_s=60)
    first = [await call(app, "GET", "/live/steps?window=5m") for _ in range(3)]
    assert len({body for _, _, body in first}) == 1
    assert computed == [300.0], "three streams within a poll: one step_stats"
    await call(app, "GET", "/live/steps?window=1h")
    assert computed == [300.0, 3600.0]


async def test_the_agents_page_shows_each_steps_recent_runs(steps_home: FakeSource) -> None:
    _, _, html = await call(make_app(steps_home), "GET", "/agents")
    assert '<a href="/steps?window=5m">runs, last 5m</a>' in html
    research = re.search(r'<tr data-step="research".*?<td class="recent">(.*?)</td>', html)
    draft = re.search(r'<tr data-step="draft".*?<td class="recent">(.*?)</td>', html)
    assert research is not None
    assert draft is not None
    assert text_of(research.group(1)) == "2 runs, 0.0% failed, p95 400 ms"
    assert text_of(draft.group(1)) == "-", "no run of draft ended in the window"


async def test_hostile_workflow_and_step_names_are_escaped_on_the_steps_page(steps_home: FakeSource) -> None:
    _, _, html = await call(make_app(steps_home), "GET", "/steps")
    escaped = escape(HOSTILE)
    assert step_row(html, escaped, escaped)[2] == "1"
    no_raw_script(html)


def test_templates_escape_every_value_but_markup() -> None:
    assert render("<b>{x}</b>{y}", x=HOSTILE, y=Markup("<i>ok</i>")) == \
        "<b>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</b><i>ok</i>"
    assert escape(None) == ""
    assert escape("a'b") == "a&#x27;b"


def test_a_step_is_drawn_in_its_column_by_dependency_depth() -> None:
    summary = Summary("w", graph={g["name"]: g["depends_on"] for g in GRAPH},  # type: ignore[misc]
                      runs={("research", False): StepRun("research", False, "completed", T0, T0 + 5),
                            ("draft", False): StepRun("draft", False, "pending", T0 + 5)})
    svg = dag_svg(summary)
    x = {step: int(at) for step, at in re.findall(r'data-step="(\w+)".*?<rect x="(\d+)"', svg)}
    assert x["research"] < x["analyze"] == x["draft"] < x["chart"] < x["review"]
    assert [step_state(summary, s) for s in ("research", "draft", "analyze")] == ["completed", "running", "pending"]
    summary.status = "compensated"  # ended: a step that never got its inputs was skipped, not pending
    assert [step_state(summary, s) for s in ("analyze", "review")] == ["skipped", "skipped"]


def test_the_dead_letters_page_shows_the_newest_500() -> None:
    letter = {"time": "", "consumer": "c", "topic": "t", "origin_partition": 0, "workflow_id": None, "kind": None,
              "step": None, "redrive_count": 0, "reason": "r", "truncated": False}
    html = dead_letters_page([{**letter, "id": f"0:{i}", "origin_offset": i} for i in range(501)])
    assert html.count("<tr data-letter=") == 500
    assert 'data-letter="0:0"' not in html
    assert "The newest 500 of 501" in html
