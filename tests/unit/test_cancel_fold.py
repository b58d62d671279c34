"""Cancelling a workflow (issue 14): the fold's rules, who may cancel, and Client.cancel on the saga kit.

The fold: a believed cancellation of a running workflow is a failure of the workflow with its reason.
Completed steps are compensated in reverse dependency order, no running step is waited for or timed out,
a result that comes later is compensated, and the outcome is `cancelled` with the reason. A cancellation
after the outcome, or a second one, decides nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest
from helpers.sagas import REPORT_DEPENDS, assert_reverse_dependency_order, steps_of
from pydantic import ValidationError

from choreograph import (
    CancellationRequested,
    Client,
    CompensationRequested,
    Graph,
    Kind,
    OutcomeStatus,
    StepNode,
    WorkflowError,
    WorkflowFinished,
    WorkflowOutcome,
)
from choreograph.events import CLIENT_SOURCE, COORDINATOR_SOURCE, Envelope, agent_source
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.saga import Decision, Fact, SagaState, entry_of, fact_of, handle
from choreograph.saga._decide import tick
from choreograph.saga._replay import Snapshot
from choreograph.security import COORDINATOR, Identity, may_publish
from choreograph.testing import SagaKit
from choreograph.transport import MemoryTransport, TopicPartition

REPORT = Graph.of("report", [StepNode(name=s, depends_on=d, compensable=True) for s, d in REPORT_DEPENDS.items()])
CATALOG = {"report": REPORT}
REASON = "changed my mind"


def started(*completed: str) -> SagaState:
    """A report workflow whose goal was read and graph fixed, with these steps completed (nothing decided)."""
    state, decisions = handle(SagaState("wf-1"), Fact(Kind.GOAL, "report", time_ms=1), CATALOG)
    assert [d.kind for d in decisions] == [Kind.OTHER]  # WorkflowStarted
    for step in completed:
        state, decisions = handle(state, Fact(Kind.STEP_COMPLETED, "report", step=step, time_ms=2), CATALOG)
        assert decisions == []
    return state


def cancel(reason: str = REASON) -> Fact:
    return Fact(Kind.CANCEL_REQUESTED, "report", reason=reason, time_ms=3)


def undone(step: str) -> Fact:
    return Fact(Kind.COMPENSATION_COMPLETED, "report", step=step, time_ms=4)


def result(step: str) -> Fact:
    return Fact(Kind.STEP_COMPLETED, "report", step=step, time_ms=5)


def said(decisions: Sequence[Decision]) -> list[tuple[str, str | None]]:
    return [(d.kind.value, d.step) for d in decisions]


def outcome_of(decisions: Sequence[Decision]) -> WorkflowOutcome:
    [decision] = decisions
    assert isinstance(decision.event, WorkflowOutcome)
    return decision.event


def test_a_cancellation_before_any_step_completes_ends_it_cancelled_at_once() -> None:
    state, decisions = handle(started(), cancel(), CATALOG)
    outcome = outcome_of(decisions)
    assert (outcome.status, outcome.reason, outcome.failed_step) == (OutcomeStatus.CANCELLED, REASON, None)
    assert outcome.completed_steps == outcome.compensated_steps == []
    # research was running: its result, after the outcome, is compensated.
    state, decisions = handle(state, result("research"), CATALOG)
    assert said(decisions) == [("compensation_requested", "research")]
    request = decisions[0].event
    assert isinstance(request, CompensationRequested)
    assert (request.failed_step, request.reason) == ("", f"cancelled: {REASON}")


def test_completed_steps_are_compensated_in_reverse_dependency_order() -> None:
    # research -> analyze -> {chart, draft} -> review: review runs when the cancellation comes.
    state, decisions = handle(started("research", "analyze", "chart", "draft"), cancel(), CATALOG)
    assert said(decisions) == [("compensation_requested", "chart"), ("compensation_requested", "draft")]
    state, decisions = handle(state, undone("chart"), CATALOG)
    assert decisions == []  # analyze waits for draft too
    state, decisions = handle(state, undone("draft"), CATALOG)
    assert said(decisions) == [("compensation_requested", "analyze")]
    state, decisions = handle(state, undone("analyze"), CATALOG)
    assert said(decisions) == [("compensation_requested", "research")]
    state, decisions = handle(state, undone("research"), CATALOG)
    outcome = outcome_of(decisions)
    assert (outcome.status, outcome.reason) == (OutcomeStatus.CANCELLED, REASON)
    assert outcome.completed_steps == outcome.compensated_steps == ["analyze", "chart", "draft", "research"]
    assert Snapshot(state).json()["status"] == "cancelled"
    assert Snapshot(state).json()["cancelled"] == REASON


def test_results_of_running_steps_are_compensated_before_and_after_the_outcome() -> None:
    # chart and draft run when the cancellation comes: nothing waits for them.
    state, decisions = handle(started("research", "analyze"), cancel(), CATALOG)
    assert said(decisions) == [("compensation_requested", "analyze")]
    state, decisions = handle(state, result("draft"), CATALOG)  # while the saga compensates
    assert said(decisions) == [("compensation_requested", "draft")]
    state, decisions = handle(state, undone("analyze"), CATALOG)
    assert said(decisions) == [("compensation_requested", "research")]
    state, decisions = handle(state, undone("research"), CATALOG)
    assert decisions == []  # draft's compensation is still out
    state, decisions = handle(state, undone("draft"), CATALOG)
    outcome = outcome_of(decisions)
    assert outcome.status is OutcomeStatus.CANCELLED
    assert outcome.compensated_steps == ["analyze", "draft", "research"]
    state, decisions = handle(state, result("chart"), CATALOG)  # after the outcome: a late result
    assert said(decisions) == [("compensation_requested", "chart")]
    state, decisions = handle(state, undone("chart"), CATALOG)
    assert decisions == []
    assert state.compensated == {"analyze", "chart", "draft", "research"}


def test_a_cancelled_workflow_times_no_step_out() -> None:
    timed = Graph.of("report", [StepNode(name=s, depends_on=d, compensable=True, timeout_ms=1_000)
                                for s, d in REPORT_DEPENDS.items()])
    catalog = {"report": timed}
    state, _ = handle(SagaState("wf-1"), Fact(Kind.GOAL, "report", time_ms=1), catalog)
    state, _ = handle(state, Fact(Kind.STEP_COMPLETED, "report", step="research", time_ms=2), catalog)
    state, decisions = handle(state, cancel(), catalog)
    assert said(decisions) == [("compensation_requested", "research")]
    state, decisions = tick(state, 1_000_000, catalog)  # analyze's deadline passed long ago
    assert decisions == []


def test_a_failed_compensation_ends_it_failed_naming_the_cancellation() -> None:
    state, decisions = handle(started("research", "analyze"), cancel(), CATALOG)
    assert said(decisions) == [("compensation_requested", "analyze")]
    state, decisions = handle(state, Fact(Kind.COMPENSATION_FAILED, "report", step="analyze", reason="disk full"),
                              CATALOG)
    outcome = outcome_of(decisions)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.reason == f"compensation of 'analyze' failed: disk full (cancelled: {REASON})"


@pytest.mark.parametrize("fail_at", [None, "draft"])
def test_a_cancellation_after_the_outcome_decides_nothing(fail_at: str | None) -> None:
    state = started("research", "analyze", "chart")
    if fail_at is None:
        state, decisions = handle(state, result("draft"), CATALOG)
        state, decisions = handle(state, result("review"), CATALOG)
    else:
        state, decisions = handle(state, Fact(Kind.STEP_FAILED, "report", step=fail_at, reason="boom"), CATALOG)
        for step in ("chart", "analyze", "research"):
            state, decisions = handle(state, undone(step), CATALOG)
    assert outcome_of(decisions).status is (OutcomeStatus.COMPLETED if fail_at is None else OutcomeStatus.COMPENSATED)
    after, decisions = handle(state, cancel(), CATALOG)
    assert decisions == []
    assert (after.cancelled, after.outcome) == (None, state.outcome)


def test_a_second_cancellation_decides_nothing_more() -> None:
    state, decisions = handle(started("research"), cancel(), CATALOG)
    assert said(decisions) == [("compensation_requested", "research")]
    again, decisions = handle(state, cancel("another reason"), CATALOG)
    assert (decisions, again.cancelled) == ([], REASON)
    state, decisions = handle(again, undone("research"), CATALOG)
    assert outcome_of(decisions).reason == REASON


def test_a_cancellation_before_the_goal_is_not_folded() -> None:
    # The coordinator ignores every event of a workflow whose goal it has not read: so does the fold.
    state, decisions = handle(SagaState("wf-1"), cancel(), CATALOG)
    assert (decisions, state.cancelled) == ([], None)


def test_a_cancellation_is_read_from_its_record() -> None:
    envelope = Envelope.new(type=CancellationRequested.type_name(), source=CLIENT_SOURCE, workflow="report",
                            workflow_id="wf-1", kind=Kind.CANCEL_REQUESTED)
    fact = fact_of(envelope, {"reason": REASON}, time_ms=7)
    assert (fact.kind, fact.workflow, fact.reason, fact.time_ms) == (Kind.CANCEL_REQUESTED, "report", REASON, 7)
    with pytest.raises(ValidationError, match="reason"):
        fact_of(envelope, {"why": REASON})


PUBLISHER = Identity.parse("publisher:testing")  # the kit's publisher (any workflow)
PUBLISHER_OF_REPORT = Identity.parse("publisher:web")
CANCEL = {"type": CancellationRequested.type_name(), "kind": Kind.CANCEL_REQUESTED, "workflow": "report",
          "step": None}


@pytest.mark.parametrize(("identity", "source", "goals", "allowed"), [
    (PUBLISHER_OF_REPORT, CLIENT_SOURCE, ("report",), True),
    (PUBLISHER_OF_REPORT, "choreo://cli", ("*",), True),
    (Identity.parse("operator:alice"), "choreo://cli", (), True),
    (PUBLISHER_OF_REPORT, CLIENT_SOURCE, ("trip",), False),  # a publisher of another workflow's goals
    (PUBLISHER_OF_REPORT, COORDINATOR_SOURCE, ("*",), False),  # under a service's source
    (PUBLISHER_OF_REPORT, agent_source("report", "draft"), ("*",), False),
    (Identity.agent("report", "draft"), agent_source("report", "draft"), (), False),
    (COORDINATOR, COORDINATOR_SOURCE, (), False),
])
def test_who_may_cancel(identity: Identity, source: str, goals: tuple[str, ...], allowed: bool) -> None:
    refusal = may_publish(identity, source=source, goals=goals, **CANCEL)  # type: ignore[arg-type]
    assert (refusal is None) is allowed, refusal
    if not allowed:
        assert (refusal or "").startswith(f"{identity} may not cancel a 'report' workflow")


def test_a_cancellation_needs_its_kind_and_its_type_together() -> None:
    operator = Identity.parse("operator:alice")
    assert may_publish(operator, type="report.ReportGoal", kind=Kind.CANCEL_REQUESTED, source="choreo://cli",
                       workflow="report", step=None) is not None
    assert may_publish(PUBLISHER_OF_REPORT, type=CancellationRequested.type_name(), kind=Kind.GOAL,
                       source=CLIENT_SOURCE, workflow="report", step=None, goals=("*",)) is not None


# Client.cancel and the coordinator, on the saga kit -------------------------------------------------------


def events_count(kit: SagaKit) -> int:
    topic = kit.settings.events_topic
    return sum(kit.log.end_offset(TopicPartition(topic, p)) for p in range(kit.settings.partitions))


async def test_client_cancel_compensates_what_completed_and_refuses_a_finished_workflow() -> None:
    async with SagaKit(research.agent, analyze.agent, chart.agent, draft.agent, review.agent) as kit:
        kit.pause_step("review")  # review runs, and runs on, while the workflow is cancelled
        goal = await kit.given_goal("report", {"topic": "cancel me"})
        await kit.eventually(lambda: kit.emitted(goal, kind="step_completed", step="draft"))
        await kit.eventually(lambda: kit.emitted(goal, kind="step_completed", step="chart"))
        async with Client(kit.settings, transport=MemoryTransport(kit.log, kit.settings),
                          trust=kit.trust(PUBLISHER)) as client:
            asked = await client.cancel(goal.workflow_id, REASON)
            outcome = await client.wait(asked, 10)
            assert outcome is not None
            assert (outcome.status, outcome.reason) == (OutcomeStatus.CANCELLED, REASON)
            assert outcome.compensated_steps == ["analyze", "chart", "draft", "research"]
            entries = await kit.events(goal)
            assert [e.kind for e in entries].count("cancel_requested") == 1
            assert_reverse_dependency_order(entries, REPORT_DEPENDS)
            assert "review" not in steps_of(entries, "compensation_requested")

            before = events_count(kit)
            with pytest.raises(WorkflowFinished, match=f"^{goal.workflow_id} is already cancelled; nothing published$"):
                await client.cancel(goal.workflow_id, "again")
            with pytest.raises(WorkflowError, match="no goal of it is in the log; nothing published"):
                await client.cancel(f"no-such-{uuid.uuid4().hex[:8]}")
            assert events_count(kit) == before
        # review's result comes after the outcome: it is compensated too.
        kit.resume_step("review")
        await kit.eventually(lambda: kit.emitted(goal, kind="compensation_completed", step="review"))


async def test_a_cancellation_signed_by_an_agent_is_dead_lettered_and_changes_nothing() -> None:
    async with SagaKit(research.agent, analyze.agent, chart.agent, draft.agent, review.agent) as kit:
        kit.pause_step("review")
        goal = await kit.given_goal("report", {"topic": "forged cancel"})
        await kit.eventually(lambda: kit.emitted(goal, kind="step_completed", step="draft"))
        await kit.given_event(goal, CancellationRequested(reason="forged"), step="draft", kind=Kind.CANCEL_REQUESTED,
                              source=CLIENT_SOURCE, signed_as=Identity.agent("report", "draft"))
        topic = kit.settings.deadletter_topic

        async def reasons_given() -> list[str]:
            tps = [TopicPartition(topic, p) for p in range(kit.log.partitions_of(topic))]
            letters = [r for tp in tps for r in kit.log.records(tp)]
            return [dict(r.headers).get("dlq_reason", b"").decode() for r in letters]

        await kit.eventually(reasons_given)  # the coordinator has read it: review still runs
        kit.resume_step("review")
        assert (await kit.outcome(goal)).status is OutcomeStatus.COMPLETED
        await kit.idle()
        reasons = await reasons_given()
        assert len(reasons) == 1, reasons
        assert "agent:report/draft may not cancel a 'report' workflow" in reasons[0], reasons


def test_history_reads_a_cancellation() -> None:
    from choreograph.events import StoredRecord
    from choreograph.transport import framework_store

    event = CancellationRequested(reason=REASON)
    envelope = Envelope.new(type=event.type_name(), source=CLIENT_SOURCE, workflow="report", workflow_id="wf-1",
                            kind=Kind.CANCEL_REQUESTED)
    record = StoredRecord("t", 0, 3, 1, envelope.key, event.encode(), tuple(envelope.headers()))
    entry = entry_of(record, framework_store())
    assert entry is not None
    assert (entry.kind, entry.data) == ("cancel_requested", {"reason": REASON})
