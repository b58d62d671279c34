"""The saga coordinator's decisions, as a pure function: handle(state, fact, catalog) -> (state, decisions).

No I/O here. The coordinator service feeds facts read from Kafka and publishes the decisions; tests
and replay feed recorded facts. State only grows by set union, so duplicated or reordered facts
reach the same final state, and a decision is taken once because taking it is itself a fact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from ..events._envelope import Envelope, Kind
from ..events._models import (
    CompensationFailed,
    CompensationRequested,
    Event,
    OutcomeStatus,
    StepFailed,
    WorkflowOutcome,
    WorkflowStarted,
)
from ._graph import Graph

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Fact:
    """What the coordinator learns from one event, independent of Kafka and Avro.

    Attributes:
        kind: The event's kind; Kind.OTHER for WorkflowStarted (then `graph` is set).
        workflow: The workflow's name.
        step: The step the event is about, if any.
        reason: Why a step or its compensation failed (STEP_FAILED, COMPENSATION_FAILED).
        graph: The step graph a WorkflowStarted fixed.
        status: The outcome's status (OUTCOME).
    """

    kind: Kind
    workflow: str
    step: str | None = None
    reason: str | None = None
    graph: Graph | None = None  # set when the event is WorkflowStarted
    status: OutcomeStatus | None = None  # set when the event is an outcome


@dataclass(frozen=True, slots=True)
class SagaState:
    """One workflow instance as the coordinator sees it.

    Every field only grows (sets by union, maps by new keys), so facts fold in any order and any
    number of times to the same state.

    Attributes:
        workflow_id: The workflow instance's id.
        workflow: The workflow's name, once a fact has named it.
        goal_seen: Whether its goal has been read.
        graph: The step graph it runs with, once WorkflowStarted fixed it.
        completed: The steps that completed.
        failed: Failed step -> reason.
        compensation_requested: The steps asked to undo themselves.
        compensated: The steps undone.
        compensation_failed: Step that could not be undone -> reason.
        outcome: Its outcome's status, once it has one.
    """

    workflow_id: str
    workflow: str = ""
    goal_seen: bool = False
    graph: Graph | None = None
    completed: frozenset[str] = frozenset()
    failed: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    compensation_requested: frozenset[str] = frozenset()
    compensated: frozenset[str] = frozenset()
    compensation_failed: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    outcome: OutcomeStatus | None = None

    @property
    def finished(self) -> bool:
        """Whether the workflow has its outcome (then no fact changes it any more)."""
        return self.outcome is not None


@dataclass(frozen=True, slots=True)
class Decision:
    """An event the coordinator must publish; `fact` is how it changes the state once taken.

    Attributes:
        kind: The event's kind.
        step: The step it is about, if any.
        event: The event to publish.
        fact: What taking the decision tells the coordinator (applied with evolve).
    """

    kind: Kind
    step: str | None
    event: Event
    fact: Fact


_STARTED = WorkflowStarted.type_name()


def fact_of(envelope: Envelope, record: Mapping[str, Any]) -> Fact:
    """What one event (its envelope and decoded payload) tells the coordinator.

    The coordinator, `choreo state` and the golden replayer all read events through this one
    function.

    Args:
        envelope: The event's envelope.
        record: The event's decoded payload.

    Returns:
        The fact.

    Raises:
        pydantic.ValidationError: The payload of a WorkflowStarted, failure or outcome event does not
            fit its model (a ValueError).
        WorkflowError: The steps of a WorkflowStarted do not form a graph (an unknown dependency or a
            cycle).
    """
    if envelope.type == _STARTED:
        started = WorkflowStarted.model_validate(record)
        return Fact(Kind.OTHER, envelope.workflow, graph=Graph.of(started.workflow, started.steps))
    if envelope.kind in (Kind.STEP_FAILED, Kind.COMPENSATION_FAILED):
        model = StepFailed if envelope.kind is Kind.STEP_FAILED else CompensationFailed
        failure = model.model_validate(record)
        return Fact(envelope.kind, envelope.workflow, step=failure.step, reason=failure.reason)
    if envelope.kind is Kind.OUTCOME:
        return Fact(Kind.OUTCOME, envelope.workflow, status=WorkflowOutcome.model_validate(record).status)
    return Fact(envelope.kind, envelope.workflow, step=envelope.step)


def evolve(state: SagaState, fact: Fact) -> SagaState:
    """Fold one fact into the state. Idempotent: applying a fact twice changes nothing.

    A failure keeps its first reason, a graph and an outcome their first value.
    """
    if fact.workflow and not state.workflow:
        state = replace(state, workflow=fact.workflow)
    step = fact.step or ""
    match fact.kind:
        case Kind.GOAL:
            return state if state.goal_seen else replace(state, goal_seen=True)
        case Kind.OTHER if fact.graph is not None:
            return state if state.graph is not None else replace(state, graph=fact.graph)
        case Kind.STEP_COMPLETED:
            return replace(state, completed=state.completed | {step})
        case Kind.STEP_FAILED if step not in state.failed:
            return replace(state, failed=MappingProxyType({**state.failed, step: fact.reason or ""}))
        case Kind.COMPENSATION_REQUESTED:
            return replace(state, compensation_requested=state.compensation_requested | {step})
        case Kind.COMPENSATION_COMPLETED:
            return replace(state, compensated=state.compensated | {step})
        case Kind.COMPENSATION_FAILED if step not in state.compensation_failed:
            failed = MappingProxyType({**state.compensation_failed, step: fact.reason or ""})
            return replace(state, compensation_failed=failed)
        case Kind.OUTCOME if state.outcome is None:
            return replace(state, outcome=fact.status)
    return state


def handle(state: SagaState, fact: Fact, catalog: Mapping[str, Graph]) -> tuple[SagaState, list[Decision]]:
    """Fold `fact`, then take every decision the new state calls for (applying each as it is taken).

    Args:
        state: The workflow's state before the fact.
        fact: What one event tells the coordinator (see fact_of).
        catalog: The current step graph of each workflow, for a goal that has no graph yet; a goal
            of a workflow whose entry is a refusal (Graph.refusal) fails with its reason.

    Returns:
        The new state, with every decision taken applied, and the decisions in the order taken.
    """
    state = evolve(state, fact)
    return settle(state, catalog)


def settle(state: SagaState, catalog: Mapping[str, Graph]) -> tuple[SagaState, list[Decision]]:
    """Take the decisions `state` calls for without a new fact: used after replaying a log silently.

    Args:
        state: The workflow's state.
        catalog: The current step graph of each workflow, for a goal that has no graph yet.

    Returns:
        The new state, with every decision taken applied, and the decisions in the order taken.
    """
    taken: list[Decision] = []
    while decisions := _next_decisions(state, catalog):
        for decision in decisions:
            state = evolve(state, decision.fact)
            taken.append(decision)
    return state, taken


def _next_decisions(state: SagaState, catalog: Mapping[str, Graph]) -> list[Decision]:
    """The decisions `state` calls for now: start, compensation requests, or the outcome; none if done."""
    if state.outcome is not None:
        return []
    graph = state.graph
    if graph is None:
        if not state.goal_seen:
            return []
        found = catalog.get(state.workflow)
        if found is not None and found.refused is not None:  # its contracts make no graph
            return [_outcome(state, OutcomeStatus.FAILED, None,
                             f"workflow {state.workflow!r} cannot start: {found.refused}")]
        if found is None or not found.nodes:
            return [_outcome(state, OutcomeStatus.FAILED, None,
                             f"no agent has announced a step of workflow {state.workflow!r}")]
        return [_started(state, found)]
    steps = graph.nodes
    completed = state.completed & steps.keys()
    if not state.failed:
        return [_outcome(state, OutcomeStatus.COMPLETED, None, None)] if completed == steps.keys() else []

    live = graph.live(completed, state.failed)

    requests = [
        _request(state, step)
        for step in sorted(completed - state.compensation_requested)
        if steps[step].compensable and _dependents_undone(state, graph, step, completed, live)
    ]
    if requests:
        return requests
    outstanding = state.compensation_requested - state.compensated - state.compensation_failed.keys()
    if live or outstanding:
        return []
    failed_step = min(state.failed)
    if state.compensation_failed:
        step = min(state.compensation_failed)
        reason = f"compensation of {step!r} failed: {state.compensation_failed[step]}"
        return [_outcome(state, OutcomeStatus.FAILED, failed_step, reason)]
    return [_outcome(state, OutcomeStatus.COMPENSATED, failed_step, state.failed[failed_step])]


def _dependents_undone(state: SagaState, graph: Graph, step: str, completed: frozenset[str],
                       live: frozenset[str]) -> bool:
    """Whether `step` may be compensated now, in reverse dependency order.

    It may once no step depending on it can still run, and every one that completed has been
    compensated (or has nothing to undo).
    """
    return all(d not in live and (d not in completed or d in state.compensated or not graph.nodes[d].compensable)
               for d in graph.dependents[step])


def _started(state: SagaState, graph: Graph) -> Decision:
    """The decision to fix `graph` as the workflow's step graph (WorkflowStarted)."""
    event = WorkflowStarted(workflow=state.workflow, steps=[graph.nodes[n] for n in graph.order])
    return Decision(Kind.OTHER, None, event, Fact(Kind.OTHER, state.workflow, graph=graph))


def _request(state: SagaState, step: str) -> Decision:
    """The decision to ask the agent of `step` to undo it (CompensationRequested)."""
    failed_step = min(state.failed)
    event = CompensationRequested(step=step, failed_step=failed_step, reason=state.failed[failed_step])
    return Decision(Kind.COMPENSATION_REQUESTED, step, event,
                    Fact(Kind.COMPENSATION_REQUESTED, state.workflow, step=step))


def _outcome(state: SagaState, status: OutcomeStatus, failed_step: str | None, reason: str | None) -> Decision:
    """The decision to end the workflow with `status` (WorkflowOutcome)."""
    event = WorkflowOutcome(
        workflow=state.workflow, status=status, failed_step=failed_step, reason=reason,
        # Only the graph's steps: a forged completion folded during a silent replay, before the
        # graph was read back, is not one of the workflow's steps.
        completed_steps=sorted(state.completed if state.graph is None else state.completed & state.graph.nodes.keys()),
        compensated_steps=sorted(state.compensated),
    )
    return Decision(Kind.OUTCOME, None, event, Fact(Kind.OUTCOME, state.workflow, status=status))
