"""Who serves each step (presence on the status topic, group membership), retiring a step, and what a
running saga waits for, on the memory log with a manual clock where time matters."""

from __future__ import annotations

import logging

import pytest

from choreograph import OutcomeStatus, Settings
from choreograph.errors import WorkflowError
from choreograph.events import AgentPresence, BreakerChanged, BreakerState, StepNode
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.saga import Graph, SagaState, catalog_for, fold
from choreograph.security import Identity
from choreograph.testing import SagaKit
from choreograph.timetravel._agents import agents_report, retire_step
from choreograph.timetravel._state import pending_steps
from choreograph.transport import MemoryLog, MemoryTransport, Trust
from choreograph.transport._clock import ManualClock
from choreograph.transport._presence import LivenessWatch, Status, read_status, serving, waiting_steps

REPORT = (research.agent, analyze.agent, chart.agent, draft.agent, review.agent)
T0 = 1_700_000_000_000


def OPERATOR(kit: SagaKit) -> Trust:
    """The operator's signer in `kit` (`choreo agents retire` signs as an operator)."""
    return kit.trust(Identity.parse("operator:testing"))


def presence(instance: str, step: str = "chart", *, seen_at: int = T0, stopping: bool = False,
             breaker: str = "closed") -> AgentPresence:
    return AgentPresence(workflow="report", step=step, agent=f"report.{step}", instance=instance, host="h", pid=7,
                         started_at=T0 - 60_000, seen_at=seen_at, interval_ms=1000, breaker=breaker, lag=3,
                         running=1, stopping=stopping)


async def _status_transport(clock: ManualClock) -> MemoryTransport:
    transport = MemoryTransport(MemoryLog(clock=clock.now_ms), Settings("memory", namespace="st"))
    await transport.ensure_topics()
    return transport


async def _say(transport: MemoryTransport, *events: AgentPresence | BreakerChanged) -> None:
    producer = transport.producer()
    await producer.start()
    for event in events:
        key = event.instance.encode()
        await producer.send_and_wait(transport.settings.status_topic, value=event.encode(), key=key)
    await producer.stop()


async def test_an_instance_is_live_until_it_stops_or_falls_silent_for_three_intervals() -> None:
    clock = ManualClock(T0)
    transport = await _status_transport(clock)
    change = BreakerChanged(workflow="report", step="chart", agent="report.chart", instance="b",
                            state=BreakerState.OPEN, cause="5 of 6 calls failed")
    await _say(transport, presence("a"), presence("b"), change, presence("c", stopping=True))
    status = await read_status(transport, clock=clock)
    assert [p.instance for p in status.live("report", "chart", T0)] == ["a", "b"]
    assert status.instances["b"].breaker == "open"
    assert status.instances["b"].breaker_cause == "5 of 6 calls failed"
    assert status.live("report", "chart", T0 + 3000) != [], "three intervals of silence are tolerated"
    assert status.live("report", "chart", T0 + 3001) == []
    assert status.live("report", "draft", T0) == []


async def test_the_liveness_watch_logs_a_step_with_no_live_agent_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(T0)
    transport = await _status_transport(clock)
    await _say(transport, presence("a"))
    watch = LivenessWatch(transport, clock)
    await watch.start()
    try:
        caplog.set_level(logging.WARNING, "choreograph.presence")
        assert watch.missing([("report", "chart"), ("report", "draft")]) == [("report", "draft")]
        assert watch.missing([("report", "draft")]) == [("report", "draft")]
        assert [r.getMessage() for r in caplog.records].count(
            "step draft of workflow 'report' has no live agent (never seen): its sagas wait for it; start its "
            "agent, or retire the step (choreo agents retire report draft)") == 1
        clock.advance(10_000)  # chart's instance falls silent
        assert watch.missing([("report", "chart")]) == [("report", "chart")]
        await _say(transport, presence("a", seen_at=clock.now_ms()))
        await watch.refresh()
        assert [p.instance for p in watch.live("report", "chart")] == ["a"]
        assert watch.missing([("report", "chart")]) == []
        clock.advance(10_000)
        watch.missing([("report", "chart")])
        chart_lines = [r for r in caplog.records if "step chart" in r.getMessage()]
        assert len(chart_lines) == 2, "logged again only after it was live in between"
        assert "last seen 10 s ago" in chart_lines[1].getMessage()
    finally:
        await watch.stop()


async def test_the_liveness_watch_says_nothing_while_no_agent_sends_presence() -> None:
    clock = ManualClock(T0)
    watch = LivenessWatch(await _status_transport(clock), clock)
    await watch.start()
    try:
        assert watch.missing([("report", "chart")]) == []
    finally:
        await watch.stop()


def test_liveness_is_unknown_only_when_nobody_sends_presence_and_membership_is_not_known() -> None:
    nobody = Status()
    assert serving(nobody, "report", "chart", T0, None) == (None, None)
    assert serving(nobody, "report", "chart", T0, 0) == (0, None)
    assert serving(nobody, "report", "chart", T0, 2) == (2, "group")
    somebody = Status()
    somebody.apply(presence("a", step="draft").encode())
    assert serving(somebody, "report", "chart", T0, None) == (0, None), "others send presence: chart has none"
    assert serving(somebody, "report", "draft", T0, None) == (1, "presence")


def test_waiting_steps_are_those_whose_inputs_are_in_the_log_and_requested_compensations() -> None:
    depends = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    nodes = [StepNode(name=name, depends_on=deps, compensable=True) for name, deps in depends.items()]
    graph = Graph.of("w", nodes)
    running = SagaState("1", "w", goal_seen=True, graph=graph, completed=frozenset({"a", "b"}))
    compensating = SagaState("2", "v", goal_seen=True, graph=graph, completed=frozenset({"a"}),
                             failed={"b": "boom"}, compensation_requested=frozenset({"a"}))
    assert waiting_steps([running, compensating]) == {("w", "c"), ("v", "c"), ("v", "a")}


async def test_agents_lists_every_step_with_who_serves_it_and_flags_a_step_nobody_serves() -> None:
    async with SagaKit(*REPORT) as kit:
        transport = MemoryTransport(kit.log, kit.settings)
        await kit.stop_service("draft")
        await _say(transport, presence("chart-1", seen_at=kit.clock.now_ms(), breaker="open"))
        rows = {r["step"]: r for r in await agents_report(
            kit.settings, transport=transport, verifier=OPERATOR(kit).verifier)}
        assert list(rows) == ["research", "analyze", "chart", "draft", "review"], "in graph order"
        assert rows["draft"]["no_live_agent"]
        assert rows["draft"]["live"] == 0
        # The kit's chart agent sends its own presence; "chart-1" is a second copy with its breaker open.
        assert (rows["chart"]["live"], rows["chart"]["live_by"], rows["chart"]["breaker"]) == (2, "presence", "open")
        assert (rows["review"]["live"], rows["review"]["live_by"]) == (1, "presence")
        assert rows["chart"]["agent"] == "report.chart"
        assert rows["chart"]["lag"] is not None
        assert [r["step"] for r in await agents_report(kit.settings, workflow="nosuch", transport=transport,
                                                                   verifier=OPERATOR(kit).verifier)] == []


async def test_a_retired_step_is_not_waited_for_by_new_goals_and_started_ones_keep_their_graph() -> None:
    async with SagaKit(*REPORT) as kit:
        transport = MemoryTransport(kit.log, kit.settings)
        await kit.stop_service("review")
        stuck = await kit.given_goal("report", {"topic": "before"})

        async def waiting_for_review() -> object:
            return {e.step for e in await kit.emitted(stuck, kind="step_completed")} == {
                "research", "analyze", "chart", "draft"}

        await kit.eventually(waiting_for_review)
        entries = await kit.events(stuck)
        snapshot = fold(entries, catalog_for(entries)).json()
        [pending] = pending_steps(entries, snapshot, kit.clock.now_ms() + 5000)
        completions = [e.timestamp for e in entries if e.kind == "step_completed" and e.step in ("chart", "draft")]
        assert (pending["step"], pending["since"]) == ("review", max(completions))
        assert pending["waited_s"] >= 5

        done = await retire_step(kit.settings, "report", "review", transport=transport, trust=OPERATOR(kit))
        assert done["steps_left"] == ["research", "analyze", "chart", "draft"]
        after = await kit.given_goal("report", {"topic": "after"})
        outcome = await kit.expect_outcome(after, OutcomeStatus.COMPLETED)
        assert "review" not in outcome.completed_steps
        # A workflow in flight keeps the graph it started with: it still waits for review.
        [started] = [e for e in await kit.events(stuck) if e.type.endswith("WorkflowStarted")]
        assert "review" in {step["name"] for step in (started.data or {})["steps"]}
        assert not await kit.emitted(stuck, kind="outcome")
        assert "review" not in {r["step"] for r in await agents_report(
            kit.settings, transport=transport, verifier=OPERATOR(kit).verifier)}


async def test_retire_refuses_an_unknown_step_a_served_one_and_one_others_need() -> None:
    async with SagaKit(*REPORT) as kit:
        transport = MemoryTransport(kit.log, kit.settings)
        with pytest.raises(WorkflowError, match=r"no step 'nosuch' .*\(announced steps of 'report': analyze, chart"):
            await retire_step(kit.settings, "report", "nosuch", transport=transport, trust=OPERATOR(kit))
        with pytest.raises(WorkflowError, match="no step of workflow 'other' is announced"):
            await retire_step(kit.settings, "other", "x", transport=transport, trust=OPERATOR(kit))
        await kit.stop_service("draft")
        with pytest.raises(WorkflowError, match=r"report.DraftCompleted, which review consumes: .* retire review"):
            await retire_step(kit.settings, "report", "draft", transport=transport, trust=OPERATOR(kit))
        with pytest.raises(WorkflowError, match=r"served now by .* \(pid \d+ on .*--force"):
            await retire_step(kit.settings, "report", "review", transport=transport, trust=OPERATOR(kit))
        await retire_step(kit.settings, "report", "review", transport=transport, force=True, trust=OPERATOR(kit))
        # nothing needs it any more:
        await retire_step(kit.settings, "report", "draft", transport=transport, trust=OPERATOR(kit))
        goal = await kit.given_goal("report", {"topic": "short"})
        outcome = await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        assert outcome.completed_steps == ["analyze", "chart", "research"]
