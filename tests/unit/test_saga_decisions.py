"""The coordinator's decisions as a pure function: no broker, just facts in and decisions out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreograph import Graph, Kind, OutcomeStatus, Retry, StepNode, WorkflowOutcome
from choreograph.events import COORDINATOR_SOURCE, StepTimedOut, agent_source, derived_id
from choreograph.saga import Fact, SagaState, handle
from choreograph.saga._check import impostor
from choreograph.saga._decide import decision_id, tick
from choreograph.saga._timers import next_due

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


# Deadlines, attempts and late results: time comes in facts (record timestamps) and clock ticks.

T0 = 1_800_000_000_000  # the goal's log time, Unix ms
TIMED = Graph.of("trip", [
    StepNode(name="book", depends_on=[], compensable=True),
    StepNode(name="pay", depends_on=["book"], compensable=True, timeout_ms=10_000,
             retry=Retry(max_attempts=2, initial=1, jitter=0).policy()),
])
TRIP = {"trip": TIMED}


def at(kind: Kind, step: str | None, ms: int, **fields: Any) -> Fact:
    return Fact(kind, "trip", step=step, time_ms=T0 + ms, **fields)


def started(deadline_ms: int | None = None) -> SagaState:
    """book completed 1 s after the goal: pay's inputs are in the log from then."""
    state, _ = handle(SagaState("wf-1"), at(Kind.GOAL, None, 0, deadline_ms=deadline_ms), TRIP)
    state, _ = handle(state, at(Kind.STEP_COMPLETED, "book", 1_000), TRIP)
    return state


def test_a_step_times_out_when_the_clock_reaches_its_deadline_and_not_a_millisecond_before() -> None:
    state = started()
    assert next_due(state) == T0 + 11_000
    state, decisions = tick(state, T0 + 10_999, TRIP)
    assert decisions == []
    state, decisions = tick(state, T0 + 11_000, TRIP)
    [timed_out] = decisions
    assert isinstance(timed_out.event, StepTimedOut)
    assert timed_out.event == StepTimedOut(step="pay", attempt=1, reason="step 'pay' attempt 1 timed out after 10.0 s",
                                           deadline=T0 + 11_000, next_attempt_at=T0 + 12_000)
    assert decision_id("wf-1", timed_out) == derived_id("wf-1", "step_timed_out", "pay", "1")
    assert not state.failed  # attempt 2 is due at 12 s and has until 22 s
    assert next_due(state) == T0 + 22_000
    state, decisions = tick(state, T0 + 22_000, TRIP)
    assert [d.kind for d in decisions] == [Kind.STEP_TIMED_OUT, Kind.COMPENSATION_REQUESTED]
    assert decisions[0].event == StepTimedOut(step="pay", attempt=2, deadline=T0 + 22_000, next_attempt_at=None,
                                              reason="step 'pay' attempt 2 timed out after 10.0 s")
    assert decision_id("wf-1", decisions[0]) != decision_id("wf-1", timed_out)
    assert state.failed == {"pay": "step 'pay' attempt 2 timed out after 10.0 s"}


def test_a_result_logged_after_its_deadline_is_late_even_before_any_tick() -> None:
    state, decisions = handle(started(), at(Kind.STEP_COMPLETED, "pay", 22_000), TRIP)
    # Both attempts' deadlines passed by the result's timestamp: timed out first; then the late
    # result is undone, and what it depends on after it (reverse dependency order).
    assert [(d.kind, d.step) for d in decisions] == [
        (Kind.STEP_TIMED_OUT, "pay"), (Kind.STEP_TIMED_OUT, "pay"), (Kind.COMPENSATION_REQUESTED, "pay")]
    _, decisions = handle(state, at(Kind.COMPENSATION_COMPLETED, "pay", 22_100), TRIP)
    assert [(d.kind, d.step) for d in decisions] == [(Kind.COMPENSATION_REQUESTED, "book")]


def test_a_failed_attempt_counts_and_moves_the_next_deadline_but_does_not_fail_the_step() -> None:
    state, decisions = handle(started(), at(Kind.STEP_ATTEMPT_FAILED, "pay", 3_000, attempt=1,
                                            next_attempt_at=T0 + 5_000, reason="rate limited"), TRIP)
    assert decisions == []
    assert not state.failed
    assert state.retries == {("pay", 1): T0 + 5_000}
    assert next_due(state) == T0 + 15_000  # attempt 2: from when it was due
    again, _ = handle(state, at(Kind.STEP_ATTEMPT_FAILED, "pay", 3_000, attempt=1, next_attempt_at=T0 + 5_000,
                                reason="rate limited"), TRIP)
    assert again == state  # a duplicate changes nothing
    state, decisions = handle(state, at(Kind.STEP_COMPLETED, "pay", 6_000), TRIP)
    assert [d.kind for d in decisions] == [Kind.OUTCOME]


def test_heartbeats_move_a_heartbeat_deadline() -> None:
    graph = Graph.of("trip", [StepNode(name="book", depends_on=[], compensable=True, heartbeat_timeout_ms=5_000)])
    state, _ = handle(SagaState("wf-1"), at(Kind.GOAL, None, 0), {"trip": graph})
    assert next_due(state) == T0 + 5_000
    state, _ = handle(state, at(Kind.HEARTBEAT, "book", 4_000, attempt=1), {"trip": graph})
    assert next_due(state) == T0 + 9_000
    state, _ = handle(state, at(Kind.HEARTBEAT, "book", 2_000, attempt=1), {"trip": graph})  # an older one, reordered
    assert next_due(state) == T0 + 9_000
    _, decisions = tick(state, T0 + 9_000, {"trip": graph})
    assert decisions[0].event.model_dump()["reason"] == "step 'book' attempt 1: no heartbeat for 5.0 s"


def test_a_workflow_deadline_times_the_workflow_out_unless_a_step_had_failed_before_it() -> None:
    state, decisions = tick(started(deadline_ms=T0 + 5_000), T0 + 5_000, TRIP)
    assert [d.kind for d in decisions] == [Kind.STEP_TIMED_OUT, Kind.COMPENSATION_REQUESTED]
    assert decisions[0].event.model_dump()["next_attempt_at"] is None  # attempts left or not: over
    state, decisions = handle(state, at(Kind.COMPENSATION_COMPLETED, "book", 5_100), TRIP)
    [outcome] = [d.event for d in decisions]
    assert isinstance(outcome, WorkflowOutcome)
    assert (outcome.status, outcome.failed_step) == (OutcomeStatus.TIMED_OUT, "pay")
    # pay failed at 3 s, before the 5 s deadline: compensated for that failure, not timed out.
    state, _ = handle(started(deadline_ms=T0 + 5_000), at(Kind.STEP_FAILED, "pay", 3_000, reason="declined"), TRIP)
    state, _ = tick(state, T0 + 5_000, TRIP)
    _, decisions = handle(state, at(Kind.COMPENSATION_COMPLETED, "book", 5_100), TRIP)
    assert decisions[0].event.model_dump()["status"] == OutcomeStatus.COMPENSATED


def test_a_late_result_after_the_outcome_is_compensated_once_and_only_if_the_workflow_did_not_complete() -> None:
    state, _ = tick(started(deadline_ms=T0 + 5_000), T0 + 5_000, TRIP)
    state, _ = handle(state, at(Kind.COMPENSATION_COMPLETED, "book", 5_100), TRIP)
    assert state.outcome is OutcomeStatus.TIMED_OUT
    state, decisions = handle(state, at(Kind.STEP_COMPLETED, "pay", 9_000), TRIP)
    assert [(d.kind, d.step) for d in decisions] == [(Kind.COMPENSATION_REQUESTED, "pay")]
    again, decisions = handle(state, at(Kind.STEP_COMPLETED, "pay", 9_500), TRIP)
    assert decisions == []
    assert again.outcome is OutcomeStatus.TIMED_OUT
    done, _ = handle(SagaState("wf-2"), at(Kind.GOAL, None, 0), TRIP)
    for step in ("book", "pay"):
        done, _ = handle(done, at(Kind.STEP_COMPLETED, step, 1_000), TRIP)
    assert done.outcome is OutcomeStatus.COMPLETED
    assert handle(done, at(Kind.STEP_COMPLETED, "pay", 2_000), TRIP)[1] == []


def test_fault_events_are_believed_only_from_the_party_that_knows() -> None:
    timed_out = Fact(Kind.STEP_TIMED_OUT, "trip", step="pay", attempt=1)
    attempt = Fact(Kind.STEP_ATTEMPT_FAILED, "trip", step="pay", attempt=1)
    assert impostor(COORDINATOR_SOURCE, timed_out) is None
    assert impostor(agent_source("trip", "pay"), timed_out) is not None
    assert impostor(agent_source("trip", "pay"), attempt) is None
    assert impostor(agent_source("trip", "book"), attempt) is not None
    assert impostor(COORDINATOR_SOURCE, Fact(Kind.HEARTBEAT, "trip", step="pay")) is not None
