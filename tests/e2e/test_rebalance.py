"""Rebalances lose nothing: real processes on the broker, a group member joining and leaving while
sagas run, and a late duplicate join input."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

from aiokafka import TopicPartition
from helpers import Stack, coordinator_spec, eventually
from helpers.sagas import assert_single_outcome_last, describe_unfinished

from choreograph import Client, OutcomeStatus, PublishedGoal, Settings, history
from choreograph.runtime import ServiceSpec
from choreograph.transport import Kafka


async def committed_lag(settings: Settings, group: str) -> int:
    """Records of the events topic after the group's committed offsets (all partitions)."""
    kafka = Kafka(settings)
    tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
    ends = await kafka.end_offsets(tps)
    consumer = kafka.consumer(group_id=group)
    await consumer.start()
    try:
        committed = {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
    return sum(ends[tp] - (committed[tp] or 0) for tp in tps)


async def test_a_coordinator_joining_and_leaving_the_group_loses_no_saga(stack: Stack) -> None:
    stack.extra_env["REPORT_STEP_DELAY_MS"] = "300"  # ~2 s a saga: many are open at each rebalance
    stack.start_examples()
    second = ServiceSpec("coordinator-2", coordinator_spec().argv)
    fail_at = [None, "chart", "review", "draft", "analyze"]
    goals: list[PublishedGoal] = []
    stop = asyncio.Event()
    async with Client(stack.settings) as client:

        async def publish_until_stopped() -> None:
            while not stop.is_set():
                goals.append(await client.publish("report", {"topic": "t", "fail_at": fail_at[len(goals) % 5]}))
                await asyncio.sleep(0.1)  # pacing the publisher, not synchronising the test

        publisher = asyncio.create_task(publish_until_stopped())
        await eventually(lambda: asyncio.sleep(0, len(goals) >= 10), what="10 goals published")
        await asyncio.to_thread(stack.start, second)  # joins the group: partitions move mid-saga
        open_at_join = len(goals) - len(await client.wait_many(list(goals), 0.5))
        await eventually(lambda: asyncio.sleep(0, len(goals) >= 40), what="40 goals published")
        await asyncio.to_thread(stack.kill, "coordinator-2", signal.SIGTERM)  # leaves: they move back
        open_at_leave = len(goals) - len(await client.wait_many(list(goals), 0.5))
        await eventually(lambda: asyncio.sleep(0, len(goals) >= 60), what="60 goals published")
        stop.set()
        await publisher
        outcomes = await client.wait_many(goals, 90)
    assert open_at_join > 0, (open_at_join, open_at_leave)
    assert open_at_leave > 0, (open_at_join, open_at_leave)
    missing = [g.workflow_id for g in goals if g.workflow_id not in outcomes]
    assert not missing, (f"{len(missing)} of {len(goals)} sagas have no outcome\n"
                         + await describe_unfinished(stack.settings, missing))
    for i, goal in enumerate(goals):
        entries = await history(stack.settings, goal.workflow_id, to_end=True)
        assert_single_outcome_last(entries)
        want = OutcomeStatus.COMPLETED if fail_at[i % 5] is None else OutcomeStatus.COMPENSATED
        assert outcomes[goal.workflow_id].status is want
    # Proof the second coordinator took part (the first sentence of its log names its partitions).
    log = stack.log("coordinator-2")
    assert "assigned [" in log, "the second coordinator never took a partition"
    assert "assigned []" not in log, "the second coordinator never took a partition"


async def test_a_duplicate_join_input_after_the_outcome_leaves_no_committed_lag(stack: Stack) -> None:
    stack.start_examples()
    async with Client(stack.settings) as client:
        goal = await client.publish("report", {"topic": "late", "fail_at": "draft"})
        assert (await client.wait(goal, 30)) is not None
        entries = await history(stack.settings, goal.workflow_id, to_end=True)
        chart = next(e for e in entries if e.kind == "step_completed" and e.step == "chart")
        # A user's producer re-publishes the chart result after the workflow ended: review joins
        # chart and draft, and draft failed, so no join can ever complete.
        kafka = Kafka(stack.settings)
        async with kafka.reader([TopicPartition(chart.topic, chart.partition)]) as reader:
            reader.seek(TopicPartition(chart.topic, chart.partition), chart.offset)
            batch = await reader.getmany(TopicPartition(chart.topic, chart.partition), timeout_ms=2000)
            record = next(r for r in batch[TopicPartition(chart.topic, chart.partition)] if r.offset == chart.offset)
        producer = kafka.producer()
        await producer.start()
        try:
            await producer.send_and_wait(chart.topic, value=record.value, key=record.key,
                                         headers=list(record.headers), partition=chart.partition)
        finally:
            await producer.stop()
        later = [await client.publish("report", {"topic": f"after{i}"}) for i in range(10)]
        assert len(await client.wait_many(later, 60)) == len(later)
    review = stack.settings.agent_group("report", "review")

    async def idle() -> bool:
        return await committed_lag(stack.settings, review) == 0

    await eventually(idle, 20, "the review group's committed lag to reach 0")
    counts = Counter(e.kind for e in await history(stack.settings, goal.workflow_id, to_end=True))
    assert counts["outcome"] == 1
    assert counts["step_completed"] == 4  # research, analyze, chart, the copy
