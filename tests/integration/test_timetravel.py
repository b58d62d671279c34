"""History and state at any point, read back from a real broker while and after workflows run, the
example services running in this process (`choreo history` and `choreo state`: tests/e2e/test_timetravel_cli.py)."""

from __future__ import annotations

import asyncio

from helpers import eventually, example_services, serving, signing

from choreograph import AgentRuntime, Client, Coordinator, OutcomeStatus, Settings
from choreograph.events import COORDINATOR_SOURCE, Envelope, Kind, WorkflowOutcome, agent_source
from choreograph.runtime import load_agent
from choreograph.saga import Point, SagaState, Snapshot, catalog_for, fold
from choreograph.timetravel import History, history, state_report
from choreograph.transport import Kafka, announce

FAIL_AT = [None, "research", "analyze", "chart", "draft", "review", None, "review", "chart", None]


async def test_state_at_every_offset_agrees_with_the_live_coordinator(settings: Settings) -> None:
    seen: list[tuple[int, int, SagaState]] = []
    observed_coordinator = Coordinator(settings, observe=lambda p, o, s: seen.append((p, o, s)))
    async with serving(*example_services(settings, coordinator=False), observed_coordinator), \
            Client(settings) as client:
        goals = [await client.publish("report", {"topic": f"tt{i}", "fail_at": f}) for i, f in enumerate(FAIL_AT)]
        outcomes = await client.wait_many(goals, 60)
    assert len(outcomes) == len(goals)
    compared = 0
    for goal in goals:
        entries = await history(settings, goal.workflow_id, to_end=True)
        catalog = catalog_for(entries)
        observed = [(offset, state) for partition, offset, state in seen
                    if state.workflow_id == goal.workflow_id and partition == goal.partition]
        assert len(observed) >= 2
        for offset, live in observed:
            rebuilt = fold(entries, catalog, Point(offset=offset))
            assert rebuilt.state == live, (goal.workflow_id, offset)
            compared += 1
        # The CLI's path (history read from the broker, then folded) at the goal and at the end.
        for offset, live in (observed[0], observed[-1]):
            report = await state_report(goal.workflow_id, settings=settings, at=Point(offset=offset))
            expected = {k: v for k, v in Snapshot(live).json().items() if k not in ("at", "events_folded", "decided")}
            assert {k: report[k] for k in expected} == expected
    assert compared >= 60


async def test_history_starts_at_the_goals_time_not_at_the_partitions_start(settings: Settings) -> None:
    kafka = Kafka(settings)
    await kafka.ensure_topics()
    # 2,000 records on every partition before any workflow, then the services and one workflow.
    producer = kafka.producer()
    await producer.start()
    try:
        futures = [await producer.send(settings.events_topic, value=b"x" * 300, key=b"filler", partition=p)
                   for p in range(settings.partitions) for _ in range(2000)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    async with serving(*example_services(settings)), Client(settings) as client:
        goal = await client.publish("report", {"topic": "late"})
        assert await client.wait(goal, 60) is not None
    async with History(settings) as reader:
        records = [r async for r in reader.records(goal.workflow_id)]
        assert reader.scanned < 200, f"read {reader.scanned} records for a workflow of {len(records)}"
    assert records[0].header("ce_kind") == b"goal"
    assert records[-1].header("ce_kind") == b"outcome"
    # Reading from the partition's start (as for an id without a time in it) finds the same history.
    async with History(settings) as reader:
        again = [r async for r in reader.records(goal.workflow_id, since_ms=0)]
        assert reader.scanned > 2000
    assert again == records


async def test_state_folds_only_what_the_services_believe(settings: Settings) -> None:
    """`choreo state` agrees with the coordinator: a forged outcome (unsigned, from the coordinator's
    source) is not folded, so a saga waiting for review is still running (before: "completed")."""
    services = [s for s in example_services(settings) if not (isinstance(s, AgentRuntime) and s.agent.step == "review")]
    kafka = Kafka(settings)
    await kafka.ensure_topics()
    announcer = signing("agent:report/review", kafka.producer())
    await announcer.start()
    try:  # review's contract, as its agent would announce it: the saga waits for review
        await announce(announcer, settings.registry_topic, settings.events_topic, settings.partitions,
                       load_agent("choreograph.examples.report.review:agent").contract(),
                       agent_source("report", "review"))
    finally:
        await announcer.stop()
    async with serving(*services), Client(settings) as client:
        goal = await client.publish("report", {"topic": "forged end"})
        forged = Envelope.new(type=WorkflowOutcome.type_name(), source=COORDINATOR_SOURCE, workflow="report",
                              workflow_id=goal.workflow_id, kind=Kind.OUTCOME)
        value = WorkflowOutcome(workflow="report", status=OutcomeStatus.COMPLETED, failed_step=None, reason=None,
                                completed_steps=[], compensated_steps=[]).encode()
        producer = Kafka(settings).producer()
        await producer.start()
        try:
            await producer.send_and_wait(settings.events_topic, value=value, key=forged.key, headers=forged.headers())
        finally:
            await producer.stop()

        async def forged_is_logged() -> bool:
            return any(e.event_id == forged.id for e in await history(settings, goal.workflow_id, to_end=True))

        await eventually(forged_is_logged, what="the forged outcome to be in the log")
        report = await state_report(goal.workflow_id, settings=settings)
    assert report["status"] == "running"
