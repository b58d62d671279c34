"""Whether a fact agrees with its workflow's history: the coordinator dead-letters one that does not.

Pure, like `handle`: the coordinator, and a replay of a recorded log, reach the same verdicts.
"""

from __future__ import annotations

from ..events._envelope import COORDINATOR_SOURCE, Kind, agent_source
from ._facts import Fact, SagaState

# Facts about one step: each must name a step of the workflow's graph, once the graph is fixed.
_STEP_KINDS = frozenset({Kind.STEP_COMPLETED, Kind.STEP_FAILED, Kind.COMPENSATION_REQUESTED,
                         Kind.COMPENSATION_COMPLETED, Kind.COMPENSATION_FAILED, Kind.STEP_ATTEMPT_FAILED,
                         Kind.STEP_TIMED_OUT, Kind.HEARTBEAT})
# Facts whose step is read from the body: the body must name the sender's own step (a signed record
# only proves who sent its headers; chart may not fail research).
_AGENT_KINDS = frozenset({Kind.STEP_ATTEMPT_FAILED, Kind.HEARTBEAT, Kind.STEP_FAILED, Kind.COMPENSATION_FAILED})


def impostor(source: str, fact: Fact) -> str | None:
    """Why a fact about attempts comes from a party that cannot know it, or None if it may.

    A StepTimedOut is believed only from the coordinator (it keeps the deadlines); a failed step, a
    failed compensation, a failed attempt or a heartbeat only from the step's own agent: another agent
    cannot fail, leave uncompensated or prolong a step.

    Args:
        source: The event's CloudEvents source.
        fact: The fact read from it.

    Returns:
        The reason to dead-letter the record (the coordinator) or skip it (a replay), or None.
    """
    if fact.kind is Kind.STEP_TIMED_OUT and source != COORDINATOR_SOURCE:
        return f"a StepTimedOut is believed only from {COORDINATOR_SOURCE}, this one is from {source}"
    if fact.kind in _AGENT_KINDS and source != (own := agent_source(fact.workflow, fact.step or "")):
        return f"a {fact.kind.value} of step {fact.step!r} is believed only from {own}, this one is from {source}"
    return None


def contradiction(state: SagaState, fact: Fact) -> str | None:
    """Why `fact` contradicts what `state` knows of its workflow, or None if it does not.

    A step fact must name a step of the graph the workflow started with, and every fact must name
    the workflow the goal named.

    Args:
        state: The workflow's state before the fact (its goal seen).
        fact: The fact.

    Returns:
        The reason to dead-letter the fact's record, or None.
    """
    if fact.workflow and state.workflow and fact.workflow != state.workflow:
        return (f"workflow mismatch: {state.workflow_id} is a {state.workflow!r} workflow, "
                f"the event says {fact.workflow!r}")
    graph = state.graph
    if fact.kind in _STEP_KINDS and graph is not None and (fact.step or "") not in graph.nodes:
        return (f"step {fact.step!r} is not in the graph of workflow {state.workflow!r} "
                f"(steps: {', '.join(graph.order)})")
    return None

