"""The port's own promises: our murmur2 and record sizes are aiokafka's, our TopicPartition is
interchangeable with aiokafka's, both record types are `Record`s, and the port needs no aiokafka."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aiokafka import ConsumerRecord
from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata as AioRecordMetadata
from hypothesis import given
from hypothesis import strategies as st

from choreograph.transport import (
    Kafka,
    KafkaTransport,
    MemoryRecord,
    Record,
    RecordMetadata,
    TopicPartition,
    murmur2,
    partition_for,
)
from choreograph.transport._memory_records import MemoryRecordMetadata, record_size

SRC = Path(__file__).resolve().parents[1] / "src" / "choreograph"


@given(st.binary(max_size=200))
def test_murmur2_is_aiokafkas(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_partition_for_is_the_default_partitioners(key: bytes, partitions: int) -> None:
    every = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, every, every)


@given(st.none() | st.binary(max_size=300), st.none() | st.binary(max_size=70_000),
       st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=200)), max_size=5))
def test_record_size_is_aiokafkas_estimate(key: bytes | None, value: bytes | None,
                                           headers: list[tuple[str, bytes]]) -> None:
    assert record_size(key, value, headers) == DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)


def test_topic_partition_is_interchangeable_with_aiokafkas() -> None:
    ours, theirs = TopicPartition("t", 3), AioTopicPartition("t", 3)
    assert ours == theirs and hash(ours) == hash(theirs)
    assert {theirs: 1}[ours] == 1 and {ours: 2}[theirs] == 2
    assert ours != TopicPartition("t", 4)


def test_records_and_metadata_of_both_transports_satisfy_the_port() -> None:
    kafka_record = ConsumerRecord("t", 0, 5, 1_700_000_000_000, 0, b"k", b"v", None, 1, 1, [("h", b"x")])
    assert isinstance(kafka_record, Record)
    assert isinstance(MemoryRecord("t", 0, 5, 1_700_000_000_000, b"k", b"v", (("h", b"x"),)), Record)
    kafka_meta = AioRecordMetadata("t", 0, AioTopicPartition("t", 0), 5, 1_700_000_000_000, 0, 0)
    assert isinstance(kafka_meta, RecordMetadata)
    assert isinstance(MemoryRecordMetadata("t", 0, 5, 1_700_000_000_000), RecordMetadata)
    assert Kafka is KafkaTransport


def test_the_port_and_the_memory_log_do_not_need_aiokafka() -> None:
    # Load choreograph.transport under a bare parent package (choreograph/__init__ itself imports
    # aiokafka today), with every aiokafka import made to fail.
    script = f"""
import sys, types
sys.modules["aiokafka"] = None
parent = types.ModuleType("choreograph")
parent.__path__ = [{str(SRC)!r}]
sys.modules["choreograph"] = parent
import choreograph.transport as transport
from choreograph.transport import Settings
log = transport.MemoryLog()
transport.MemoryTransport(log, Settings("memory"))
assert transport.Transport and transport.TopicPartition and transport.RecordTooLargeError
try:
    transport.KafkaTransport
except ImportError:
    print("kafka needs aiokafka")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "kafka needs aiokafka"
