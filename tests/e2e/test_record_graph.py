"""`choreo record` keeps the workflow's own graph: a step announced after it started is not replayed into it."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from helpers import Stack, agent_spec, choreo

from choreograph import Client, OutcomeStatus
from choreograph.timetravel import Recording

# A step added to the report workflow after the recorded one started: it runs after review.
SUMMARY = '''
from choreograph import Agent, Event, StepContext
from choreograph.examples.report._events import ReviewCompleted


class SummaryCompleted(Event, schema={"type": "record", "name": "SummaryCompleted", "namespace": "report",
                                      "fields": [{"name": "topic", "type": "string"}]}):
    topic: str


agent = Agent(workflow="report", step="summary")


@agent.handler
async def summary(ctx: StepContext, review: ReviewCompleted) -> SummaryCompleted:
    return SummaryCompleted(topic=review.topic)
'''

STEPS = ["analyze", "chart", "draft", "research", "review"]


async def test_a_workflow_started_before_a_step_was_added_records_and_replays_identical(
        stack: Stack, cli_env: dict[str, str], tmp_path: Path) -> None:
    stack.start_examples()
    async with Client(stack.settings) as client:
        goal = await client.publish("report", {"topic": "before the summary step"})
        outcome = await client.wait(goal, 60)
    assert outcome is not None
    assert outcome.status is OutcomeStatus.COMPLETED

    (tmp_path / "summary_agent.py").write_text(SUMMARY)
    stack.extra_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    stack.start(agent_spec("summary", "summary_agent:agent"))  # announces report/summary

    recorded = choreo("record", goal.workflow_id, env=cli_env)
    assert recorded.returncode == 0, recorded.stderr
    recording = Recording.loads(recorded.stdout.encode())
    graph = [step["step"] for step in recording.final_state["graph"]]  # type: ignore[index]
    assert sorted(graph) == STEPS

    # The recorded graph's contracts are seeded into the sandbox: with summary's among them, the
    # sandbox coordinator would start a six-step workflow and wait for summary until the timeout.
    replay = choreo("replay", goal.workflow_id, "--sandbox", "before-summary", "--agents", "analyze",
                    "--timeout", "30", "--json", env=cli_env)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    report = orjson.loads(replay.stdout)
    assert report["identical"], report["differences"]
    assert report["rerun_events"] == report["recorded_events"]
    assert sorted(c.step for c in recording.contracts) == STEPS
