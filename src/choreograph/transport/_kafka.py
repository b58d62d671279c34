"""The Kafka transport: the port over aiokafka, with the broker profile.

Every aiokafka client choreograph creates is made here, so broker quirks and topic layout stay in
one place.

The producer is aiokafka's own (it already is a `Producer`): one send per event is the hot path,
and nothing is put in front of it. Consumers are wrapped thinly (see `_kafka_consumer`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from ..errors import BrokerUnavailable, ChoreographError
from ._contiguous import Contiguity
from ._kafka_consumer import KafkaConsumer
from ._kafka_security import connection_options
from ._partitioner import partition_for
from ._port import Consumer, Producer, Record, TopicPartition, Transport
from ._reading import read_records
from ._settings import Settings

# How long true_ends waits for a fetch answer per partition (Tansu answers an empty fetch after
# its 5 ms wait; this bound is for a broker that stopped answering).
END_WAIT_S = 10.0


class KafkaTransport:
    """Producers, consumers and topic administration under one Settings, on a Kafka broker.

    Args:
        settings: Where the broker is, its profile, and the namespace.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def producer(self, **overrides: Any) -> Producer:
        """An `AIOKafkaProducer` with the profile's options. See `Transport.producer`.

        Args:
            **overrides: aiokafka producer options.

        Returns:
            The producer, not started.
        """
        profile = self.settings.broker
        options: dict[str, Any] = {
            **connection_options(self.settings), "linger_ms": profile.linger_ms,
            "acks": profile.acks, "enable_idempotence": profile.enable_idempotence,
            # aiokafka keeps one open batch per partition and one request in flight per broker; a
            # send that finds its batch full waits for the drain. 16 KB (the default) is ~25 of our
            # events, which made sends wait in bursts; 256 KB keeps them appending.
            "max_batch_size": 256 * 1024,
            # Every event is checked against max_event_bytes before it is sent (a too-large result
            # fails its step; a dead letter is truncated): this only keeps aiokafka's check in step.
            "max_request_size": self.settings.max_event_bytes,
        }
        options.update(overrides)
        producer: Producer = AIOKafkaProducer(**options)
        return producer

    def consumer(self, *topics: str, group_id: str | None = None, **overrides: Any) -> KafkaConsumer:
        """A wrapped `AIOKafkaConsumer` with the profile's options. See `Transport.consumer`.

        Args:
            *topics: Topics to subscribe to at start.
            group_id: Its group, or None.
            **overrides: aiokafka consumer options.

        Returns:
            The consumer, not started.
        """
        profile = self.settings.broker
        options: dict[str, Any] = {
            **connection_options(self.settings), "group_id": group_id,
            "fetch_max_wait_ms": profile.fetch_max_wait_ms, "enable_auto_commit": False,
            "session_timeout_ms": profile.session_timeout_ms,
            "heartbeat_interval_ms": profile.heartbeat_interval_ms,
            "auto_offset_reset": "earliest", "max_poll_records": 500,
        }
        options.update(overrides)
        # Every topic, the compacted registry too: Tansu's memory store did not compact (3,000 writes
        # of 3 keys were 3,000 records 15 s later), and concurrent announcements at `choreo up` are
        # the racing producers that make skips. A real compaction hole is read past after HOLD_S.
        contiguity = Contiguity() if profile.fetch_skips_offsets else None
        return KafkaConsumer(AIOKafkaConsumer(*topics, **options), options["group_id"], contiguity)

    @contextlib.asynccontextmanager
    async def reader(self, partitions: Iterable[TopicPartition]) -> AsyncIterator[Consumer]:
        """A group-less consumer assigned to `partitions`, stopped safely on exit.

        Args:
            partitions: The partitions to assign.

        Yields:
            The started consumer.
        """
        consumer = self.consumer(group_id=None)
        await consumer.start()
        try:
            consumer.assign(list(partitions))
            yield consumer
        finally:
            await self.stop_reader(consumer)

    @staticmethod
    async def stop_reader(consumer: Consumer) -> None:
        """Stop a group-less consumer (the aiokafka workaround is in `KafkaConsumer.stop`).

        Args:
            consumer: The consumer.
        """
        await consumer.stop()

    def admin_client(self) -> AIOKafkaAdminClient:
        """An admin client with the connection options, not started (`admin` starts and closes one).

        Returns:
            The client.
        """
        return AIOKafkaAdminClient(**connection_options(self.settings))

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[AIOKafkaAdminClient]:
        """A started admin client, closed on exit.

        Yields:
            The client.

        Raises:
            BrokerUnavailable: The broker cannot be reached.
        """
        client = self.admin_client()
        try:
            await client.start()
        except KafkaConnectionError as exc:
            raise BrokerUnavailable(f"cannot reach Kafka at {self.settings.bootstrap_servers}: {exc}") from exc
        try:
            yield client
        finally:
            await client.close()

    async def ensure_topics(self) -> None:
        """Create the namespace's topics if missing: events, registry (compacted), dead letters, status."""
        s = self.settings
        wanted = [
            NewTopic(s.events_topic, s.partitions, 1),
            NewTopic(s.registry_topic, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(s.deadletter_topic, 1, 1),
            # Presence is periodic and only the recent past matters: a week at most.
            NewTopic(s.status_topic, 1, 1, topic_configs={"retention.ms": str(7 * 24 * 3600 * 1000)}),
        ]
        async with self.admin() as admin:
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)

    async def partition_count(self, topic: str) -> int:
        """How many partitions `topic` has, from the admin API.

        Args:
            topic: An existing topic.

        Returns:
            The count.
        """
        async with self.admin() as admin:
            described = await admin.describe_topics([topic])
        return len(described[0]["partitions"])

    def partition_for(self, key: bytes, partitions: int) -> int:
        """The partition the default (murmur2) partitioner assigns a key to, as Java clients do.

        Args:
            key: The record key.
            partitions: The partition count.

        Returns:
            The partition.
        """
        return partition_for(key, partitions)

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The true log end of each partition (the offset the next record will get).

        Args:
            partitions: Any partitions.

        Returns:
            End offset by partition.
        """
        tps = list(partitions)
        if not tps:
            return {}
        async with self.reader(tps) as consumer:
            return await self.true_ends(consumer, tps)

    async def true_ends(self, consumer: Consumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """End offsets through a reader assigned to `tps`; moves its positions.

        Args:
            consumer: A started reader assigned to `tps` that has not fetched them yet.
            tps: The partitions.

        Returns:
            End offset by partition.

        Raises:
            BrokerUnavailable: Where ListOffsets is inexact (Tansu), no fetch answer came for a
                partition within END_WAIT_S.
        """
        listed = await consumer.end_offsets(tps)
        if self.settings.broker.list_offsets_exact:
            return listed
        for tp in tps:
            consumer.seek(tp, listed[tp])
        # Every fetch answer carries the partition's high watermark, records or not: wait for one
        # per partition. Not "no answer within a few fetch waits, so the listed end is the end":
        # under `make test` load a fresh reader's first answer took longer than the 50 ms that
        # allowed, and the listed end (one past the last batch's first record) came back short.
        loop = asyncio.get_running_loop()
        ends = dict(listed)
        waiting = set(tps)
        deadline = loop.time() + END_WAIT_S
        while waiting:
            if loop.time() > deadline:
                raise BrokerUnavailable(f"no fetch answer for {sorted(str(tp) for tp in waiting)} within "
                                        f"{END_WAIT_S:.0f} s: the log end is unknown")
            await consumer.getmany(*waiting, timeout_ms=20)
            for tp in list(waiting):
                if (highwater := consumer.highwater(tp)) is not None:
                    ends[tp] = max(ends[tp], highwater)
                    waiting.discard(tp)
        return ends

    def read(self, partitions: Iterable[TopicPartition], *, start: Mapping[TopicPartition, int] | None = None,
             until: Mapping[TopicPartition, int] | None = None) -> AsyncIterator[Record]:
        """Records of the given partitions from `start` (default: beginning) to `until` (default: their end now).

        Args:
            partitions: The partitions.
            start: First offset by partition.
            until: End offset (exclusive) by partition.

        Returns:
            An async iterator of the records.
        """
        return read_records(self, partitions, start=start, until=until)


Kafka = KafkaTransport


if TYPE_CHECKING:  # mypy proves the Kafka classes implement the port

    def _conforms(settings: Settings) -> tuple[Transport, Consumer]:
        return KafkaTransport(settings), KafkaTransport(settings).consumer()


def as_broker_error(exc: BaseException) -> ChoreographError | None:
    """The library's own error for an aiokafka one, for a one-line message; None for any other.

    A connection that cannot be made is BrokerUnavailable (the command line exits 3 for it); any
    other Kafka error a ChoreographError with Kafka's message.
    """
    if isinstance(exc, KafkaConnectionError):
        return BrokerUnavailable(f"cannot reach the Kafka broker: {exc} (KAFKA_BOOTSTRAP_SERVERS)")
    if isinstance(exc, KafkaError):
        return ChoreographError(f"Kafka: {exc}")
    return None
