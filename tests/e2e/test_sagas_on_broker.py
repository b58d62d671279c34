"""Sagas end to end on a real broker, every service its own process: outcomes and compensations, a
coordinator or an agent killed mid-saga, duplicates, an agent joining by being started, copies sharing
partitions (unreadable records: tests/integration/test_dead_letters.py)."""

from __future__ import annotations

import ast
import signal
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition
from helpers import Stack, agent_spec, coordinator_spec, eventually
from helpers.sagas import (
    REPORT_DEPENDS,
    assert_compensated_exactly_completed,
    assert_reverse_dependency_order,
    assert_single_outcome_last,
    describe_unfinished,
    steps_of,
)

from choreograph import Client, OutcomeStatus, history
from choreograph.transport import Kafka

FAIL_AT = ["research", "analyze", "chart", "draft", "review"]
# With chart and draft in parallel, the sibling of a failing branch still completes.
EXPECTED_COMPLETED = {
    None: {"research", "analyze", "chart", "draft", "review"},
    "research": set(),
    "analyze": {"research"},
    "chart": {"research", "analyze", "draft"},
    "draft": {"research", "analyze", "chart"},
    "review": {"research", "analyze", "chart", "draft"},
}


async def test_happy_path_completes_and_each_failure_compensates_completed_steps_in_reverse(stack: Stack) -> None:
    stack.start_examples()
    async with Client(stack.settings) as client:
        goals = {f: await client.publish("report", {"topic": f"t-{f}", "fail_at": f}) for f in [None, *FAIL_AT]}
        outcomes = await client.wait_many(list(goals.values()), 60)
    missing = [g.workflow_id for g in goals.values() if g.workflow_id not in outcomes]
    assert not missing, "every goal reaches an outcome\n" + await describe_unfinished(stack.settings, missing)
    for fail_at, goal in goals.items():
        outcome = outcomes[goal.workflow_id]
        entries = await history(stack.settings, goal.workflow_id, to_end=True)
        assert set(steps_of(entries, "step_completed")) == EXPECTED_COMPLETED[fail_at]
        assert_single_outcome_last(entries)
        if fail_at is None:
            assert outcome.status is OutcomeStatus.COMPLETED
            assert steps_of(entries, "compensation_requested") == []
        else:
            assert outcome.status is OutcomeStatus.COMPENSATED
            assert outcome.failed_step == fail_at
            assert set(outcome.compensated_steps) == EXPECTED_COMPLETED[fail_at]
            assert_compensated_exactly_completed(entries)
            assert_reverse_dependency_order(entries, REPORT_DEPENDS)


async def test_coordinator_killed_mid_saga_resumes_from_the_log(stack: Stack) -> None:
    stack.extra_env["REPORT_STEP_DELAY_MS"] = "150"  # each saga takes ~0.6 s, so the kill lands mid-saga
    stack.start_examples()
    async with Client(stack.settings) as client:
        before = [await client.publish("report", {"topic": "a", "fail_at": f}) for f in [None, "chart", "review"]]

        async def coordinator_acted() -> bool:
            return any(e.source == "choreo://coordinator" for e in await history(stack.settings, before[0].workflow_id))

        await eventually(coordinator_acted, what="the coordinator to fix the first saga's graph")
        stack.kill("coordinator", signal.SIGKILL)
        during = [await client.publish("report", {"topic": "b", "fail_at": f}) for f in [None, "draft", "analyze"]]
        stack.start(coordinator_spec())
        outcomes = await client.wait_many(before + during, 60)
    expected = [None, "chart", "review", None, "draft", "analyze"]
    assert len(outcomes) == len(expected)
    for goal, fail_at in zip(before + during, expected, strict=True):
        entries = await history(stack.settings, goal.workflow_id, to_end=True)
        assert_single_outcome_last(entries)
        want = OutcomeStatus.COMPLETED if fail_at is None else OutcomeStatus.COMPENSATED
        assert outcomes[goal.workflow_id].status is want
        assert set(steps_of(entries, "step_completed")) == EXPECTED_COMPLETED[fail_at]
        if fail_at is not None:
            assert_compensated_exactly_completed(entries)
            assert_reverse_dependency_order(entries, REPORT_DEPENDS)


async def test_a_duplicate_completion_changes_nothing(stack: Stack) -> None:
    stack.start_examples()
    settings = stack.settings
    async with Client(settings) as client:
        goal = await client.publish("report", {"topic": "dup"})
        assert (await client.wait(goal, 30)) is not None
    # A restarted agent must still recognise the duplicate: its memory comes from the log.
    stack.kill("report.analyze", signal.SIGTERM)
    stack.start(agent_spec("report.analyze", "choreograph.examples.report.analyze:agent"))

    before = await history(settings, goal.workflow_id, to_end=True)
    original = next(e for e in before if e.kind == "step_completed" and e.step == "research")
    tp = TopicPartition(original.topic, original.partition)
    kafka = Kafka(settings)
    raw = [r async for r in kafka.read([tp]) if r.offset == original.offset].pop()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        meta = await producer.send_and_wait(original.topic, value=raw.value, key=raw.key, headers=list(raw.headers))
    finally:
        await producer.stop()

    async def consumed_past_duplicate() -> bool:
        groups = (settings.coordinator_group, settings.agent_group("report", "analyze"))
        offsets = [await committed(kafka, group, tp) for group in groups]
        return all(offset > meta.offset for offset in offsets)

    await eventually(consumed_past_duplicate, what="coordinator and analyze to consume the duplicate")
    after = await history(settings, goal.workflow_id, to_end=True)
    assert [e.event_id for e in after] == [e.event_id for e in before] + [original.event_id]


async def committed(kafka: Kafka, group: str, tp: TopicPartition) -> int:
    """A group's committed offset, read as a member would (without joining the group)."""
    consumer = kafka.consumer(group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(tp) or 0
    finally:
        await consumer.stop()


FACTCHECK_AGENT = '''
from choreograph import Agent, CompensationRequested, Event, StepContext
from choreograph.examples.report._events import AnalysisCompleted

class FactsChecked(Event, schema={"type": "record", "name": "FactsChecked", "namespace": "factcheck",
                                  "fields": [{"name": "checked", "type": "long"}]}):
    checked: int

agent = Agent(workflow="report", step="factcheck")

@agent.handler
async def check(ctx: StepContext, analysis: AnalysisCompleted) -> FactsChecked:
    return FactsChecked(checked=len(analysis.findings))

@agent.compensation
async def uncheck(ctx: StepContext, request: CompensationRequested) -> None:
    pass
'''


async def test_a_new_agent_joins_the_workflow_by_being_started(stack: Stack, tmp_path: Path) -> None:
    stack.start_examples()
    (tmp_path / "factcheck_agent.py").write_text(FACTCHECK_AGENT)
    stack.start(agent_spec("factcheck", "factcheck_agent:agent"), pythonpath=tmp_path)
    async with Client(stack.settings) as client:
        happy = await client.publish("report", {"topic": "with factcheck"})
        failing = await client.publish("report", {"topic": "with factcheck", "fail_at": "review"})
        outcomes = await client.wait_many([happy, failing], 60)

    happy_entries = await history(stack.settings, happy.workflow_id)
    assert outcomes[happy.workflow_id].status is OutcomeStatus.COMPLETED
    assert "factcheck" in outcomes[happy.workflow_id].completed_steps
    assert "factcheck" in steps_of(happy_entries, "step_completed")
    assert_single_outcome_last(happy_entries)

    entries = await history(stack.settings, failing.workflow_id)
    assert outcomes[failing.workflow_id].status is OutcomeStatus.COMPENSATED
    assert "factcheck" in outcomes[failing.workflow_id].compensated_steps
    assert_compensated_exactly_completed(entries)
    assert_reverse_dependency_order(entries, {**REPORT_DEPENDS, "factcheck": ["analyze"]})


def assigned_partitions(stack: Stack, name: str) -> set[int] | None:
    """The partitions an agent process last logged as assigned to it."""
    lines = [line for line in stack.log(name).splitlines() if ".agent." in line and ": assigned [" in line]
    return set(ast.literal_eval(lines[-1].split(": assigned ", 1)[1])) if lines else None


async def test_copies_of_an_agent_share_partitions_and_take_over_from_a_killed_copy(stack: Stack) -> None:
    stack.extra_env["REPORT_STEP_DELAY_MS"] = "100"
    stack.start_examples()
    stack.start(agent_spec("report.analyze-2", "choreograph.examples.report.analyze:agent"))
    everything = set(range(stack.settings.partitions))

    async def spread() -> bool:
        first, second = assigned_partitions(stack, "report.analyze"), assigned_partitions(stack, "report.analyze-2")
        return bool(first and second and not first & second and first | second == everything)

    await eventually(spread, what="two analyze copies to split the partitions")
    async with Client(stack.settings) as client:
        goals = [await client.publish("report", {"topic": f"scale {i}"}) for i in range(8)]
        stack.kill("report.analyze", signal.SIGKILL)  # some of its work is in flight or uncommitted
        outcomes = await client.wait_many(goals, 90)
    assert assigned_partitions(stack, "report.analyze-2") == everything
    assert {o.status for o in outcomes.values()} == {OutcomeStatus.COMPLETED}
    assert len(outcomes) == len(goals)
    for goal in goals:
        entries = await history(stack.settings, goal.workflow_id, to_end=True)
        assert steps_of(entries, "step_completed").count("analyze") == 1, "one analyze result per workflow"
