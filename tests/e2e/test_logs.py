"""Logs that name their workflow, in real agent processes (issue 14, item 5).

An agent whose handler logs through ctx.log and through the user's own `logging.getLogger("user")`:
with CHOREO_LOG_FORMAT=json every line its process writes is one JSON object, and every line of the
handler names the workflow id and the trace id of the goal's traceparent (as `choreo history --json`
shows it); in the default text format the same lines end with `[wf=<id> step=<step>]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from helpers import Stack, agent_spec, choreo, coordinator_spec

from choreograph import Client, OutcomeStatus

LOGGING_AGENTS = '''
import logging

from choreograph import Agent, Event, StepContext

_FIELDS = [{"name": "n", "type": "long"}]


class LogGoal(Event, schema={"type": "record", "name": "LogGoal", "namespace": "logs", "fields": _FIELDS}):
    n: int


class LogDone(Event, schema={"type": "record", "name": "LogDone", "namespace": "logs", "fields": _FIELDS}):
    n: int


user = logging.getLogger("user")
json_agent = Agent(workflow="logjson", step="work")
text_agent = Agent(workflow="logtext", step="work")


async def work(ctx: StepContext, goal: LogGoal) -> LogDone:
    ctx.log.info("handler: through ctx.log, goal %d", goal.n)
    user.warning("handler: through the user's logger,\\nover two lines")
    return LogDone(n=goal.n)


json_agent.handler(work)
text_agent.handler(work)
'''

HANDLER_LINES = 2


def trace_of(cli_env: dict[str, str], workflow_id: str) -> str:
    """The trace id of the workflow's goal, as `choreo history ID --json` shows its traceparent."""
    result = choreo("history", workflow_id, "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    [goal] = [e for e in map(orjson.loads, result.stdout.splitlines()) if e["kind"] == "goal"]
    traceparent: str = goal["traceparent"]
    return traceparent.split("-")[1]


async def test_a_handlers_lines_name_their_workflow_and_trace_in_json_and_in_text(
        stack: Stack, tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "log_agents.py").write_text(LOGGING_AGENTS)
    stack.extra_env["CHOREO_LOG_FORMAT"] = "json"
    stack.start(coordinator_spec(), agent_spec("json", "log_agents:json_agent"), pythonpath=tmp_path)
    stack.extra_env["CHOREO_LOG_FORMAT"] = ""  # unset: the default, text
    stack.start(agent_spec("text", "log_agents:text_agent"), pythonpath=tmp_path)
    async with Client(stack.settings) as client:
        in_json = await client.publish("logjson", {"n": 1})
        in_text = await client.publish("logtext", {"n": 2})
        for goal in (in_json, in_text):
            outcome = await client.wait(goal, 30)
            assert outcome is not None
            assert outcome.status is OutcomeStatus.COMPLETED, outcome

    # json: every line of the process is one object; the handler's name the workflow and its trace.
    lines: list[dict[str, Any]] = [orjson.loads(line) for line in stack.log("json").splitlines()]
    assert lines
    assert all(line["service"] for line in lines)
    handler = [line for line in lines if line["message"].startswith("handler: ")]
    assert [line["logger"] for line in handler] == ["choreograph.agent", "user"]
    trace = trace_of(cli_env, in_json.workflow_id)
    for line in handler:
        assert (line["workflow_id"], line["trace_id"]) == (in_json.workflow_id, trace), line
        assert (line["workflow"], line["step"], line["service"]) == ("logjson", "work", "logjson.work"), line
        assert line["event_id"] == in_json.event_id, line
        assert len(line["span_id"]) == 16, line
    assert [line for line in lines if "ready" in line["message"]], "the agent's own lines are there too"
    assert not any("workflow_id" in line for line in lines if "ready" in line["message"])

    # text (the default): the same lines, readable, end with the workflow and the step.
    text = [line for line in stack.log("text").splitlines() if "handler: " in line]
    assert len(text) == HANDLER_LINES, stack.log("text")
    assert text[0].endswith(f"choreograph.agent: handler: through ctx.log, goal 2 [wf={in_text.workflow_id} step=work]")
    assert text[1].endswith("user: handler: through the user's logger,")  # the message's second line follows
    assert f"over two lines [wf={in_text.workflow_id} step=work]" in stack.log("text")
