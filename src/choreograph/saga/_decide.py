"""The saga coordinator's decisions, as a pure function: handle(state, fact, catalog) -> (state, decisions).

No I/O here. The coordinator service feeds facts read from Kafka and publishes the decisions; tests
and replay feed recorded facts. State only grows (saga._facts), so duplicated or reordered facts
reach the same final state, and a decision is taken once because taking it is itself a fact.

Time is a fact too: each fact carries its record's timestamp, and the coordinator feeds clock facts
(`tick`) while the log is silent. Deadlines that time has passed are decided before the fact that
shows it is folded, so a result logged after its step's deadline is late wherever it is replayed.

A cancellation (issue 14) is a failure of the workflow as a whole, with its reason. Its decisions are
a step failure's: completed steps compensated in reverse dependency order. Unlike a step failure it
waits for no step still running (nothing is timed out either): the outcome `cancelled`, with the
cancellation's reason, comes once the completed steps are undone, and a step that completes after it
is a late result, compensated (_late_requests). A failed compensation ends it `failed`, as it ends a
step failure, its reason naming the cancellation too. A cancellation after the outcome, or a second
one, decides nothing (saga._facts.evolve does not fold it).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..events._envelope import Kind
from ..events._models import CompensationRequested, OutcomeStatus, WorkflowOutcome
from ._facts import Decision, Fact, SagaState, clock, decision_id, evolve, fact_of
from ._graph import Graph
from ._timers import due, expire, timed

__all__ = ["Decision", "Fact", "SagaState", "clock", "decision_id", "evolve", "fact_of", "handle", "settle", "tick"]


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
    if fact.time_ms > state.now_ms and timed(state):
        # The fact's timestamp says time has come this far: what passed before it was late for it.
        state, expired = expire(state, fact.time_ms)
        state, taken = settle(evolve(state, fact), catalog)
        return state, expired + taken
    return settle(evolve(state, fact), catalog)


def tick(state: SagaState, now_ms: int, catalog: Mapping[str, Graph]) -> tuple[SagaState, list[Decision]]:
    """Time has come to `now_ms` with no event: take the decisions that calls for (timeouts and their consequences).

    Args:
        state: The workflow's state.
        now_ms: The time, Unix ms.
        catalog: As for handle.

    Returns:
        The new state, with every decision taken applied, and the decisions in the order taken.
    """
    return handle(state, clock(now_ms), catalog)


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
    """The decisions `state` calls for now: start, timeouts, compensation requests, or the outcome.

    After the outcome: the compensation of each late result (see _late_requests).
    """
    if state.outcome is not None:
        return _late_requests(state, catalog)
    graph = state.graph
    if graph is None:
        return _start(state, catalog) if state.goal_seen else []
    if timeouts := due(state):
        return timeouts
    steps = graph.nodes
    completed = state.completed & steps.keys()
    cancelled = state.cancelled
    if not state.failed and cancelled is None:
        return [_outcome(state, OutcomeStatus.COMPLETED, None, None)] if completed == steps.keys() else []

    # Cancelled: no step is waited for; one that completes still is compensated when its result comes.
    live = graph.live(completed, state.failed) if cancelled is None else frozenset()

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
    return [_ending(state)]


def _start(state: SagaState, catalog: Mapping[str, Graph]) -> list[Decision]:
    """The decision a workflow whose goal was read and that has no graph yet calls for: its graph, or its outcome."""
    if state.cancelled is not None:  # cancelled before it started: nothing ran, nothing to undo
        return [_outcome(state, OutcomeStatus.CANCELLED, None, state.cancelled)]
    found = catalog.get(state.workflow)
    if found is not None and found.refused is not None:  # its contracts make no graph
        return [_outcome(state, OutcomeStatus.FAILED, None,
                         f"workflow {state.workflow!r} cannot start: {found.refused}")]
    if found is None or not found.nodes:
        return [_outcome(state, OutcomeStatus.FAILED, None,
                         f"no agent has announced a step of workflow {state.workflow!r}")]
    return [_started(state, found)]


def _ending(state: SagaState) -> Decision:
    """The outcome of a workflow that failed or was cancelled, once nothing runs and nothing is being undone."""
    cancelled = state.cancelled
    failed_step = min(state.failed, default=None)
    if state.compensation_failed:
        step = min(state.compensation_failed)
        reason = f"compensation of {step!r} failed: {state.compensation_failed[step]}"
        if cancelled is not None:
            reason = f"{reason} (cancelled: {cancelled})"
        return _outcome(state, OutcomeStatus.FAILED, failed_step, reason)
    if cancelled is not None or failed_step is None:  # no failed step: only a cancellation ends it here
        return _outcome(state, OutcomeStatus.CANCELLED, failed_step, cancelled or "")
    # Timed out: no step had failed before the workflow's deadline (the failures are its timeouts).
    status = (OutcomeStatus.TIMED_OUT if state.deadline_ms is not None and state.failed_since_ms is not None
              and state.failed_since_ms >= state.deadline_ms else OutcomeStatus.COMPENSATED)
    return _outcome(state, status, failed_step, state.failed[failed_step])


def _late_requests(state: SagaState, catalog: Mapping[str, Graph]) -> list[Decision]:
    """After an outcome other than completed: ask each step whose result came after it to undo it.

    Its graph is the one the workflow ran with, or the catalog's when the state was rebuilt from
    the outcome alone (a coordinator that restarted after it).
    """
    if state.outcome is OutcomeStatus.COMPLETED:
        return []
    graph = state.graph or catalog.get(state.workflow)
    if graph is None:
        return []
    late = (state.completed & graph.nodes.keys()) - state.outcome_completed - state.compensation_requested
    return [_request(state, step) for step in sorted(late) if graph.nodes[step].compensable]


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
    event, payload = graph.started
    return Decision(Kind.OTHER, None, event, Fact(Kind.OTHER, state.workflow, graph=graph), payload=payload)


def _request(state: SagaState, step: str) -> Decision:
    """The decision to ask the agent of `step` to undo it (CompensationRequested)."""
    failed_step = min(state.failed, default="")  # none: cancelled, or a late result after it failed to start
    if state.failed:
        reason = state.failed[failed_step]
    elif state.cancelled is not None:
        reason = f"cancelled: {state.cancelled}"
    else:
        reason = f"the workflow ended {state.outcome}"
    event = CompensationRequested(step=step, failed_step=failed_step, reason=reason)
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
    return Decision(Kind.OUTCOME, None, event,
                    Fact(Kind.OUTCOME, state.workflow, status=status, steps=tuple(event.completed_steps)))
