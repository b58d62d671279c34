"""A service's tracing set-up from the standard OTEL_* variables: nothing is sent unless they say so.

Traces are configured when OTEL_TRACES_EXPORTER names an exporter other than `none`, or when an
OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; the exporter
is then `otlp`), and OTEL_SDK_DISABLED is not `true`. Exporters: `otlp` (OTLP over HTTP/protobuf,
opentelemetry-exporter-otlp-proto-http: no grpcio), `console`, and `discard` (spans are made and
batched, then dropped: what tracing costs a service, without a receiver; the benches use it).

The SDK and the exporter come with the `choreograph[otel]` extra; without them a configured service
says so once and runs untraced. The service name is OTEL_SERVICE_NAME, else the service's own (the
`choreo-<agent>`, `choreo-coordinator`: its metrics and Kafka client id use the same). A process that
set a global TracerProvider itself keeps it.
The rest is the SDK's, read from the same variables: the sampler (OTEL_TRACES_SAMPLER), the batch
processor's delays and sizes (OTEL_BSP_*), the endpoint, headers and timeout of the exporter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("choreograph.telemetry")

EXPORTERS = ("otlp", "console", "discard")


def exporter_names(env: Mapping[str, str] | None = None) -> list[str]:
    """The trace exporters the environment asks for ([] when traces are not configured)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not named:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    return [name for name in (n.strip().lower() for n in named.split(",")) if name and name != "none"]


def setup_tracing(service: str, env: Mapping[str, str] | None = None) -> Callable[[], None] | None:
    """Install a global SDK TracerProvider if OTEL_* configures traces; returns how to flush it on stop.

    Args:
        service: The service's name (the `service.name` unless OTEL_SERVICE_NAME gives one).
        env: The environment (os.environ unless given).

    Returns:
        A function that flushes and shuts the provider down (call it once the service stopped), or
        None when nothing was set up (not configured, or the SDK is not installed).
    """
    env = os.environ if env is None else env
    names = exporter_names(env)
    if not names:
        return None
    try:
        from opentelemetry import trace  # deferred
        from opentelemetry.sdk.resources import Resource  # deferred
        from opentelemetry.sdk.trace import TracerProvider  # deferred
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # deferred
    except ImportError:
        log.warning("OTEL_* configures traces but opentelemetry-sdk is not installed "
                    "(pip install 'choreograph[otel]'): %s sends no spans", service)
        return None
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):  # the process set its own: use it, flush it on stop
        flush = getattr(current, "force_flush", None)
        return (lambda: flush() and None) if callable(flush) else None
    exporters = _exporters(names, service)
    if not exporters:
        return None
    attributes: dict[str, Any] = {}
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.name"] = service
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("%s: traces to %s", service, ", ".join(names))
    return provider.shutdown


def _exporters(names: Sequence[str], service: str) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # deferred
                    OTLPSpanExporter,
                )
            except ImportError:
                log.warning("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http "
                            "(pip install 'choreograph[otel]'): %s sends no spans", service)
                continue
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # deferred

            exporters.append(ConsoleSpanExporter())
        elif name == "discard":
            exporters.append(_discard())
        else:
            log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r (choreograph knows %s)", name, ", ".join(EXPORTERS))
    return exporters


def _discard() -> SpanExporter:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # deferred

    class Discard(SpanExporter):
        """Drops every span: the cost of making and batching spans, with nothing sent."""

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return Discard()
