"""The saga coordinator service: folds every workflow event with `saga.handle`, publishes decisions.

Decisions are the graph fixed at start, timeouts, compensation requests and the outcome. It never
calls an agent, and never tells one to do forward work: retries are the agents' (their failed
attempts are in the log), deadlines the coordinator's (StepTimedOut). What it writes, decisions and
dead letters, goes out through runtime._coordinator_outbox.

Its state is the log. The commit position of a partition never passes the goal of a saga that is
still open, so after kill -9 a new instance re-reads every open saga from its goal. While it re-reads
up to the end it only folds (its own earlier decisions are in the log too); then it settles each
saga and publishes whatever is still owed. Decision ids are deterministic, so a re-publish is a no-op.

Deadlines are a function of the log too: facts carry their records' timestamps, and between
records the service loop feeds clock facts (saga.tick) to the sagas whose next deadline has passed
on its clock (runtime._coordinator_state). A workflow that ended other than completed is kept
(bounded) so a late result still gets its compensation request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import DecodeError
from ..events._envelope import (
    COORDINATOR_SOURCE,
    RESTORE_SOURCE,
    Envelope,
    Kind,
)
from ..events._models import OutcomeStatus, StepContract
from ..saga._decide import Decision, Fact, SagaState, decision_id, evolve, handle, settle, tick
from ..saga._timers import expire, timed
from ..security._identity import COORDINATOR, Identity
from ..security._verify import Rejected
from ..telemetry._metrics import CoordinatorMetrics, service_meter
from ..telemetry._tracing import Tracing, now_ns, tracing
from ..transport._clock import SYSTEM_CLOCK, Clock
from ..transport._deadletter import DeadLetters
from ..transport._kafka import Kafka
from ..transport._lifecycle import ServiceBase
from ..transport._logs import LogContext, enter, leave
from ..transport._member import GroupMember
from ..transport._port import Consumer, Producer, Record, TopicPartition, Transport
from ..transport._presence import LivenessWatch, waiting_steps
from ..transport._registry import Registry
from ..transport._restore import MARKER_TYPES, on_marker
from ..transport._settings import Settings
from ..transport._trust import Trust
from ._admission import read_fact, refusal_of
from ._coordinator_outbox import Outbox
from ._coordinator_state import Partition, look_back, note_goal
from ._gate import Gate
from ._tracking import Done

log = logging.getLogger("choreograph.coordinator")
LIVENESS_CHECK_MS = 5_000  # how often it looks for steps nobody serves (a status-topic read)
_CONTRACT_TYPE = StepContract.type_name()
_GOAL, _OUTCOME = Kind.GOAL.value.encode(), Kind.OUTCOME.value.encode()


class Coordinator(ServiceBase):
    """The saga coordinator: `async with Coordinator(settings) as c: await c.run()`.

    Args:
        settings: Broker, namespace and topics.
        transport: The broker port; Kafka (aiokafka) unless given, e.g. the memory log of the test kit.
        ready_file: Written once the coordinator is ready (`choreo up` waits for it).
        finished_capacity: Finished workflow ids kept to ignore their late events and to refuse a
            goal that reuses one.
        finished_lookback: Records per partition read back before its position on assignment, to
            learn which workflows finished there (a duplicate goal after a restart is refused if its
            original's outcome is within this many records; a late result of a workflow that ended
            other than completed is compensated if its outcome is).
        ended_capacity: Workflows per partition that ended other than completed, kept to compensate
            their late results.

    Attributes:
        ignored: How many events were ignored, by reason: "no goal" (a workflow whose goal it has not
            read: forged, misrouted, or finished before its position) and "finished" (events after
            an outcome; but a late result of a workflow that ended other than completed is folded,
            and compensated).
        commit_interval_s: Period of commits.
        observe: `observe(partition, offset, state)` sees the saga state after each event is
            handled: what `choreo state --at` must reproduce (tests compare the two).
        clock: The time its deadline timers read; the wall clock unless given. Between records, a
            saga's deadline passes when this clock says so; a record's timestamp also says time has
            come that far.
        trust: What it signs with and believes (see transport.Trust); the environment's when None.
    """

    def __init__(self, settings: Settings, *, transport: Transport | None = None, ready_file: Path | None = None,
                 finished_capacity: int = 100_000, finished_lookback: int = 10_000, commit_interval_s: float = 0.25,
                 observe: Callable[[int, int, SagaState], None] | None = None,
                 clock: Clock | None = None, ended_capacity: int = 10_000, trust: Trust | None = None) -> None:
        # The broker's metrics and logs name the coordinator by its clients' id.
        self.settings = settings = replace(settings, client_id="choreo-coordinator")
        self._clock: Clock = clock or SYSTEM_CLOCK
        self._kafka: Transport = transport if transport is not None else Kafka(settings)
        self._registry = Registry(self._kafka)
        # Clients belong to the running loop, so they are made in start().
        self._producer: Producer
        self._outbox: Outbox
        self._finished = Done(finished_capacity)  # workflow id -> its goal's event id
        self._lookback = finished_lookback
        self._ended_capacity = ended_capacity
        self.ignored: Counter[str] = Counter()
        self._ready_file = ready_file
        self._observe = observe
        self._registry_current = False  # caught up with the registry since this batch was fetched
        self._stopping = asyncio.Event()
        self._liveness = LivenessWatch(self._kafka, self._clock)
        self._liveness_due = 0
        self._trust = trust
        self._gate = Gate(None, "coordinator")
        meter = service_meter()  # None: metrics are off, and nothing below counts
        self._metrics = None if meter is None else CoordinatorMetrics(meter, settings.coordinator_group,
                                                                      settings.events_topic)
        self._tracing: Tracing | None = None  # decided in start()
        self._member = GroupMember[Partition](
            self._kafka, settings.coordinator_group, [settings.events_topic], set_up=self._set_up,
            progress=lambda part: part.progress, on_ready=self._on_ready, commit_interval_s=commit_interval_s,
            auto_offset_reset="earliest")

    async def start(self) -> None:
        """Learn the registry, join the group; returns once the first partitions are set up."""
        await self._kafka.ensure_topics()
        raw = self._kafka.producer()
        if self._metrics is not None:
            raw = self._metrics.producer(raw)
        trust = self._trust if self._trust is not None else Trust.from_env(COORDINATOR)
        self._producer = trust.producer(raw)
        self._gate = Gate(trust.verifier, "coordinator")
        self._registry.verifier = trust.verifier
        self._tracing = tracing()
        dead = DeadLetters(raw, self.settings.deadletter_topic, self.settings.coordinator_group,
                           self.settings.max_event_bytes)  # unsigned: a dead letter keeps its record's signature
        self._outbox = Outbox(self._producer, dead, self.settings.events_topic, self.settings.coordinator_group,
                              self._tracing, self._metrics)
        await self._producer.start()
        await self._registry.start()
        await self._registry.catch_up()
        await self._member.join()
        await self._liveness.start()
        if self._metrics is not None:
            self._metrics.watch_lag(self._member.lags, asyncio.get_running_loop())
        if self._ready_file is not None:
            self._ready_file.write_text("coordinator")
        log.info("coordinator ready on %s", self.settings.events_topic)

    async def stop(self) -> None:
        """Commit what was handled and leave the group."""
        self._stopping.set()
        try:
            await self._commit()
        finally:
            await self._member.leave()
            await self._liveness.stop()
            await self._registry.stop()
            await self._producer.stop()
            if self._metrics is not None:
                self._metrics.close()

    async def run(self) -> None:
        """Fold every event and publish decisions until stop() is requested."""
        member, metrics = self._member, self._metrics
        while not self._stopping.is_set():
            async with member.batch(timeout_ms=100, max_records=1000) as batch:
                self._registry_current = False
                for tp, part, records in batch:
                    if metrics is not None:
                        metrics.consumed(tp.partition, len(records))
                    was_replaying = part.replaying
                    for record in records:
                        await self._on_record(part, record)
                    if was_replaying and not part.replaying:
                        await self._settle_all(part)
                await self._fire_timers()
            if self._clock.now_ms() >= self._liveness_due:
                await self._check_liveness()
            if member.commit_due():  # periodic: a commit only bounds how much a restart re-reads
                await self._commit()

    async def _on_contract(self, record: Record, history: bool, signer: Identity | None) -> None:
        """An agent's announcement, in order with goals (a restored one never replaces a live one).

        Another step's contract (or tombstone) under the signer's own headers is dead-lettered.
        """
        why = self._registry.apply(record.value, keep_existing=history, key=record.key, announcer=signer)
        if why is not None and not history:
            await self._outbox.dead_letter(record, why, "contract")

    async def _on_record(self, part: Partition, record: Record) -> None:
        progress = part.progress
        progress.seen(record.offset)
        history = progress.is_history(record.timestamp)
        try:
            envelope = Envelope.from_record(record.key, record.headers)
        except DecodeError as exc:
            if not history:  # restored: dead-lettered when it was first read, and restored with the rest
                await self._outbox.dead_letter(record, str(exc), "unreadable")
            return
        # Whatever is logged while the record is handled names its workflow (reset after: the
        # loop's next record, its timers and its commits are not this workflow's).
        context = enter(LogContext("coordinator", envelope))
        try:
            await self._on_envelope(part, record, envelope, history)
        finally:
            leave(context)

    async def _on_envelope(self, part: Partition, record: Record, envelope: Envelope, history: bool) -> None:
        progress = part.progress
        try:
            if isinstance(signer := self._gate.check(record, envelope), Rejected):
                if not history:  # forged, unsigned or by a party not allowed to say it: never folded
                    await self._outbox.dead_letter(record, signer, "untrusted")
                return
            if envelope.type == _CONTRACT_TYPE:
                return await self._on_contract(record, history, signer)
            if (marker := envelope.type.encode()) in MARKER_TYPES:
                if not on_marker(progress, marker, record.value, record.offset, envelope.source.encode()):
                    raise DecodeError(f"a restore marker not from {RESTORE_SOURCE}, or unreadable")
                return
            fact = await read_fact(envelope, record, self._registry, signer)
        except DecodeError as exc:
            if not history:  # restored: dead-lettered when it was first read, and restored with the rest
                await self._outbox.dead_letter(record, str(exc), "unreadable")
            return
        if history and envelope.workflow_id in self._finished:
            return  # restored history of a workflow that finished here since
        state = part.sagas.get(envelope.workflow_id) or part.ended.get(envelope.workflow_id)
        if not history:
            refusal = refusal_of(part, self._finished, self.ignored, state, envelope, fact)
            if refusal:
                await self._outbox.dead_letter(record, refusal, "refused")
            if refusal is not None:
                return
        await self._fold(part, state or SagaState(envelope.workflow_id), envelope, fact, record, history)

    async def _fold(self, part: Partition, state: SagaState, envelope: Envelope, fact: Fact, record: Record,
                    history: bool) -> None:
        workflow_id = envelope.workflow_id
        decisions: list[Decision] = []
        started_ns = 0
        if history:
            # Restored from an archive: its decisions are in the log already; fold, never act.
            # An open one stays dormant until a new event about it arrives.
            state = evolve(state, fact)
            part.dormant.add(workflow_id)
        elif part.replaying:
            if fact.time_ms > state.now_ms and timed(state):
                # Deadlines this record shows passed: decided before it, as handle() would.
                state, owed = expire(state, fact.time_ms)
                part.owed.update((decision_id(workflow_id, d), (workflow_id, d)) for d in owed)
            state = evolve(state, fact)
            if part.owed and envelope.source == COORDINATOR_SOURCE:
                part.owed.pop(envelope.id, None)  # taken before the restart: in the log
            if state.finished:
                part.touched.add(workflow_id)
        else:
            part.dormant.discard(workflow_id)
            started_ns = now_ns() if self._tracing is not None else 0
            if fact.kind is Kind.GOAL and ((graph := self._registry.catalog.get(fact.workflow)) is None
                                           or graph.refused is not None):
                await self._catch_up_registry()  # maybe announced, fixed or removed since
            state, decisions = handle(state, fact, self._registry.catalog)
            if self._metrics is not None:
                self._metrics.folded(fact)
        note_goal(part, envelope, fact.kind, record.offset, history)
        if decisions:
            await self._outbox.decide(part, state, envelope, record, decisions, started_ns)
        if not history:
            part.timers.note(state, envelope)
        self._keep(part, state)
        if self._observe is not None:
            self._observe(record.partition, record.offset, state)

    async def _settle_all(self, part: Partition) -> None:
        """After the silent replay: publish what each open saga, and each ended one, is still owed."""
        if part.sagas or part.touched:
            await self._catch_up_registry()
        owed, part.owed = part.owed, {}
        for workflow_id, decision in owed.values():
            if (state := part.sagas.get(workflow_id)) is not None and workflow_id not in part.dormant:
                await self._outbox.publish(part, state, decision, None)
        for state in [*part.sagas.values(), *(part.ended[w] for w in sorted(part.touched) if w in part.ended)]:
            if state.workflow_id in part.dormant:
                continue
            state, decisions = settle(state, self._registry.catalog)
            for decision in decisions:
                await self._outbox.publish(part, state, decision, None)
            self._keep(part, state)
        part.touched.clear()

    async def _check_liveness(self) -> None:
        """Log, once per step, a step that open sagas wait for and that no live agent serves."""
        self._liveness_due = self._clock.now_ms() + LIVENESS_CHECK_MS
        await self._liveness.refresh()
        self._liveness.missing(waiting_steps(
            state for part in self._member.partitions.values() for state in part.sagas.values()
            if state.workflow_id not in part.dormant))

    async def _fire_timers(self) -> None:
        """Feed the clock to each saga whose next deadline has passed, and publish what that decides.

        Deadline by deadline, each decision caused by the last event the saga folded: a replay of
        the log takes them at the same point (saga._ticks.Ticks). Never during a silent replay.
        """
        now = self._clock.now_ms()
        for part in list(self._member.partitions.values()):
            if part.replaying or not part.timers.ready(now):
                continue
            for when, workflow_id in part.timers.passed(now):
                state = part.sagas.get(workflow_id)
                if state is None or workflow_id in part.dormant:
                    continue
                state, decisions = tick(state, when, self._registry.catalog)
                cause = part.timers.last.get(workflow_id)
                for decision in decisions:
                    await self._outbox.publish(part, state, decision, cause)
                self._keep(part, state)

    async def _catch_up_registry(self) -> None:
        """Read the registry to its end (once per batch).

        Markers on the events topic keep the catalog current as partitions are read; this is for a
        goal of a workflow no marker has named yet, and for settling after a silent replay.
        """
        if not self._registry_current:
            await self._registry.catch_up()
            self._registry_current = True

    def _keep(self, part: Partition, state: SagaState) -> None:
        workflow_id = state.workflow_id
        if not state.finished:
            part.sagas[workflow_id] = state
            if workflow_id not in part.dormant:
                part.timers.schedule(state)
            return
        first = part.sagas.pop(workflow_id, None) is not None or workflow_id not in self._finished
        part.timers.drop(workflow_id)
        if (offset := part.goal_offsets.pop(workflow_id, None)) is not None:
            part.progress.unpin(offset)
        if first:  # not a late result of an ended saga: that keeps its goal's id
            self._finished.add(workflow_id, part.goal_ids.pop(workflow_id, None))
        if state.outcome is not OutcomeStatus.COMPLETED:
            part.ended.keep(state)

    async def _commit(self) -> None:
        await self._outbox.flush()
        await self._member.commit()

    async def _set_up(self, consumer: Consumer, assigned: set[TopicPartition]) -> dict[
            TopicPartition, tuple[int, Partition]]:
        """Set up newly assigned partitions before any of their records is handled.

        Each one's position is its committed offset (else its start), and its silent replay runs to
        the true end: the sagas open there are rebuilt from the log before anything is decided.
        """
        ends = await self._kafka.end_offsets(assigned)
        states: dict[TopicPartition, tuple[int, Partition]] = {}
        start: dict[TopicPartition, tuple[int, int]] = {}
        goals: dict[bytes, bytes | None] = {}
        for tp in assigned:
            committed = await consumer.committed(tp)
            position = committed if committed is not None else await consumer.position(tp)
            states[tp] = (position, Partition(position, ends[tp], tp.partition, self._ended_capacity))
            if position > 0 and self._lookback > 0:
                start[tp] = (max(0, position - self._lookback), position)
        if start:
            async for record in self._kafka.read(start, start={tp: a for tp, (a, _) in start.items()},
                                                 until={tp: b for tp, (_, b) in start.items()}):
                look_back(record, states, goals, self._finished, self._registry.store, self._gate.believed)
        return states

    async def _on_ready(self, parts: dict[TopicPartition, Partition]) -> None:
        for part in parts.values():
            if not part.replaying:
                await self._settle_all(part)
