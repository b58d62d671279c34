"""A Kafka record as choreograph stores it outside the broker.

In a recording (`choreo record`), an archive segment, or a sandbox copy. Every byte that matters is
kept, so it can be re-published.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ConsumedRecord(Protocol):
    """One record as a consumer reads it: aiokafka's `ConsumerRecord` and the memory log's records are."""

    @property
    def topic(self) -> str:
        """The topic the record was read from."""

    @property
    def partition(self) -> int:
        """The partition the record was read from."""

    @property
    def offset(self) -> int:
        """Its position in the partition: 0 for the first record ever written, then one more each."""

    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch: the producer's `timestamp_ms`, else its send time."""

    @property
    def key(self) -> bytes | None:
        """The key: it chose the partition, and compaction keeps the last record of each."""

    @property
    def value(self) -> bytes | None:
        """The payload; None is a tombstone (on a compacted topic, the key's deletion)."""

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]:
        """Name and value pairs, in the order they were sent."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """Topic, partition, offset, timestamp (ms, as the broker logged it), key, value and headers."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: ConsumedRecord) -> StoredRecord:
        """A copy of a record read from a broker."""
        return cls(record.topic, record.partition, record.offset, record.timestamp, record.key, record.value,
                   tuple(record.headers or ()))

    def header(self, name: str) -> bytes | None:
        """The value of the first header called `name`, or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data (a recording's line).

        The key and header values are text where the bytes are UTF-8 (keys and CloudEvents headers
        always are), else {"base64": ...}; the value is always base64.
        """
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "timestamp": self.timestamp, "key": _text(self.key),
                "headers": [[name, _text(value)] for name, value in self.headers],
                "value": None if self.value is None else base64.b64encode(self.value).decode()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredRecord:
        """Read a record back from the JSON data to_json made.

        Raises:
            KeyError: A required field (topic, partition, offset, timestamp) is missing.
            ValueError: A field cannot be read (a number that is not one, or bad base64).
        """
        value = data.get("value")
        return cls(str(data["topic"]), int(data["partition"]), int(data["offset"]), int(data["timestamp"]),
                   _bytes(data.get("key")), None if value is None else base64.b64decode(value),
                   tuple((str(name), _bytes(v) or b"") for name, v in data.get("headers", ())))


def _text(value: bytes | None) -> str | dict[str, str] | None:
    """Bytes as JSON: the text if they are UTF-8, else {"base64": ...}."""
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode()}


def _bytes(value: str | dict[str, str] | None) -> bytes | None:
    """The bytes _text made JSON of."""
    if value is None:
        return None
    if isinstance(value, dict):
        return base64.b64decode(value["base64"])
    return value.encode()
