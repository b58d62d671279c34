"""A workflow's history: its events in log order, decoded. The workflow id is the record key, so
the whole history is on one partition of the events topic; only that partition is read."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from aiokafka import TopicPartition

from ._kafka import Kafka
from ._registry import Registry
from .envelope import Envelope
from .errors import DecodeError
from .settings import Settings


@dataclass(frozen=True)
class HistoryEntry:
    """One event of a workflow, as `choreo history --json` prints it."""

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
    error: str | None = None

    def json(self) -> str:
        return orjson.dumps(asdict(self), default=_bytes_as_base64).decode()


def _bytes_as_base64(value: Any) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


async def history(settings: Settings, workflow_id: str) -> list[HistoryEntry]:
    kafka = Kafka(settings)
    topic = settings.events_topic
    partition = kafka.partition_for(workflow_id.encode(), await kafka.partition_count(topic))
    registry = Registry(kafka)
    await registry.start()
    try:
        await registry.catch_up()
        entries: list[HistoryEntry] = []
        async for record in kafka.read([TopicPartition(topic, partition)]):
            if record.key != workflow_id.encode():
                continue
            try:
                envelope = Envelope.from_record(record.key, record.headers)
            except DecodeError:
                continue  # not an event; it is in the dead-letter topic
            data: dict[str, Any] | None = None
            error = None
            try:
                data = registry.store.decode(record.value)
            except DecodeError as exc:
                error = str(exc)
            entries.append(HistoryEntry(
                topic=record.topic, partition=record.partition, offset=record.offset,
                timestamp=record.timestamp, time=envelope.time, type=envelope.type, kind=envelope.kind.value,
                step=envelope.step, event_id=envelope.id, causation_id=envelope.causation_id,
                source=envelope.source, traceparent=envelope.traceparent, data=data, error=error,
            ))
        return entries
    finally:
        await registry.stop()
