"""The one seam to Kafka: every client choreograph creates is made here, with the broker profile.

Nothing else imports aiokafka's constructors, so broker quirks and topic layout stay in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from ..errors import BrokerUnavailable
from ._settings import Settings


class Kafka:
    """Factory for producers, consumers and topic administration under one Settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def producer(self, **overrides: Any) -> AIOKafkaProducer:
        profile = self.settings.broker
        options: dict[str, Any] = {
            "bootstrap_servers": self.settings.bootstrap_servers, "linger_ms": profile.linger_ms,
            "acks": profile.acks, "enable_idempotence": profile.enable_idempotence,
            # aiokafka keeps one open batch per partition and one request in flight per broker; a
            # send that finds its batch full waits for the drain. 16 KB (the default) is ~25 of our
            # events, which made sends wait in bursts; 256 KB keeps them appending.
            "max_batch_size": 256 * 1024,
        }
        options.update(overrides)
        return AIOKafkaProducer(**options)

    def consumer(self, *topics: str, group_id: str | None = None, **overrides: Any) -> AIOKafkaConsumer:
        profile = self.settings.broker
        options: dict[str, Any] = {
            "bootstrap_servers": self.settings.bootstrap_servers, "group_id": group_id,
            "fetch_max_wait_ms": profile.fetch_max_wait_ms, "enable_auto_commit": False,
            "session_timeout_ms": profile.session_timeout_ms,
            "heartbeat_interval_ms": profile.heartbeat_interval_ms,
            "auto_offset_reset": "earliest", "max_poll_records": 500,
        }
        options.update(overrides)
        return AIOKafkaConsumer(*topics, **options)

    @contextlib.asynccontextmanager
    async def reader(self, partitions: Iterable[TopicPartition]) -> AsyncIterator[AIOKafkaConsumer]:
        """A group-less consumer assigned to `partitions`, stopped safely on exit."""
        consumer = self.consumer(group_id=None)
        await consumer.start()
        try:
            consumer.assign(list(partitions))
            yield consumer
        finally:
            await self.stop_reader(consumer)

    @staticmethod
    async def stop_reader(consumer: AIOKafkaConsumer) -> None:
        # aiokafka: stopping a group-less consumer before its background reset task first ran
        # raises CancelledError out of stop(); one turn of the loop lets that task start.
        await asyncio.sleep(0)
        await consumer.stop()

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[AIOKafkaAdminClient]:
        client = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap_servers)
        try:
            await client.start()
        except KafkaConnectionError as exc:
            raise BrokerUnavailable(f"cannot reach Kafka at {self.settings.bootstrap_servers}: {exc}") from exc
        try:
            yield client
        finally:
            await client.close()

    async def ensure_topics(self) -> None:
        """Create the namespace's topics if missing: events, registry (compacted), dead letters."""
        s = self.settings
        wanted = [
            NewTopic(s.events_topic, s.partitions, 1),
            NewTopic(s.registry_topic, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(s.deadletter_topic, 1, 1),
        ]
        async with self.admin() as admin:
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)

    async def partition_count(self, topic: str) -> int:
        async with self.admin() as admin:
            described = await admin.describe_topics([topic])
        return len(described[0]["partitions"])

    def partition_for(self, key: bytes, partitions: int) -> int:
        """The partition the default (murmur2) partitioner assigns a key to, as Java clients do."""
        return int(murmur2(key) & 0x7FFFFFFF) % partitions

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The true log end of each partition (the offset the next record will get)."""
        tps = list(partitions)
        if not tps:
            return {}
        async with self.reader(tps) as consumer:
            return await self.true_ends(consumer, tps)

    async def true_ends(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """End offsets through a reader assigned to `tps`; moves its positions."""
        listed: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        if self.settings.broker.list_offsets_exact:
            return listed
        for tp in tps:
            consumer.seek(tp, listed[tp])
        # Records past the listed end mean it was short, and their fetch carried the high
        # watermark; no records within a few fetch waits mean the listed end is the end.
        ends = dict(listed)
        waiting = set(tps)
        deadline = asyncio.get_running_loop().time() + max(0.05, 4 * self.settings.broker.fetch_max_wait_ms / 1000)
        while waiting and asyncio.get_running_loop().time() < deadline:
            await consumer.getmany(*waiting, timeout_ms=20)
            for tp in list(waiting):
                if (highwater := consumer.highwater(tp)) is not None:
                    ends[tp] = max(ends[tp], highwater)
                    waiting.discard(tp)
        return ends

    async def read(self, partitions: Iterable[TopicPartition], *, start: dict[TopicPartition, int] | None = None,
                   until: dict[TopicPartition, int] | None = None) -> AsyncIterator[ConsumerRecord]:
        """Records of the given partitions from `start` (default: beginning) to `until` (default: their end now)."""
        tps = list(partitions)
        async with self.reader(tps) as consumer:
            ends = until if until is not None else await self.true_ends(consumer, tps)
            for tp in tps:
                begin = (start or {}).get(tp)
                if begin is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, begin)
            remaining = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        if record.offset < ends[tp]:
                            yield record
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
                await asyncio.sleep(0)


Hook = Callable[[set[TopicPartition]], Awaitable[None]]


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """A group member's rebalance callbacks, as two coroutines: `subscribe(..., listener=Rebalance(a, r))`."""

    def __init__(self, on_assigned: Hook, on_revoked: Hook) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._on_assigned(assigned)
