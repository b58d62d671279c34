"""A service process's metrics export: the OpenTelemetry SDK with its Prometheus endpoint, or OTLP.

`serve_metrics` runs once in a service process (`choreo agent run`, `choreo coordinator run`,
`choreo index run`) before the service is made. With neither CHOREO_METRICS_PORT nor
OTEL_METRICS_EXPORTER=otlp it does nothing and imports nothing. Otherwise it loads the SDK (the `otel`
extra: `pip install 'choreograph[otel]'`) and, for CHOREO_METRICS_PORT, serves
`http://CHOREO_METRICS_HOST:CHOREO_METRICS_PORT/metrics` from a daemon thread (prometheus_client's
server); for OTEL_METRICS_EXPORTER=otlp it pushes to the OTLP/HTTP endpoint the standard OTEL_EXPORTER_OTLP_*
variables name, every OTEL_METRIC_EXPORT_INTERVAL (SDK default 60 s). Its MeterProvider becomes the global
one (a handler's own `opentelemetry.metrics.get_meter()` instruments are exported too) and the
services' instruments are enabled (see _metrics).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..transport._settings import metrics_address
from ._metrics import disable_metrics, enable_metrics

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader

INSTALL = "pip install 'choreograph[otel]'"


def otlp_metrics() -> bool:
    """Whether OTEL_METRICS_EXPORTER (a comma-separated list, as the SDK reads it) names `otlp`."""
    exporters = os.environ.get("OTEL_METRICS_EXPORTER") or ""
    return "otlp" in {name.strip().lower() for name in exporters.split(",")}


@dataclass
class MetricsServer:
    """A process's running metrics export.

    Attributes:
        provider: The SDK's MeterProvider behind it.
        host: The address its Prometheus endpoint listens on ("" without one).
        port: The endpoint's port (0 without one).
    """

    provider: MeterProvider
    host: str = ""
    port: int = 0
    _server: Any = None

    @property
    def url(self) -> str | None:
        """Where Prometheus scrapes it; None without an endpoint (OTLP only)."""
        return f"http://{self.host}:{self.port}/metrics" if self.port else None

    def close(self) -> None:
        """Stop serving, push what OTLP still owes, shut the provider down (later services count nothing)."""
        disable_metrics()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.provider.shutdown()


def serve_metrics(service: str) -> MetricsServer | None:
    """Export this process's metrics if CHOREO_METRICS_PORT or OTEL_METRICS_EXPORTER=otlp says so.

    Args:
        service: The service's name (`service.name` of its metrics, unless OTEL_SERVICE_NAME says otherwise).

    Returns:
        The export, or None when metrics are off.

    Raises:
        ConfigurationError: A CHOREO_METRICS_* value is bad, the SDK or an exporter is not installed,
            or the address cannot be listened on (in use, not this host's).
    """
    address, otlp = metrics_address(), otlp_metrics()
    if address is None and not otlp:
        return None
    what = f"CHOREO_METRICS_PORT={address[1]}" if address is not None else "OTEL_METRICS_EXPORTER=otlp"
    readers: list[MetricReader] = []
    try:
        # The SDK and the exporters load only in a process whose metrics are on (the CLI's start-up cost).
        from opentelemetry import metrics  # deferred
        from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider  # deferred
        from opentelemetry.sdk.resources import Resource  # deferred

        if address is not None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader  # deferred

            readers.append(PrometheusMetricReader())
        if otlp:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # deferred
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # deferred

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    except ImportError as exc:
        raise ConfigurationError(f"{what}: metrics need the OpenTelemetry SDK and its exporters "
                                 f"({exc.name} is missing): {INSTALL}") from None
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; the service's own
    # name only where the environment gives none.
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    # Exemplars off unless OTEL_METRICS_EXEMPLAR_FILTER asks (Prometheus' text format carries none; with
    # tracing on, the SDK's default, trace_based, would offer every handler run's duration to a reservoir).
    exemplars = None if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER") else AlwaysOffExemplarFilter()
    provider = MeterProvider(resource=Resource.create(named), metric_readers=readers, exemplar_filter=exemplars)
    exported = MetricsServer(provider)
    if address is not None:
        exported.host, exported.port = address
        exported._server = _listen(provider, *address)
    metrics.set_meter_provider(provider)
    enable_metrics(provider)
    return exported


def _listen(provider: MeterProvider, host: str, port: int) -> Any:
    """prometheus_client's HTTP server on host:port (a daemon thread), or one line saying why not."""
    from prometheus_client import start_http_server  # deferred: with the exporter, only when metrics are on

    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        provider.shutdown()
        raise ConfigurationError(f"CHOREO_METRICS_PORT={port}: cannot serve metrics on {host}:{port} "
                                 f"({exc.strerror or exc})") from None
    return server
