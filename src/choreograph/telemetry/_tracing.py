"""OpenTelemetry spans of a workflow: one trace per goal, a span per publish and per handler run.

The trace context travels in each event's `traceparent` header, which is part of the signed
envelope: a PRODUCER span is started before its event's headers are made and signed, and its span
context *is* the envelope's traceparent. Each handler run is a CONSUMER span whose parent is its cause's
context (a join also links every input's context); the coordinator's decisions are a CONSUMER span
of the event that caused them, with one PRODUCER span per decision.

Tracing is on when a real TracerProvider is there: the one `use_tracer_provider` names, or the
global one (an SDK TracerProvider set by `setup_tracing`, or by the user's own process). Each
service asks `tracing()` once, at start; when it answers None the hot path does no span work at all
and every hop keeps the old behaviour (`child_traceparent`: same trace, fresh span id), so traces
still propagate through untraced services. opentelemetry is never imported here unless something in
the process imported it already: its imports are deferred (opentelemetry.trace alone takes ~40 ms,
the CLI's start-up stays as it was).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..events._envelope import Envelope, Kind
from ..transport import _logs

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

# Attribute names: the OpenTelemetry messaging semantic conventions (Kafka), then choreograph's own.
MESSAGING_SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
PARTITION = "messaging.destination.partition.id"
OFFSET = "messaging.kafka.offset"
MESSAGE_KEY = "messaging.kafka.message.key"
CONSUMER_GROUP = "messaging.consumer.group.name"
MESSAGE_ID = "messaging.message.id"
ERROR_TYPE = "error.type"
WORKFLOW = "choreograph.workflow"
WORKFLOW_ID = "choreograph.workflow_id"
STEP = "choreograph.step"
KIND = "choreograph.kind"
ATTEMPT = "choreograph.attempt"

_override: TracerProvider | None = None


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace with `provider` instead of the global one (None: the global one again).

    For a process that keeps its own provider, and for tests (an SDK provider with an in-memory
    exporter); services read it when they start.
    """
    global _override
    _override = provider


def tracing() -> Tracing | None:
    """The process's tracing, or None when it is off (no provider configured): ask once, at start."""
    provider = _override
    if provider is None:
        if "opentelemetry.trace" not in sys.modules:
            return None  # nothing in this process set a provider (setting one imports the API)
        from opentelemetry import trace  # deferred

        provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
    return Tracing(provider)


def span_name(operation: str, envelope: Envelope, step: str | None = None) -> str:
    """`send step_completed chart`, `coordinate step_failed review`, `send goal report`: what, about which step.

    An event of kind `other` is named by its type (`send WorkflowStarted`).
    """
    kind = envelope.kind
    what = envelope.type.rpartition(".")[2] if kind is Kind.OTHER else kind.value
    step = step or envelope.step
    return f"{operation} {what} {step}" if step else f"{operation} {what}"


def message_attributes(operation: str, topic: str, partition: int | None, envelope: Envelope) -> dict[str, Any]:
    """The semantic conventions' attributes of one event (and choreograph's: workflow, step, kind)."""
    attributes: dict[str, Any] = {
        MESSAGING_SYSTEM: "kafka", OPERATION_TYPE: operation, OPERATION_NAME: operation, DESTINATION: topic,
        MESSAGE_KEY: envelope.workflow_id, MESSAGE_ID: envelope.id, WORKFLOW: envelope.workflow,
        WORKFLOW_ID: envelope.workflow_id, KIND: envelope.kind.value,
    }
    if partition is not None and partition >= 0:
        attributes[PARTITION] = str(partition)
    if envelope.step is not None:
        attributes[STEP] = envelope.step
    return attributes


class Tracing:
    """Starts choreograph's spans on one tracer (made by `tracing()` when tracing is on).

    Args:
        provider: The TracerProvider spans are made with.
    """

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import context, trace  # deferred
        from opentelemetry.trace import (  # deferred
            Link,
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )

        self.tracer: Tracer = provider.get_tracer("choreograph")
        self._trace, self._context = trace, context
        self._link, self._remote, self._span_context, self._flags = Link, NonRecordingSpan, SpanContext, TraceFlags
        self._producer, self._consumer = SpanKind.PRODUCER, SpanKind.CONSUMER
        self._error = Status(StatusCode.ERROR)
        _logs.use_span_source(_current_span_ids)

    # contexts ----------------------------------------------------------------------------------

    def remote(self, traceparent: str | None) -> Context | None:
        """The context of a W3C traceparent read from a record (None if absent or malformed)."""
        parsed = _parse(traceparent)
        if parsed is None:
            return None
        trace_id, span_id, flags = parsed
        span = self._remote(self._span_context(trace_id, span_id, True, self._flags(flags)))
        return self._trace.set_span_in_context(span)

    def inside(self, span: Span) -> Context:
        """A context whose current span is `span` (to parent spans on, without making it current)."""
        return self._trace.set_span_in_context(span)

    def links(self, traceparents: Iterable[str | None]) -> list[Any]:
        """Span links to the contexts of `traceparents` (a join's inputs)."""
        links = []
        for traceparent in traceparents:
            if (parsed := _parse(traceparent)) is not None:
                trace_id, span_id, flags = parsed
                links.append(self._link(self._span_context(trace_id, span_id, True, self._flags(flags))))
        return links

    @staticmethod
    def traceparent(span: Span) -> str | None:
        """The W3C traceparent of `span`'s context (what the envelope carries), None if it has none."""
        context = span.get_span_context()
        if not context.is_valid:
            return None
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"

    def attach(self, span: Span) -> object:
        """Make `span` current in this task's context (until `detach`)."""
        return self._context.attach(self._trace.set_span_in_context(span))

    def detach(self, token: object) -> None:
        """Undo `attach`."""
        self._context.detach(token)  # type: ignore[arg-type]

    # spans -------------------------------------------------------------------------------------

    def producer(self, name: str, attributes: dict[str, Any], parent: Context | None = None) -> Span:
        """A PRODUCER span, child of `parent` (None: of the current span, or a new trace)."""
        return self.tracer.start_span(name, parent, self._producer, attributes)

    def consumer(self, name: str, parent: Context | None, attributes: dict[str, Any], links: list[Any] | None = None,
                 start_ns: int | None = None) -> Span:
        """A CONSUMER span, child of `parent` (the cause's context), linked to `links`."""
        return self.tracer.start_span(name, parent, self._consumer, attributes, links, start_ns)

    def send(self, envelope: Envelope, topic: str, partition: int | None,
             parent: Context | None = None) -> tuple[Span, Envelope]:
        """The PRODUCER span of publishing `envelope`, and the envelope with the span's context as traceparent.

        Called before the event is signed (the traceparent is signed with the rest); end the span once sent.
        """
        span = self.producer(span_name("send", envelope), message_attributes("send", topic, partition, envelope),
                             parent)
        return span, envelope._replace(traceparent=self.traceparent(span) or envelope.traceparent)

    def received(self, name: str, envelope: Envelope, topic: str, partition: int, offset: int | None, group: str,
                 links: list[Any] | None = None, start_ns: int | None = None) -> Span:
        """The CONSUMER span of handling `envelope` (read at `offset`), child of its PRODUCER span's context."""
        attributes = message_attributes("process", topic, partition, envelope)
        attributes[CONSUMER_GROUP] = group
        if offset is not None:
            attributes[OFFSET] = offset
        return self.consumer(name, self.remote(envelope.traceparent), attributes, links, start_ns)

    def failed(self, span: Span, error: BaseException | str) -> None:
        """Mark `span` failed: `error.type` (the exception's type), an error status, the exception."""
        if isinstance(error, BaseException):
            span.set_attribute(ERROR_TYPE, type(error).__name__)
            span.record_exception(error)
        else:
            span.set_attribute(ERROR_TYPE, error)
        span.set_status(self._error)

    def current_failed(self, error: BaseException | str) -> None:
        """Mark the current span (a handler run's) failed: by an exception, or with an error type."""
        span = self._trace.get_current_span()
        if span.is_recording():
            self.failed(span, error)


def now_ns() -> int:
    """The wall clock in nanoseconds: a span's start time, taken before it is known to be wanted."""
    return time.time_ns()


def _parse(traceparent: str | None) -> tuple[int, int, int] | None:
    if traceparent is None or len(traceparent) != 55 or traceparent[2] != "-" or traceparent[35] != "-":
        return None
    try:
        trace_id, span_id, flags = int(traceparent[3:35], 16), int(traceparent[36:52], 16), int(traceparent[53:], 16)
    except ValueError:
        return None
    return (trace_id, span_id, flags) if trace_id and span_id else None


def _current_span_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span if it is recording: what a log line belongs to."""
    from opentelemetry.trace import get_current_span  # deferred

    span = get_current_span()
    if not span.is_recording():
        return None
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
