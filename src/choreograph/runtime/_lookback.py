"""What an agent learns from its recent past in the log when it takes over partitions.

Its own results (a redelivered input is then a no-op), the workflows that ended, and the attempts
still pending: a StepAttemptFailed of its own, or a StepTimedOut from the coordinator, with no
result or outcome after it. The inputs of a pending attempt are read back by offset. An input
is only a record the agent would take as one (see runtime._provenance).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

from ..errors import DecodeError, UnknownSchemaError
from ..events._avro import SchemaStore
from ..events._envelope import COORDINATOR_SOURCE, Envelope, Kind, text_of
from ..events._faults import StepAttemptFailed, StepTimedOut
from ..events._models import CompensationRequested, Event
from ..transport._offsets import PartitionProgress
from ..transport._port import Record, TopicPartition, Transport
from ._attempts import Attempt
from ._joins import Input
from ._tracking import COMPENSATION, Done

log = logging.getLogger("choreograph.agent")


class Plan(NamedTuple):
    """A pending attempt found by a look-back: which, when, and where its inputs are."""

    key: str
    number: int
    due: int
    partition: int
    offsets: tuple[int, ...] | None  # None: the StepTimedOut does not say; the look-back's inputs do


_RESULTS = {b"step_completed": "", b"step_failed": "", b"compensation_completed": COMPENSATION,
            b"compensation_failed": COMPENSATION}
_ATTEMPT_FAILED = Kind.STEP_ATTEMPT_FAILED.value.encode()
_COMPLETED = Kind.STEP_COMPLETED.value.encode()
_TIMED_OUT = Kind.STEP_TIMED_OUT.value.encode()
_OUTCOME = Kind.OUTCOME.value.encode()
_COORDINATOR = COORDINATOR_SOURCE.encode()
_REQUEST = CompensationRequested.type_name().encode()


class LookBack:
    """Reads an agent's recent past on newly assigned partitions, in log order.

    It learns the agent's results (`done`), the workflows that ended (`ended`), and the attempts
    still pending: the latest failed attempt of each key with no result or outcome after it.

    Args:
        source: The agent's CloudEvents source.
        step: The agent's step.
        completes: The type it completes with: a step_completed of its own of another type is not one
            of its results (the coordinator dead-letters it).
        consumed: The types the handler consumes, by type name.
        compensable: Whether the agent has a compensation (then CompensationRequested is an input too).
        store: Schemas to decode the fault records and the inputs with.
        done: Tracking keys of results in the log (filled).
        ended: Workflows with an outcome (filled).
        believed: Whether a record is signed by a party allowed to say it: the agent's own records,
            outcomes and timeouts learned from are checked (runtime._gate).
        admits: Whether a record of a consumed type may be an input, by its type, ce_kind and ce_step
            (runtime._provenance).
    """

    def __init__(self, source: bytes, step: bytes, completes: bytes, consumed: Mapping[bytes, type[Event]],
                 store: SchemaStore, done: Done, ended: Done, *, compensable: bool,
                 believed: Callable[[Record], bool] = lambda record: True,
                 admits: Callable[[bytes, bytes | None, bytes | None], bool] = lambda *headers: True) -> None:
        self._believed, self._admits = believed, admits
        self._source, self._step, self._completes = source, step, completes
        self._models: dict[bytes, type[Event]] = dict(consumed)
        if compensable:
            self._models[_REQUEST] = CompensationRequested
        self._request = _REQUEST if compensable else None
        self._consumed = set(consumed)
        self._store, self._done, self._ended = store, done, ended
        self._plans: dict[str, Plan] = {}
        self._inputs: dict[str, dict[bytes, int]] = {}  # inputs seen per workflow id: type -> first offset

    def see(self, record: Record) -> None:
        """Learn from one record."""
        headers = dict(record.headers)  # at set-up only: clarity over the hot path's single pass
        source, kind, event_type, step = (headers.get(n) for n in ("ce_source", "ce_kind", "ce_type", "ce_step"))
        if (workflow_id := text_of(record.key)) is None:
            return
        if source == self._source:
            if self._believed(record):
                self._own(record, workflow_id, kind, event_type)
        elif kind == _OUTCOME:
            if not self._believed(record):
                return
            self._ended.add(workflow_id)
            self._plans.pop(workflow_id, None)
            self._plans.pop(workflow_id + COMPENSATION, None)
        elif kind == _TIMED_OUT:
            if step == self._step and source == _COORDINATOR and self._believed(record):
                self._timed_out(record, workflow_id)
        elif event_type is None:
            return
        elif event_type in self._consumed:
            if self._admits(event_type, kind, step):
                self._inputs.setdefault(workflow_id, {}).setdefault(event_type, record.offset)
        elif event_type == self._request and step == self._step:
            self._inputs.setdefault(workflow_id + COMPENSATION, {}).setdefault(event_type, record.offset)

    def _own(self, record: Record, workflow_id: str, kind: bytes | None, event_type: bytes | None) -> None:
        """One of the agent's own records: a result (a completion only of its own type), or a failed attempt."""
        if (suffix := _RESULTS.get(kind or b"")) is not None:
            if kind == _COMPLETED and event_type != self._completes:
                return
            self._done.add(workflow_id + suffix)
            self._plans.pop(workflow_id + suffix, None)
        elif kind == _ATTEMPT_FAILED and isinstance(failed := self._decode(record, StepAttemptFailed),
                                                     StepAttemptFailed):
            key = workflow_id + (COMPENSATION if failed.compensation else "")
            self._plan(Plan(key, failed.attempt + 1, failed.next_attempt_at, record.partition,
                            tuple(failed.input_offsets)))

    def _timed_out(self, record: Record, workflow_id: str) -> None:
        """The coordinator's StepTimedOut for the step: a failed attempt, and maybe the step's end."""
        if not isinstance(timed_out := self._decode(record, StepTimedOut), StepTimedOut):
            return
        if timed_out.next_attempt_at is None:  # attempts exhausted: the step failed
            self._done.add(workflow_id)
            self._plans.pop(workflow_id, None)
        else:
            self._plan(Plan(workflow_id, timed_out.attempt + 1, timed_out.next_attempt_at, record.partition, None))

    def _plan(self, plan: Plan) -> None:
        """Keep the first record of each attempt (an agent's failure and a timeout may both name one)."""
        known = self._plans.get(plan.key)
        if (known is None or plan.number > known.number) and plan.key not in self._done:
            self._plans[plan.key] = plan

    def _decode(self, record: Record, model: type[StepAttemptFailed] | type[StepTimedOut]) -> (
            StepAttemptFailed | StepTimedOut | None):
        try:
            return model.decode(record.value or b"", self._store)
        except DecodeError as exc:
            log.warning("unreadable %s at %s[%d]@%d: %s", model.type_name(), record.topic, record.partition,
                        record.offset, exc)
            return None

    def pending(self) -> list[Plan]:
        """The attempts still to run, each with the offsets of its inputs (a plan with none found is left out)."""
        plans = []
        for key, plan in self._plans.items():
            if key in self._done or key.removesuffix(COMPENSATION) in self._ended:
                continue
            if plan.offsets is None:
                seen = self._inputs.get(key)
                if seen is None:
                    log.warning("%s: attempt %d is due but its inputs are not in the look-back", key, plan.number)
                    continue
                plan = plan._replace(offsets=tuple(sorted(seen.values())))
            plans.append(plan)
        return plans

    async def recover(self, transport: Transport, topic: str, start: Mapping[TopicPartition, int],
                      until: Mapping[TopicPartition, int], progress: Mapping[TopicPartition, PartitionProgress],
                      learn_schemas: Callable[[], Awaitable[None]]) -> dict[TopicPartition, list[Attempt]]:
        """Learn from the records of each partition from `start` to `until`; the pending attempts found.

        Args:
            transport: The broker port.
            topic: The events topic.
            start: Where to start reading each partition.
            until: Where to stop (the end: what the agent did after its last commit counts too).
            progress: The bookkeeping of each partition set up (its attempts' inputs are read under it).
            learn_schemas: See read_back.

        Returns:
            Per partition, its pending attempts whose inputs could be read back.
        """
        if start:
            async for record in transport.read(start, start=start, until=until):
                self.see(record)
        found: dict[TopicPartition, list[Attempt]] = {}
        for plan in self.pending():
            tp = TopicPartition(topic, plan.partition)
            if tp in progress and (attempt := await self.read_back(transport, topic, plan, progress[tp],
                                                                   learn_schemas)) is not None:
                found.setdefault(tp, []).append(attempt)
        return found

    async def read_back(self, transport: Transport, topic: str, plan: Plan, progress: PartitionProgress,
                        learn_schemas: Callable[[], Awaitable[None]]) -> Attempt | None:
        """The pending attempt of `plan`, its inputs read back from the log by offset (not pinned).

        Args:
            transport: The broker port.
            topic: The events topic.
            plan: The pending attempt.
            progress: The bookkeeping of the workflow's partition.
            learn_schemas: Catches up with the registry (an input written with a newer schema).

        Returns:
            The attempt, or None if its inputs are not all readable (the step's deadline, if it has
            one, then fails it).
        """
        tp = TopicPartition(topic, plan.partition)
        inputs: dict[bytes, Input] = {}
        for offset in plan.offsets or ():
            async for record in transport.read([tp], start={tp: offset}, until={tp: offset + 1}):
                event_type = next((v for n, v in record.headers if n == "ce_type"), b"")
                if (model := self._models.get(event_type)) is None or record.value is None:
                    continue
                try:
                    try:
                        event = model.decode(record.value, self._store)
                    except UnknownSchemaError:
                        await learn_schemas()
                        event = model.decode(record.value, self._store)
                    envelope = Envelope.from_record(record.key, record.headers)
                    inputs[event_type] = Input(progress, offset, event, envelope)
                except DecodeError as exc:
                    log.warning("input of %s at %d unreadable: %s", plan.key, offset, exc)
        compensation = plan.key.endswith(COMPENSATION)
        wanted = {t for t, m in self._models.items() if (m is CompensationRequested) == compensation}
        if set(inputs) != wanted:
            log.warning("attempt %d of %s is due, but its inputs are not all in the log", plan.number, plan.key)
            return None
        cause = inputs[max(inputs, key=lambda t: inputs[t].offset)].envelope  # the one that completed the join
        return Attempt(plan.key, plan.key.removesuffix(COMPENSATION), plan.number, inputs, cause, plan.partition,
                       pinned=False, due=plan.due)

