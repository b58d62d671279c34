"""Dead letters: a record nobody can read goes, byte for byte, to the dead-letter topic.

With it go where it came from and why, and its consumer carries on. Nothing is lost and nothing
loops. A record too large to copy whole (a dead letter must itself fit the maximum event size) keeps
its headers and the start of its key and value; dlq_size and dlq_sha256 describe the original.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

from ._port import Producer, Record, RecordMetadata
from ._sizes import record_size

# Header names on a dead letter, added to the record's own headers.
REASON, TOPIC, PARTITION, OFFSET, CONSUMER, TIME = (
    "dlq_reason", "dlq_topic", "dlq_partition", "dlq_offset", "dlq_consumer", "dlq_time")
SIZE, DIGEST, TRUNCATED = "dlq_size", "dlq_sha256", "dlq_truncated"
_KEEP = 64 * 1024  # of a truncated record's value: enough to see what it was
_KEEP_SMALL = 1024  # of its key and of each header value


class DeadLetters:
    """Writes unreadable records of one consumer to the namespace's dead-letter topic.

    Args:
        producer: A started producer.
        topic: The dead-letter topic.
        consumer: The consumer's name, recorded in each dead letter (dlq_consumer).
        max_bytes: The maximum event size: a larger dead letter is truncated to fit.
    """

    def __init__(self, producer: Producer, topic: str, consumer: str, max_bytes: int) -> None:
        self._producer = producer
        self._topic = topic
        self._consumer = consumer.encode()
        self._max_bytes = max_bytes

    async def send(self, record: Record, reason: str) -> asyncio.Future[RecordMetadata]:
        """Queue the dead letter of `record`: its key, value and headers, plus the dlq_* headers.

        Args:
            record: The unreadable record.
            reason: Why it could not be read (dlq_reason).

        Returns:
            A future that resolves once the broker has the dead letter.
        """
        ours = [(REASON, reason.encode(errors="replace")[:_KEEP_SMALL]), (TOPIC, record.topic.encode()),
                (PARTITION, str(record.partition).encode()), (OFFSET, str(record.offset).encode()),
                (CONSUMER, self._consumer), (TIME, datetime.now(UTC).isoformat().encode())]
        key, value, theirs = record.key, record.value, list(record.headers or ())
        size = record_size(key, value, [*theirs, *ours])
        if size > self._max_bytes:
            digest = hashlib.sha256(value or b"").hexdigest().encode()
            ours += [(SIZE, str(size).encode()), (DIGEST, digest), (TRUNCATED, b"1")]
            theirs = [(name[:_KEEP_SMALL], None if v is None else v[:_KEEP_SMALL]) for name, v in theirs[:64]]
            key = None if key is None else key[:_KEEP_SMALL]
            room = self._max_bytes - record_size(key, b"", [*theirs, *ours]) - 16
            value = None if value is None else value[:max(0, min(_KEEP, room))]
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            self._topic, value=value, key=key, headers=[*theirs, *ours])
        return future
