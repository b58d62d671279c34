"""What an operator sees and does, on real processes with the `choreo` command line: who serves each step
(`choreo agents`), what a running saga waits for (`choreo state`), retiring a step for good, and dead
letters listed, shown, redriven and found in a workflow's history (`choreo dlq`, `choreo history`)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import orjson
from helpers import Stack, choreo, signing

from choreograph import Client, Settings
from choreograph.events import AgentPresence, Envelope, Kind, StepContract
from choreograph.events._avro import AvroSchema
from choreograph.events._envelope import agent_source, new_workflow_id
from choreograph.events._models import EventSchema
from choreograph.transport import Kafka, announce

GOAL_V2 = orjson.dumps({"type": "record", "name": "ReportGoal", "namespace": "report", "fields": [
    {"name": "topic", "type": "string"}, {"name": "fail_at", "type": ["null", "string"], "default": None},
    {"name": "priority", "type": "int", "default": 0}]}).decode()


def poll(check: Any, timeout_s: float = 60, what: str = "") -> Any:
    """Call `check` until it returns something truthy, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if result := check():
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def agents(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    done = choreo("agents", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {row["step"]: row for row in orjson.loads(done.stdout)["steps"]}


async def _send(settings: Settings, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]],
                identity: str = "publisher:local") -> None:
    producer = signing(identity, Kafka(settings).producer())
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


def test_agents_flags_a_stopped_step_state_shows_the_wait_and_retire_lets_new_goals_finish(
        stack: Stack, cli_env: dict[str, str], settings: Settings) -> None:
    stack.start_examples()
    # A presence record as an agent instance sends it, with its breaker open. (The example agents send
    # their own where the runtime publishes presence; Tansu's group membership is not trusted.)
    now = time.time_ns() // 1_000_000
    fake = AgentPresence(workflow="report", step="chart", agent="report.chart", instance="chart@test", host="h",
                         pid=1, started_at=now, seen_at=now, interval_ms=60_000, breaker="open", lag=0)
    asyncio.run(_send(settings, settings.status_topic, fake.encode(), b"chart@test", []))
    rows = agents(cli_env)
    assert list(rows) == ["research", "analyze", "chart", "draft", "review"]
    assert rows["review"]["group"] == settings.agent_group("report", "review")
    chart = rows["chart"]
    assert (chart["breaker"], chart["no_live_agent"], chart["live_by"]) == ("open", False, "presence")
    assert "chart@test" in [i["instance"] for i in chart["instances"] if i["live"]]
    assert chart["lag"] is not None

    stack.kill("report.review", signal.SIGTERM)  # stopped for good: it leaves its group
    poll(lambda: agents(cli_env)["review"]["no_live_agent"], what="review flagged")
    table = choreo("agents", env=cli_env).stdout
    assert "NO LIVE AGENT" in next(line for line in table.splitlines() if " review " in line)

    stuck = orjson.loads(choreo("publish", "report", "--data", '{"topic": "stuck"}', "--wait", "4",
                                env=cli_env).stdout)
    assert stuck["status"] == "running"

    def waiting() -> Any:
        report = orjson.loads(choreo("state", stuck["workflow_id"], "--json", env=cli_env).stdout)
        return report["pending"] if [p["step"] for p in report["pending"]] == ["review"] else None

    [pending] = poll(waiting, what="the stuck saga waiting for review")
    assert pending["no_live_agent"]
    assert pending["waited_s"] >= 0
    human = choreo("state", stuck["workflow_id"], env=cli_env).stdout
    assert "pending: review, waiting" in human
    assert "NO LIVE AGENT" in human

    unknown = choreo("agents", "retire", "report", "nosuch", env=cli_env)
    assert unknown.returncode == 1
    assert "no step 'nosuch' of workflow 'report' is announced" in unknown.stderr
    needed = choreo("agents", "retire", "report", "draft", env=cli_env)
    assert needed.returncode == 1
    assert "review consumes" in needed.stderr
    retired = choreo("agents", "retire", "report", "review", env=cli_env)
    assert retired.returncode == 0, retired.stderr
    assert "retired report/review" in retired.stdout

    fresh = orjson.loads(choreo("publish", "report", "--data", '{"topic": "fresh"}', "--wait", "60",
                                env=cli_env).stdout)
    assert fresh["status"] == "completed"
    assert "review" not in fresh["outcome"]["completed_steps"]
    assert "review" not in agents(cli_env)
    still = orjson.loads(choreo("state", stuck["workflow_id"], "--json", env=cli_env).stdout)
    assert still["status"] == "running", "a workflow in flight keeps the graph it started with"


def test_dead_letters_are_listed_shown_redriven_and_in_the_workflows_history(
        stack: Stack, cli_env: dict[str, str], settings: Settings) -> None:
    stack.start_examples()
    finished = orjson.loads(choreo("publish", "report", "--data", '{"topic": "first"}', "--wait", "60",
                                   env=cli_env).stdout)
    assert finished["status"] == "completed"
    v2, poison = new_workflow_id(), new_workflow_id()

    async def refused_goals() -> None:
        value = AvroSchema.from_json(GOAL_V2).encode({"topic": "v2", "fail_at": None, "priority": 1})
        for workflow_id, payload in ((v2, value), (poison, b"\x00 not avro")):
            envelope = Envelope.new(type="report.ReportGoal", source="test", workflow="report",
                                    workflow_id=workflow_id, kind=Kind.GOAL)
            await _send(settings, settings.events_topic, payload, envelope.key, envelope.headers())
        async with Client(settings) as client:  # a second goal under a finished workflow's id
            await client.publish("report", {"topic": "again"}, workflow_id=finished["workflow_id"])

    asyncio.run(refused_goals())

    def listed(*args: str) -> list[dict[str, Any]]:
        done = choreo("dlq", "ls", "--json", *args, env=cli_env)
        assert done.returncode == 0, done.stderr
        return [orjson.loads(line) for line in done.stdout.splitlines()]

    letters = poll(lambda: len(found := listed()) >= 5 and found, what="five dead letters")
    by_workflow = {w: [x for x in letters if x["workflow_id"] == w] for w in (v2, poison, finished["workflow_id"])}
    assert {x["consumer"] for x in by_workflow[v2]} == {settings.coordinator_group, "report.research"}
    assert all("schema" in x["reason"] for x in by_workflow[v2])
    [duplicate] = by_workflow[finished["workflow_id"]]
    assert duplicate["reason"].startswith("duplicate workflow id")
    assert [x["id"] for x in listed("--workflow", poison)] == [x["id"] for x in by_workflow[poison]]
    assert [x["id"] for x in listed("--reason", "DUPLICATE")] == [duplicate["id"]]
    assert len(listed("--since", "1h")) == len(letters)
    assert listed("--since", "2999-01-01T00:00:00Z") == []
    assert "duplicate workflow id" in choreo("dlq", "ls", env=cli_env).stdout

    shown = choreo("dlq", "show", by_workflow[poison][0]["id"], env=cli_env)
    assert shown.returncode == 0, shown.stderr
    for text in ("reason:", f"origin:    {settings.events_topic} partition", "redrives:  0", "not decodable",
                 "ce_type: report.ReportGoal"):
        assert text in shown.stdout
    detail = orjson.loads(choreo("dlq", "show", duplicate["id"], "--json", env=cli_env).stdout)
    assert detail["decoded"] == {"topic": "again", "fail_at": None}
    assert choreo("dlq", "show", "999999", env=cli_env).returncode == 1
    assert choreo("dlq", "show", "nonsense", env=cli_env).returncode == 2

    history = [orjson.loads(line) for line in choreo("history", v2, "--json", env=cli_env).stdout.splitlines()]
    assert [e["kind"] for e in history] == ["goal", "dead_letter", "dead_letter"]
    assert all("schema" in e["data"]["reason"] for e in history[1:])
    assert "DEAD-LETTERED" in choreo("history", v2, env=cli_env).stdout

    dry = choreo("dlq", "redrive", "--all", "--dry-run", env=cli_env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would redrive") == 2
    assert "duplicate goal" in dry.stderr
    refused = choreo("dlq", "redrive", duplicate["id"], env=cli_env)
    assert refused.returncode == 1
    assert "never run" in refused.stderr
    assert choreo("dlq", "redrive", env=cli_env).returncode == 2

    # The fix for the unreadable goal: an agent announces the schema it was written with.
    async def fix() -> None:
        kafka = Kafka(settings)
        producer = signing("agent:schemas/v2", kafka.producer())
        await producer.start()
        schema = EventSchema(name="report.ReportGoal", avro_schema=GOAL_V2)
        contract = StepContract(workflow="schemas", step="v2", agent="schemas.v2", consumes=[schema],
                                completes_with=schema, compensable=False)
        try:
            await announce(producer, settings.registry_topic, settings.events_topic, settings.partitions,
                           contract, agent_source("schemas", "v2"))
        finally:
            await producer.stop()

    asyncio.run(fix())
    redriven = choreo("dlq", "redrive", "--workflow", v2, env=cli_env)
    assert redriven.returncode == 0, redriven.stderr
    assert redriven.stdout.startswith("redriven:")
    done = poll(lambda: (h := choreo("history", v2, "--json", env=cli_env).stdout) and '"outcome"' in h and h,
                what="the redriven goal's outcome")
    outcome = [orjson.loads(line) for line in done.splitlines()][-1]
    assert outcome["data"]["status"] == "completed"

    assert choreo("dlq", "redrive", by_workflow[poison][0]["id"], env=cli_env).returncode == 0
    again = poll(lambda: [x for x in listed("--workflow", poison) if x["redrive_count"] == 1] or None,
                 what="the poison goal dead-lettered again")
    assert {x["reason"] for x in again} <= {x["reason"] for x in by_workflow[poison]}
    assert all(x["redriven"] for x in listed("--workflow", v2)), "marked redriven"
