"""The test kit's transport: the memory log, with a plug to pull (a crash) and delivery faults."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import DecodeError
from ..events._envelope import Envelope, Kind
from ..transport._memory import MemoryLog
from ..transport._memory_consumer import MemoryConsumer
from ..transport._memory_records import MemoryRecordMetadata
from ..transport._memory_transport import MemoryProducer, MemoryTransport
from ..transport._port import RecordMetadata
from ..transport._settings import Settings

# A held-back record is delivered after the next record of its partition, or after this long.
HOLD_S = 0.1


@dataclass
class RecordRule:
    """A delivery fault for the next `times` records of a kind and/or step (None: any)."""

    action: str  # "duplicate" or "reorder"
    kind: Kind | None
    step: str | None
    times: int
    held: list[Callable[[], None]] = field(default_factory=list)

    def matches(self, envelope: Envelope) -> bool:
        """Whether this rule still applies to a record with `envelope`."""
        return (self.times > 0 and (self.kind is None or envelope.kind is self.kind)
                and (self.step is None or envelope.step == self.step))


class PluggedTransport(MemoryTransport):
    """A MemoryTransport for one service instance of the kit.

    Args:
        log: The shared memory log.
        settings: The kit's settings.
        rules: Delivery faults shared by every service of the kit.
        on_sent: Called with (owner, envelope) once a record of this service is in the log.
        owner: The service's name (None for the kit's own client).
    """

    def __init__(self, log: MemoryLog, settings: Settings, rules: list[RecordRule],
                 on_sent: Callable[[str | None, Envelope], None], owner: str | None) -> None:
        super().__init__(log, settings)
        self.rules = rules
        self.on_sent = on_sent
        self.owner = owner
        self.pulled = False
        self.consumers: list[Any] = []

    def pull(self) -> None:
        """The process is dead: nothing it sends reaches the log any more."""
        self.pulled = True

    def producer(self, **overrides: Any) -> MemoryProducer:
        """A producer that honours the plug and the delivery faults."""
        return _PluggedProducer(self.log, self, overrides.get("max_request_size", self.settings.max_event_bytes))

    def consumer(self, *topics: str, group_id: str | None = None, **overrides: Any) -> MemoryConsumer:
        """A memory consumer, remembered so a crash can remove it from its group."""
        consumer = super().consumer(*topics, group_id=group_id, **overrides)
        self.consumers.append(consumer)
        return consumer


class _PluggedProducer(MemoryProducer):
    def __init__(self, log: MemoryLog, plug: PluggedTransport, max_request_size: int) -> None:
        super().__init__(log, max_request_size)
        self._plug = plug

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                   partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                   timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Append, unless the plug is pulled; apply a matching delivery fault."""
        loop = asyncio.get_running_loop()
        if self._plug.pulled:
            return loop.create_future()  # a dead process's buffer: never acknowledged, never logged
        try:
            envelope: Envelope | None = Envelope.from_record(key, headers or ())
        except DecodeError:
            envelope = None
        rule = next((r for r in self._plug.rules if envelope is not None and r.matches(envelope)), None)
        if rule is not None:
            rule.times -= 1
        if rule is not None and rule.action == "reorder" and partition is not None:
            return self._hold(rule, topic, value, key, partition, headers, timestamp_ms)
        future = await super().send(topic, value, key, partition=partition, headers=headers, timestamp_ms=timestamp_ms)
        if rule is not None and rule.action == "duplicate":
            await super().send(topic, value, key, partition=partition, headers=headers, timestamp_ms=timestamp_ms)
        self._release_held()
        if envelope is not None:
            self._plug.on_sent(self._plug.owner, envelope)
        return future

    def _hold(self, rule: RecordRule, topic: str, value: bytes | None, key: bytes | None, partition: int,
              headers: Sequence[tuple[str, bytes]] | None, timestamp_ms: int | None) -> asyncio.Future[RecordMetadata]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RecordMetadata] = loop.create_future()

        def deliver() -> None:
            if future.done():
                return
            record = self.log.append(topic, value, key, partition, headers, timestamp_ms)
            future.set_result(MemoryRecordMetadata(record.topic, record.partition, record.offset, record.timestamp))

        rule.held.append(deliver)
        loop.call_later(HOLD_S, deliver)
        return future

    def _release_held(self) -> None:
        for rule in self._plug.rules:
            held, rule.held = rule.held, []
            for deliver in held:
                deliver()

