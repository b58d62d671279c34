"""Following the events topic during a chaos run: which workflows have an outcome (and when), and
every record handed to the scenarios that react to what they see (copies, kills while compensating)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from choreograph import Settings
from choreograph.transport import Kafka, Record, TopicPartition

Listener = Callable[[Record, str | None], None]  # (record, its ce_kind) for each record


class Watch:
    """`async with Watch(settings) as w:` follows the events topic from its end at entry."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._kafka = Kafka(settings)
        self._done: dict[str, asyncio.Event] = {}
        self.outcome_ns: dict[str, int] = {}  # workflow id -> wall time its first outcome was seen
        self.listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        tps = [TopicPartition(self._settings.events_topic, p) for p in range(self._settings.partitions)]
        ends = await self._kafka.end_offsets(tps)
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._watch(ends, ready))
        await ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _event(self, workflow_id: str) -> asyncio.Event:
        return self._done.setdefault(workflow_id, asyncio.Event())

    def has_outcome(self, workflow_id: str) -> bool:
        return workflow_id in self.outcome_ns

    async def wait(self, workflow_id: str, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._event(workflow_id).wait(), max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

    async def wait_all(self, workflow_ids: list[str], timeout_s: float) -> bool:
        """Until each of the workflows has an outcome (True), or `timeout_s` is up (False)."""
        deadline = time.monotonic() + timeout_s
        for workflow_id in workflow_ids:
            if not await self.wait(workflow_id, deadline - time.monotonic()):
                return False
        return True

    async def _watch(self, ends: dict[TopicPartition, int], ready: asyncio.Event) -> None:
        async with self._kafka.reader(ends) as consumer:
            for tp, offset in ends.items():
                consumer.seek(tp, offset)
            ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                for records in batch.values():
                    for record in records:
                        self._on(record)

    def _on(self, record: Record) -> None:
        kind = None
        for name, value in record.headers:
            if name == "ce_kind":
                kind = value.decode(errors="replace")
                break
        if kind == "outcome" and record.key:
            workflow_id = record.key.decode(errors="replace")
            self.outcome_ns.setdefault(workflow_id, time.time_ns())
            self._event(workflow_id).set()
        for listener in self.listeners:
            listener(record, kind)
