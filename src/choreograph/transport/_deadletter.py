"""Dead letters: a record nobody can read goes, byte for byte, to the dead-letter topic.

With it go where it came from and why, and its consumer carries on. Nothing is lost and nothing
loops.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer, ConsumerRecord

# Header names on a dead letter, added to the record's own headers.
REASON, TOPIC, PARTITION, OFFSET, CONSUMER, TIME = (
    "dlq_reason", "dlq_topic", "dlq_partition", "dlq_offset", "dlq_consumer", "dlq_time")


class DeadLetters:
    """Writes unreadable records of one consumer to the namespace's dead-letter topic.

    Args:
        producer: A started producer.
        topic: The dead-letter topic.
        consumer: The consumer's name, recorded in each dead letter (dlq_consumer).
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, consumer: str) -> None:
        self._producer = producer
        self._topic = topic
        self._consumer = consumer.encode()

    async def send(self, record: ConsumerRecord, reason: str) -> asyncio.Future[object]:
        """Queue the dead letter of `record`: its key, value and headers, plus the dlq_* headers.

        Args:
            record: The unreadable record.
            reason: Why it could not be read (dlq_reason).

        Returns:
            A future that resolves once the broker has the dead letter.
        """
        headers = [*(record.headers or ()),
                   (REASON, reason.encode()), (TOPIC, record.topic.encode()),
                   (PARTITION, str(record.partition).encode()), (OFFSET, str(record.offset).encode()),
                   (CONSUMER, self._consumer), (TIME, datetime.now(UTC).isoformat().encode())]
        future: asyncio.Future[object] = await self._producer.send(
            self._topic, value=record.value, key=record.key, headers=headers)
        return future
