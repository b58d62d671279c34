"""A workflow's recorded event as history, state and replay read it: a stored record, decoded."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from ..errors import DecodeError
from ..events._avro import SchemaStore
from ..events._envelope import Envelope, Kind
from ..events._records import StoredRecord


@dataclass(frozen=True)
class HistoryEntry:
    """One event of a workflow, as `choreo history --json` prints it.

    Attributes:
        topic: The topic it was read from.
        partition: Its partition.
        offset: Its offset in the partition.
        timestamp: Its log timestamp in Unix milliseconds.
        time: Its CloudEvents time (ce_time), ISO 8601.
        type: Its CloudEvents type: the Avro full name of its payload's schema.
        kind: Its kind (a Kind value).
        step: The step it is about, if any.
        event_id: Its id.
        causation_id: The id of the event that caused it, if any.
        source: Who published it.
        traceparent: Its W3C trace context, if any.
        data: Its decoded payload; None when it could not be decoded (see `error`).
        workflow_id: The workflow instance's id (the record key).
        workflow: The workflow's name.
        headers: All its headers, values decoded as UTF-8 (undecodable bytes replaced).
        error: Why its payload could not be decoded, if it could not.
        rejected: Why services refuse it (unsigned, badly signed, or its signer may not say it: the
            reason they dead-letter it with), where history was read with a verifier; None: believed.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    time: str
    type: str
    kind: str
    step: str | None
    event_id: str
    causation_id: str | None
    source: str
    traceparent: str | None
    data: dict[str, Any] | None
    workflow_id: str = ""
    workflow: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    error: str | None = None
    rejected: str | None = None

    def json(self) -> str:
        """This entry as one line of JSON (bytes in the payload as base64)."""
        return orjson.dumps(asdict(self), default=_bytes_as_base64).decode()

    @property
    def envelope(self) -> Envelope:
        """The event's envelope, rebuilt from the entry."""
        return Envelope(self.event_id, self.type, self.source, self.time, self.workflow, self.workflow_id,
                        Kind(self.kind), self.step, self.causation_id, self.traceparent)


def _bytes_as_base64(value: Any) -> str:
    """JSON for what orjson cannot serialise itself: bytes as base64; anything else is a TypeError."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


def entry_of(record: StoredRecord, store: SchemaStore) -> HistoryEntry | None:
    """The history entry of one record, or None for a record that is not an event.

    A record whose envelope headers are missing or malformed is not an event (the coordinator
    dead-letters it). An event whose payload cannot be decoded still has an entry, with `error` set.

    Args:
        record: The record.
        store: The writer schemas to decode its payload with.

    Returns:
        The entry, or None.
    """
    try:
        envelope = Envelope.from_record(record.key, record.headers)
    except DecodeError:
        return None  # not an event; the coordinator dead-lettered it
    data: dict[str, Any] | None = None
    error = None
    try:
        data = store.decode(record.value or b"")
    except DecodeError as exc:
        error = str(exc)
    return HistoryEntry(
        topic=record.topic, partition=record.partition, offset=record.offset, timestamp=record.timestamp,
        time=envelope.time, type=envelope.type, kind=envelope.kind.value, step=envelope.step,
        event_id=envelope.id, causation_id=envelope.causation_id, source=envelope.source,
        traceparent=envelope.traceparent, data=data, workflow_id=envelope.workflow_id,
        workflow=envelope.workflow,
        headers=tuple((k, "" if v is None else v.decode(errors="replace")) for k, v in record.headers),
        error=error)


def entries_of(records: Iterable[StoredRecord], store: SchemaStore) -> list[HistoryEntry]:
    """The history entries of the records that are events, in the records' order (see entry_of)."""
    return [e for r in records if (e := entry_of(r, store)) is not None]


def is_outcome(record: StoredRecord) -> bool:
    """Whether the record is a workflow's outcome (its ce_kind header says so)."""
    return record.header("ce_kind") == Kind.OUTCOME.value.encode()


