"""Dead letters: a record nobody can read goes, byte for byte, to the dead-letter topic.

With it go where it came from and why, and its consumer carries on. Nothing is lost and nothing
loops. A record too large to copy whole (a dead letter must itself fit the maximum event size) keeps
its headers and the start of its key and value; dlq_size and dlq_sha256 describe the original.

A dead letter read back is a `DeadLetter`; `choreo dlq` lists, shows and redrives them (see _dlq).
A redriven record carries ce_redrive (its redrive count), which a new dead letter of it keeps, since
every header of the record travels along.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..events._envelope import REDRIVE_HEADER, text_of
from ._port import Producer, Record, RecordMetadata, TopicPartition
from ._sizes import record_size

# Header names on a dead letter, added to the record's own headers.
REASON, TOPIC, PARTITION, OFFSET, CONSUMER, TIME = (
    "dlq_reason", "dlq_topic", "dlq_partition", "dlq_offset", "dlq_consumer", "dlq_time")
SIZE, DIGEST, TRUNCATED = "dlq_size", "dlq_sha256", "dlq_truncated"
# On a record of the dead-letter topic that is not a dead letter but says some were redriven (see _dlq).
REDRIVEN = "dlq_redriven"
_PREFIX = "dlq_"
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


def letter_id(partition: int, offset: int) -> str:
    """A dead letter's id: its offset on the dead-letter topic (`PARTITION:OFFSET` past partition 0)."""
    return str(offset) if partition == 0 else f"{partition}:{offset}"


def parse_letter_id(text: str) -> tuple[int, int] | None:
    """(partition, offset) of a dead letter's id (see letter_id); None if the text is not one."""
    partition, _, offset = text.strip().rpartition(":")
    if not offset.isdigit() or not (partition == "" or partition.isdigit()):
        return None
    return int(partition or 0), int(offset)


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter read back from the dead-letter topic.

    Attributes:
        partition: Its partition on the dead-letter topic.
        offset: Its offset there.
        timestamp: When it was written (log time, Unix ms).
        key: The original record's key (its start, if truncated).
        value: The original record's value (its start, if truncated).
        headers: Every header: the original record's, then the dlq_* ones.
        topic: The dead-letter topic.
        redriven: Where it was redriven to, as `topic:partition@offset`, each time it was.
    """

    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    topic: str = ""
    redriven: tuple[str, ...] = ()

    @classmethod
    def of(cls, record: Record) -> DeadLetter:
        """The dead letter a record of the dead-letter topic holds."""
        return cls(record.partition, record.offset, record.timestamp, record.key, record.value,
                   tuple(record.headers or ()), record.topic)

    @property
    def id(self) -> str:
        """Its id (see letter_id): what `choreo dlq show|redrive` take."""
        return letter_id(self.partition, self.offset)

    def header(self, name: str) -> str | None:
        """The last header called `name`, as text (bytes that are not UTF-8 replaced); None if absent."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return None if found is None else found.decode(errors="replace")

    @property
    def reason(self) -> str:
        """Why the consumer could not read the record."""
        return self.header(REASON) or ""

    @property
    def consumer(self) -> str:
        """The consumer (group or agent) that dead-lettered it."""
        return self.header(CONSUMER) or ""

    @property
    def time(self) -> str:
        """When it was dead-lettered (ISO 8601, the consumer's clock)."""
        return self.header(TIME) or ""

    @property
    def origin(self) -> tuple[TopicPartition, int] | None:
        """The original record's partition and offset; None if the headers do not say (not one of ours)."""
        topic, partition, offset = self.header(TOPIC), self.header(PARTITION), self.header(OFFSET)
        if not topic or partition is None or offset is None or not partition.isdigit() or not offset.isdigit():
            return None
        return TopicPartition(topic, int(partition)), int(offset)

    @property
    def truncated(self) -> bool:
        """Whether only the start of the original was kept (then it cannot be redriven)."""
        return self.header(TRUNCATED) == "1"

    @property
    def size(self) -> int:
        """The original record's size in bytes (key, value and headers, framing included)."""
        recorded = self.header(SIZE)
        if recorded is not None and recorded.isdigit():
            return int(recorded)
        return record_size(self.key, self.value, self.original_headers())

    @property
    def digest(self) -> str:
        """The SHA-256 of the original record's value, in hex."""
        return self.header(DIGEST) or hashlib.sha256(self.value or b"").hexdigest()

    @property
    def redrive_count(self) -> int:
        """How many times the record had been redriven when it was dead-lettered (its ce_redrive)."""
        count = self.header(REDRIVE_HEADER)
        return int(count) if count is not None and count.isdigit() else 0

    @property
    def workflow_id(self) -> str | None:
        """The workflow id the record's key names, if it is UTF-8 text."""
        return text_of(self.key)

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The original record's headers: every header but the dlq_* ones."""
        return [(name, value) for name, value in self.headers if not name.startswith(_PREFIX)]

    def redrive_headers(self) -> list[tuple[str, bytes]]:
        """The headers to redrive it with: the original's, its ce_redrive one more than before."""
        kept = [(name, value) for name, value in self.original_headers() if name != REDRIVE_HEADER]
        return [*kept, (REDRIVE_HEADER, str(self.redrive_count + 1).encode())]

    def json(self, *, preview: int = 0) -> dict[str, Any]:
        """The dead letter as `choreo dlq ls|show --json` print it.

        Args:
            preview: How many bytes of the value to include (as text, undecodable bytes escaped); 0 for none.
        """
        origin = self.origin
        data: dict[str, Any] = {
            "id": self.id, "partition": self.partition, "offset": self.offset, "timestamp": self.timestamp,
            "time": self.time, "reason": self.reason, "consumer": self.consumer,
            "topic": None if origin is None else origin[0].topic,
            "origin_partition": None if origin is None else origin[0].partition,
            "origin_offset": None if origin is None else origin[1],
            "workflow_id": self.workflow_id, "workflow": self.header("ce_workflow"),
            "kind": self.header("ce_kind"), "type": self.header("ce_type"), "step": self.header("ce_step"),
            "event_id": self.header("ce_id"), "size": self.size, "sha256": self.digest,
            "truncated": self.truncated, "redrive_count": self.redrive_count, "redriven": list(self.redriven),
        }
        if preview:
            data["key"] = None if self.key is None else self.key.decode(errors="backslashreplace")
            data["headers"] = [[name, value.decode(errors="backslashreplace") if value is not None else None]
                               for name, value in self.original_headers()]
            data["value_bytes"] = None if self.value is None else len(self.value)
            data["value_preview"] = None if self.value is None else \
                self.value[:preview].decode(errors="backslashreplace")
        return data
