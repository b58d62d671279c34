"""CHOREO_KAFKA_* security settings: parsed, validated in one line each, redacted, and handed to every
aiokafka client the transport makes (clients are built, never started). TLS with real certificates
is in tests/e2e/test_kafka_tls.py (making them takes the openssl process)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from choreograph import Settings
from choreograph.errors import ConfigurationError
from choreograph.transport import KafkaTransport
from choreograph.transport._kafka_security import KafkaSecurity, connection_options

SERVERS = "127.0.0.1:9092"
PASSWORD = "s3cret-hunter2"


@pytest.fixture(autouse=True)
def _servers(no_settings_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", SERVERS)


def _error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env()
    return str(raised.value)


def _sasl(monkeypatch: pytest.MonkeyPatch, protocol: str = "SASL_PLAINTEXT", **more: str) -> None:
    for name, value in {"CHOREO_KAFKA_SECURITY_PROTOCOL": protocol, "CHOREO_KAFKA_SASL_USERNAME": "svc",
                        "CHOREO_KAFKA_SASL_PASSWORD": PASSWORD, **more}.items():
        monkeypatch.setenv(name, value)


def test_unset_is_plaintext_with_nothing_else() -> None:
    settings = Settings.from_env()
    assert settings.security == KafkaSecurity()
    assert connection_options(settings) == {"bootstrap_servers": SERVERS, "client_id": "choreo",
                                            "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "scram-sha-512"])
def test_sasl_settings_are_read(monkeypatch: pytest.MonkeyPatch, mechanism: str) -> None:
    _sasl(monkeypatch, CHOREO_KAFKA_SASL_MECHANISM=mechanism)
    security = Settings.from_env().security
    assert (security.protocol, security.sasl_mechanism) == ("SASL_PLAINTEXT", mechanism.upper())
    assert (security.sasl_username, security.sasl_password) == ("svc", PASSWORD)


def test_the_sasl_mechanism_defaults_to_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    _sasl(monkeypatch)
    assert Settings.from_env().security.sasl_mechanism == "PLAIN"


@pytest.mark.parametrize(("variables", "message"), [
    ({"CHOREO_KAFKA_SECURITY_PROTOCOL": "TLS"},
     "CHOREO_KAFKA_SECURITY_PROTOCOL='TLS': expected one of: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ({"CHOREO_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CHOREO_KAFKA_SASL_MECHANISM": "GSSAPI",
      "CHOREO_KAFKA_SASL_USERNAME": "u", "CHOREO_KAFKA_SASL_PASSWORD": "p"},
     "CHOREO_KAFKA_SASL_MECHANISM='GSSAPI': expected one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"CHOREO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CHOREO_KAFKA_SASL_PASSWORD": "p"},
     "CHOREO_KAFKA_SASL_USERNAME is unset: expected a value with CHOREO_KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
    ({"CHOREO_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CHOREO_KAFKA_SASL_USERNAME": "u"},
     "CHOREO_KAFKA_SASL_PASSWORD is unset: expected a value with CHOREO_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"),
    ({"CHOREO_KAFKA_SASL_USERNAME": "u"},
     "CHOREO_KAFKA_SASL_USERNAME='u': expected only with CHOREO_KAFKA_SECURITY_PROTOCOL SASL_PLAINTEXT or "
     "SASL_SSL (it is PLAINTEXT)"),
    ({"CHOREO_KAFKA_SECURITY_PROTOCOL": "SSL", "CHOREO_KAFKA_SASL_PASSWORD": PASSWORD},
     "CHOREO_KAFKA_SASL_PASSWORD: expected only with CHOREO_KAFKA_SECURITY_PROTOCOL SASL_PLAINTEXT or SASL_SSL "
     "(it is SSL)"),
    ({"CHOREO_KAFKA_SSL_CAFILE": "/etc/ca.pem"},
     "CHOREO_KAFKA_SSL_CAFILE='/etc/ca.pem': expected only with CHOREO_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL "
     "(it is PLAINTEXT)"),
    ({"CHOREO_KAFKA_SECURITY_PROTOCOL": "SSL", "CHOREO_KAFKA_SSL_CAFILE": "/no/such/ca.pem"},
     "CHOREO_KAFKA_SSL_CAFILE='/no/such/ca.pem': expected a readable file"),
    ({"CHOREO_KAFKA_SECURITY_PROTOCOL": "SSL", "CHOREO_KAFKA_SSL_CERTFILE": "/no/such/cert.pem"},
     "CHOREO_KAFKA_SSL_CERTFILE='/no/such/cert.pem': expected a readable file"),
])
def test_a_bad_value_is_one_line_naming_the_variable_and_what_is_expected(
        monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str) -> None:
    assert _error(monkeypatch, **variables) == message


def test_a_file_that_is_not_pem_fails_at_start_naming_its_variable(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # short relative paths: a value over 60 characters is quoted cut short
    junk = Path("ca.pem")
    junk.write_text("not a certificate\n")
    message = _error(monkeypatch, CHOREO_KAFKA_SECURITY_PROTOCOL="SSL", CHOREO_KAFKA_SSL_CAFILE=str(junk))
    assert message.startswith(f"CHOREO_KAFKA_SSL_CAFILE={str(junk)!r}: expected PEM certificates (")
    assert "\n" not in message
    message = _error(monkeypatch, CHOREO_KAFKA_SSL_CAFILE="", CHOREO_KAFKA_SSL_CERTFILE=str(junk))
    assert message.startswith(f"CHOREO_KAFKA_SSL_CERTFILE={str(junk)!r}: expected a PEM certificate with its key")


def test_a_key_file_without_a_certificate_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    key = Path("client.key")
    key.write_text("")
    message = _error(monkeypatch, CHOREO_KAFKA_SECURITY_PROTOCOL="SSL", CHOREO_KAFKA_SSL_KEYFILE=str(key))
    assert message == f"CHOREO_KAFKA_SSL_KEYFILE={str(key)!r}: expected CHOREO_KAFKA_SSL_CERTFILE too " \
                      "(the certificate the key belongs to)"


def test_no_repr_str_or_error_shows_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    _sasl(monkeypatch)
    settings = Settings.from_env()
    for text in (repr(settings), str(settings), repr(settings.security), str(settings.security)):
        assert PASSWORD not in text
        assert "sasl_password='***'" in text
    key_password = replace(settings.security, ssl_key_password=PASSWORD)
    assert PASSWORD not in repr(key_password)
    assert key_password.shown()["ssl_key_password"] == "***"
    monkeypatch.setenv("CHOREO_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    assert PASSWORD not in _error(monkeypatch)


def _clients(settings: Settings) -> list[Any]:
    """The aiokafka client inside each kind of client the transport makes (built, not started)."""
    kafka = KafkaTransport(settings)

    async def build() -> list[Any]:
        producer: Any = kafka.producer()
        consumer: Any = kafka.consumer("t", group_id="g")
        admin: Any = kafka.admin_client()
        clients = [producer.client, consumer.raw._client, admin._client]
        await producer.stop()
        await consumer.stop()
        await admin.close()
        return clients

    return asyncio.run(build())


def test_sasl_options_and_the_client_id_reach_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    _sasl(monkeypatch, CHOREO_KAFKA_SASL_MECHANISM="SCRAM-SHA-256")
    settings = replace(Settings.from_env(), client_id="choreo-report.research")
    for client in _clients(settings):
        assert client._client_id == "choreo-report.research"
        assert client._security_protocol == "SASL_PLAINTEXT"
        assert client._sasl_mechanism == "SCRAM-SHA-256"
        assert (client._sasl_plain_username, client._sasl_plain_password) == ("svc", PASSWORD)
        assert client._ssl_context is None


def test_each_service_names_its_clients() -> None:
    """Broker-side metrics and logs name the agent, the coordinator, the archiver or the command line."""
    from choreograph.cli._config import cli_settings
    from choreograph.examples.report import research
    from choreograph.runtime import AgentRuntime, Coordinator
    from choreograph.timetravel import Archiver
    from choreograph.transport import MemoryLog, MemoryTransport

    settings = Settings(bootstrap_servers="memory", partitions=1)
    transport = MemoryTransport(MemoryLog(), settings)
    assert AgentRuntime(research.agent, settings, transport=transport).settings.client_id == \
        f"choreo-{research.agent.name}"
    assert Coordinator(settings, transport=transport).settings.client_id == "choreo-coordinator"
    assert Archiver(settings, Path("unused"), transport=transport).settings.client_id == "choreo-archive"
    assert cli_settings().client_id == "choreo-cli"
    assert settings.client_id == "choreo", "a library's own Settings keep the default"
