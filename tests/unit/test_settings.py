"""Settings.from_env: every environment variable validated once, a bad value one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from choreograph import Settings
from choreograph.errors import BrokerUnavailable, ConfigurationError
from choreograph.transport import PROFILES
from choreograph.transport._settings import run_dir

SERVERS = "127.0.0.1:9092"


pytestmark = pytest.mark.usefixtures("no_settings_env")


def _error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", SERVERS)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env()
    return str(raised.value)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CHOREO_PARTITIONS", "abc", "CHOREO_PARTITIONS='abc': expected an integer >= 1"),
    ("CHOREO_PARTITIONS", "0", "CHOREO_PARTITIONS='0': expected an integer >= 1"),
    ("CHOREO_PARTITIONS", "-4", "CHOREO_PARTITIONS='-4': expected an integer >= 1"),
    ("CHOREO_PARTITIONS", "1_000", "CHOREO_PARTITIONS='1_000': expected an integer >= 1"),
    ("CHOREO_PARTITIONS", "9" * 5000, f"CHOREO_PARTITIONS={'9' * 60!r}... (5000 characters): expected an integer >= 1"),
    ("CHOREO_SESSION_TIMEOUT_MS", "abc",
     "CHOREO_SESSION_TIMEOUT_MS='abc': expected an integer from 1000 to 1800000 (milliseconds)"),
    ("CHOREO_SESSION_TIMEOUT_MS", "999",
     "CHOREO_SESSION_TIMEOUT_MS='999': expected an integer from 1000 to 1800000 (milliseconds)"),
    ("CHOREO_SESSION_TIMEOUT_MS", "1800001",
     "CHOREO_SESSION_TIMEOUT_MS='1800001': expected an integer from 1000 to 1800000 (milliseconds)"),
    ("CHOREO_FETCH_MAX_WAIT_MS", "-1",
     "CHOREO_FETCH_MAX_WAIT_MS='-1': expected an integer from 0 to 30000 (milliseconds)"),
    ("CHOREO_FETCH_MAX_WAIT_MS", "5ms",
     "CHOREO_FETCH_MAX_WAIT_MS='5ms': expected an integer from 0 to 30000 (milliseconds)"),
    ("CHOREO_MAX_EVENT_BYTES", "1023",
     "CHOREO_MAX_EVENT_BYTES='1023': expected an integer from 1024 to 2147483647 (bytes)"),
    ("CHOREO_MAX_EVENT_BYTES", "1MiB",
     "CHOREO_MAX_EVENT_BYTES='1MiB': expected an integer from 1024 to 2147483647 (bytes)"),
    ("CHOREO_NAMESPACE", "bad ns!", "CHOREO_NAMESPACE='bad ns!': expected 1 to 238 characters from a-z A-Z 0-9 . _ -"),
    ("CHOREO_NAMESPACE", "a/b", "CHOREO_NAMESPACE='a/b': expected 1 to 238 characters from a-z A-Z 0-9 . _ -"),
    ("CHOREO_NAMESPACE", "é", "CHOREO_NAMESPACE='é': expected 1 to 238 characters from a-z A-Z 0-9 . _ -"),
    ("CHOREO_NAMESPACE", "n" * 239,
     f"CHOREO_NAMESPACE={'n' * 60!r}... (239 characters): expected 1 to 238 characters from a-z A-Z 0-9 . _ -"),
    ("CHOREO_BROKER", "redpanda", "CHOREO_BROKER='redpanda': expected one of: kafka, tansu"),
    ("CHOREO_LOG_LEVEL", "debug",
     "CHOREO_LOG_LEVEL='debug': expected one of: DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("CHOREO_LOG_FORMAT", "JSON", "CHOREO_LOG_FORMAT='JSON': expected one of: text, json"),
])
def test_a_bad_value_is_one_line_naming_the_variable_and_what_is_expected(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    assert _error(monkeypatch, name, value) == message


@pytest.mark.parametrize("value", ["nope", "host:", ":9092", "host:0", "host:65536", "a:1,,b:2", "a b:1",
                                   "kafka://host:9092", " "])
def test_bootstrap_servers_must_be_host_port_pairs(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", value)
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env()
    assert str(raised.value) == f"KAFKA_BOOTSTRAP_SERVERS={value!r}: expected host:port[,host:port...]"


def test_a_value_with_a_newline_is_still_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _error(monkeypatch, "CHOREO_NAMESPACE", "a\nb") == \
        r"CHOREO_NAMESPACE='a\nb': expected 1 to 238 characters from a-z A-Z 0-9 . _ -"


def test_choreo_home_must_be_a_directory_or_a_path_to_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    message = _error(monkeypatch, "CHOREO_HOME", f"{afile}/home")
    assert message == f"CHOREO_HOME={f'{afile}/home'!r}: expected a directory, or a path where one can be created " \
                      f"({afile} is a file)"


def test_good_values_at_their_bounds_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"KAFKA_BOOTSTRAP_SERVERS": "a:1, b.example.com:29092,[::1]:65535,10.0.0.1:9092",
                        "CHOREO_BROKER": "tansu", "CHOREO_NAMESPACE": "n" * 238, "CHOREO_PARTITIONS": "1",
                        "CHOREO_SESSION_TIMEOUT_MS": "1000", "CHOREO_FETCH_MAX_WAIT_MS": "0",
                        "CHOREO_MAX_EVENT_BYTES": "1024", "CHOREO_LOG_LEVEL": "WARNING"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.bootstrap_servers == "a:1, b.example.com:29092,[::1]:65535,10.0.0.1:9092"
    assert len(settings.deadletter_topic) == 249, "Kafka's longest topic name"
    assert (settings.partitions, settings.max_event_bytes) == (1, 1024)
    assert settings.broker.name == "tansu"
    assert (settings.broker.session_timeout_ms, settings.broker.heartbeat_interval_ms) == (1000, 333)
    assert settings.broker.fetch_max_wait_ms == 0


def test_unset_and_empty_variables_mean_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", SERVERS)
    for name in ("CHOREO_BROKER", "CHOREO_NAMESPACE", "CHOREO_PARTITIONS", "CHOREO_SESSION_TIMEOUT_MS",
                 "CHOREO_FETCH_MAX_WAIT_MS", "CHOREO_MAX_EVENT_BYTES", "CHOREO_LOG_LEVEL", "CHOREO_LOG_FORMAT"):
        monkeypatch.setenv(name, "")
    assert Settings.from_env() == Settings(SERVERS)
    assert Settings(SERVERS).max_event_bytes == 1_048_576


def test_a_bad_value_is_reported_before_the_broker_is_looked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from choreograph.transport._settings import check_env

    with pytest.raises(BrokerUnavailable):
        Settings.from_env()  # nothing configured, nothing running
    monkeypatch.setenv("CHOREO_PARTITIONS", "abc")
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env()
    assert not isinstance(raised.value, BrokerUnavailable)
    with pytest.raises(ConfigurationError, match=r"^CHOREO_PARTITIONS='abc'"):
        check_env()


def test_the_child_environment_carries_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(SERVERS, broker=PROFILES["tansu"], namespace="ns-1", partitions=3, max_event_bytes=4096)
    assert settings.env()["CHOREO_MAX_EVENT_BYTES"] == "4096"
    for name, value in settings.env().items():
        monkeypatch.setenv(name, value)
    child = Settings.from_env()
    assert child == settings


def test_run_dir_is_choreo_home_or_dot_choreo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert run_dir() == tmp_path / "home"
    monkeypatch.setenv("CHOREO_HOME", "")
    monkeypatch.chdir(tmp_path)
    assert run_dir() == tmp_path / ".choreo"
