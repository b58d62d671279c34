"""Telemetry: OpenTelemetry traces of workflows (one trace per goal) and metrics, set up from the environment.

Only `opentelemetry-api` is a dependency; the SDK and its exporters come with the `otel` extra, and are
imported only when something turns them on. `setup_tracing` installs the SDK in a service process when
OTEL_* configures traces; `tracing()` is what services ask at start, None when tracing is off.
`serve_metrics` serves a process's metrics when CHOREO_METRICS_PORT (or OTEL_METRICS_EXPORTER=otlp) is
set; `enable_metrics` gives services made in a program's own process instruments from its MeterProvider.
"""

from ._metrics import (
    AgentMetrics,
    CoordinatorMetrics,
    CountingProducer,
    ServiceMetrics,
    disable_metrics,
    enable_metrics,
    service_meter,
)
from ._prometheus import MetricsServer, serve_metrics
from ._setup import exporter_names, setup_tracing
from ._tracing import Tracing, message_attributes, span_name, tracing, use_tracer_provider

__all__ = [
    "AgentMetrics",
    "CoordinatorMetrics",
    "CountingProducer",
    "MetricsServer",
    "ServiceMetrics",
    "Tracing",
    "disable_metrics",
    "enable_metrics",
    "exporter_names",
    "message_attributes",
    "serve_metrics",
    "service_meter",
    "setup_tracing",
    "span_name",
    "tracing",
    "use_tracer_provider",
]
