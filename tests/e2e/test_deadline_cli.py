"""A workflow deadline given on the command line, on real processes: `choreo publish --deadline`."""

from __future__ import annotations

import signal
import time

import orjson
from helpers import Stack, choreo


def test_a_goal_whose_agent_is_gone_ends_timed_out_at_its_deadline(stack: Stack, cli_env: dict[str, str]) -> None:
    stack.start_examples()
    stack.kill("report.draft", signal.SIGKILL)  # gone for good; its contract stays announced
    started = time.monotonic()
    done = choreo("publish", "report", "--data", '{"topic": "deadline"}', "--deadline", "3s", "--wait", "60",
                  env=cli_env)
    took = time.monotonic() - started
    assert done.returncode == 1, "exit 1: the outcome is not completed"
    result = orjson.loads(done.stdout)
    assert result["status"] == "timed_out", result
    assert result["outcome"]["failed_step"] == "draft"
    assert result["outcome"]["compensated_steps"] == ["analyze", "chart", "research"]
    assert 3 <= took < 3 + 10, took  # the deadline, plus the slack of processes starting and compensating
    history = choreo("history", result["workflow_id"], "--json", env=cli_env)
    timed_out = [line for line in map(orjson.loads, history.stdout.splitlines()) if line["kind"] == "step_timed_out"]
    assert [(e["step"], e["source"], e["data"]["next_attempt_at"]) for e in timed_out] == [
        ("draft", "choreo://coordinator", None)]
    state = orjson.loads(choreo("state", result["workflow_id"], "--json", env=cli_env).stdout)
    assert state["status"] == "timed_out"
    assert state["deadline"] == result["deadline_ms"]
    assert state["attempts"]["draft"]["timed_out"] == [1]
