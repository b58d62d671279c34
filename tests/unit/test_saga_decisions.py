"""The coordinator's decisions as a pure function: no broker, just facts in and decisions out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreograph import Graph, Kind, OutcomeStatus, StepNode, WorkflowOutcome
from choreograph.saga import Fact, SagaState, handle

REPORT = Graph.of("report", [
    StepNode(name="research", depends_on=[], compensable=True),
    StepNode(name="analyze", depends_on=["research"], compensable=True),
    StepNode(name="chart", depends_on=["analyze"], compensable=True),
    StepNode(name="draft", depends_on=["analyze"], compensable=True),
    StepNode(name="review", depends_on=["chart", "draft"], compensable=True),
])


def forward_facts(graph: Graph, fail: str | None) -> list[Fact]:
    """What the agents emit on their own: each step runs once all its dependencies completed."""
    facts = [Fact(Kind.GOAL, graph.workflow)]
    completed: set[str] = set()
    for step in graph.order:
        if all(d in completed for d in graph.nodes[step].depends_on):
            if step == fail:
                facts.append(Fact(Kind.STEP_FAILED, graph.workflow, step=step, reason="boom"))
            else:
                completed.add(step)
                facts.append(Fact(Kind.STEP_COMPLETED, graph.workflow, step=step))
    return facts


@dataclass
class Run:
    requests: list[str] = field(default_factory=list)
    outcomes: list[WorkflowOutcome] = field(default_factory=list)
    state: SagaState = field(default_factory=lambda: SagaState("wf-1"))


def simulate(graph: Graph, fail: str | None, compensation_fails: str | None,
             pick: Callable[[int], int], redeliver: Callable[[], bool]) -> Run:
    """Deliver facts in the order `pick` chooses; agents answer compensation requests; the
    coordinator also reads its own decisions back from the log, as it does on Kafka."""
    run = Run()
    pool = forward_facts(graph, fail)
    catalog = {graph.workflow: graph}
    while pool:
        index = pick(len(pool))
        fact = pool[index] if redeliver() else pool.pop(index)
        run.state, decisions = handle(run.state, fact, catalog)
        for decision in decisions:
            pool.append(decision.fact)
            if decision.kind is Kind.COMPENSATION_REQUESTED:
                assert decision.step is not None
                step = decision.step
                for dependent in graph.dependents[step]:  # reverse dependency order
                    assert (dependent not in run.state.completed or dependent in run.state.compensated
                            or not graph.nodes[dependent].compensable), f"{step} before {dependent}"
                run.requests.append(step)
                kind = Kind.COMPENSATION_FAILED if step == compensation_fails else Kind.COMPENSATION_COMPLETED
                pool.append(Fact(kind, graph.workflow, step=step, reason="cannot undo"))
            elif decision.kind is Kind.OUTCOME:
                assert isinstance(decision.event, WorkflowOutcome)
                run.outcomes.append(decision.event)
    return run


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    names = [f"s{i}" for i in range(draw(st.integers(1, 6)))]
    nodes = [
        StepNode(name=name, compensable=draw(st.sampled_from([True, True, True, False])),
                 depends_on=sorted(draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3))) if i else [])
        for i, name in enumerate(names)
    ]
    return Graph.of("wf", nodes)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(graph=graphs(), data=st.data())
def test_any_interleaving_duplication_or_reordering_gives_the_same_outcome_and_compensations(
        graph: Graph, data: st.DataObject) -> None:
    steps = sorted(graph.nodes)
    fail = data.draw(st.none() | st.sampled_from(steps), label="fail")
    compensation_fails = data.draw(st.none() | st.sampled_from(steps), label="compensation_fails")
    reference = simulate(graph, fail, compensation_fails, pick=lambda n: 0, redeliver=lambda: False)
    duplicates = iter(range(20))  # bounded, so every run ends

    def redeliver() -> bool:
        return data.draw(st.booleans(), label="redeliver") and next(duplicates, None) is not None

    shuffled = simulate(graph, fail, compensation_fails,
                        pick=lambda n: data.draw(st.integers(0, n - 1), label="pick"), redeliver=redeliver)
    for run in (reference, shuffled):
        assert len(run.outcomes) == 1, "exactly one outcome"
        assert len(run.requests) == len(set(run.requests)), "no compensation is requested twice"
    assert shuffled.outcomes[0] == reference.outcomes[0]
    assert set(shuffled.requests) == set(reference.requests)

    outcome = reference.outcomes[0]
    completed = set(outcome.completed_steps)
    if fail is None:
        assert outcome.status is OutcomeStatus.COMPLETED
        assert not reference.requests
    elif compensation_fails not in {s for s in completed if graph.nodes[s].compensable}:
        assert outcome.status is OutcomeStatus.COMPENSATED
        assert set(reference.requests) == {s for s in completed if graph.nodes[s].compensable}
    else:
        assert outcome.status is OutcomeStatus.FAILED
        assert outcome.reason
        assert compensation_fails in outcome.reason


def test_report_failing_at_chart_compensates_draft_then_analyze_then_research() -> None:
    run = simulate(REPORT, "chart", None, pick=lambda n: 0, redeliver=lambda: False)
    assert run.requests == ["draft", "analyze", "research"]
    assert run.outcomes[0].status is OutcomeStatus.COMPENSATED
    assert run.outcomes[0].failed_step == "chart"


def test_parallel_branches_compensate_together() -> None:
    run = simulate(REPORT, "review", None, pick=lambda n: 0, redeliver=lambda: False)
    assert set(run.requests[:2]) == {"chart", "draft"}
    assert run.requests[2:] == ["analyze", "research"]


def test_a_failed_compensation_stops_undoing_what_it_depends_on_and_fails_the_workflow() -> None:
    run = simulate(REPORT, "review", "draft", pick=lambda n: 0, redeliver=lambda: False)
    assert set(run.requests) == {"chart", "draft"}  # analyze and research stay: draft is not undone
    assert run.outcomes[0].status is OutcomeStatus.FAILED
    assert "draft" in (run.outcomes[0].reason or "")


def test_a_goal_for_a_workflow_nobody_announced_fails_with_a_reason() -> None:
    _, decisions = handle(SagaState("wf-1"), Fact(Kind.GOAL, "nobody"), {})
    assert [d.kind for d in decisions] == [Kind.OUTCOME]
    assert isinstance(decisions[0].event, WorkflowOutcome)
    assert decisions[0].event.status is OutcomeStatus.FAILED
    assert "nobody" in (decisions[0].event.reason or "")


def test_an_instance_keeps_the_graph_it_started_with() -> None:
    state, _ = handle(SagaState("wf-1"), Fact(Kind.GOAL, "report"), {"report": REPORT})
    bigger = Graph.of("report", [*REPORT.nodes.values(), StepNode(name="extra", depends_on=[], compensable=True)])
    for step in REPORT.order:
        state, decisions = handle(state, Fact(Kind.STEP_COMPLETED, "report", step=step), {"report": bigger})
    assert [d.kind for d in decisions] == [Kind.OUTCOME]


def test_graph_from_contracts_rejects_cycles() -> None:
    import pytest

    from choreograph import WorkflowError

    with pytest.raises(WorkflowError, match="cycle"):
        Graph.of("w", [StepNode(name="a", depends_on=["b"], compensable=True),
                       StepNode(name="b", depends_on=["a"], compensable=True)])
