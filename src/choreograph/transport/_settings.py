"""Where the broker is and how to talk to it. Broker quirks live here, in one place, per broker kind.

Tansu (the embedded broker) does not answer a fetch early when data arrives, so consumers must
poll with a short fetch_max_wait_ms; it also rejects InitProducerId, so idempotent producers are
off there. Apache Kafka answers fetches as soon as data arrives and supports idempotence.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from ..errors import BrokerUnavailable, ConfigurationError
from ._kafka_security import KafkaSecurity
from ._variables import env as _env
from ._variables import shown as _shown


@dataclass(frozen=True)
class BrokerProfile:
    """Client settings that depend on which broker implementation we talk to.

    Attributes:
        name: The broker kind: "tansu" or "kafka" (CHOREO_BROKER).
        fetch_max_wait_ms: How long a fetch may wait for data.
        enable_idempotence: Whether producers are idempotent.
        acks: The producers' acks setting.
        list_offsets_exact: Whether ListOffsets(latest) gives the true log end.
        linger_ms: The producers' linger.
        session_timeout_ms: The consumer group session timeout.
        heartbeat_interval_ms: The consumer group heartbeat interval.
        fetch_skips_offsets: Whether a fetch can return an offset before an earlier one is readable.
    """

    name: str
    fetch_max_wait_ms: int
    enable_idempotence: bool
    acks: int | str
    # Tansu answers ListOffsets(latest) with the last batch's base offset + 1, not the log end, when
    # that batch held several records (measured: acked 6..10, listed end 7); its fetch high watermark
    # is right. Where this is False, end offsets are read from a fetch (see _kafka.Kafka.end_offsets).
    list_offsets_exact: bool = True
    # 0: aiokafka still batches whatever accumulates while a request is in flight. linger_ms=1
    # measured 2.07 ms per acknowledged send on Tansu against 0.62 ms at 0.
    linger_ms: int = 0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    # Tansu, with several producers on one partition, can answer a fetch with offset N+1 while N is
    # not readable yet; the consumer then never reads N (measured by bench/probes/fetch_gaps.py:
    # 0-3 of 2,000 offsets per run, each readable again 7 ms later). Where True, consumers hold a
    # partition at such a hole and re-fetch it (see _contiguous.Contiguity).
    fetch_skips_offsets: bool = False


PROFILES: dict[str, BrokerProfile] = {
    # Measured on Tansu: hop p50 4.9 ms at 5 ms fetch wait, 27.5 ms at 50, 252 ms at 500.
    # A fresh group join takes about session_timeout/2 there (5.0 s at 10 s, 2.0 s at 3 s) and a
    # rejoin after a clean leave about 1.65 x session + 1.6 s (18.1 s at 10 s, 7.1 s at 3 s), so a
    # short session makes `choreo up`, restarts and failover fast. Handlers are async, so the
    # event loop keeps heartbeating; a CPU-bound handler should run in a thread.
    "tansu": BrokerProfile("tansu", fetch_max_wait_ms=5, enable_idempotence=False, acks=1,
                           list_offsets_exact=False, session_timeout_ms=3_000, heartbeat_interval_ms=1_000,
                           fetch_skips_offsets=True),
    "kafka": BrokerProfile("kafka", fetch_max_wait_ms=500, enable_idempotence=True, acks="all"),
}


def run_dir() -> Path:
    """Local state of `choreo broker` and `choreo up` (pids, ports): $CHOREO_HOME or ./.choreo.

    Raises:
        ConfigurationError: CHOREO_HOME names a file, or a path under a file.
    """
    value = os.environ.get("CHOREO_HOME") or ".choreo"
    path = Path(value).resolve()
    # The first ancestor that exists decides: a directory there can hold (or become) ours.
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigurationError(f"CHOREO_HOME={value!r}: expected a directory, or a path where one can be "
                                 f"created ({existing} is a file)")
    return path


# The longest suffix we add to the namespace is ".deadletter"; Kafka topic names are at most 249
# characters of [a-zA-Z0-9._-]. Group names (<ns>.agent.<workflow>.<step>) use the same characters.
_TOPIC_NAME_MAX = 249
NAMESPACE_MAX = _TOPIC_NAME_MAX - len(".deadletter")
_NAMESPACE = re.compile(r"[a-zA-Z0-9._-]+")
# host:port, the host a name, an IPv4 address or a bracketed IPv6 address.
_SERVER = re.compile(r"(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9._-]+):([0-9]{1,5})")
# Kafka's protocol sizes are int32.
_INT32_MAX = 2**31 - 1


def _env_int(name: str, low: int, high: int | None = None, unit: str = "") -> int | None:
    """An integer variable within [low, high]; None when unset.

    Raises:
        ConfigurationError: The value is not such an integer (the line names the variable and the range).
    """
    value = _env(name)
    if value is None:
        return None
    digits = value.strip()
    # Only plain decimal digits: int() would also take "1_000", "+4" and non-ASCII digits (and
    # raise on thousands of digits).
    number = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 18 else None
    if number is None or number < low or (high is not None and number > high):
        expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise ConfigurationError(f"{name}={_shown(value)}: expected {expected}{f' ({unit})' if unit else ''}")
    return number


def _env_servers() -> str | None:
    """KAFKA_BOOTSTRAP_SERVERS if set: host:port[,host:port...], each port from 1 to 65535."""
    value = _env("KAFKA_BOOTSTRAP_SERVERS")
    if value is None:
        return None
    for server in value.split(","):
        match = _SERVER.fullmatch(server.strip())
        if match is None or not 1 <= int(match[2]) <= 65535:
            raise ConfigurationError(
                f"KAFKA_BOOTSTRAP_SERVERS={_shown(value)}: expected host:port[,host:port...]")
    return value


def _env_namespace() -> str:
    """CHOREO_NAMESPACE (default "choreo"): what makes valid topic and group names."""
    value = _env("CHOREO_NAMESPACE") or "choreo"
    if len(value) > NAMESPACE_MAX or not _NAMESPACE.fullmatch(value):
        raise ConfigurationError(f"CHOREO_NAMESPACE={_shown(value)}: expected 1 to {NAMESPACE_MAX} characters "
                                 "from a-z A-Z 0-9 . _ -")
    return value


def _check_broker(kind: str) -> None:
    if kind not in PROFILES:
        raise ConfigurationError(f"CHOREO_BROKER={_shown(kind)}: expected one of: {', '.join(sorted(PROFILES))}")


def verify_off() -> bool:
    """Whether CHOREO_VERIFY turns signature checks off ("off"); unset, empty or "on": they are on.

    Raises:
        ConfigurationError: Any other value (a typo must not turn security off, nor be ignored).
    """
    value = _env("CHOREO_VERIFY")
    if value not in (None, "on", "off"):
        raise ConfigurationError(f"CHOREO_VERIFY={_shown(value)}: expected on or off")
    return value == "off"


def log_level() -> str:
    """CHOREO_LOG_LEVEL (default INFO), for logging.basicConfig.

    Raises:
        ConfigurationError: The value is not a level name.
    """
    value = _env("CHOREO_LOG_LEVEL") or "INFO"
    # Whatever logging takes (it also knows WARN, FATAL and NOTSET); it takes no lower case.
    if value not in logging.getLevelNamesMapping():
        raise ConfigurationError(f"CHOREO_LOG_LEVEL={_shown(value)}: expected one of: DEBUG, INFO, WARNING, "
                                 "ERROR, CRITICAL")
    return value


LOG_FORMATS = ("text", "json")


def log_format() -> str:
    """CHOREO_LOG_FORMAT (default text): `text` for people, `json` (one object per line) for log shippers.

    Raises:
        ConfigurationError: The value is neither.
    """
    value = _env("CHOREO_LOG_FORMAT") or "text"
    if value not in LOG_FORMATS:
        raise ConfigurationError(f"CHOREO_LOG_FORMAT={_shown(value)}: expected one of: {', '.join(LOG_FORMATS)}")
    return value


# A host name, an IPv4 address or an IPv6 address (bare, as socket.bind takes it).
_HOST = re.compile(r"[a-zA-Z0-9._:-]+")
METRICS_HOST = "127.0.0.1"


def metrics_address() -> tuple[str, int] | None:
    """Where a service serves its Prometheus metrics: CHOREO_METRICS_HOST:CHOREO_METRICS_PORT; None when off.

    CHOREO_METRICS_PORT unset, empty or 0 is off (the default). CHOREO_METRICS_HOST defaults to
    127.0.0.1: the endpoint is on loopback unless asked otherwise (`0.0.0.0` for a scraper on
    another host).

    Raises:
        ConfigurationError: The port is not an integer from 0 to 65535, or the host is not a host name or address.
    """
    port = _env_int("CHOREO_METRICS_PORT", 0, 65535)
    host = _env("CHOREO_METRICS_HOST") or METRICS_HOST
    if not _HOST.fullmatch(host):
        raise ConfigurationError(f"CHOREO_METRICS_HOST={_shown(host)}: expected a host name or an IP address")
    return (host, port) if port else None


@dataclass(frozen=True)
class _Env:
    """Every choreograph environment variable from_env uses, validated (None: unset, the default)."""

    servers: str | None
    broker: str | None
    namespace: str
    partitions: int | None
    session_timeout_ms: int | None
    fetch_max_wait_ms: int | None
    max_event_bytes: int | None
    security: KafkaSecurity

    @classmethod
    def read(cls) -> _Env:
        servers = _env_servers()
        broker = _env("CHOREO_BROKER")
        if broker is not None:
            _check_broker(broker)
        namespace = _env_namespace()
        partitions = _env_int("CHOREO_PARTITIONS", 1)
        # Kafka's default group.max.session.timeout.ms is 30 minutes; below 1 s heartbeats crowd the broker.
        session = _env_int("CHOREO_SESSION_TIMEOUT_MS", 1_000, 1_800_000, "milliseconds")
        # A fetch must be answered within the client's request timeout (aiokafka: 40 s).
        wait = _env_int("CHOREO_FETCH_MAX_WAIT_MS", 0, 30_000, "milliseconds")
        max_bytes = _env_int("CHOREO_MAX_EVENT_BYTES", 1024, _INT32_MAX, "bytes")
        log_level()
        log_format()
        metrics_address()
        verify_off()
        run_dir()
        return cls(servers, broker, namespace, partitions, session, wait, max_bytes, KafkaSecurity.from_env())


def check_env() -> None:
    """Validate every choreograph environment variable, without looking for a broker.

    For commands that must refuse bad settings before they start anything (`choreo up` starts a
    broker first); Settings.from_env validates the same.

    Raises:
        ConfigurationError: A variable's value cannot work: one line naming it and what is expected.
    """
    _Env.read()


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to find its broker, topics and groups.

    Attributes:
        bootstrap_servers: The broker's address(es), comma separated.
        broker: The client settings of the broker's kind.
        namespace: The prefix of every topic and group name.
        partitions: How many partitions the events topic is created with.
        max_event_bytes: The largest event (key, value and headers) any producer sends; Kafka's
            default `message.max.bytes` is 1 MiB.
        security: TLS and SASL towards the cluster (CHOREO_KAFKA_*); its repr never shows a password.
        client_id: What every client names itself to the broker, so its metrics and logs name the
            service: `choreo-<agent name>`, `choreo-coordinator`, `choreo-archive`, `choreo-cli`; else `choreo`.
    """

    bootstrap_servers: str
    broker: BrokerProfile = field(default_factory=lambda: PROFILES["kafka"])
    namespace: str = "choreo"
    partitions: int = 4
    max_event_bytes: int = 1_048_576
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    client_id: str = "choreo"

    @property
    def events_topic(self) -> str:
        """The topic of every workflow event, keyed by workflow id: `<namespace>.events`."""
        return f"{self.namespace}.events"

    @property
    def registry_topic(self) -> str:
        """The compacted topic of announced step contracts: `<namespace>.registry`."""
        return f"{self.namespace}.registry"

    @property
    def deadletter_topic(self) -> str:
        """The topic of records nobody could read: `<namespace>.deadletter`."""
        return f"{self.namespace}.deadletter"

    @property
    def status_topic(self) -> str:
        """Agent instances' presence and breaker transitions, keyed by instance: `<namespace>.status`."""
        return f"{self.namespace}.status"

    @property
    def coordinator_group(self) -> str:
        """The saga coordinator's consumer group: `<namespace>.coordinator`."""
        return f"{self.namespace}.coordinator"

    @property
    def archive_group(self) -> str:
        """The archiver's consumer group: `<namespace>.archive`."""
        return f"{self.namespace}.archive"

    @property
    def index_group(self) -> str:
        """The workflow indexer's consumer group: `<namespace>.index`."""
        return f"{self.namespace}.index"

    def agent_group(self, workflow: str, step: str) -> str:
        """The consumer group of the agents of `step` of `workflow`: `<namespace>.agent.<workflow>.<step>`."""
        return f"{self.namespace}.agent.{workflow}.{step}"

    def env(self) -> dict[str, str]:
        """Environment that makes a child process resolve these same settings.

        Not the CHOREO_KAFKA_* security variables: it is written to `choreo up`'s state file, and children
        inherit them from the environment they came from.
        """
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, "CHOREO_BROKER": self.broker.name,
            "CHOREO_NAMESPACE": self.namespace, "CHOREO_PARTITIONS": str(self.partitions),
            "CHOREO_SESSION_TIMEOUT_MS": str(self.broker.session_timeout_ms),
            "CHOREO_FETCH_MAX_WAIT_MS": str(self.broker.fetch_max_wait_ms),
            "CHOREO_MAX_EVENT_BYTES": str(self.max_event_bytes),
        }

    @classmethod
    def from_env(cls, bootstrap_servers: str | None = None, broker: str | None = None) -> Settings:
        """Settings from the environment: KAFKA_BOOTSTRAP_SERVERS if set, else the local broker left running.

        The local broker is the one `choreo broker start` or `choreo up` started (its address in
        .choreo/broker.json); its kind defaults to "tansu", any other's to "kafka". CHOREO_BROKER,
        CHOREO_NAMESPACE, CHOREO_PARTITIONS, CHOREO_SESSION_TIMEOUT_MS, CHOREO_FETCH_MAX_WAIT_MS and
        CHOREO_MAX_EVENT_BYTES override the defaults, CHOREO_KAFKA_* set TLS and SASL (see
        `_kafka_security`); an empty variable counts as unset. Every variable (CHOREO_LOG_LEVEL,
        CHOREO_LOG_FORMAT, CHOREO_METRICS_*, CHOREO_VERIFY and CHOREO_HOME too) is validated before the
        broker is looked for.

        Args:
            bootstrap_servers: The broker's address, instead of KAFKA_BOOTSTRAP_SERVERS.
            broker: The broker's kind, instead of CHOREO_BROKER.

        Returns:
            The settings.

        Raises:
            BrokerUnavailable: No address is given or set, and no local broker runs.
            ConfigurationError: A variable's value cannot work (one line naming it and what is
                expected), or the broker kind is not one of PROFILES.
        """
        env = _Env.read()
        servers = bootstrap_servers or env.servers
        kind = broker or env.broker
        if not servers:
            local = local_broker_address()
            if local is None:
                raise BrokerUnavailable(
                    "no broker: set KAFKA_BOOTSTRAP_SERVERS, or run `choreo broker start` or `choreo up`")
            servers, kind = local, kind or "tansu"
        kind = kind or "kafka"
        _check_broker(kind)
        profile = PROFILES[kind]
        if env.session_timeout_ms is not None:
            ms = env.session_timeout_ms
            profile = replace(profile, session_timeout_ms=ms, heartbeat_interval_ms=max(100, ms // 3))
        if env.fetch_max_wait_ms is not None:
            profile = replace(profile, fetch_max_wait_ms=env.fetch_max_wait_ms)
        defaults = cls(bootstrap_servers=servers, broker=profile, namespace=env.namespace, security=env.security)
        return replace(defaults, partitions=env.partitions or defaults.partitions,
                       max_event_bytes=env.max_event_bytes or defaults.max_event_bytes)


def local_broker_address() -> str | None:
    """The address in .choreo/broker.json if that broker process is still alive."""
    state = run_dir() / "broker.json"
    try:
        info = orjson.loads(state.read_bytes())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return str(info["bootstrap_servers"])
