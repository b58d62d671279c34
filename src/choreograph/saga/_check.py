"""Whether a fact agrees with its workflow's history: the coordinator dead-letters one that does not.

Pure, like `handle`: the coordinator, and a replay of a recorded log, reach the same verdicts.
"""

from __future__ import annotations

from ..events._envelope import Kind
from ._decide import Fact, SagaState

# Facts about one step: each must name a step of the workflow's graph, once the graph is fixed.
_STEP_KINDS = frozenset({Kind.STEP_COMPLETED, Kind.STEP_FAILED, Kind.COMPENSATION_REQUESTED,
                         Kind.COMPENSATION_COMPLETED, Kind.COMPENSATION_FAILED})


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

