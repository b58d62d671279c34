"""The only code that talks to a broker, through one port with a Kafka and an in-memory adapter.

`Transport`, `Producer`, `Consumer`, `Record`, `RecordMetadata` and `RebalanceListener` are the port
(typing Protocols, see `_port`); `KafkaTransport` implements it with aiokafka against a broker, and
`MemoryTransport` over a `MemoryLog`, an in-process log that keeps Kafka's rules, for tests. One
contract suite (tests/integration/contract) runs on both. Also here: settings and broker profiles,
offsets and commit pins, dead letters, the registry of step contracts, restore brackets, the
group-member lifecycle, the embedded Tansu broker, and where a service finds its key and the policy
(`service_key`, `service_policy`, `service_verifier`; `operator_identity`: who a person's tools sign as;
`publisher_identity`: who a client publishes goals as).

Names are imported on first use: importing this package does not import aiokafka; only using a
Kafka name does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._settings import PROFILES, BrokerProfile, Settings
from ._signed import SigningProducer
from ._trust import Trust

if TYPE_CHECKING:
    from ._broker import EmbeddedBroker, LocalBroker, terminate
    from ._kafka import Kafka, KafkaTransport
    from ._kafka_consumer import KafkaConsumer
    from ._keyring import (
        keys_dir,
        operator_identity,
        policy_path,
        publisher_identity,
        service_key,
        service_policy,
        service_verifier,
        verification_off,
    )
    from ._member import GroupMember
    from ._memory import MemoryLog
    from ._memory_consumer import MemoryConsumer
    from ._memory_records import MemoryRecord
    from ._memory_transport import MemoryProducer, MemoryTransport
    from ._partitioner import murmur2, partition_for
    from ._port import (
        CommitFailedError,
        Consumer,
        OffsetAndTimestamp,
        Producer,
        RebalanceListener,
        Record,
        RecordMetadata,
        RecordTooLargeError,
        TopicPartition,
        Transport,
    )
    from ._registry import Contracts, Registry, announce, framework_store

_LAZY = {
    **dict.fromkeys(["Transport", "Producer", "Consumer", "Record", "RecordMetadata", "RebalanceListener",
                     "TopicPartition", "OffsetAndTimestamp", "RecordTooLargeError", "CommitFailedError"], "._port"),
    "murmur2": "._partitioner", "partition_for": "._partitioner",
    "KafkaTransport": "._kafka", "Kafka": "._kafka", "KafkaConsumer": "._kafka_consumer",
    "MemoryLog": "._memory", "MemoryRecord": "._memory_records", "MemoryConsumer": "._memory_consumer",
    "MemoryProducer": "._memory_transport", "MemoryTransport": "._memory_transport",
    "GroupMember": "._member",
    **dict.fromkeys(["keys_dir", "operator_identity", "policy_path", "publisher_identity", "service_key",
                     "service_policy", "service_verifier", "verification_off"], "._keyring"),
    "EmbeddedBroker": "._broker", "LocalBroker": "._broker", "terminate": "._broker",
    "announce": "._registry", "framework_store": "._registry", "Registry": "._registry", "Contracts": "._registry",
}

__all__ = [
    "PROFILES",
    "BrokerProfile",
    "CommitFailedError",
    "Consumer",
    "Contracts",
    "EmbeddedBroker",
    "GroupMember",
    "Kafka",
    "KafkaConsumer",
    "KafkaTransport",
    "LocalBroker",
    "MemoryConsumer",
    "MemoryLog",
    "MemoryProducer",
    "MemoryRecord",
    "MemoryTransport",
    "OffsetAndTimestamp",
    "Producer",
    "RebalanceListener",
    "Record",
    "RecordMetadata",
    "RecordTooLargeError",
    "Registry",
    "Settings",
    "SigningProducer",
    "TopicPartition",
    "Transport",
    "Trust",
    "announce",
    "framework_store",
    "keys_dir",
    "murmur2",
    "operator_identity",
    "partition_for",
    "policy_path",
    "publisher_identity",
    "service_key",
    "service_policy",
    "service_verifier",
    "terminate",
    "verification_off",
]


def __getattr__(name: str) -> Any:
    """Load an exported name on first use (aiokafka only for the Kafka names)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
