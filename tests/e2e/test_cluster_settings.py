"""Settings for a real cluster: `choreo config`, a bad CHOREO_KAFKA_* value refused in one line, and TLS
settings reaching aiokafka's SSL context, proven by a handshake with a local TLS server that checks
the client certificate (Tansu here serves no TLS; see README's compatibility notes). Certificates are
made at test time with the openssl command."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import choreo, clean_env

from choreograph import Settings
from choreograph.transport import KafkaTransport

PASSWORD = "s3cret-hunter2"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
    return result.stderr.rstrip("\n")


def test_config_prints_each_setting_its_value_and_source_with_secrets_redacted(tmp_path: Path) -> None:
    env = {**clean_env(tmp_path / "home"), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "CHOREO_PARTITIONS": "7",
           "CHOREO_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CHOREO_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "CHOREO_KAFKA_SASL_USERNAME": "svc", "CHOREO_KAFKA_SASL_PASSWORD": PASSWORD}
    result = choreo("config", "--json", env=env)
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)
    assert shown["bootstrap_servers"] == {"value": "127.0.0.1:1", "source": "env KAFKA_BOOTSTRAP_SERVERS"}
    assert shown["partitions"] == {"value": 7, "source": "env CHOREO_PARTITIONS"}
    assert shown["namespace"] == {"value": "choreo", "source": "default"}
    assert shown["security_protocol"] == {"value": "SASL_PLAINTEXT", "source": "env CHOREO_KAFKA_SECURITY_PROTOCOL"}
    assert shown["sasl_mechanism"]["value"] == "SCRAM-SHA-512"
    assert shown["sasl_password"] == {"value": "***", "source": "env CHOREO_KAFKA_SASL_PASSWORD"}
    assert shown["ssl_cafile"] == {"value": None, "source": "default"}
    text = choreo("config", env=env)
    assert text.returncode == 0
    assert "sasl_password" in text.stdout
    for output in (result.stdout + result.stderr, text.stdout + text.stderr):
        assert PASSWORD not in output


def test_config_names_the_project_file_a_setting_came_from_and_the_environment_wins(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    (project / "deploy").mkdir(parents=True)
    (project / "choreo.toml").write_text('namespace = "shop"\n[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\n'
                                         'sasl_mechanism = "SCRAM-SHA-256"\nsasl_username = "file-user"\n')
    env = {**clean_env(tmp_path / "home"), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "CHOREO_KAFKA_SASL_USERNAME": "env-user", "CHOREO_KAFKA_SASL_PASSWORD": PASSWORD}
    env.pop("CHOREO_NAMESPACE", None)
    result = choreo("config", "--json", env=env, cwd=project / "deploy")  # from a subdirectory too
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)
    source = f"file {project / 'choreo.toml'}"
    assert shown["namespace"] == {"value": "shop", "source": source}
    assert shown["security_protocol"] == {"value": "SASL_PLAINTEXT", "source": source}
    assert shown["sasl_mechanism"] == {"value": "SCRAM-SHA-256", "source": source}
    assert shown["sasl_username"] == {"value": "env-user", "source": "env CHOREO_KAFKA_SASL_USERNAME"}
    assert shown["sasl_password"] == {"value": "***", "source": "env CHOREO_KAFKA_SASL_PASSWORD"}
    assert PASSWORD not in result.stdout + result.stderr

    # A password in the project file is refused, in one line that does not quote it.
    (project / "choreo.toml").write_text(f'[kafka]\nsasl_password = "{PASSWORD}"\n')
    refused = choreo("config", env=env, cwd=project)
    assert refused.returncode == 2
    assert "kafka.sasl_password: passwords are not read from the project file" in one_line(refused)
    assert PASSWORD not in refused.stderr


def test_config_without_a_broker_still_prints_every_other_setting(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")  # no KAFKA_BOOTSTRAP_SERVERS, no local broker running
    result = choreo("config", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)
    assert shown["bootstrap_servers"]["value"] is None
    assert shown["bootstrap_servers"]["source"].startswith("none: no KAFKA_BOOTSTRAP_SERVERS")
    assert shown["broker"]["value"] == "tansu", "what `choreo up` would start"
    assert shown["partitions"] == {"value": 4, "source": "default"}


def test_a_bad_security_protocol_is_one_line_exit_2_and_nothing_is_published(
        cli_env: dict[str, str], settings: Settings) -> None:
    bad = {**cli_env, "CHOREO_KAFKA_SECURITY_PROTOCOL": "TLS"}
    expected = "error: CHOREO_KAFKA_SECURITY_PROTOCOL='TLS': expected one of: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
    for command in (["config"], ["publish", "report", "--data", "{}"]):
        result = choreo(*command, env=bad)
        assert result.returncode == 2
        assert one_line(result) == expected

    async def topics() -> set[str]:
        async with KafkaTransport(settings).admin() as admin:
            return set(await admin.list_topics())

    assert settings.events_topic not in asyncio.run(topics()), "nothing was published in the test's namespace"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, and a server (localhost) and a client certificate it signed, as PEM files."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make certificates with")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=choreo-test-ca", cwd=tmp_path)
    (tmp_path / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=choreo-test-{name}",
                 cwd=tmp_path)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", *extra, cwd=tmp_path)
    return tmp_path


def _common_name(certificate: Any) -> str:
    """The commonName of a certificate as ssl decodes it (subject: a tuple of RDNs of (name, value) pairs)."""
    return next(str(value) for rdn in certificate["subject"] for name, value in rdn if name == "commonName")


async def _handshake(client_context: ssl.SSLContext, pki: Path) -> str:
    """Connect with the client's context to a TLS server that requires a client certificate from the CA.

    Returns:
        The common name of the client certificate the server saw.
    """
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    server_context.load_cert_chain(pki / "server.pem", pki / "server.key")
    server_context.verify_mode = ssl.CERT_REQUIRED
    seen: list[Any] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peercert"))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context, server_hostname="localhost")
        await asyncio.sleep(0.05)
        writer.close()
    return _common_name(seen[0])


def test_ssl_settings_reach_every_clients_ssl_context(
        pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "CHOREO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                        "CHOREO_KAFKA_SASL_USERNAME": "svc", "CHOREO_KAFKA_SASL_PASSWORD": PASSWORD,
                        "CHOREO_KAFKA_SSL_CAFILE": str(pki / "ca.pem"),
                        "CHOREO_KAFKA_SSL_CERTFILE": str(pki / "client.pem"),
                        "CHOREO_KAFKA_SSL_KEYFILE": str(pki / "client.key")}.items():
        monkeypatch.setenv(name, value)
    kafka = KafkaTransport(Settings.from_env())

    async def check() -> None:
        producer: Any = kafka.producer()
        consumer: Any = kafka.consumer("t", group_id="g")
        admin: Any = kafka.admin_client()
        for client in (producer.client, consumer.raw._client, admin._client):
            assert client._security_protocol == "SASL_SSL"
            context = client._ssl_context
            assert isinstance(context, ssl.SSLContext)
            cas = [_common_name(ca) for ca in context.get_ca_certs()]
            assert cas == ["choreo-test-ca"], "the CA file is loaded, and only it"
            assert context.verify_mode == ssl.CERT_REQUIRED
            assert context.check_hostname
            assert await _handshake(context, pki) == "choreo-test-client", "the client certificate is presented"
        await producer.stop()
        await consumer.stop()
        await admin.close()

    asyncio.run(check())
