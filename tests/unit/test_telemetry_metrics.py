"""Metrics settings and instruments (issue 14, item 4), without processes: CHOREO_METRICS_PORT and
CHOREO_METRICS_HOST validated like every setting, off by default (no endpoint, no instrument, the SDK
never needed), one clear line when the SDK is missing or the port is taken, `choreo up`'s port per
service, and the instruments of a saga run on the test kit read through the SDK's in-memory reader."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from choreograph import OutcomeStatus, Settings
from choreograph.errors import ConfigurationError
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.runtime import AgentRuntime, Coordinator, ServiceSpec
from choreograph.runtime._processes import metrics_ports
from choreograph.telemetry import disable_metrics, enable_metrics, serve_metrics, service_meter
from choreograph.testing import SagaKit
from choreograph.transport import MemoryLog, MemoryTransport
from choreograph.transport._settings import metrics_address

pytestmark = pytest.mark.usefixtures("no_settings_env")


def _error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env()
    return str(raised.value)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CHOREO_METRICS_PORT", "abc", "CHOREO_METRICS_PORT='abc': expected an integer from 0 to 65535"),
    ("CHOREO_METRICS_PORT", "-1", "CHOREO_METRICS_PORT='-1': expected an integer from 0 to 65535"),
    ("CHOREO_METRICS_PORT", "65536", "CHOREO_METRICS_PORT='65536': expected an integer from 0 to 65535"),
    ("CHOREO_METRICS_PORT", ":9464", "CHOREO_METRICS_PORT=':9464': expected an integer from 0 to 65535"),
    ("CHOREO_METRICS_HOST", "local host", "CHOREO_METRICS_HOST='local host': expected a host name or an IP address"),
    ("CHOREO_METRICS_HOST", "http://h", "CHOREO_METRICS_HOST='http://h': expected a host name or an IP address"),
])
def test_a_bad_metrics_setting_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                     message: str) -> None:
    assert _error(monkeypatch, name, value) == message


def test_metrics_are_off_unless_a_port_is_set_and_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert metrics_address() is None
    monkeypatch.setenv("CHOREO_METRICS_PORT", "0")
    assert metrics_address() is None
    monkeypatch.setenv("CHOREO_METRICS_PORT", "9464")
    assert metrics_address() == ("127.0.0.1", 9464)
    monkeypatch.setenv("CHOREO_METRICS_HOST", "0.0.0.0")
    assert metrics_address() == ("0.0.0.0", 9464)
    monkeypatch.setenv("CHOREO_METRICS_HOST", "::1")
    assert metrics_address() == ("::1", 9464)


def test_off_by_default_no_endpoint_no_instruments_and_the_sdk_is_not_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("opentelemetry.sdk", "opentelemetry.sdk.metrics", "opentelemetry.exporter.prometheus",
                   "prometheus_client"):
        monkeypatch.setitem(sys.modules, module, None)  # importing any of them fails now
    assert serve_metrics("choreo-test") is None
    assert service_meter() is None
    settings = Settings("memory")
    memory = MemoryTransport(MemoryLog(), settings)
    assert AgentRuntime(research.agent, settings, transport=memory)._metrics is None
    assert Coordinator(settings, transport=memory)._metrics is None


def test_a_metrics_port_without_the_sdk_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOREO_METRICS_PORT", "9464")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus", None)
    with pytest.raises(ConfigurationError) as raised:
        serve_metrics("choreo-test")
    assert str(raised.value) == ("CHOREO_METRICS_PORT=9464: metrics need the OpenTelemetry SDK and its exporters "
                                 "(opentelemetry.exporter.prometheus is missing): pip install 'choreograph[otel]'")
    assert service_meter() is None


def test_a_metrics_port_in_use_is_one_line_naming_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("CHOREO_METRICS_PORT", str(port))
        with pytest.raises(ConfigurationError) as raised:
            serve_metrics("choreo-test")
    assert str(raised.value) == (f"CHOREO_METRICS_PORT={port}: cannot serve metrics on 127.0.0.1:{port} "
                                 "(Address already in use)")
    assert service_meter() is None


def test_choreo_up_gives_each_service_its_own_port_from_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = [ServiceSpec(name, []) for name in ("coordinator", "index", "report.research", "report.research-2")]
    assert metrics_ports(specs) == {}
    monkeypatch.setenv("CHOREO_METRICS_PORT", "9464")
    assert metrics_ports(specs) == {"coordinator": 9464, "index": 9465, "report.research": 9466,
                                    "report.research-2": 9467}
    monkeypatch.setenv("CHOREO_METRICS_PORT", "65534")
    with pytest.raises(ConfigurationError, match=r"^CHOREO_METRICS_PORT=65534: 4 services need ports 65534 to "
                                                 r"65537; expected a port up to 65532$"):
        metrics_ports(specs)


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    enable_metrics(provider)
    try:
        yield reader
    finally:
        disable_metrics()
        provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    """Each data point of metric `name`: its attributes and the point (sum, count, value)."""
    data = reader.get_metrics_data()
    assert data is not None
    return [(dict(point.attributes or {}), point) for resource in data.resource_metrics
            for scope in resource.scope_metrics for metric in scope.metrics if metric.name == name
            for point in metric.data.data_points]


async def test_a_saga_on_the_kit_is_timed_per_step_and_counted_by_the_coordinator(
        reader: InMemoryMetricReader) -> None:
    async with SagaKit(research.agent, analyze.agent, chart.agent, draft.agent, review.agent) as kit:
        goal = await kit.given_goal("report", {"topic": "metrics"})
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        runs = {attributes["choreograph.step"]: point.count
                for attributes, point in points(reader, "messaging.process.duration")}
        assert runs == {"research": 1, "analyze": 1, "chart": 1, "draft": 1, "review": 1}
        [(attributes, started)] = points(reader, "choreograph.workflows.started")
        assert (attributes, started.value) == ({"messaging.system": "kafka", "choreograph.workflow": "report"}, 1)
        [(attributes, finished)] = points(reader, "choreograph.workflows.finished")
        assert (attributes["choreograph.status"], finished.value) == ("completed", 1)
        # Five agents and the coordinator in one process: each one's lag, one instrument for all.
        groups = {attributes["messaging.consumer.group.name"]
                  for attributes, _ in points(reader, "messaging.kafka.consumer.lag")}
        assert groups == {kit.settings.coordinator_group, *(
            kit.settings.agent_group("report", step) for step in ("research", "analyze", "chart", "draft", "review"))}
        assert {point.value for _, point in points(reader, "messaging.kafka.consumer.lag")} == {0}
