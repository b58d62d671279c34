"""Feeding a sandbox: the recorded outputs of the agents that are not re-run, published back in order.

Each fed event is published once the event that caused it (by id) appears in the sandbox, and after
every event recorded before it, so the re-run sees the recorded order.
"""

from __future__ import annotations

import time

from ..events._records import StoredRecord
from ..saga._entries import HistoryEntry, entry_of, is_outcome
from ..timetravel._recording import Recording
from ..transport._kafka import Kafka
from ..transport._port import Producer, TopicPartition
from ..transport._settings import Settings


class Feeder:
    """Decides when a recorded event of an agent that is not re-run goes into the sandbox.

    An event goes in once the event that caused it is there and every event recorded before it is
    too, so the re-run sees the recorded order. When the re-run has diverged (an event recorded
    earlier never comes), it goes in after `patience_s` without anything new.

    Args:
        events: The recording's events with their records, in log order.
        fed: Ids of the events to feed; the others are the re-run's to produce.
        patience_s: How long to wait for the recorded order before feeding out of it.
    """

    def __init__(self, events: list[tuple[StoredRecord, HistoryEntry]], fed: set[str], patience_s: float) -> None:
        self.pending = [(r, e) for r, e in events if e.event_id in fed]
        self.before = {r.offset: [x.event_id for q, x in events if q.offset < r.offset] for r, _ in self.pending}
        self.present: set[str] = set()
        self.patience_s = patience_s
        self.quiet_since = time.monotonic()

    def saw(self, event_id: str) -> None:
        """Note that the event `event_id` has appeared in the sandbox."""
        self.present.add(event_id)
        self.quiet_since = time.monotonic()

    def _ready(self) -> list[tuple[StoredRecord, HistoryEntry]]:
        return [(r, e) for r, e in self.pending if e.causation_id is None or e.causation_id in self.present]

    def done(self) -> bool:
        """Nothing can be fed any more: whatever waits has a cause the re-run never produced."""
        return not self._ready() and time.monotonic() - self.quiet_since >= self.patience_s

    def next(self) -> StoredRecord | None:
        """The next record to publish now, if any (taken off the pending list)."""
        ready = self._ready()
        if not ready:
            return None
        record, entry = ready[0]
        in_order = all(event_id in self.present for event_id in self.before[record.offset])
        if not in_order and time.monotonic() - self.quiet_since < self.patience_s:
            return None
        self.pending.remove((record, entry))
        self.quiet_since = time.monotonic()
        return record


async def feed(settings: Settings, recording: Recording, events: list[tuple[StoredRecord, HistoryEntry]],
               fed: set[str], timeout_s: float, patience_s: float = 1.0) -> int:
    """Publish the fed events into the sandbox as its workflow gets to them (see Feeder).

    Returns once the sandbox workflow has its outcome and nothing more waits to be fed, or at the
    timeout.

    Args:
        settings: The sandbox's settings.
        recording: The recorded workflow; its id keys the sandbox workflow's records.
        events: The recording's events with their records, in log order.
        fed: Ids of the events to publish.
        timeout_s: When to give up, however far the sandbox workflow got.
        patience_s: See Feeder.

    Returns:
        How many events were published.
    """
    feeder = Feeder(events, fed, patience_s)
    tp = TopicPartition(settings.events_topic, events[0][0].partition if events else 0)
    key = recording.workflow_id.encode()
    sent = 0
    finished = False
    kafka = Kafka(settings)
    producer: Producer = kafka.producer()
    await producer.start()
    try:
        async with kafka.reader([tp]) as consumer:
            await consumer.seek_to_beginning(tp)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not (finished and feeder.done()):
                while (record := feeder.next()) is not None:
                    await producer.send_and_wait(settings.events_topic, value=record.value, key=record.key,
                                                 headers=list(record.headers), partition=tp.partition)
                    sent += 1
                batch = await consumer.getmany(tp, timeout_ms=100)
                for row in batch.get(tp, ()):
                    if row.key == key:
                        stored = StoredRecord.of(row)
                        if (entry := entry_of(stored, recording.store)) is not None:
                            feeder.saw(entry.event_id)
                        finished = finished or is_outcome(stored)
    finally:
        await producer.stop()
    return sent
