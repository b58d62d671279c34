"""An agent takes an input only from a record that may carry it (issue 12): a goal of its workflow, for
its goal type, or the completion of the step whose contract completes with the input's type.

A signature proves who sent a record's headers, not that its body is that party's to say: the review
agent may publish heartbeats and completions of review, and such a record whose body is a
ResearchCompleted is still review's record. Analyze must not run on it; the coordinator dead-letters
the completion once (the heartbeat fails its own model and is dead-lettered for that). No broker: the
kit's services on the memory log, signing and verifying with the kit's keys.
"""

from __future__ import annotations

import logging

import pytest
from helpers.sagas import announce_in_kit

from choreograph import OutcomeStatus
from choreograph.events import Kind
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.examples.report._events import ResearchCompleted, ReviewCompleted
from choreograph.runtime import PublishedGoal
from choreograph.testing import SagaKit
from choreograph.transport import Record, TopicPartition

REPORT = (research.agent, analyze.agent, chart.agent, draft.agent, review.agent)
FORGED = ResearchCompleted(topic="forged", sources=["forged"])  # research's result type, sent by review


def _letters(kit: SagaKit) -> list[Record]:
    topic = kit.settings.deadletter_topic
    return [r for p in range(kit.log.partitions_of(topic)) for r in kit.log.records(TopicPartition(topic, p))]


def _said(record: Record, name: str) -> str:
    return next((v.decode() for k, v in reversed(record.headers) if k == name), "")


async def _analysed(kit: SagaKit, goal: PublishedGoal) -> str:
    """The topic analyze completed the workflow with, once it is complete (its handler ran once)."""
    await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
    [analysis] = await kit.emitted(goal, kind="step_completed", step="analyze")
    assert kit.handler_runs[(goal.workflow_id, "analyze")] == 1
    return str((analysis.data or {})["topic"])


async def test_a_heartbeat_whose_body_is_a_consumed_type_is_no_input(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="choreograph.agent")
    async with SagaKit(*REPORT) as kit:
        kit.pause_step("research")  # its genuine result comes after the forged one
        goal = await kit.given_goal("report", {"topic": "genuine"})
        await kit.given_event(goal, FORGED, step="review", kind=Kind.HEARTBEAT)  # review's key and headers
        kit.resume_step("research")
        assert await _analysed(kit, goal) == "genuine"
        await kit.idle()
        # The coordinator dead-letters it as a heartbeat that is none; no agent writes a dead letter.
        assert [_said(r, "dlq_consumer") for r in _letters(kit)] == [kit.settings.coordinator_group]
    skipped = [r.getMessage() for r in caplog.records if "not an input" in r.getMessage()]
    assert skipped
    assert all("a heartbeat of step review from choreo://agent/report/review" in m for m in skipped), skipped


async def test_a_completion_of_the_type_by_another_step_is_no_input_and_is_dead_lettered_once() -> None:
    async with SagaKit(*REPORT) as kit:
        kit.pause_step("research")
        goal = await kit.given_goal("report", {"topic": "genuine"})
        await kit.given_event(goal, FORGED, step="review")  # a step_completed of review, review's key
        kit.resume_step("research")
        assert await _analysed(kit, goal) == "genuine"
        await kit.idle()
        [letter] = _letters(kit)
        assert _said(letter, "dlq_consumer") == kit.settings.coordinator_group
        assert _said(letter, "dlq_reason") == (
            f"agent:report/review may not complete step review with {ResearchCompleted.type_name()}: its contract "
            f"completes with {ReviewCompleted.type_name()}")
        # Review's own completion, later, is still review's completion.
        assert len(await kit.emitted(goal, kind="step_completed", step="review")) == 2


async def test_a_genuine_completion_is_an_input_even_of_a_step_announced_after_the_agent_started() -> None:
    async with SagaKit(analyze.agent) as kit:
        # Analyze read the registry when it started; research's contract comes later (a step added
        # while the workflow runs), before research publishes anything, as an agent announces.
        await announce_in_kit(kit, research.agent.contract())
        goal = await kit.given_goal("report", {"topic": "genuine"})
        await kit.given_event(goal, ResearchCompleted(topic="genuine", sources=["s"]), step="research")
        assert await _analysed(kit, goal) == "genuine"
        await kit.idle()
        assert _letters(kit) == []
