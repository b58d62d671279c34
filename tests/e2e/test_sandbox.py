"""`choreo replay --sandbox`: one agent re-run against a recorded workflow, the rest fed back."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from aiokafka import TopicPartition
from helpers import Stack, choreo

from choreograph import Client, OutcomeStatus
from choreograph.transport import Kafka

CHANGED_ANALYZE = '''
from choreograph import Agent, CompensationRequested, StepContext
from choreograph.examples.report._events import RETRY, AnalysisCompleted, ResearchCompleted

agent = Agent(workflow="report", step="analyze", retry=RETRY)  # the same contract: only the handler changed


@agent.handler
async def analyze(ctx: StepContext, research: ResearchCompleted) -> AnalysisCompleted:
    return AnalysisCompleted(topic=research.topic, fail_at=research.fail_at, findings=["one new finding"])


@agent.compensation
async def retract_findings(ctx: StepContext, request: CompensationRequested) -> None:
    pass
'''


async def test_sandbox_rerun_of_analyze_reproduces_a_compensated_workflow_and_reports_a_change(
        stack: Stack, cli_env: dict[str, str], tmp_path: Path) -> None:
    settings = stack.settings
    stack.start_examples()
    async with Client(settings) as client:
        goal = await client.publish("report", {"topic": "sandboxed", "fail_at": "review"})
        outcome = await client.wait(goal, 60)
    assert outcome is not None
    assert outcome.status is OutcomeStatus.COMPENSATED
    kafka = Kafka(settings)
    tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
    production = sorted([(r.partition, r.offset, r.value) async for r in kafka.read(tps)])

    same = choreo("replay", goal.workflow_id, "--sandbox", "same", "--agents", "analyze", "--json", env=cli_env)
    assert same.returncode == 0, same.stdout + same.stderr
    report = orjson.loads(same.stdout)
    assert report["identical"]
    assert report["differences"] == []
    assert report["sandbox"] == f"{settings.namespace}.sandbox.same"
    assert report["rerun_events"] == report["recorded_events"] >= 16
    assert report["agents"] == ["analyze=choreograph.examples.report.analyze:agent"]

    (tmp_path / "changed_analyze.py").write_text(CHANGED_ANALYZE)
    env = {**cli_env, "PYTHONPATH": os.pathsep.join([str(tmp_path), cli_env.get("PYTHONPATH", "")])}
    changed = choreo("replay", goal.workflow_id, "--sandbox", "changed", "--agents",
                     "analyze=changed_analyze:agent", "--json", env=env)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    [difference] = orjson.loads(changed.stdout)["differences"]
    assert (difference["what"], difference["kind"], difference["step"]) == ("differs", "step_completed", "analyze")
    assert list(difference["fields"]) == ["data"]
    assert difference["fields"]["data"]["rerun"]["findings"] == ["one new finding"]
    human = choreo("replay", goal.workflow_id, "--sandbox", "changed-again", "--agents",
                   "analyze=changed_analyze:agent", env=env)
    assert human.returncode == 1
    assert "one new finding" in human.stdout

    after = sorted([(r.partition, r.offset, r.value) async for r in kafka.read(tps)])
    assert after == production, "nothing reached production topics"
    reused = choreo("replay", goal.workflow_id, "--sandbox", "same", "--agents", "analyze", env=cli_env)
    assert reused.returncode == 2, "an error, as diff exits 2 (1 is for differences)"
    assert "in use" in reused.stderr
