"""Runs one Agent: consume the workflow events, run handlers concurrently, emit results.

Delivery is at-least-once; effects are once per workflow. The agent's own results in the log are its
tracking records: each carries the workflow id, so on (re)assignment the runtime reads its recent
outputs back and a redelivered or duplicated input is a no-op. Offsets are committed only up to the
oldest record whose work is still pending (in flight or waiting for the rest of a join); a failed
attempt's record releases its inputs, and its retry waits on a timer (see _attempts). Partition
set-up (_takeover), revocation and commits follow the group-member rule (transport/_member.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import AgentDefinitionError, DecodeError
from ..events._avro import SchemaStore
from ..events._envelope import COORDINATOR_SOURCE, Envelope, Kind, text_of
from ..events._models import CompensationRequested, Event
from ..security._identity import Identity
from ..telemetry._metrics import AgentMetrics, service_meter
from ..telemetry._tracing import tracing
from ..transport._clock import SYSTEM_CLOCK, Clock
from ..transport._deadletter import DeadLetters
from ..transport._kafka import Kafka
from ..transport._lifecycle import ServiceBase
from ..transport._member import GroupMember
from ..transport._offsets import PartitionProgress
from ..transport._port import Record, TopicPartition, Transport
from ..transport._registry import announce, framework_store
from ..transport._restore import MARKER_TYPES, on_marker
from ..transport._settings import Settings
from ..transport._trust import Trust
from ._acks import Acks
from ._agent import Agent
from ._attempts import Attempt, Attempts
from ._breaker import CircuitBreaker
from ._decoding import Decoding
from ._gate import Gate
from ._handlers import Runner
from ._health import Health
from ._joins import Input, Joins
from ._presence import Presence
from ._provenance import COMPLETED, GOAL, Provenance
from ._results import Results
from ._takeover import Takeover
from ._tracking import COMPENSATION, Done

log = logging.getLogger("choreograph.agent")

_REQUEST_TYPE = CompensationRequested.type_name().encode()
_RESULT_KINDS = {b"step_completed": "", b"step_failed": "",
                 b"compensation_completed": COMPENSATION, b"compensation_failed": COMPENSATION}
_OUTCOME = Kind.OUTCOME.value.encode()
_TIMED_OUT = Kind.STEP_TIMED_OUT.value.encode()
_COORDINATOR = COORDINATOR_SOURCE.encode()


class AgentRuntime(ServiceBase):
    """The process-level runner of one Agent: `async with AgentRuntime(agent, settings) as rt: ...`.

    Args:
        agent: The agent to run.
        settings: Broker, namespace and topics.
        transport: The broker port; Kafka (aiokafka) unless given, e.g. the memory log of the test kit.
        max_concurrency: Handler runs at once.
        dedupe_lookback: Records per partition read back on assignment to learn past results (and
            pending retries).
        dedupe_capacity: Tracking keys kept in memory.
        commit_interval_s: Period of commits.
        ready_file: Written once the agent is ready (`choreo up` waits for it).
        clock: Time for retry timers, heartbeats, the breaker and presence; the wall clock unless given.
        presence_interval_s: Period of the instance's AgentPresence records on the status topic.
        trust: What it signs with and believes (see transport.Trust); the environment's when None.

    Attributes:
        instance: This instance's id on the status topic (`host-pid-xxxx`), once started.
    """

    def __init__(self, agent: Agent, settings: Settings, *, transport: Transport | None = None,
                 max_concurrency: int = 64, dedupe_lookback: int = 10_000, dedupe_capacity: int = 200_000,
                 commit_interval_s: float = 0.25, ready_file: Path | None = None, clock: Clock | None = None,
                 presence_interval_s: float = 5.0, trust: Trust | None = None) -> None:
        if agent.handler_fn is None:
            raise AgentDefinitionError(f"{agent.name}: no @agent.handler")
        self.agent = agent
        self._clock: Clock = clock or SYSTEM_CLOCK
        self.contract = agent.contract()
        # The broker's metrics and logs name the agent by its clients' id.
        self.settings = settings = replace(settings, client_id=f"choreo-{agent.name}")
        self._kafka: Transport = transport if transport is not None else Kafka(settings)
        self._store: SchemaStore = framework_store()
        for event in (*agent.consumes, *(t for t in [agent.completes_with] if t)):
            self._store.add(event.avro)
        self._decoding = Decoding(agent.name, self._kafka, self._store)  # given a verifier in start()
        self._source = agent.source.encode()
        self._step = agent.step.encode()
        self._completes = self.contract.completes_with.name.encode()  # the type of its own completions
        self._consumed = {t.type_name().encode(): t for t in agent.consumes}
        self._lookback = dedupe_lookback
        self._ready_file = ready_file
        self._acks = Acks()
        self._topic = settings.events_topic
        self._joins = Joins(len(self._consumed))
        self._done = Done(dedupe_capacity)  # tracking keys of results in the log
        self._ended = Done(dedupe_capacity)  # workflows with an outcome: a late input opens no join
        self._max_concurrency = max_concurrency
        self._presence_ms = round(presence_interval_s * 1000)
        self._fatal: BaseException | None = None
        self._stopping = asyncio.Event()
        self._member = GroupMember[PartitionProgress](
            self._kafka, settings.agent_group(agent.workflow, agent.step), [settings.events_topic],
            set_up=lambda consumer, assigned: self._takeover.set_up(consumer, assigned), progress=lambda p: p,
            release=self._release, on_ready=lambda parts: self._takeover.on_ready(parts),
            commit_interval_s=commit_interval_s, auto_offset_reset="latest")
        self._health = Health(agent.name, CircuitBreaker(agent.breaker) if agent.breaker is not None else None,
                              self._member, self._clock)
        self._tasks: set[asyncio.Task[None]] = set()  # the runner's: every task of this agent
        # Tracking keys with work under way (an attempt queued, running, publishing, or waiting to retry).
        self._running: dict[str, Attempt] = {}
        self._trust = trust
        self._gate = Gate(None, agent.name)
        meter = service_meter()  # None: metrics are off, and nothing below counts
        self._metrics = None if meter is None else AgentMetrics(
            meter, workflow=agent.workflow, step=agent.step, group=self._member.group_id, topic=self._topic)
        # Clients belong to the running loop, so they are made in start().
        self._producer: Any
        self._results: Results
        self._runner: Runner
        self._attempts: Attempts
        self._takeover: Takeover
        self._presence: Presence
        self._provenance: Provenance
        self.instance = ""

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group, learn past results, announce the contract; then events are seen."""
        await self._kafka.ensure_topics()
        trust = (self._trust if self._trust is not None
                 else Trust.from_env(Identity.agent(self.agent.workflow, self.agent.step)))
        self._gate = Gate(trust.verifier, self.agent.name)
        raw = self._kafka.producer()
        if (metrics := self._metrics) is not None:
            raw = metrics.producer(raw)
        self._producer = trust.producer(raw)
        # Dead letters keep the failed record's own signature headers (a redrive is believed
        # again): they are sent unsigned.
        self._decoding = Decoding(self.agent.name, self._kafka, self._store, trust.verifier)
        self._decoding.metrics = metrics
        self._decoding.dead = DeadLetters(raw, self.settings.deadletter_topic, self.agent.name,
                                          self.settings.max_event_bytes)
        self._provenance = Provenance(self.agent.name, self.agent.workflow, self._consumed, self._decoding)
        traced = tracing()  # decided once: None (off) costs the hot path nothing
        self._results = Results(self._producer, self._topic, self.agent.source, self.settings.max_event_bytes,
                                self._acks, traced)
        health = self._health
        self._runner = health.runner = Runner(
            self.agent, self._results, self._clock, breaker=health.breaker, max_concurrency=self._max_concurrency,
            on_breaker=health.changed, metrics=metrics, tracing=traced, topic=self._topic,
            group=self.settings.agent_group(self.agent.workflow, self.agent.step))
        self._tasks = self._runner.tasks
        self._attempts = Attempts(self.agent.name, self.agent.step, self._runner, self._clock, self._done,
                                  self._ended, self._owned, self._store)
        self._running = self._attempts.running
        self._takeover = Takeover(
            self.agent, self._kafka, self._topic, self._lookback, completes=self._completes, consumed=self._consumed,
            store=self._store, done=self._done, ended=self._ended, believed=self._gate.believed,
            provenance=self._provenance, decoding=self._decoding, attempts=self._attempts)
        self._presence = health.presence = Presence(self._producer, self.settings.status_topic, self.agent,
                                                    self._clock, self._presence_ms, health.snapshot)
        self.instance = self._presence.instance
        await self._producer.start()
        await self._member.join()
        partitions = len(await self._producer.partitions_for(self.settings.events_topic))
        await announce(self._producer, self.settings.registry_topic, self.settings.events_topic, partitions,
                       self.contract, self.agent.source)
        self._runner.background(self._presence.run(), "presence")
        if metrics is not None:
            metrics.watch_lag(self._member.lags, asyncio.get_running_loop())
            metrics.watch_runs(self._runner.runs, self._max_concurrency)
        if self._ready_file is not None:
            self._ready_file.write_text(self.agent.name)
        log.info("%s ready (%s): %r", self.agent.name, self.instance, self.agent)

    async def stop(self) -> None:
        """Finish running handlers, commit, say it is leaving, leave the group."""
        self._stopping.set()
        try:
            await self._drain()
            await self._commit()
        finally:
            # Handlers still running after the drain's wait are abandoned as an exit would: their
            # inputs stay uncommitted, so the next owner runs them again. Retries wait in the log.
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._runner.runs.clear()  # a run cancelled before it started has not given its slot back
            try:
                await asyncio.wait_for(self._presence.leaving(), 5)
            except Exception as exc:  # leaving quietly is fine: silence says the same, later
                log.warning("%s: last presence record not sent: %r", self.agent.name, exc)
            await self._member.leave()
            await self._producer.stop()
            await self._decoding.stop()
            if self._metrics is not None:
                self._metrics.close()

    async def run(self) -> None:
        """Consume until stop() is called or a result cannot be published (then raise)."""
        member, runner, health, metrics = self._member, self._runner, self._health, self._metrics
        while not self._stopping.is_set():
            async with member.batch(timeout_ms=100, max_records=1000) as batch:
                self._provenance.batch += 1  # a registry read from now on knows every producer in it
                for tp, progress, records in batch:
                    if metrics is not None:
                        metrics.consumed(tp.partition, len(records))
                    for record in records:
                        if (unfinished := self._on_record(progress, record)) is not None:
                            await unfinished
                if health.breaker is not None or runner.limiter is not None:
                    health.flow()
            self._settle_acks()
            if (fatal := self._fatal or runner.fatal) is not None:
                raise fatal
            # Commits are periodic, not per batch: tracking records make redelivery harmless, so
            # a commit only bounds how much a restart re-reads.
            if member.commit_due():
                await self._commit()

    # per record ------------------------------------------------------------------------------

    # One flat function on purpose: it runs for every record of the topic, most of which are skipped
    # after one pass over the headers; splitting it adds calls to that path (a relay is ~90 us/event).
    def _on_record(  # noqa: C901
            self, progress: PartitionProgress, record: Record) -> Coroutine[Any, Any, None] | None:
        """Handle one record synchronously where possible (nearly always).

        Returns:
            None, or the coroutine that finishes the job (a schema to learn, a record to
            dead-letter, a full handler pool).
        """
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
        gate = self._gate
        if source == self._source:
            self._learn(record, kind, event_type)
            return None
        if event_type in MARKER_TYPES:
            if not gate.believed(record):
                return None
            on_marker(progress, event_type, record.value, record.offset, source)
            return None  # a marker, or one from anyone but a restore: skipped (the coordinator dead-letters it)
        if progress.history_until is not None and progress.is_history(record.timestamp):
            return None  # restored from an archive: history, not work (its results follow it)
        if kind == _OUTCOME:
            if not gate.believed(record):
                return None
            if (workflow_id := text_of(record.key)) is not None:
                self._ended.add(workflow_id)
                if self._joins:
                    self._joins.drop(workflow_id)
                if self._running:
                    self._attempts.on_outcome(workflow_id)
            return None
        if kind == _TIMED_OUT:
            if step == self._step and source == _COORDINATOR and self._running and gate.believed(record):
                self._attempts.on_timed_out(record)
            return None
        if event_type == _REQUEST_TYPE:
            if step != self._step or self.agent.compensation_fn is None:
                return None
            if (workflow_id := text_of(record.key)) is None:
                return None
            key = workflow_id + COMPENSATION
            if key in self._done or key in self._running:
                return None
            return self._on_request(progress, record, workflow_id, key)
        model = self._consumed.get(event_type)
        if model is None:
            return None
        try:
            workflow_id = record.key.decode()  # type: ignore[union-attr]  # None: caught below
        except (AttributeError, UnicodeDecodeError):
            return None  # no workflow id: not a workflow event (the coordinator dead-letters it)
        if not workflow_id:
            return None
        if workflow_id in self._done or workflow_id in self._running or workflow_id in self._ended:
            return None
        # A goal of a goal type, or a completion by a step that completes with the type (runtime._provenance).
        producers = self._provenance.producers[event_type]
        if not (step in producers if kind == COMPLETED else kind == GOAL and not producers):
            return self._provenance.unproven(
                record, event_type, lambda: self._take_input(progress, record, model, workflow_id, event_type))
        try:
            event = model.decode(record.value or b"", self._store)
            envelope = Envelope.from_record(record.key, record.headers)
        except DecodeError:
            return self._take_input(progress, record, model, workflow_id, event_type)
        if envelope.workflow != self.agent.workflow or gate.refusal(record, envelope) is not None:
            return None  # another workflow's (a type both consume), or refused
        return self._on_input(workflow_id, event_type, Input(progress, record.offset, event, envelope))

    def _learn(self, record: Record, kind: bytes | None, event_type: bytes) -> None:
        """Remember one of this agent's own believed results (a completion only of its own type).

        Checked only when it would teach something: a result this process published is in `_done`
        already when it is read back (checking every one cost the relay a second verify per event).
        """
        suffix = _RESULT_KINDS.get(kind or b"")
        if suffix is not None and (kind != COMPLETED or event_type == self._completes) and (
                workflow_id := text_of(record.key)) is not None:
            key = workflow_id + suffix
            if key not in self._done and self._gate.believed(record):
                self._done.add(key)

    def _on_input(self, workflow_id: str, event_type: bytes, item: Input) -> Coroutine[Any, Any, None] | None:
        inputs = self._joins.add(workflow_id, event_type, item)
        if inputs is None:
            return None
        return self._attempts.start(
            Attempt(workflow_id, workflow_id, 1, inputs, item.envelope, item.partition, pinned=True))

    async def _on_request(self, progress: PartitionProgress, record: Record, workflow_id: str, key: str) -> None:
        decoded = await self._decoding.decode(record, CompensationRequested)
        if decoded is not None and self._gate.refusal(record, decoded[1]) is None:
            item = Input(progress, record.offset, *decoded)
            progress.pin(record.offset)
            attempt = Attempt(key, workflow_id, 1, {_REQUEST_TYPE: item}, item.envelope, item.partition, pinned=True)
            if (waiting := self._attempts.start(attempt)) is not None:
                await waiting

    async def _take_input(self, progress: PartitionProgress, record: Record, model: type[Event], workflow_id: str,
                          event_type: bytes) -> None:
        """The event path's slow way: decode (maybe learning a newer schema first), check, take as an input."""
        decoded = await self._decoding.decode(record, model)
        if decoded is not None and decoded[1].workflow == self.agent.workflow and self._gate.believed(record):
            item = Input(progress, record.offset, *decoded)
            if (waiting := self._on_input(workflow_id, event_type, item)) is not None:
                await waiting

    def _settle_acks(self) -> None:
        """Finish the steps whose records the broker has acknowledged, oldest first."""
        for pending, error in self._acks.settled():
            if error is not None:
                self._fatal = self._fatal or error
                continue
            self._attempts.settle(pending)

    def _owned(self, partition: int) -> bool:
        return TopicPartition(self._topic, partition) in self._member.partitions

    # partitions (set up and made ready by runtime._takeover) -----------------------------------

    async def _release(self, gone: dict[TopicPartition, PartitionProgress]) -> None:
        """Before revoked partitions are committed: let their running steps finish, drop their timers."""
        await self._drain()
        numbers = {tp.partition for tp in gone}
        self._joins.drop_partitions(numbers)
        self._attempts.drop_partitions(numbers)

    async def _drain(self) -> None:
        """Let running handlers finish and their results be stored, so a commit covers them."""
        if self._runner.runs:
            await asyncio.wait(self._runner.runs, timeout=10)
        await self._producer.flush()
        self._settle_acks()

    async def _commit(self) -> None:
        if pending := self._decoding.pending:
            await asyncio.gather(*pending)
            pending.clear()
        await self._member.commit()
