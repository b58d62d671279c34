"""Runs one Agent: consume the workflow events, run handlers concurrently, emit results.

Delivery is at-least-once; effects are once per workflow. The agent's own results in the log are its
tracking records: each carries the workflow id, so on (re)assignment the runtime reads its recent
outputs back and a redelivered or duplicated input is a no-op. Offsets are committed only up to the
oldest record whose work is still pending (in flight or waiting for the rest of a join).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRecord,
    TopicPartition,
)

from ..errors import DecodeError, UnknownSchemaError
from ..events._avro import SchemaStore
from ..events._envelope import Envelope, Kind, derived_id, fixed_headers
from ..events._models import CompensationCompleted, CompensationFailed, CompensationRequested, Event, StepFailed
from ..transport._deadletter import DeadLetters
from ..transport._kafka import Kafka, Rebalance
from ..transport._lifecycle import ServiceBase
from ..transport._offsets import Cadence, PartitionProgress, commit_progress
from ..transport._registry import Registry, announce, framework_store
from ..transport._restore import MARKER_TYPES, on_marker
from ..transport._settings import Settings
from ._agent import Agent, StepContext
from ._eager import start_eagerly

log = logging.getLogger("choreograph.agent")

_COMPENSATION = "\x00compensation"
_REQUEST_TYPE = CompensationRequested.type_name().encode()
_RESULT_KINDS = {b"step_completed": "", b"step_failed": "",
                 b"compensation_completed": _COMPENSATION, b"compensation_failed": _COMPENSATION}
_Input = tuple[TopicPartition, int, Event, Envelope]


class AgentRuntime(ServiceBase):
    """The process-level runner of one Agent: `async with AgentRuntime(agent, settings) as rt: ...`."""

    def __init__(self, agent: Agent, settings: Settings, *, max_concurrency: int = 64,
                 dedupe_lookback: int = 10_000, dedupe_capacity: int = 200_000,
                 commit_interval_s: float = 0.25, ready_file: Path | None = None) -> None:
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
        self._commit_due = Cadence(commit_interval_s)
        self._progress: dict[TopicPartition, PartitionProgress] = {}
        self._fixed: dict[Kind, list[tuple[str, bytes]]] = {}
        self._unacked: deque[tuple[asyncio.Future[Any], str, list[tuple[TopicPartition, int]]]] = deque()
        self._topic = settings.events_topic
        self._joins: dict[str, dict[bytes, _Input]] = {}
        self._done: OrderedDict[str, None] = OrderedDict()
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_concurrency = max_concurrency
        self._slot_freed = asyncio.Event()
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
        self._consumer.subscribe([self.settings.events_topic], listener=Rebalance(self._on_assigned, self._on_revoked))
        await self._assigned.wait()  # set by the rebalance listener once partitions are ours
        partitions = len(await self._producer.partitions_for(self.settings.events_topic))
        await announce(self._producer, self.settings.registry_topic, self.settings.events_topic, partitions,
                       self.contract, self.agent.source)
        if self._ready_file is not None:
            self._ready_file.write_text(self.agent.name)
        log.info("%s ready: %r", self.agent.name, self.agent)

    async def stop(self) -> None:
        self._stopping.set()
        try:
            await self._drain()
            await self._commit()
        finally:
            await self._consumer.stop()
            await self._producer.stop()
            if self._registry is not None:
                await self._registry.stop()

    async def run(self) -> None:
        """Consume until stop() is called or a result cannot be published (then raise)."""
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=100, max_records=1000)
            for tp, records in batch.items():
                progress = self._progress.get(tp) or self._progress.setdefault(tp, PartitionProgress(records[0].offset))
                for record in records:
                    if (unfinished := self._on_record(tp, progress, record)) is not None:
                        await unfinished
            self._settle_acks()
            if self._fatal is not None:
                raise self._fatal
            # Commits are periodic, not per batch: tracking records make redelivery harmless, so
            # a commit only bounds how much a restart re-reads.
            if self._commit_due():
                await self._commit()

    # per record ------------------------------------------------------------------------------

    def _on_record(self, tp: TopicPartition, progress: PartitionProgress,
                   record: ConsumerRecord) -> Coroutine[Any, Any, None] | None:
        """Handle one record synchronously where possible (nearly always); else return the coroutine
        that finishes the job (a schema to learn, a record to dead-letter, a full handler pool)."""
        progress.next = record.offset + 1
        event_type = source = kind = step = None
        for name, value in record.headers:  # one pass, no dict: most records are skipped right here
            if name == "ce_type":
                event_type = value
            elif name == "ce_source":
                source = value
            elif name == "ce_kind":
                kind = value
            elif name == "ce_step":
                step = value
        if event_type is None:
            return None  # not an event; the coordinator dead-letters what nobody can read
        if source == self._source:
            suffix = _RESULT_KINDS.get(kind or b"")
            if suffix is not None and record.key:
                self._remember(record.key.decode() + suffix)
            return None
        if event_type in MARKER_TYPES:
            on_marker(progress, event_type, record.value, record.offset)
            return None
        if progress.history_until is not None and progress.is_history(record.timestamp):
            return None  # restored from an archive: history, not work (its results follow it)
        if kind == b"outcome":
            if self._joins and record.key:
                self._drop_join(record.key.decode())
            return None
        if event_type == _REQUEST_TYPE:
            if step != self._step or self.agent.compensation_fn is None:
                return None
            key = (record.key or b"").decode() + _COMPENSATION
            if key in self._done or key in self._running:
                return None
            return self._on_request(tp, progress, record, key)
        model = self._consumed.get(event_type)
        if model is None:
            return None
        workflow_id = record.key.decode() if record.key else ""
        if workflow_id in self._done or workflow_id in self._running:
            return None
        try:
            event, envelope = model.decode(record.value, self._store), Envelope.from_record(record.key, record.headers)
        except DecodeError:
            return self._on_undecodable(tp, progress, record, model, workflow_id, event_type)
        return self._on_input(tp, progress, record.offset, workflow_id, event_type, event, envelope)

    def _on_input(self, tp: TopicPartition, progress: PartitionProgress, offset: int, workflow_id: str,
                  event_type: bytes, event: Event, envelope: Envelope) -> Coroutine[Any, Any, None] | None:
        join = self._joins.setdefault(workflow_id, {})
        if event_type in join:
            return None  # a duplicate of an input we already hold
        progress.pin(offset)
        join[event_type] = (tp, offset, event, envelope)
        if len(join) < len(self._consumed):
            return None
        del self._joins[workflow_id]
        return self._start(workflow_id, self._run_step(workflow_id, join, envelope))

    async def _on_request(self, tp: TopicPartition, progress: PartitionProgress, record: ConsumerRecord,
                          key: str) -> None:
        decoded = await self._decode(record, CompensationRequested)
        if decoded is not None:
            progress.pin(record.offset)
            if (waiting := self._start(key, self._compensate(key, *decoded, tp, record.offset))) is not None:
                await waiting

    async def _on_undecodable(self, tp: TopicPartition, progress: PartitionProgress, record: ConsumerRecord,
                              model: type[Event], workflow_id: str, event_type: bytes) -> None:
        decoded = await self._decode(record, model)
        if decoded is not None:
            if (waiting := self._on_input(tp, progress, record.offset, workflow_id, event_type, *decoded)) is not None:
                await waiting

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

    def _start(self, key: str, work: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None] | None:
        """Run `work` now, or return a coroutine that does once a handler slot is free."""
        if len(self._tasks) < self._max_concurrency:
            self._spawn(key, work)
            return None
        return self._start_when_free(key, work)

    async def _start_when_free(self, key: str, work: Coroutine[Any, Any, None]) -> None:
        while len(self._tasks) >= self._max_concurrency:
            self._slot_freed.clear()
            await self._slot_freed.wait()
        self._spawn(key, work)

    def _spawn(self, key: str, work: Coroutine[Any, Any, None]) -> None:
        """Start a handler run eagerly: one that never suspends (the usual case) costs no Task."""
        self._running.add(key)
        try:
            task = start_eagerly(work)
        except BaseException as exc:  # _run_step catches handler errors; this is a publish failure
            self._fatal = self._fatal or exc
            return
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
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
        await self._publish(ctx, result, kind, workflow_id, [(tp, offset) for tp, offset, _, _ in inputs.values()])

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
        await self._publish(ctx, result, kind, key, [(tp, offset)])

    async def _publish(self, ctx: StepContext, result: Event, kind: Kind, key: str,
                       offsets: list[tuple[TopicPartition, int]]) -> None:
        """Side events, then the result, on the workflow's partition. The step counts as done (and
        its inputs may be committed past) only once the broker has the result; the handler's slot
        is free as soon as the result is handed to the producer."""
        future = None
        events = [*((e, Kind.OTHER) for e in ctx.emitted), (result, kind)]
        for index, (event, event_kind) in enumerate(events):
            # Deterministic ids: a result re-published after a crash, or re-produced by a sandbox
            # re-run (`choreo replay`), carries the id of the original.
            parts = (event_kind.value, ctx.step) if event_kind is not Kind.OTHER else (
                "other", ctx.step, kind.value, str(index))
            envelope = Envelope.new(type=event.type_name(), source=self.agent.source, workflow=ctx.workflow,
                                    workflow_id=ctx.workflow_id, kind=event_kind, step=ctx.step, cause=ctx.cause,
                                    id=derived_id(ctx.workflow_id, *parts))
            fixed = self._fixed.get(event_kind) or self._fixed.setdefault(
                event_kind, fixed_headers(self.agent.source, ctx.workflow, event_kind, ctx.step))
            # The input's partition is the workflow's (keyed by its id): naming it skips the
            # producer's pure-Python murmur2, about 5% of a relay's CPU.
            future = await self._producer.send(self._topic, value=event.encode(), key=envelope.key,
                                               headers=envelope.headers_with(fixed), partition=offsets[0][0].partition)
        assert future is not None
        # Records of one partition are acknowledged in order: the result's ack covers the side
        # events. Acks are collected by _settle_acks, not by a callback per record (~6% of a relay).
        self._unacked.append((future, key, offsets))

    def _settle_acks(self) -> None:
        """Finish the steps whose results the broker has acknowledged, oldest first."""
        unacked = self._unacked
        while unacked and unacked[0][0].done():
            future, key, offsets = unacked.popleft()
            if future.cancelled() or future.exception() is not None:
                if self._fatal is None:
                    self._fatal = future.exception() or asyncio.CancelledError()
                self._running.discard(key)
            else:
                self._complete(key, offsets)

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

    async def _drain(self) -> None:
        """Let running handlers finish and their results be stored, so a commit covers them."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self._producer.flush()
        self._settle_acks()

    async def _commit(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending)
            self._pending.clear()
        await commit_progress(self._consumer, self._progress)

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
        await self._drain()
        await self._commit()
        for tp in revoked:
            self._progress.pop(tp, None)
        self._joins = {wf: j for wf, j in self._joins.items()
                       if not any(tp in revoked for tp, _, _, _ in j.values())}

