"""OpenTelemetry traces of a saga (issue 14): the example `report` workflow on the test kit with the SDK's
in-memory exporter. One trace per goal, every handler run a CONSUMER span under its cause's PRODUCER span,
each event's traceparent that PRODUCER span's context, compensations under the failure, the coordinator's
decisions, a join's links; and nothing at all when tracing is not configured."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from choreograph import HistoryEntry, OutcomeStatus
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.runtime import AgentRuntime
from choreograph.telemetry import exporter_names, setup_tracing, tracing, use_tracer_provider
from choreograph.testing import SagaKit
from choreograph.transport import Record

REPORT = (research.agent, analyze.agent, chart.agent, draft.agent, review.agent)
UNDONE = ["analyze", "chart", "draft", "research"]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An SDK provider with an in-memory exporter, for the services this test starts (not the global one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        use_tracer_provider(None)
        provider.shutdown()


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def traceparent_of(event: HistoryEntry) -> str:
    assert event.traceparent is not None
    return event.traceparent


def render(spans: list[ReadableSpan]) -> str:
    """The span tree as indented lines (printed by the test: what a trace viewer shows)."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        children.setdefault(span.parent.span_id if span.parent else None, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in children.get(parent, []):
            links = f"  (links: {len(span.links)})" if span.links else ""
            lines.append(f"{'  ' * depth}{span.kind.name:8} {span.name}{links}")
            walk(span_id(span), depth + 1)

    walk(None, 0)
    return "\n".join(lines)


async def test_a_compensated_saga_is_one_trace_with_every_hop_under_its_cause(
        spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "choreograph.agent")
    in_loop: list[bool] = []  # whether a span was current in an agent's consumer loop, per record
    on_record = AgentRuntime._on_record

    def watched(self: AgentRuntime, progress: Any, record: Record) -> Any:
        in_loop.append(trace.get_current_span().get_span_context().is_valid)
        return on_record(self, progress, record)

    monkeypatch.setattr(AgentRuntime, "_on_record", watched)
    async with SagaKit(*REPORT) as kit:
        goal = await kit.given_goal("report", {"topic": "go", "fail_at": "review"})
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="review", compensated=UNDONE)
        events = await kit.events(goal)

        async def outcome_span_ended() -> bool:
            return any(s.name == "send outcome" for s in spans.get_finished_spans())

        await kit.eventually(outcome_span_ended)
        await kit.idle()
    finished = list(spans.get_finished_spans())
    print("\n" + render(finished))
    by_id = {span_id(s): s for s in finished}
    producers = {s.attributes["messaging.message.id"]: s for s in finished if s.kind is SpanKind.PRODUCER
                 and s.attributes is not None}

    # One trace for everything, rooted at the goal's PRODUCER span (Client.publish).
    assert {s.context.trace_id for s in finished if s.context} == {int(traceparent_of(events[0])[3:35], 16)}
    roots = [s for s in finished if s.parent is None]
    assert [r.name for r in roots] == ["send goal report"]
    # Every event's traceparent (signed, in the log) is its PRODUCER span's context.
    for event in events:
        span = producers[event.event_id]
        assert span.context is not None
        context = span.context
        assert event.traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        assert event.rejected is None
    # Every CONSUMER span (a handler run, a compensation, the coordinator's decisions) is a child of
    # the PRODUCER span of the event it handles; every PRODUCER span but the goal's, of a CONSUMER span.
    consumers = [s for s in finished if s.kind is SpanKind.CONSUMER]
    for span in consumers:
        assert span.attributes is not None
        assert span.parent is not None
        assert by_id[span.parent.span_id] is producers[span.attributes["messaging.message.id"]], span.name
    for span in producers.values():
        assert span.parent is None or by_id[span.parent.span_id].kind is SpanKind.CONSUMER, span.name
    names = [s.name for s in finished]
    for step in ["research", "analyze", "chart", "draft", "review"]:
        assert f"process {step}" in names
    # The coordinator's decisions: its CONSUMER span of the failure, a compensation request per completed step.
    assert "coordinate goal" in names
    assert "coordinate step_failed review" in names
    assert "send WorkflowStarted" in names
    assert sorted(n.removeprefix("send compensation_requested ") for n in names
                  if n.startswith("send compensation_requested")) == UNDONE

    def ancestors(span: ReadableSpan) -> list[str]:
        chain = []
        while span.parent is not None:
            span = by_id[span.parent.span_id]
            chain.append(span.name)
        return chain

    # Each compensation runs under the failure's chain: review failed, the coordinator asked (chart's and
    # draft's undo at once, analyze's once both were undone, research's last: reverse dependency order).
    for step in UNDONE:
        (undo,) = [s for s in finished if s.name == f"compensate {step}"]
        chain = ancestors(undo)
        assert chain[0] == f"send compensation_requested {step}"
        assert "process review" in chain
        assert chain[-1] == "send goal report"
        assert chain.index("coordinate step_failed review") < chain.index("process review")
    (undo_analyze,) = [s for s in finished if s.name == "compensate analyze"]
    assert ancestors(undo_analyze)[1] in ("coordinate compensation_completed chart",
                                          "coordinate compensation_completed draft")
    # The join links the contexts of both its inputs.
    (joined,) = [s for s in finished if s.name == "process review"]
    linked = {(link.context.trace_id, link.context.span_id) for link in joined.links}
    inputs = [producers[e.event_id] for e in events if e.kind == "step_completed" and e.step in ("chart", "draft")]
    assert linked == {(s.context.trace_id, span_id(s)) for s in inputs if s.context}
    # Semantic-convention attributes, and the failure's error type.
    attributes = dict(joined.attributes or {})
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == kit.settings.events_topic
    assert attributes["messaging.destination.partition.id"] == str(goal.partition)
    assert isinstance(attributes["messaging.kafka.offset"], int)
    assert attributes["messaging.kafka.message.key"] == goal.workflow_id
    assert attributes["messaging.consumer.group.name"] == kit.settings.agent_group("report", "review")
    # Its cause: whichever of chart and draft completed the join (they run in parallel).
    assert (attributes["choreograph.workflow"], attributes["choreograph.workflow_id"], attributes["choreograph.kind"]
            ) == ("report", goal.workflow_id, "step_completed")
    assert attributes["choreograph.step"] in ("chart", "draft")
    assert attributes["error.type"] == "DemoFailure"
    assert joined.status.status_code is StatusCode.ERROR
    sent = dict(producers[events[-1].event_id].attributes or {})
    assert (sent["messaging.operation.type"], sent["choreograph.kind"]) == ("send", "outcome")
    # A handler's log lines name the span of its run.
    (line,) = [r for r in caplog.records if r.getMessage().startswith("chart: deleting")]
    (undo_chart,) = [s for s in finished if s.name == "compensate chart"]
    assert undo_chart.context is not None
    assert (line.__dict__["trace_id"], line.__dict__["span_id"]) == (f"{undo_chart.context.trace_id:032x}",
                                                                     f"{span_id(undo_chart):016x}")
    # No span ever leaked from a handler run into a consumer loop.
    assert in_loop
    assert not any(in_loop)


async def test_tracing_is_off_unless_configured() -> None:
    # Nothing configured: no exporter, no provider set, and services trace nothing.
    assert exporter_names({}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == ["otlp"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) == []
    assert setup_tracing("coordinator", env={}) is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert tracing() is None
    async with SagaKit(*REPORT) as kit:
        goal = await kit.given_goal("report", {"topic": "quiet", "fail_at": "chart"})
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED)
        events = await kit.events(goal)
    # Each hop is still a child of its cause: the goal's trace id, a span id of its own.
    by_id = {e.event_id: e for e in events}
    trace_id = traceparent_of(events[0])[3:35]
    for event in events[1:]:
        cause = by_id[event.causation_id or ""]
        assert traceparent_of(event)[3:35] == trace_id
        assert traceparent_of(event)[36:52] != traceparent_of(cause)[36:52]


async def test_a_goal_published_inside_a_request_continues_its_trace(spans: InMemorySpanExporter) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    async with SagaKit(*REPORT) as kit:
        with provider.get_tracer("web").start_as_current_span("POST /reports") as request:
            goal = await kit.given_goal("report", {"topic": "from a request"})
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
    provider.shutdown()
    finished = spans.get_finished_spans()
    (sent,) = [s for s in finished if s.name == "send goal report"]
    assert sent.parent is not None
    assert sent.parent.span_id == request.get_span_context().span_id
    assert {s.context.trace_id for s in finished if s.context} == {request.get_span_context().trace_id}
