"""docker-compose.yml cannot run here (no Docker engine), so its shape is checked instead: Kafka, every
service `choreo up` runs, and the traces' way out (services -> OpenTelemetry collector -> Jaeger)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

import yaml
from helpers import ROOT

from choreograph.runtime import LIBRARY_SERVICES, discover


def compose() -> dict[str, dict[str, object]]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, dict[str, object]] = document["services"]
    return services


def test_compose_runs_kafka_in_kraft_mode_with_a_health_check() -> None:
    kafka = compose()["kafka"]
    assert str(kafka["image"]).startswith("apache/kafka:")
    env = kafka["environment"]
    assert isinstance(env, dict)
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert "healthcheck" in kafka


def test_compose_runs_every_service_that_choreo_up_runs_against_kafka() -> None:
    services = compose()
    commands = {" ".join(map(str, s["command"])): s for s in services.values() if "command" in s}  # type: ignore[call-overload]
    for spec in discover(ROOT):
        target = spec.argv[-1] if spec.name not in LIBRARY_SERVICES else f"{spec.name} run"
        matching = [s for command, s in commands.items() if command.endswith(target)]
        assert matching, f"docker-compose.yml has no service running {spec.name}"
        service = matching[0]
        env = service["environment"]
        assert isinstance(env, dict)
        assert (env["KAFKA_BOOTSTRAP_SERVERS"], env["CHOREO_BROKER"]) == ("kafka:9092", "kafka")
        assert "kafka" in service["depends_on"]  # type: ignore[operator]


def test_the_image_contains_what_the_services_import() -> None:
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    for directory in ("src", "schemas"):
        assert f"COPY {directory} " in dockerfile


def test_compose_archives_every_event_to_a_volume() -> None:
    archive = compose()["archive"]
    assert archive["command"][:3] == ["choreo", "archive", "--to"]  # type: ignore[index]
    directory = archive["command"][3]  # type: ignore[index]
    assert any(str(v).endswith(f":{directory}") for v in archive["volumes"])  # type: ignore[attr-defined]


def test_kafka_keeps_its_cluster_id_and_its_log_on_a_volume() -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    kafka = document["services"]["kafka"]
    cluster_id = kafka["environment"]["CLUSTER_ID"]
    # What `kafka-storage.sh random-uuid` prints: 16 bytes, base64url without padding.
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    (volume,) = [v for v in kafka["volumes"] if v.endswith(f":{log_dirs}")]
    assert volume.split(":")[0] in document["volumes"], "a named volume, so the log survives `docker compose down`"


def ours() -> dict[str, dict[str, Any]]:
    """The choreograph services: those running a `choreo` command."""
    return {name: s for name, s in compose().items() if s.get("command", [None])[0] == "choreo"}  # type: ignore[index]


def test_one_image_is_built_once_for_every_choreograph_service() -> None:
    assert {"coordinator", "research", "index", "archive"} <= set(ours())
    ours_ = ours()
    builders = [name for name, s in compose().items() if "build" in s]
    assert builders == ["coordinator"]
    assert {s["image"] for s in ours_.values()} == {ours_["coordinator"]["image"]}


# traces: services -> collector -> Jaeger ------------------------------------------------------------------


def collector_config() -> dict[str, Any]:
    """The collector's configuration file, as the otel-collector service mounts it."""
    collector = compose()["otel-collector"]
    volumes: list[str] = collector["volumes"]  # type: ignore[assignment]
    (mount,) = volumes
    source, target = mount.split(":")[:2]
    assert f"--config={target}" in collector["command"]  # type: ignore[operator]
    config: dict[str, Any] = yaml.safe_load((ROOT / source).read_text())
    return config


def ports(service: dict[str, Any]) -> set[int]:
    """The container ports a service publishes on the host (as "host:container")."""
    return {int(str(p).split(":")[-1]) for p in service.get("ports", [])}


def test_the_collector_receives_otlp_and_exports_traces_to_jaeger_in_a_batch() -> None:
    collector = compose()["otel-collector"]
    assert str(collector["image"]).startswith("otel/opentelemetry-collector-contrib:")
    config = collector_config()
    protocols = config["receivers"]["otlp"]["protocols"]
    assert (protocols["grpc"]["endpoint"], protocols["http"]["endpoint"]) == ("0.0.0.0:4317", "0.0.0.0:4318")
    assert {4317, 4318} <= ports(collector)
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert traces["processors"] == ["batch"]
    assert "batch" in config["processors"]
    exporters = {name: config["exporters"][name] for name in traces["exporters"]}
    (jaeger,) = [e for name, e in exporters.items() if name.split("/")[0] == "otlp"]
    assert jaeger["endpoint"] == "jaeger:4317"
    assert jaeger["tls"]["insecure"] is True
    assert "debug" in exporters


def test_jaeger_takes_otlp_and_shows_its_ui_on_16686() -> None:
    services = compose()
    jaeger = services["jaeger"]
    assert str(jaeger["image"]).startswith("jaegertracing/all-in-one:")
    assert jaeger["environment"] == {"COLLECTOR_OTLP_ENABLED": "true"}
    assert ports(jaeger) == {16686}
    host = collector_config()["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert host in services, "the collector exports to a service of the file"


def test_every_choreograph_service_sends_its_traces_to_the_collector_under_its_own_name() -> None:
    services = compose()
    http = int(collector_config()["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1])
    names = []
    for name, service in ours().items():
        env = service["environment"]
        endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", "otel-collector", http), name
        assert endpoint.hostname in services
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert env["OTEL_TRACES_EXPORTER"] == "otlp"
        assert "otel-collector" in service["depends_on"]
        names.append(env["OTEL_SERVICE_NAME"])
    # Jaeger's service list: one name per service, the one it takes outside compose (choreo-<agent>).
    assert len(set(names)) == len(ours()), names
    assert all(name.startswith("choreo-") for name in names), names
    assert "choreo-coordinator" in names


def test_the_image_has_the_sdk_that_reads_the_otel_variables() -> None:
    assert 'pip install --no-cache-dir ".[otel]"' in (ROOT / "infra" / "Dockerfile").read_text()
