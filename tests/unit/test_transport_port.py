"""The port's own promises: our murmur2 and record sizes are aiokafka's, our TopicPartition is
interchangeable with aiokafka's, both record types are `Record`s (that the port needs no aiokafka is
seen from a fresh interpreter: tests/e2e/test_import_cost.py)."""

from __future__ import annotations

import asyncio
from typing import cast

from aiokafka import ConsumerRecord
from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata as AioRecordMetadata
from hypothesis import given
from hypothesis import strategies as st

from choreograph.transport import (
    PROFILES,
    Consumer,
    Kafka,
    KafkaTransport,
    MemoryRecord,
    Record,
    RecordMetadata,
    Settings,
    TopicPartition,
    murmur2,
    partition_for,
)

# The memory log's record metadata and size rule are internal parts (not exported), checked against aiokafka's.
from choreograph.transport._memory_records import MemoryRecordMetadata, record_size


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
    assert ours == theirs
    assert hash(ours) == hash(theirs)
    assert {theirs: 1}[ours] == 1
    assert {ours: 2}[theirs] == 2
    assert ours != TopicPartition("t", 4)


def test_records_and_metadata_of_both_transports_satisfy_the_port() -> None:
    kafka_record = ConsumerRecord("t", 0, 5, 1_700_000_000_000, 0, b"k", b"v", None, 1, 1, [("h", b"x")])
    assert isinstance(kafka_record, Record)
    assert isinstance(MemoryRecord("t", 0, 5, 1_700_000_000_000, b"k", b"v", (("h", b"x"),)), Record)
    kafka_meta = AioRecordMetadata("t", 0, AioTopicPartition("t", 0), 5, 1_700_000_000_000, 0, 0)
    assert isinstance(kafka_meta, RecordMetadata)
    assert isinstance(MemoryRecordMetadata("t", 0, 5, 1_700_000_000_000), RecordMetadata)
    assert Kafka is KafkaTransport


class _SlowFirstAnswers:
    """A reader of a Tansu-like broker: ListOffsets short by a batch, its first fetch answers late.

    Each getmany without an answer yet waits its whole timeout_ms, as a real one does.
    """

    def __init__(self, listed: dict[TopicPartition, int], true: dict[TopicPartition, int], late: int) -> None:
        self.listed, self.true, self.late = listed, true, late
        self.answered: dict[TopicPartition, int] = {}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.listed[tp] for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0) -> dict[TopicPartition, list[Record]]:
        if self.late > 0:
            self.late -= 1
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        self.answered.update((tp, self.true[tp]) for tp in tps)
        return {}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.answered.get(tp)


async def test_true_ends_wait_for_a_late_fetch_answer_instead_of_taking_the_short_listed_end() -> None:
    # Seen under `make test` load: acked offsets 7..11, ListOffsets said 8, and no fetch answer came
    # within the 50 ms the old loop allowed, so the short listed end was taken for the end.
    tp, empty = TopicPartition("t.events", 1), TopicPartition("t.events", 2)
    reader = _SlowFirstAnswers({tp: 8, empty: 0}, {tp: 12, empty: 0}, late=6)
    kafka = KafkaTransport(Settings("localhost:1", broker=PROFILES["tansu"]))
    assert await kafka.true_ends(cast(Consumer, reader), [tp, empty]) == {tp: 12, empty: 0}
