"""Traces across real processes (issue 14): the coordinator and the example agents, each its own process
with OTEL_TRACES_EXPORTER=otlp pointed at an OTLP/HTTP receiver in this test, run a saga that compensates.
Their spans reach the receiver when they stop (the batch processor's delay is set far beyond the test, so
only the flush of a graceful stop sends them), form one trace with the goal's span, and link hop by hop."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers import Stack
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from choreograph import Client, OutcomeStatus
from choreograph.telemetry import use_tracer_provider

CONSUMER, PRODUCER = 5, 4  # Span.SpanKind in the OTLP protocol


@dataclass
class Received:
    """One span as the receiver decoded it."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, Any]
    links: list[str]


def value_of(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


class Receiver(ThreadingHTTPServer):
    """A tiny OTLP/HTTP (protobuf) trace receiver on loopback: the spans every POST to /v1/traces carries."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Received] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(Received(
                        str(resource.get("service.name")), span.name, span.kind, span.trace_id.hex(),
                        span.span_id.hex(), span.parent_span_id.hex(),
                        {a.key: value_of(a.value) for a in span.attributes},
                        [link.span_id.hex() for link in span.links]))
        with self.lock:
            self.spans.extend(found)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            self.server.take(request)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # http.server's name; quiet
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def test_a_compensated_saga_across_processes_is_one_trace_linked_hop_by_hop(
        stack: Stack, receiver: Receiver) -> None:
    # Exported only by the flush of a graceful stop: the batch processor's own delay is ten minutes.
    stack.extra_env.update({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                            "OTEL_BSP_SCHEDULE_DELAY": "600000", "OTEL_SERVICE_NAME": ""})
    stack.start_examples()
    here = InMemorySpanExporter()  # the goal's span, made by this process's client
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(here))
    use_tracer_provider(provider)
    try:
        async with Client(stack.settings) as client:
            goal = await client.publish("report", {"topic": "traced", "fail_at": "review"})
            outcome = await client.wait(goal, 60)
    finally:
        use_tracer_provider(None)
        provider.shutdown()
    assert outcome is not None
    assert outcome.status is OutcomeStatus.COMPENSATED
    assert receiver.spans == []  # nothing sent before the services stop
    stack.stop()  # SIGTERM: each service stops, then flushes its spans

    (root,) = here.get_finished_spans()
    assert root.context is not None
    trace_id, root_id = f"{root.context.trace_id:032x}", f"{root.context.span_id:016x}"
    spans = [s for s in receiver.spans if s.attributes.get("choreograph.workflow_id") == goal.workflow_id]
    assert {s.trace_id for s in spans} == {trace_id}
    services = {s.service for s in spans}
    expected = {"choreo-coordinator", "choreo-report.research", "choreo-report.review", "choreo-report.chart"}
    assert expected <= services, services
    # Hop by hop: each CONSUMER span's parent is the PRODUCER span of the event it handles, made in
    # another process (the goal's, in this one).
    producers = {s.attributes["messaging.message.id"]: s.span_id for s in spans if s.kind == PRODUCER}
    goal_id = root.attributes["messaging.message.id"] if root.attributes else None
    producers[str(goal_id)] = root_id
    by_id = {s.span_id: s for s in spans}
    consumers = [s for s in spans if s.kind == CONSUMER]
    for span in consumers:
        assert span.parent == producers[span.attributes["messaging.message.id"]], span.name
        cause = by_id.get(span.parent)
        assert cause is None or cause.service != span.service, span.name  # a hop between processes
    names = {s.name: s for s in spans}
    assert names["coordinate goal"].parent == root_id
    assert names["process review"].attributes["error.type"] == "DemoFailure"
    assert len(names["process review"].links) == 2
    # The compensations, under the failure: review failed, the coordinator asked, each step undid.
    failure = names["send step_failed review"].span_id
    assert names["coordinate step_failed review"].parent == failure
    for step in ["research", "analyze", "chart", "draft"]:
        undo = names[f"compensate {step}"]
        assert undo.service == f"choreo-report.{step}"
        assert by_id[undo.parent].name == f"send compensation_requested {step}"
    assert "send outcome" in names


SETUP = """
import json, sys
from opentelemetry import trace
from choreograph.telemetry import setup_tracing
if sys.argv[1] == "own":
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
before = trace.get_tracer_provider()
shutdown = setup_tracing("report.chart")
provider = trace.get_tracer_provider()
print(json.dumps({"set_up": shutdown is not None, "kept": provider is before, "type": type(provider).__name__,
                  "service": getattr(getattr(provider, "resource", None), "attributes", {}).get("service.name")}))
if shutdown is not None:
    shutdown()
"""


@pytest.mark.parametrize(("env", "own", "expected"), [
    ({}, False, {"set_up": False, "kept": True, "type": "ProxyTracerProvider", "service": None}),
    ({"OTEL_TRACES_EXPORTER": "console"}, False,
     {"set_up": True, "kept": False, "type": "TracerProvider", "service": "report.chart"}),
    ({"OTEL_TRACES_EXPORTER": "discard", "OTEL_SERVICE_NAME": "reports"}, False,
     {"set_up": True, "kept": False, "type": "TracerProvider", "service": "reports"}),
    ({"OTEL_TRACES_EXPORTER": "console"}, True,
     {"set_up": True, "kept": True, "type": "TracerProvider", "service": "unknown_service:python"}),
])
def test_a_service_sets_up_the_sdk_only_when_configured_and_keeps_a_provider_of_its_own(
        env: dict[str, str], own: bool, expected: dict[str, Any]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", SETUP, "own" if own else "sdk"], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == expected
