"""Where the broker is and how to talk to it. Broker quirks live here, in one place, per broker kind.

Tansu (the embedded broker) does not answer a fetch early when data arrives, so consumers must
poll with a short fetch_max_wait_ms; it also rejects InitProducerId, so idempotent producers are
off there. Apache Kafka answers fetches as soon as data arrives and supports idempotence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from ..errors import BrokerUnavailable, ConfigurationError


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


PROFILES: dict[str, BrokerProfile] = {
    # Measured on Tansu: hop p50 4.9 ms at 5 ms fetch wait, 27.5 ms at 50, 252 ms at 500.
    # A fresh group join takes about session_timeout/2 there (5.0 s at 10 s, 2.0 s at 3 s) and a
    # rejoin after a clean leave about 1.65 x session + 1.6 s (18.1 s at 10 s, 7.1 s at 3 s), so a
    # short session makes `choreo up`, restarts and failover fast. Handlers are async, so the
    # event loop keeps heartbeating; a CPU-bound handler should run in a thread.
    "tansu": BrokerProfile("tansu", fetch_max_wait_ms=5, enable_idempotence=False, acks=1,
                           list_offsets_exact=False, session_timeout_ms=3_000, heartbeat_interval_ms=1_000),
    "kafka": BrokerProfile("kafka", fetch_max_wait_ms=500, enable_idempotence=True, acks="all"),
}


def run_dir() -> Path:
    """Local state of `choreo broker` and `choreo up` (pids, ports): $CHOREO_HOME or ./.choreo."""
    return Path(os.environ.get("CHOREO_HOME", ".choreo")).resolve()


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
    """

    bootstrap_servers: str
    broker: BrokerProfile = field(default_factory=lambda: PROFILES["kafka"])
    namespace: str = "choreo"
    partitions: int = 4
    max_event_bytes: int = 1_048_576

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
    def coordinator_group(self) -> str:
        """The saga coordinator's consumer group: `<namespace>.coordinator`."""
        return f"{self.namespace}.coordinator"

    @property
    def archive_group(self) -> str:
        """The archiver's consumer group: `<namespace>.archive`."""
        return f"{self.namespace}.archive"

    def agent_group(self, workflow: str, step: str) -> str:
        """The consumer group of the agents of `step` of `workflow`: `<namespace>.agent.<workflow>.<step>`."""
        return f"{self.namespace}.agent.{workflow}.{step}"

    def env(self) -> dict[str, str]:
        """Environment that makes a child process resolve these same settings."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, "CHOREO_BROKER": self.broker.name,
            "CHOREO_NAMESPACE": self.namespace, "CHOREO_PARTITIONS": str(self.partitions),
            "CHOREO_SESSION_TIMEOUT_MS": str(self.broker.session_timeout_ms),
            "CHOREO_FETCH_MAX_WAIT_MS": str(self.broker.fetch_max_wait_ms),
        }

    @classmethod
    def from_env(cls, bootstrap_servers: str | None = None, broker: str | None = None) -> Settings:
        """Settings from the environment: KAFKA_BOOTSTRAP_SERVERS if set, else the local broker left running.

        The local broker is the one `choreo broker start` or `choreo up` started (its address in
        .choreo/broker.json); its kind defaults to "tansu", any other's to "kafka". CHOREO_BROKER,
        CHOREO_NAMESPACE, CHOREO_PARTITIONS, CHOREO_SESSION_TIMEOUT_MS and CHOREO_FETCH_MAX_WAIT_MS
        override the defaults.

        Args:
            bootstrap_servers: The broker's address, instead of KAFKA_BOOTSTRAP_SERVERS.
            broker: The broker's kind, instead of CHOREO_BROKER.

        Returns:
            The settings.

        Raises:
            BrokerUnavailable: No address is given or set, and no local broker runs.
            ConfigurationError: The broker kind is not one of PROFILES.
            ValueError: A numeric variable is not a number.
        """
        servers = bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        kind = broker or os.environ.get("CHOREO_BROKER")
        if not servers:
            local = local_broker_address()
            if local is None:
                raise BrokerUnavailable(
                    "no broker: set KAFKA_BOOTSTRAP_SERVERS, or run `choreo broker start` or `choreo up`")
            servers, kind = local, kind or "tansu"
        kind = kind or "kafka"
        if kind not in PROFILES:
            raise ConfigurationError(f"CHOREO_BROKER={kind!r}: expected one of {sorted(PROFILES)}")
        profile = PROFILES[kind]
        if timeout := os.environ.get("CHOREO_SESSION_TIMEOUT_MS"):
            ms = int(timeout)
            profile = replace(profile, session_timeout_ms=ms, heartbeat_interval_ms=max(100, ms // 3))
        if wait := os.environ.get("CHOREO_FETCH_MAX_WAIT_MS"):
            profile = replace(profile, fetch_max_wait_ms=int(wait))
        return cls(
            bootstrap_servers=servers, broker=profile,
            namespace=os.environ.get("CHOREO_NAMESPACE", "choreo"),
            partitions=int(os.environ.get("CHOREO_PARTITIONS", "4")),
        )


def local_broker_address() -> str | None:
    """The address in .choreo/broker.json if that broker process is still alive."""
    state = run_dir() / "broker.json"
    try:
        info = orjson.loads(state.read_bytes())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return str(info["bootstrap_servers"])
