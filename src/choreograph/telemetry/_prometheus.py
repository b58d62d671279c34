"""A service process's metrics endpoint: the OpenTelemetry SDK with its Prometheus exporter.

`serve_metrics` runs once in a service process (`choreo agent run`, `choreo coordinator run`) before the
service is made. CHOREO_METRICS_PORT unset or 0: it does nothing and imports nothing. Set: it loads the
SDK and the exporter (the `otel` extra: `pip install 'choreograph[otel]'`), serves
`http://CHOREO_METRICS_HOST:CHOREO_METRICS_PORT/metrics` from a daemon thread (prometheus_client's
server), makes its MeterProvider the global one (a handler's own `opentelemetry.metrics.get_meter()`
instruments are served too) and enables the services' instruments (see _metrics).
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

INSTALL = "pip install 'choreograph[otel]'"


@dataclass
class MetricsServer:
    """A running metrics endpoint.

    Attributes:
        host: The address it listens on.
        port: Its port.
        provider: The SDK's MeterProvider behind it.
    """

    host: str
    port: int
    provider: MeterProvider
    _server: Any

    @property
    def url(self) -> str:
        """Where Prometheus scrapes it."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and shut the provider down (services made afterwards count nothing)."""
        disable_metrics()
        self._server.shutdown()
        self._server.server_close()
        self.provider.shutdown()


def serve_metrics(service: str) -> MetricsServer | None:
    """Serve this process's metrics if CHOREO_METRICS_PORT says so.

    Args:
        service: The service's name (`service.name` of its metrics, unless OTEL_SERVICE_NAME says otherwise).

    Returns:
        The endpoint, or None when metrics are off.

    Raises:
        ConfigurationError: A CHOREO_METRICS_* value is bad, the SDK or the exporter is not installed,
            or the address cannot be listened on (in use, not this host's).
    """
    address = metrics_address()
    if address is None:
        return None
    host, port = address
    try:
        # The SDK and the exporter load only in a process whose metrics are on (the CLI's start-up cost).
        from opentelemetry import metrics  # deferred
        from opentelemetry.exporter.prometheus import PrometheusMetricReader  # deferred
        from opentelemetry.sdk.metrics import MeterProvider  # deferred
        from opentelemetry.sdk.resources import Resource  # deferred
        from prometheus_client import start_http_server  # deferred
    except ImportError as exc:
        raise ConfigurationError(f"CHOREO_METRICS_PORT={port}: metrics need the OpenTelemetry SDK and its "
                                 f"Prometheus exporter ({exc.name} is missing): {INSTALL}") from None
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; the service's own
    # name only where the environment gives none.
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = MeterProvider(resource=Resource.create(named), metric_readers=[PrometheusMetricReader()])
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        provider.shutdown()
        raise ConfigurationError(f"CHOREO_METRICS_PORT={port}: cannot serve metrics on {host}:{port} "
                                 f"({exc.strerror or exc})") from None
    metrics.set_meter_provider(provider)
    enable_metrics(provider)
    return MetricsServer(host, port, provider, server)
