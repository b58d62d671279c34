"""OpenTelemetry for services: metrics (and a Prometheus endpoint per service process).

Only `opentelemetry-api` is a dependency, imported once metrics are on; the SDK and the Prometheus
exporter come with the `otel` extra. `serve_metrics` serves a process's metrics when
CHOREO_METRICS_PORT is set; `enable_metrics` gives services made in a program's own process
instruments from its MeterProvider.
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

__all__ = [
    "AgentMetrics",
    "CoordinatorMetrics",
    "CountingProducer",
    "MetricsServer",
    "ServiceMetrics",
    "disable_metrics",
    "enable_metrics",
    "serve_metrics",
    "service_meter",
]
