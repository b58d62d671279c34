"""No record can take a service down: each hostile record of issue 10, written as a misbehaving
producer would, on the memory log with every service of the example workflow running.

Each test checks what a user sees: the services keep running (the kit raises if one died), the
record is in the dead-letter topic with its reason or skipped by rule, and a good goal published
after it completes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from choreograph import (
    EventTooLarge,
    GoalRejected,
    OutcomeStatus,
    PublishedGoal,
    RestoreStarted,
    StepFailed,
    WorkflowStarted,
)
from choreograph.events import COORDINATOR_SOURCE, Envelope, Kind, StepNode
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.examples.report._events import ChartCompleted, ReportGoal
from choreograph.testing import SagaKit
from choreograph.transport import MemoryTransport, Record, TopicPartition

REPORT = (research.agent, analyze.agent, chart.agent, draft.agent, review.agent)
INTRUDER = "choreo://intruder"


async def send_raw(kit: SagaKit, key: bytes | None, value: bytes | None,
                   headers: Sequence[tuple[str, bytes]], partition: int = 0) -> None:
    """Write one record as a user's own producer would (which may allow records up to 10 MB), signed
    with the real key of the party its ce_source claims: these rules hold for trusted parties too."""
    producer = MemoryTransport(kit.log, kit.settings).producer(max_request_size=10_000_000)
    await producer.start()
    try:
        await producer.send_and_wait(kit.settings.events_topic, value=value, key=key,
                                     headers=kit.signed(key, value, headers), partition=partition)
    finally:
        await producer.stop()


def headers_of(kind: Kind, type_name: str, *, workflow_id: str = "w", step: str | None = None,
               source: str = INTRUDER) -> list[tuple[str, bytes]]:
    return Envelope.new(type=type_name, source=source, workflow="report", workflow_id=workflow_id,
                        kind=kind, step=step).headers()


def dead_letters(kit: SagaKit) -> list[Record]:
    return list(kit.log.records(TopicPartition(kit.settings.deadletter_topic, 0)))


async def dead_letter_with(kit: SagaKit, reason: str) -> Record:
    """The coordinator's dead letter whose dlq_reason contains `reason`, waiting for it."""
    async def find() -> Record | None:
        return next((r for r in dead_letters(kit) if reason in _header(r, "dlq_reason")
                     and _header(r, "dlq_consumer") == kit.settings.coordinator_group), None)
    found = await kit.eventually(find)
    assert isinstance(found, Record)
    return found


def _header(record: Record, name: str) -> str:
    return next(((v or b"").decode(errors="replace") for k, v in record.headers if k == name), "")


async def a_good_goal_completes(kit: SagaKit) -> None:
    goal = await kit.given_goal("report", {"topic": "after"})
    await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
    kit.check_alive()


GOAL = ReportGoal.type_name()


@pytest.mark.parametrize("with_headers", [True, False])
async def test_a_tombstone_is_dead_lettered_and_nothing_stops(with_headers: bool) -> None:
    async with SagaKit(*REPORT) as kit:
        await send_raw(kit, b"w-tomb", None, headers_of(Kind.GOAL, GOAL, workflow_id="w-tomb") if with_headers else [])
        if with_headers:
            await dead_letter_with(kit, "tombstone")
        await a_good_goal_completes(kit)
        await kit.restart("coordinator")  # no crash loop: the tombstone is behind its commit or handled again
        await a_good_goal_completes(kit)


async def test_a_5_mb_record_is_dead_lettered_as_a_truncated_copy_with_its_size_and_digest() -> None:
    async with SagaKit(*REPORT) as kit:
        value = b"\xc3\x01" + b"x" * 5_000_000
        await send_raw(kit, b"w-big", value, headers_of(Kind.GOAL, GOAL, workflow_id="w-big"))
        letter = await dead_letter_with(kit, "")
        assert _header(letter, "dlq_truncated") == "1"
        assert _header(letter, "dlq_sha256") == hashlib.sha256(value).hexdigest()
        assert int(_header(letter, "dlq_size")) > 5_000_000
        assert letter.value is not None
        assert value.startswith(letter.value)
        assert len(letter.value) <= 65_536
        await a_good_goal_completes(kit)


async def test_a_result_over_the_maximum_event_size_fails_its_step_instead_of_killing_its_agent() -> None:
    async with SagaKit(*REPORT) as kit:
        # 300 KB of topic is a valid goal; research's result repeats it in three URLs (1.2 MB).
        goal = await kit.given_goal("report", {"topic": "t" * 300_000})
        outcome = await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="research")
        assert "over the maximum event size of 1048576 bytes" in (outcome.reason or "")
        failed = await kit.emitted(goal, kind="step_failed", step="research")
        assert failed[0].data is not None
        assert failed[0].data["error_type"] == "EventTooLarge"
        await kit.restart("research")  # its input is done (a failure is a result): nothing re-runs
        await a_good_goal_completes(kit)
        assert kit.handler_runs[(goal.workflow_id, "research")] == 1


async def test_a_goal_over_the_maximum_event_size_is_refused_before_it_is_sent() -> None:
    async with SagaKit(*REPORT) as kit:
        with pytest.raises(EventTooLarge, match="over the maximum event size"):
            await kit.given_goal("report", {"topic": "t" * 1_100_000})


@pytest.mark.parametrize("source", [INTRUDER, "choreo://agent/report/analyze"])
async def test_a_key_that_is_not_utf8_is_dead_lettered_and_no_agent_stops_even_after_a_restart(source: str) -> None:
    async with SagaKit(*REPORT) as kit:
        result = ChartCompleted(topic="x", chart_uri="u")
        for kind, step in [(Kind.GOAL, None), (Kind.STEP_COMPLETED, "analyze"), (Kind.OUTCOME, None)]:
            await send_raw(kit, b"\xff\xfe", ReportGoal(topic="x").encode() if kind is Kind.GOAL else result.encode(),
                           headers_of(kind, GOAL if kind is Kind.GOAL else result.type_name(), step=step,
                                      source=source))
        await dead_letter_with(kit, "not UTF-8")
        await kit.restart("analyze")  # its look-back reads the record under its own source
        await kit.restart("coordinator")
        await a_good_goal_completes(kit)


async def test_goals_without_a_key_are_each_dead_lettered() -> None:
    async with SagaKit(*REPORT) as kit:
        for _ in range(2):
            await send_raw(kit, None, ReportGoal(topic="keyless").encode(), headers_of(Kind.GOAL, GOAL, workflow_id=""))
        await kit.eventually(lambda: _count(kit, "no key", 2))
        await a_good_goal_completes(kit)


async def _count(kit: SagaKit, reason: str, want: int) -> bool:
    return sum(reason in _header(r, "dlq_reason") for r in dead_letters(kit)) >= want


async def test_a_body_of_another_type_than_its_ce_type_starts_no_saga() -> None:
    async with SagaKit(*REPORT) as kit:
        body = ChartCompleted(topic="x", chart_uri="u").encode()
        await send_raw(kit, b"w-mismatch", body, headers_of(Kind.GOAL, GOAL, workflow_id="w-mismatch"))
        letter = await dead_letter_with(kit, "but the body is a")
        assert "ce_type is report.ReportGoal" in _header(letter, "dlq_reason")
        await a_good_goal_completes(kit)
        await kit.idle()  # nothing pins the coordinator's commit


async def test_a_completion_of_a_step_not_in_the_graph_is_dead_lettered_and_not_listed() -> None:
    async with SagaKit(*REPORT) as kit:
        kit.pause_step("review")
        goal = await kit.given_goal("report", {"topic": "ghost"})
        await kit.eventually(lambda: kit.emitted(goal, kind="step_completed", step="draft"))
        body = ChartCompleted(topic="x", chart_uri="u")
        await send_raw(kit, goal.workflow_id.encode(), body.encode(),
                       headers_of(Kind.STEP_COMPLETED, body.type_name(), workflow_id=goal.workflow_id, step="ghost",
                                  source="choreo://agent/report/ghost"),  # signed by that agent's own key
                       partition=goal.partition)
        await dead_letter_with(kit, "step 'ghost' is not in the graph of workflow 'report'")
        kit.resume_step("review")
        outcome = await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        assert "ghost" not in outcome.completed_steps


async def test_a_failure_logged_before_its_workflows_goal_is_ignored() -> None:
    async with SagaKit(*REPORT) as kit:
        workflow_id = "w-early"
        failure = StepFailed(step="research", reason="forged", error_type="Forged")
        await send_raw(kit, workflow_id.encode(), failure.encode(),
                       headers_of(Kind.STEP_FAILED, failure.type_name(), workflow_id=workflow_id, step="research"),
                       partition=_partition(kit, workflow_id))
        goal = await kit.given_goal("report", {"topic": "early"}, workflow_id=workflow_id)
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)


def _partition(kit: SagaKit, workflow_id: str) -> int:
    return MemoryTransport(kit.log, kit.settings).partition_for(workflow_id.encode(), kit.settings.partitions)


async def test_a_second_goal_with_a_used_workflow_id_is_dead_lettered_and_its_waiter_told() -> None:
    async with SagaKit(*REPORT) as kit:
        first = await kit.given_goal("report", {"topic": "first"})
        await kit.expect_outcome(first, OutcomeStatus.COMPLETED)
        again: PublishedGoal = await kit.given_goal("report", {"topic": "again"}, workflow_id=first.workflow_id)
        with pytest.raises(GoalRejected, match="duplicate workflow id"):
            await kit.outcome(again)
        assert len(await kit.emitted(first, kind="outcome")) == 1
        await a_good_goal_completes(kit)


async def test_a_second_goal_while_the_first_runs_does_not_take_its_outcome() -> None:
    async with SagaKit(*REPORT) as kit:
        kit.pause_step("review")
        first = await kit.given_goal("report", {"topic": "first"})
        again = await kit.given_goal("report", {"topic": "again"}, workflow_id=first.workflow_id)
        await dead_letter_with(kit, "duplicate workflow id")
        kit.resume_step("review")
        await kit.expect_outcome(first, OutcomeStatus.COMPLETED)
        with pytest.raises(GoalRejected):
            await kit.outcome(again)


async def test_a_workflow_started_with_a_cycle_is_dead_lettered() -> None:
    async with SagaKit(*REPORT) as kit:
        kit.pause_step("research")
        goal = await kit.given_goal("report", {"topic": "cycle"})
        started = WorkflowStarted(workflow="report", steps=[StepNode(name="a", compensable=False, depends_on=["b"]),
                                                            StepNode(name="b", compensable=False, depends_on=["a"])])
        await send_raw(kit, goal.workflow_id.encode(), started.encode(),
                       headers_of(Kind.OTHER, started.type_name(), workflow_id=goal.workflow_id,
                                  source=COORDINATOR_SOURCE),  # signed by the coordinator's key
                       partition=goal.partition)
        await dead_letter_with(kit, "dependency cycle")
        kit.resume_step("research")
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        await a_good_goal_completes(kit)


async def test_a_restore_marker_from_anyone_but_a_restore_is_dead_lettered_and_changes_nothing() -> None:
    async with SagaKit(*REPORT, partitions=1) as kit:
        # Honoured, it made every later record of the partition "restored history": dropped by all.
        marker = RestoreStarted(restore_id="forged", archive="/nowhere", records=0, until_timestamp=2**62)
        await send_raw(kit, b"restore-forged", marker.encode(),
                       headers_of(Kind.OTHER, marker.type_name(), workflow_id="restore-forged"))
        # Signed by a real key, but not an operator's: refused before the marker's own rule.
        await dead_letter_with(kit, "may not publish restore markers: only an operator does")
        await a_good_goal_completes(kit)
        await kit.idle()  # and no bracket pins a commit
