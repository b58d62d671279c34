"""What the coordinator knows: facts read from events, and the state they fold into (`evolve`).

Pure, like the decisions (saga._decide): the coordinator, `choreo state` and the golden replayer
read events through `fact_of` and fold them with `evolve`. Every fact carries its record's log
timestamp, and a clock fact (`clock`) carries time alone: deadlines are a function of the log.

A cancellation (CancellationRequested, kind cancel_requested) folds into `SagaState.cancelled`: its
reason, from the first one believed after the goal and before the outcome. A later one, or one after
the outcome, changes nothing (see saga._decide for what it decides).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from ..events._envelope import Envelope, Kind, derived_id
from ..events._faults import StepAttemptFailed, StepHeartbeat, StepTimedOut
from ..events._models import (
    CancellationRequested,
    CompensationFailed,
    Event,
    OutcomeStatus,
    StepFailed,
    WorkflowOutcome,
    WorkflowStarted,
)
from ._graph import Graph

K = TypeVar("K")
V = TypeVar("V")
_EMPTY: Mapping[Any, Any] = MappingProxyType({})
# What a workflow that ended other than completed still folds: a result arriving after its outcome
# (a late result), and the compensation it is then asked for.
LATE_KINDS = frozenset({Kind.STEP_COMPLETED, Kind.COMPENSATION_REQUESTED, Kind.COMPENSATION_COMPLETED,
                        Kind.COMPENSATION_FAILED})


class Fact(NamedTuple):
    """What the coordinator learns from one event, independent of Kafka and Avro.

    A NamedTuple, not a frozen dataclass: one is made for every event the coordinator reads.

    Attributes:
        kind: The event's kind; Kind.OTHER for WorkflowStarted (then `graph` is set) and for a clock fact.
        workflow: The workflow's name ("" for a clock fact).
        step: The step the event is about, if any.
        reason: Why a step, an attempt or a compensation failed, or why the workflow is cancelled.
        graph: The step graph a WorkflowStarted fixed.
        status: The outcome's status (OUTCOME).
        time_ms: The record's log timestamp (Unix ms); for a clock fact, the time it says has come.
        attempt: The attempt a StepAttemptFailed, StepTimedOut or StepHeartbeat is about.
        next_attempt_at: When the next attempt is due (StepAttemptFailed, StepTimedOut); None after a
            StepTimedOut: the step failed.
        deadline_ms: The workflow's deadline (GOAL, from its ce_deadline header) or the deadline
            that passed (STEP_TIMED_OUT).
        compensation: Whether a StepAttemptFailed is about the step's compensation.
        steps: The steps an outcome lists as completed.
    """

    kind: Kind
    workflow: str
    step: str | None = None
    reason: str | None = None
    graph: Graph | None = None  # set when the event is WorkflowStarted
    status: OutcomeStatus | None = None  # set when the event is an outcome
    time_ms: int = 0
    attempt: int = 0
    next_attempt_at: int | None = None
    deadline_ms: int | None = None
    compensation: bool = False
    steps: tuple[str, ...] = ()


def clock(now_ms: int) -> Fact:
    """A clock fact: time has come to `now_ms`, with no event (the coordinator's timers feed these)."""
    return Fact(Kind.OTHER, "", time_ms=now_ms)


class SagaState(NamedTuple):
    """One workflow instance as the coordinator sees it.

    Every field only grows (sets by union, maps by new keys, times by minimum or maximum), so facts
    fold in any order and any number of times to the same state. A NamedTuple, not a frozen
    dataclass: every fact makes a new one, and `_replace` costs a fifth of `dataclasses.replace`.

    Attributes:
        workflow_id: The workflow instance's id.
        workflow: The workflow's name, once a fact has named it.
        goal_seen: Whether its goal has been read.
        graph: The step graph it runs with, once WorkflowStarted fixed it.
        completed: The steps that completed.
        failed: Failed step -> reason (a StepFailed, or a StepTimedOut with no attempt left).
        compensation_requested: The steps asked to undo themselves.
        compensated: The steps undone.
        compensation_failed: Step that could not be undone -> reason.
        outcome: Its outcome's status, once it has one.
        now_ms: The latest time it has seen (record timestamps and clock facts), Unix ms.
        goal_at: When its goal was logged: a first step's inputs are in the log from then.
        deadline_ms: The workflow's deadline, if its goal gave one.
        completed_at: Completed step -> when its result was logged (the first copy).
        failed_since_ms: When its first step failed (a StepFailed's time, a timeout's deadline).
        retries: (step, failed attempt) -> when the next attempt is due; None: no attempt left.
        timed_out: The (step, attempt) pairs the coordinator timed out.
        heartbeats: (step, attempt) -> the latest heartbeat's time.
        compensation_retries: Step -> the highest failed attempt of its compensation.
        outcome_completed: The steps its outcome listed as completed: a result of any other step is late.
        cancelled: The reason of the cancellation believed before its outcome; None: not cancelled.
    """

    workflow_id: str
    workflow: str = ""
    goal_seen: bool = False
    graph: Graph | None = None
    completed: frozenset[str] = frozenset()
    failed: Mapping[str, str] = _EMPTY
    compensation_requested: frozenset[str] = frozenset()
    compensated: frozenset[str] = frozenset()
    compensation_failed: Mapping[str, str] = _EMPTY
    outcome: OutcomeStatus | None = None
    now_ms: int = 0
    goal_at: int | None = None
    deadline_ms: int | None = None
    completed_at: Mapping[str, int] = _EMPTY
    failed_since_ms: int | None = None
    retries: Mapping[tuple[str, int], int | None] = _EMPTY
    timed_out: frozenset[tuple[str, int]] = frozenset()
    heartbeats: Mapping[tuple[str, int], int] = _EMPTY
    compensation_retries: Mapping[str, int] = _EMPTY
    outcome_completed: frozenset[str] = frozenset()
    cancelled: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the workflow has its outcome (then only a late result changes it)."""
        return self.outcome is not None


@dataclass(frozen=True, slots=True)
class Decision:
    """An event the coordinator must publish; `fact` is how it changes the state once taken.

    Attributes:
        kind: The event's kind.
        step: The step it is about, if any.
        event: The event to publish.
        fact: What taking the decision tells the coordinator (applied with evolve).
        attempt: The attempt it is about (a StepTimedOut), part of its event id; 0 for none.
        payload: The event already encoded (a WorkflowStarted, encoded once per graph); None: encode it.
    """

    kind: Kind
    step: str | None
    event: Event
    fact: Fact
    attempt: int = 0
    payload: bytes | None = None

    def encoded(self) -> bytes:
        """The event as the payload to publish."""
        return self.event.encode() if self.payload is None else self.payload


def decision_id(workflow_id: str, decision: Decision) -> str:
    """The event id of a decision: deterministic, so a decision re-published after a crash is a duplicate."""
    if decision.attempt:
        return derived_id(workflow_id, decision.kind.value, decision.step or "", str(decision.attempt))
    return derived_id(workflow_id, decision.kind.value, decision.step or "")


_STARTED = WorkflowStarted.type_name()


def deadline_of(text: bytes | str | None) -> int | None:
    """A goal's ce_deadline header as Unix milliseconds; None without one.

    Raises:
        ValueError: The header is not a decimal number of milliseconds.
    """
    if text is None:
        return None
    value = text.decode(errors="replace") if isinstance(text, bytes) else text
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"the goal's ce_deadline header {value!r} is not Unix milliseconds")
    return int(value)


def fact_of(envelope: Envelope, record: Mapping[str, Any], time_ms: int = 0, deadline_ms: int | None = None) -> Fact:
    """What one event (its envelope and decoded payload) tells the coordinator.

    The coordinator, `choreo state` and the golden replayer all read events through this one
    function.

    Args:
        envelope: The event's envelope.
        record: The event's decoded payload.
        time_ms: The record's log timestamp.
        deadline_ms: A goal's deadline (its ce_deadline header, see deadline_of).

    Returns:
        The fact.

    Raises:
        pydantic.ValidationError: The payload of a WorkflowStarted, failure, attempt, timeout,
            heartbeat or outcome event does not fit its model (a ValueError).
        WorkflowError: The steps of a WorkflowStarted do not form a graph (an unknown dependency or a
            cycle).
    """
    kind, workflow = envelope.kind, envelope.workflow
    if envelope.type == _STARTED:
        started = WorkflowStarted.model_validate(record)
        return Fact(Kind.OTHER, workflow, graph=Graph.of(started.workflow, started.steps), time_ms=time_ms)
    match kind:
        case Kind.STEP_COMPLETED | Kind.COMPENSATION_REQUESTED | Kind.COMPENSATION_COMPLETED:
            return Fact(kind, workflow, step=envelope.step, time_ms=time_ms)
        case Kind.GOAL:
            return Fact(kind, workflow, time_ms=time_ms, deadline_ms=deadline_ms)
        case Kind.STEP_FAILED | Kind.COMPENSATION_FAILED:
            model = StepFailed if kind is Kind.STEP_FAILED else CompensationFailed
            failure = model.model_validate(record)
            return Fact(kind, workflow, step=failure.step, reason=failure.reason, time_ms=time_ms)
        case Kind.OUTCOME:
            outcome = WorkflowOutcome.model_validate(record)
            return Fact(kind, workflow, status=outcome.status, time_ms=time_ms, steps=tuple(outcome.completed_steps))
        case Kind.STEP_ATTEMPT_FAILED:
            attempt = StepAttemptFailed.model_validate(record)
            return Fact(kind, workflow, step=attempt.step, reason=attempt.reason, time_ms=time_ms,
                        attempt=attempt.attempt, next_attempt_at=attempt.next_attempt_at,
                        compensation=attempt.compensation)
        case Kind.STEP_TIMED_OUT:
            timeout = StepTimedOut.model_validate(record)
            return Fact(kind, workflow, step=timeout.step, reason=timeout.reason, time_ms=time_ms,
                        attempt=timeout.attempt, next_attempt_at=timeout.next_attempt_at,
                        deadline_ms=timeout.deadline)
        case Kind.HEARTBEAT:
            beat = StepHeartbeat.model_validate(record)
            return Fact(kind, workflow, step=beat.step, time_ms=time_ms, attempt=beat.attempt)
        case Kind.CANCEL_REQUESTED:
            request = CancellationRequested.model_validate(record)
            return Fact(kind, workflow, reason=request.reason, time_ms=time_ms)
    return Fact(kind, workflow, step=envelope.step, time_ms=time_ms)


def _put(mapping: Mapping[K, V], key: K, value: V) -> Mapping[K, V]:
    return MappingProxyType({**mapping, key: value})


def _earliest(current: int | None, value: int) -> bool:
    return current is None or value < current


def evolve(state: SagaState, fact: Fact) -> SagaState:  # noqa: C901  # one case per kind, flat on purpose
    """Fold one fact into the state. Idempotent: applying a fact twice changes nothing.

    A failure keeps its first reason, a graph, an outcome and a cancellation their first value. After
    its outcome, a workflow that did not complete folds only late results and their compensations
    (LATE_KINDS); one that completed, nothing. A cancellation before the goal is not folded: the
    coordinator ignores every event of a workflow whose goal it has not read.
    """
    if state.outcome is not None and (state.outcome is OutcomeStatus.COMPLETED or fact.kind not in LATE_KINDS):
        return state
    changes: dict[str, Any] = {}
    if fact.workflow and not state.workflow:
        changes["workflow"] = fact.workflow
    at = fact.time_ms
    if at > state.now_ms:
        changes["now_ms"] = at
    step = fact.step or ""
    match fact.kind:
        case Kind.GOAL:
            if not state.goal_seen:
                changes["goal_seen"] = True
            if _earliest(state.goal_at, at):
                changes["goal_at"] = at
            if fact.deadline_ms is not None and _earliest(state.deadline_ms, fact.deadline_ms):
                changes["deadline_ms"] = fact.deadline_ms
        case Kind.OTHER if fact.graph is not None and state.graph is None:
            changes["graph"] = fact.graph
        case Kind.STEP_COMPLETED:
            if step not in state.completed:
                changes["completed"] = state.completed | {step}
            if _earliest(state.completed_at.get(step), at):
                changes["completed_at"] = _put(state.completed_at, step, at)
        case Kind.STEP_FAILED:
            if step not in state.failed:
                changes["failed"] = _put(state.failed, step, fact.reason or "")
            if _earliest(state.failed_since_ms, at):
                changes["failed_since_ms"] = at
        case Kind.STEP_ATTEMPT_FAILED if fact.compensation:
            if fact.attempt > state.compensation_retries.get(step, 0):
                changes["compensation_retries"] = _put(state.compensation_retries, step, fact.attempt)
        case Kind.STEP_ATTEMPT_FAILED:
            _retry(state, step, fact, changes)
        case Kind.STEP_TIMED_OUT:
            _retry(state, step, fact, changes)
            if (step, fact.attempt) not in state.timed_out:
                changes["timed_out"] = state.timed_out | {(step, fact.attempt)}
            if fact.next_attempt_at is None:
                if step not in state.failed:
                    changes["failed"] = _put(state.failed, step, fact.reason or "")
                when = at if fact.deadline_ms is None else fact.deadline_ms
                if _earliest(state.failed_since_ms, when):
                    changes["failed_since_ms"] = when
        case Kind.HEARTBEAT:
            if at > state.heartbeats.get((step, fact.attempt), -1):
                changes["heartbeats"] = _put(state.heartbeats, (step, fact.attempt), at)
        case Kind.COMPENSATION_REQUESTED if step not in state.compensation_requested:
            changes["compensation_requested"] = state.compensation_requested | {step}
        case Kind.COMPENSATION_COMPLETED if step not in state.compensated:
            changes["compensated"] = state.compensated | {step}
        case Kind.COMPENSATION_FAILED if step not in state.compensation_failed:
            changes["compensation_failed"] = _put(state.compensation_failed, step, fact.reason or "")
        case Kind.CANCEL_REQUESTED if state.cancelled is None and state.goal_seen:
            changes["cancelled"] = fact.reason or ""
        case Kind.OUTCOME if state.outcome is None:
            changes["outcome"] = fact.status
            changes["outcome_completed"] = frozenset(fact.steps)
    return state._replace(**changes) if changes else state


def _retry(state: SagaState, step: str, fact: Fact, changes: dict[str, Any]) -> None:
    """Fold a failed attempt: the latest due time of the next attempt, or None (none left), which wins."""
    key = (step, fact.attempt)
    if key not in state.retries:
        changes["retries"] = _put(state.retries, key, fact.next_attempt_at)
        return
    known = state.retries[key]
    if known is None:
        return
    merged = None if fact.next_attempt_at is None else max(known, fact.next_attempt_at)
    if merged != known:
        changes["retries"] = _put(state.retries, key, merged)
