"""docker-compose.yml cannot run here (no Docker engine), so its shape is checked instead."""

from __future__ import annotations

import base64

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
        assert service["environment"] == {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "CHOREO_BROKER": "kafka"}
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


def test_one_image_is_built_once_for_every_choreograph_service() -> None:
    services = compose()
    ours = {name: s for name, s in services.items() if name != "kafka"}
    builders = [name for name, s in ours.items() if "build" in s]
    assert builders == ["coordinator"]
    assert {s["image"] for s in ours.values()} == {ours["coordinator"]["image"]}
