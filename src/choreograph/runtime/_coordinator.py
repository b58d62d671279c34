"""The saga coordinator service: reads every workflow event, folds it with `saga.handle`, publishes
the decisions (graph fixed at start, compensation requests, outcome). It never calls an agent.

Its state is the log. The commit position of a partition never passes the goal of a saga that is
still open, so after kill -9 a new instance re-reads every open saga from its goal. While it re-reads
up to the end it only folds (its own earlier decisions are in the log too); then it settles each
saga and publishes whatever is still owed. Decision ids are deterministic, so a re-publish is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRecord,
    TopicPartition,
)

from ..errors import DecodeError, InvalidPayloadError, UnknownSchemaError
from ..events._envelope import COORDINATOR_SOURCE, Envelope, Kind, derived_id
from ..events._models import StepContract
from ..saga._decide import Decision, Fact, SagaState, evolve, fact_of, handle, settle
from ..transport._deadletter import DeadLetters
from ..transport._kafka import Kafka, Rebalance
from ..transport._lifecycle import ServiceBase
from ..transport._offsets import Cadence, PartitionProgress, commit_progress
from ..transport._registry import Registry
from ..transport._restore import MARKER_TYPES, on_marker
from ..transport._settings import Settings

log = logging.getLogger("choreograph.coordinator")
_CONTRACT_TYPE = StepContract.type_name()


class _Partition:
    """Open sagas of one partition, and where the silent replay after assignment ends."""

    def __init__(self, position: int, replay_end: int) -> None:
        self.progress = PartitionProgress(position)
        self.replay_end = replay_end
        self.sagas: dict[str, SagaState] = {}
        self.goal_offsets: dict[str, int] = {}
        self.dormant: set[str] = set()  # open sagas restored from an archive: never settled

    @property
    def replaying(self) -> bool:
        return self.progress.next < self.replay_end


class Coordinator(ServiceBase):
    """`async with Coordinator(settings) as c: await c.run()`"""

    def __init__(self, settings: Settings, *, ready_file: Path | None = None,
                 finished_capacity: int = 100_000, commit_interval_s: float = 0.25,
                 observe: Callable[[int, int, SagaState], None] | None = None) -> None:
        """`observe(partition, offset, state)`, if given, sees the saga state after each event is
        handled: what `choreo state --at` must reproduce (tests compare the two)."""
        self.settings = settings
        self._kafka = Kafka(settings)
        self._registry = Registry(self._kafka)
        # aiokafka clients belong to the running loop, so they are made in start().
        self._producer: AIOKafkaProducer
        self._consumer: AIOKafkaConsumer
        self._dead: DeadLetters
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._capacity = finished_capacity
        self._pending: list[asyncio.Future[Any]] = []
        self._ready_file = ready_file
        self._observe = observe
        self._commit_due = Cadence(commit_interval_s)
        self._registry_current = False  # caught up with the registry since this batch was fetched
        self._assigned = asyncio.Event()
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self._kafka.ensure_topics()
        self._producer = self._kafka.producer()
        self._consumer = self._kafka.consumer(group_id=self.settings.coordinator_group,
                                              auto_offset_reset="earliest")
        self._dead = DeadLetters(self._producer, self.settings.deadletter_topic, self.settings.coordinator_group)
        await self._producer.start()
        await self._registry.start()
        await self._registry.catch_up()
        await self._consumer.start()
        self._consumer.subscribe([self.settings.events_topic], listener=Rebalance(self._on_assigned, self._on_revoked))
        await self._assigned.wait()  # set by the rebalance listener once partitions are ours
        if self._ready_file is not None:
            self._ready_file.write_text("coordinator")
        log.info("coordinator ready on %s", self.settings.events_topic)

    async def stop(self) -> None:
        self._stopping.set()
        try:
            await self._commit()
        finally:
            await self._consumer.stop()
            await self._registry.stop()
            await self._producer.stop()

    async def run(self) -> None:
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=100, max_records=1000)
            self._registry_current = False
            for tp, records in batch.items():
                part = self._partitions.get(tp)
                if part is None:
                    part = self._partitions[tp] = _Partition(records[0].offset, 0)
                was_replaying = part.replaying
                for record in records:
                    await self._on_record(part, record)
                if was_replaying and not part.replaying:
                    await self._settle_all(part)
            if self._commit_due():  # periodic: a commit only bounds how much a restart re-reads
                await self._commit()

    async def _on_record(self, part: _Partition, record: ConsumerRecord) -> None:
        progress = part.progress
        progress.seen(record.offset)
        history = progress.is_history(record.timestamp)
        try:
            envelope = Envelope.from_record(record.key, record.headers)
            if envelope.type == _CONTRACT_TYPE:
                # An agent's announcement, in order with goals. A restored one never replaces a
                # contract announced by an agent running now.
                self._registry.apply(record.value, keep_existing=history)
                return
            if (marker := envelope.type.encode()) in MARKER_TYPES:
                on_marker(progress, marker, record.value, record.offset)
                return
            fact = await self._fact(envelope, record.value)
        except DecodeError as exc:
            if history:  # restored: dead-lettered when it was first read, and restored with the rest
                return
            log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
            self._pending.append(await self._dead.send(record, str(exc)))
            return
        workflow_id = envelope.workflow_id
        if workflow_id in self._finished:
            return
        state = part.sagas.get(workflow_id) or SagaState(workflow_id)
        decisions: list[Decision] = []
        if history:
            # Restored from an archive: its decisions are in the log already; fold, never act.
            # An open one stays dormant until a new event about it arrives.
            state = evolve(state, fact)
            part.dormant.add(workflow_id)
        elif part.replaying:
            state = evolve(state, fact)
        else:
            part.dormant.discard(workflow_id)
            if fact.kind is Kind.GOAL and fact.workflow not in self._registry.catalog:
                await self._catch_up_registry()
            state, decisions = handle(state, fact, self._registry.catalog)
        if fact.kind is Kind.GOAL and workflow_id not in part.goal_offsets:
            # A restored saga is pinned at its bracket's start, so a restart re-reads the marker
            # and keeps it dormant instead of settling it.
            at = progress.bracket_at if history and progress.bracket_at is not None else record.offset
            part.goal_offsets[workflow_id] = at
            progress.pin(at)
        for decision in decisions:
            await self._publish(state, decision, envelope)
        self._keep(part, state)
        if self._observe is not None:
            self._observe(record.partition, record.offset, state)

    async def _settle_all(self, part: _Partition) -> None:
        """After the silent replay: publish what each open saga is still owed."""
        if part.sagas:
            await self._catch_up_registry()
        for state in list(part.sagas.values()):
            if state.workflow_id in part.dormant:
                continue
            state, decisions = settle(state, self._registry.catalog)
            for decision in decisions:
                await self._publish(state, decision, None)
            self._keep(part, state)

    async def _catch_up_registry(self) -> None:
        """Read the registry to its end (once per batch). Markers on the events topic keep the catalog
        current as partitions are read; this is for a goal of a workflow no marker has named yet,
        and for settling after a silent replay."""
        if not self._registry_current:
            await self._registry.catch_up()
            self._registry_current = True

    def _keep(self, part: _Partition, state: SagaState) -> None:
        if not state.finished:
            part.sagas[state.workflow_id] = state
            return
        part.sagas.pop(state.workflow_id, None)
        if (offset := part.goal_offsets.pop(state.workflow_id, None)) is not None:
            part.progress.unpin(offset)
        self._finished[state.workflow_id] = None
        if len(self._finished) > self._capacity:
            self._finished.popitem(last=False)

    async def _fact(self, envelope: Envelope, value: bytes) -> Fact:
        """Validate the payload against its writer schema and extract what the saga needs."""
        try:
            record = self._registry.store.decode(value)
        except UnknownSchemaError:
            await self._registry.catch_up()
            record = self._registry.store.decode(value)
        try:
            return fact_of(envelope, record)
        except ValueError as exc:  # pydantic: a framework event that fails its model
            raise InvalidPayloadError(f"{envelope.type} fails validation: {exc}") from exc

    async def _publish(self, state: SagaState, decision: Decision, cause: Envelope | None) -> None:
        event_id = derived_id(state.workflow_id, decision.kind.value, decision.step or "")
        envelope = Envelope.new(
            type=decision.event.type_name(), source=COORDINATOR_SOURCE, workflow=state.workflow,
            workflow_id=state.workflow_id, kind=decision.kind, step=decision.step, cause=cause,
        ).with_id(event_id)
        future = await self._producer.send(self.settings.events_topic, value=decision.event.encode(),
                                           key=envelope.key, headers=envelope.headers())
        self._pending.append(future)

    async def _commit(self) -> None:
        while self._pending:
            pending, self._pending = self._pending, []
            await asyncio.gather(*pending)
        await commit_progress(self._consumer, {tp: p.progress for tp, p in self._partitions.items()})

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        ends = await self._kafka.end_offsets(assigned)
        for tp in assigned:
            committed = await self._consumer.committed(tp)
            position = committed if committed is not None else await self._consumer.position(tp)
            part = self._partitions[tp] = _Partition(position, ends[tp])
            if not part.replaying:
                await self._settle_all(part)
        self._assigned.set()

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._commit()
        for tp in revoked:
            self._partitions.pop(tp, None)

