"""Runs one Agent: consume the workflow events, run handlers concurrently, emit results.

Delivery is at-least-once; effects are once per workflow. The agent's own results in the log are its
tracking records: each carries the workflow id, so on (re)assignment the runtime reads its recent
outputs back and a redelivered or duplicated input is a no-op. Offsets are committed only up to the
oldest record whose work is still pending (in flight or waiting for the rest of a join).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)

from ._avro import SchemaStore
from ._deadletter import DeadLetters
from ._kafka import Kafka
from ._offsets import PartitionProgress
from ._registry import Registry, announce, framework_store
from .agent import Agent, StepContext
from .envelope import Envelope, Kind
from .errors import DecodeError, UnknownSchemaError
from .events import CompensationCompleted, CompensationFailed, CompensationRequested, Event, StepFailed
from .settings import Settings

log = logging.getLogger("choreograph.agent")

_COMPENSATION = "\x00compensation"
_REQUEST_TYPE = CompensationRequested.type_name().encode()
_RESULT_KINDS = {b"step_completed": "", b"step_failed": "",
                 b"compensation_completed": _COMPENSATION, b"compensation_failed": _COMPENSATION}
_Input = tuple[TopicPartition, int, Event, Envelope]


class AgentRuntime:
    """The process-level runner of one Agent: `async with AgentRuntime(agent, settings) as rt: ...`."""

    def __init__(self, agent: Agent, settings: Settings, *, max_concurrency: int = 64,
                 dedupe_lookback: int = 10_000, dedupe_capacity: int = 200_000,
                 ready_file: Path | None = None) -> None:
        self.agent = agent
        self.contract = agent.contract()
        self.settings = settings
        self._kafka = Kafka(settings)
        self._store: SchemaStore = framework_store()
        for event in (*agent.consumes, *(t for t in [agent.completes_with] if t)):
            self._store.add(event.avro)
        self._registry: Registry | None = None
        self._source = agent.source.encode()
        self._step = agent.step.encode()
        self._consumed = {t.type_name().encode(): t for t in agent.consumes}
        self._lookback = dedupe_lookback
        self._capacity = dedupe_capacity
        self._ready_file = ready_file
        self._progress: dict[TopicPartition, PartitionProgress] = {}
        self._joins: dict[str, dict[bytes, _Input]] = {}
        self._done: OrderedDict[str, None] = OrderedDict()
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._pending: list[asyncio.Future[Any]] = []
        self._fatal: BaseException | None = None
        self._assigned = asyncio.Event()
        self._stopping = asyncio.Event()
        # aiokafka clients belong to the running loop, so they are made in start().
        self._producer: AIOKafkaProducer
        self._consumer: AIOKafkaConsumer
        self._dead: DeadLetters

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group, learn past results, announce the contract; then events are seen."""
        await self._kafka.ensure_topics()
        self._producer = self._kafka.producer()
        self._consumer = self._kafka.consumer(
            group_id=self.settings.agent_group(self.agent.workflow, self.agent.step), auto_offset_reset="latest")
        self._dead = DeadLetters(self._producer, self.settings.deadletter_topic, self.agent.name)
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe([self.settings.events_topic], listener=_Listener(self))
        await self._assigned.wait()  # set by the rebalance listener once partitions are ours
        await announce(self._producer, self.settings.registry_topic, self.contract, self.agent.source)
        if self._ready_file is not None:
            self._ready_file.write_text(self.agent.name)
        log.info("%s ready: %r", self.agent.name, self.agent)

    async def stop(self) -> None:
        self._stopping.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        try:
            await self._commit()
        finally:
            await self._consumer.stop()
            await self._producer.stop()
            if self._registry is not None:
                await self._registry.stop()

    async def __aenter__(self) -> AgentRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Consume until stop() is called or a result cannot be published (then raise)."""
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=100, max_records=1000)
            for tp, records in batch.items():
                progress = self._progress.get(tp) or self._progress.setdefault(tp, PartitionProgress(records[0].offset))
                for record in records:
                    await self._on_record(tp, progress, record)
            if self._fatal is not None:
                raise self._fatal
            await self._commit()

    def request_stop(self) -> None:
        self._stopping.set()

    # per record ------------------------------------------------------------------------------

    async def _on_record(self, tp: TopicPartition, progress: PartitionProgress, record: ConsumerRecord) -> None:
        progress.seen(record.offset)
        headers = dict(record.headers)
        event_type = headers.get("ce_type")
        if event_type is None:
            return  # not an event; the coordinator dead-letters what nobody can read
        workflow_id = record.key.decode() if record.key else ""
        if headers.get("ce_source") == self._source:
            suffix = _RESULT_KINDS.get(headers.get("ce_kind", b""))
            if suffix is not None:
                self._remember(workflow_id + suffix)
            return
        if headers.get("ce_kind") == b"outcome":
            self._drop_join(workflow_id)
            return
        if event_type == _REQUEST_TYPE:
            if headers.get("ce_step") == self._step and self.agent.compensation_fn is not None:
                key = workflow_id + _COMPENSATION
                if key not in self._done and key not in self._running:
                    decoded = await self._decode(record, CompensationRequested)
                    if decoded is not None:
                        progress.pin(record.offset)
                        await self._schedule(key, self._compensate(key, *decoded, tp, record.offset))
            return
        model = self._consumed.get(event_type)
        if model is None or workflow_id in self._done or workflow_id in self._running:
            return
        decoded = await self._decode(record, model)
        if decoded is None:
            return
        event, envelope = decoded
        join = self._joins.setdefault(workflow_id, {})
        if event_type in join:
            return  # a duplicate of an input we already hold
        progress.pin(record.offset)
        join[event_type] = (tp, record.offset, event, envelope)
        if len(join) == len(self._consumed):
            del self._joins[workflow_id]
            await self._schedule(workflow_id, self._run_step(workflow_id, join, envelope))

    async def _decode(self, record: ConsumerRecord, model: type[Event]) -> tuple[Event, Envelope] | None:
        """The typed event and its envelope, or None after dead-lettering a record we cannot read."""
        try:
            envelope = Envelope.from_record(record.key, record.headers)
            try:
                return model.decode(record.value, self._store), envelope
            except UnknownSchemaError:
                await self._learn_schemas()  # maybe a newer writer schema was announced since
                return model.decode(record.value, self._store), envelope
        except DecodeError as exc:
            log.warning("%s: dead-lettering %s[%d]@%d: %s", self.agent.name, record.topic,
                        record.partition, record.offset, exc)
            self._pending.append(await self._dead.send(record, str(exc)))
            return None

    async def _learn_schemas(self) -> None:
        if self._registry is None:
            self._registry = Registry(self._kafka, self._store)
            await self._registry.start()
        await self._registry.catch_up()

    # handlers --------------------------------------------------------------------------------

    async def _schedule(self, key: str, work: Any) -> None:
        await self._slots.acquire()
        self._running.add(key)
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None and self._fatal is None:
            self._fatal = task.exception()

    async def _run_step(self, workflow_id: str, inputs: dict[bytes, _Input], cause: Envelope) -> None:
        agent = self.agent
        assert agent.handler_fn is not None
        ctx = StepContext(agent.workflow, workflow_id, agent.step, cause, log)
        args = [inputs[t.type_name().encode()][2] for t in agent.consumes]
        result: Event
        try:
            result = await agent.handler_fn(ctx, *args)
            if agent.completes_with is not None and not isinstance(result, agent.completes_with):
                raise TypeError(f"handler returned {type(result).__name__}, "
                                f"declared {agent.completes_with.__name__}")
            kind = Kind.STEP_COMPLETED
        except Exception as exc:
            log.info("%s failed %s: %r", agent.name, workflow_id, exc)
            result = StepFailed(step=agent.step, reason=str(exc) or repr(exc), error_type=type(exc).__name__)
            kind = Kind.STEP_FAILED
        await self._publish(ctx, result, kind)
        self._complete(workflow_id, [(tp, offset) for tp, offset, _, _ in inputs.values()])

    async def _compensate(self, key: str, request: Event, cause: Envelope, tp: TopicPartition, offset: int) -> None:
        agent = self.agent
        assert agent.compensation_fn is not None and isinstance(request, CompensationRequested)
        ctx = StepContext(agent.workflow, cause.workflow_id, agent.step, cause, log)
        result: Event
        try:
            await agent.compensation_fn(ctx, request)
            result, kind = CompensationCompleted(step=agent.step), Kind.COMPENSATION_COMPLETED
        except Exception as exc:
            log.warning("%s compensation failed %s: %r", agent.name, cause.workflow_id, exc)
            result = CompensationFailed(step=agent.step, reason=str(exc) or repr(exc),
                                        error_type=type(exc).__name__)
            kind = Kind.COMPENSATION_FAILED
        await self._publish(ctx, result, kind)
        self._complete(key, [(tp, offset)])

    async def _publish(self, ctx: StepContext, result: Event, kind: Kind) -> None:
        """Side events, then the result, on the workflow's partition; returns once all are stored."""
        futures = []
        for event, event_kind in (*((e, Kind.OTHER) for e in ctx.emitted), (result, kind)):
            envelope = Envelope.new(type=event.type_name(), source=self.agent.source, workflow=ctx.workflow,
                                    workflow_id=ctx.workflow_id, kind=event_kind, step=ctx.step, cause=ctx.cause)
            futures.append(await self._producer.send(
                self.settings.events_topic, value=event.encode(), key=envelope.key, headers=envelope.headers()))
        await asyncio.gather(*futures)

    def _complete(self, key: str, offsets: Iterable[tuple[TopicPartition, int]]) -> None:
        self._remember(key)
        self._running.discard(key)
        for tp, offset in offsets:
            if (progress := self._progress.get(tp)) is not None:
                progress.unpin(offset)

    # bookkeeping -----------------------------------------------------------------------------

    def _remember(self, key: str) -> None:
        self._done[key] = None
        self._done.move_to_end(key)
        if len(self._done) > self._capacity:
            self._done.popitem(last=False)

    def _drop_join(self, workflow_id: str) -> None:
        for tp, offset, _, _ in self._joins.pop(workflow_id, {}).values():
            if (progress := self._progress.get(tp)) is not None:
                progress.unpin(offset)

    async def _commit(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending)
            self._pending.clear()
        offsets = {tp: p.committable() for tp, p in self._progress.items() if p.committable() != p.committed}
        if offsets:
            await self._consumer.commit(offsets)
            for tp, offset in offsets.items():
                self._progress[tp].committed = offset

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        start: dict[TopicPartition, int] = {}
        ends = await self._kafka.end_offsets(assigned)
        for tp in assigned:
            committed = await self._consumer.committed(tp)
            if committed is None:
                # A new agent starts from now. The true end, not auto_offset_reset=latest, which
                # lands inside the last batch on Tansu. Committed at once so a restart resumes here.
                position = ends[tp]
                self._consumer.seek(tp, position)
                await self._consumer.commit({tp: position})
            else:
                position = committed
            self._progress[tp] = PartitionProgress(position)
            start[tp] = max(0, position - self._lookback)
        if start:
            async for record in self._kafka.read(start, start=start, until=ends):
                headers = dict(record.headers)
                if headers.get("ce_source") == self._source:
                    suffix = _RESULT_KINDS.get(headers.get("ce_kind", b""))
                    if suffix is not None and record.key:
                        self._remember(record.key.decode() + suffix)
        log.info("%s assigned partitions %s", self.agent.name, sorted(tp.partition for tp in assigned))
        self._assigned.set()

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self._commit()
        for tp in revoked:
            self._progress.pop(tp, None)
        self._joins = {wf: j for wf, j in self._joins.items()
                       if not any(tp in revoked for tp, _, _, _ in j.values())}


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: AgentRuntime) -> None:
        self._runtime = runtime

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runtime._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._runtime._on_assigned(assigned)
