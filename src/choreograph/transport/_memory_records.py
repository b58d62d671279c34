"""What the memory log stores: records, partitions (offsets, gaps after compaction) and topics."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import NamedTuple

from ._port import Record
from ._sizes import record_size

__all__ = ["MemoryRecord", "MemoryRecordMetadata", "StoredPartition", "StoredTopic",
           "record_size"]



@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """A record as the memory log stores and returns it (a port `Record`)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


class MemoryRecordMetadata(NamedTuple):
    """Where a sent record was stored (a port `RecordMetadata`)."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class StoredPartition:
    """One partition's records and end offset."""

    __slots__ = ("end", "records")

    def __init__(self) -> None:
        self.records: list[MemoryRecord] = []  # in offset order; compaction leaves gaps
        self.end = 0

    def fetch(self, offset: int, limit: int | None) -> tuple[list[Record], int]:
        """Records from `offset` on, and the position after them (past any gap up to the end)."""
        i = bisect_left(self.records, offset, key=lambda r: r.offset)
        out: list[Record] = list(self.records[i:None if limit is None else i + limit])
        if i + len(out) >= len(self.records):
            return out, max(offset, self.end)
        return out, out[-1].offset + 1 if out else offset


class StoredTopic:
    """A topic's partitions, cleanup policy, and where its next keyless record goes."""

    __slots__ = ("compacted", "next_keyless", "partitions")

    def __init__(self, partitions: int, compacted: bool) -> None:
        self.partitions = [StoredPartition() for _ in range(partitions)]
        self.compacted = compacted
        self.next_keyless = 0
