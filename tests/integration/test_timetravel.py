"""History and state at any point, read back from a real broker while and after workflows run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime

import orjson
from conftest import ROOT, Stack, choreo

from choreograph import Client, Coordinator
from choreograph.runtime import discover
from choreograph.saga import Point, SagaState, Snapshot, catalog_for, fold
from choreograph.timetravel import History, Recording, history, state_report
from choreograph.transport import Kafka

FAIL_AT = [None, "research", "analyze", "chart", "draft", "review", None, "review", "chart", None]


async def test_state_at_every_offset_agrees_with_the_live_coordinator(stack: Stack) -> None:
    settings = stack.settings
    seen: list[tuple[int, int, SagaState]] = []
    stack.start(*(spec for spec in discover(ROOT) if spec.name != "coordinator"))
    async with Coordinator(settings, observe=lambda p, o, s: seen.append((p, o, s))) as coordinator:
        running = asyncio.create_task(coordinator.run())
        try:
            async with Client(settings) as client:
                goals = [await client.publish("report", {"topic": f"tt{i}", "fail_at": f})
                         for i, f in enumerate(FAIL_AT)]
                outcomes = await client.wait_many(goals, 60)
        finally:
            coordinator.request_stop()
            await running
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


async def test_history_starts_at_the_goals_time_not_at_the_partitions_start(stack: Stack) -> None:
    settings = stack.settings
    kafka = Kafka(settings)
    await kafka.ensure_topics()
    # 2,000 records on every partition before any workflow, then the stack and one workflow.
    producer = kafka.producer()
    await producer.start()
    try:
        futures = [await producer.send(settings.events_topic, value=b"x" * 300, key=b"filler", partition=p)
                   for p in range(settings.partitions) for _ in range(2000)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    stack.start_examples()
    async with Client(settings) as client:
        goal = await client.publish("report", {"topic": "late"})
        assert await client.wait(goal, 60) is not None
    async with History(settings) as reader:
        records = [r async for r in reader.records(goal.workflow_id)]
        assert reader.scanned < 200, f"read {reader.scanned} records for a workflow of {len(records)}"
    assert records[0].header("ce_kind") == b"goal" and records[-1].header("ce_kind") == b"outcome"
    # Reading from the partition's start (as for an id without a time in it) finds the same history.
    async with History(settings) as reader:
        again = [r async for r in reader.records(goal.workflow_id, since_ms=0)]
        assert reader.scanned > 2000
    assert again == records


def test_history_follow_prints_a_running_workflow_until_its_outcome(stack: Stack, cli_env: dict[str, str]) -> None:
    stack.extra_env["REPORT_STEP_DELAY_MS"] = "300"
    stack.start_examples()
    published = choreo("publish", "report", "--data", '{"topic": "followed", "fail_at": "review"}', env=cli_env)
    workflow_id = orjson.loads(published.stdout)["workflow_id"]
    follow = subprocess.run([sys.executable, "-m", "choreograph", "history", workflow_id, "--follow", "--json",
                             "--timeout", "60"], cwd=ROOT, env=cli_env, text=True, capture_output=True, timeout=90)
    assert follow.returncode == 0, follow.stderr
    kinds = [orjson.loads(line)["kind"] for line in follow.stdout.splitlines()]
    assert kinds[0] == "goal" and kinds[-1] == "outcome" and "compensation_completed" in kinds
    finished = choreo("history", workflow_id, "--json", env=cli_env)
    assert finished.stdout == follow.stdout, "following shows what the finished history shows"


def test_state_cli_at_and_diff(stack: Stack, cli_env: dict[str, str]) -> None:
    stack.start_examples()
    done = choreo("publish", "report", "--data", '{"topic": "st", "fail_at": "draft"}', "--wait", "60", env=cli_env)
    workflow_id = orjson.loads(done.stdout)["workflow_id"]
    lines = [orjson.loads(line) for line in choreo("history", workflow_id, "--json", env=cli_env).stdout.splitlines()]
    failed = next(e for e in lines if e["kind"] == "step_failed")
    at = choreo("state", workflow_id, "--at", str(failed["offset"]), "--json", env=cli_env)
    assert at.returncode == 0, at.stderr
    state = orjson.loads(at.stdout)
    assert state["status"] == "running" and list(state["failed"]) == ["draft"]
    # --at TIME compares log timestamps (the broker's record time), not the envelope's ce_time.
    logged = datetime.fromtimestamp(lines[-1]["timestamp"] / 1000, UTC).isoformat(timespec="milliseconds")
    by_time = orjson.loads(choreo("state", workflow_id, "--at", logged, "--json", env=cli_env).stdout)
    assert by_time["status"] == "compensated"
    diff = orjson.loads(choreo("state", workflow_id, "--diff", str(lines[0]["offset"]), str(lines[-1]["offset"]),
                               "--json", env=cli_env).stdout)
    assert diff["changes"]["status"] == {"from": "running", "to": "compensated"}
    assert [e["offset"] for e in diff["events"]] == [e["offset"] for e in lines[1:]]
    human = choreo("state", workflow_id, env=cli_env)
    assert human.returncode == 0 and "compensated" in human.stdout
    recorded = choreo("record", workflow_id, env=cli_env)
    recording = Recording.loads(recorded.stdout.encode())
    assert recording.final_state is not None and recording.final_state["status"] == "compensated"
    assert recording.check() == [], "a fresh recording replays through the code that made it"


