"""`choreo history` and `choreo state` against a stack of service processes: following a running
workflow, state at an offset or a time, diffs, and a recording that replays (the library's side of
time travel on a broker: tests/integration/test_timetravel.py)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import orjson
from helpers import ROOT, Stack, choreo

from choreograph.timetravel import Recording


def test_history_follow_prints_a_running_workflow_until_its_outcome(stack: Stack, cli_env: dict[str, str]) -> None:
    stack.extra_env["REPORT_STEP_DELAY_MS"] = "300"
    stack.start_examples()
    published = choreo("publish", "report", "--data", '{"topic": "followed", "fail_at": "review"}', env=cli_env)
    workflow_id = orjson.loads(published.stdout)["workflow_id"]
    follow = subprocess.run([sys.executable, "-m", "choreograph", "history", workflow_id, "--follow", "--json",
                             "--timeout", "60"], cwd=ROOT, env=cli_env, text=True, capture_output=True, timeout=90)
    assert follow.returncode == 0, follow.stderr
    kinds = [orjson.loads(line)["kind"] for line in follow.stdout.splitlines()]
    assert kinds[0] == "goal"
    assert kinds[-1] == "outcome"
    assert "compensation_completed" in kinds
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
    assert state["status"] == "running"
    assert list(state["failed"]) == ["draft"]
    # --at TIME compares log timestamps (the broker's record time), not the envelope's ce_time.
    logged = datetime.fromtimestamp(lines[-1]["timestamp"] / 1000, UTC).isoformat(timespec="milliseconds")
    by_time = orjson.loads(choreo("state", workflow_id, "--at", logged, "--json", env=cli_env).stdout)
    assert by_time["status"] == "compensated"
    diff = orjson.loads(choreo("state", workflow_id, "--diff", str(lines[0]["offset"]), str(lines[-1]["offset"]),
                               "--json", env=cli_env).stdout)
    assert diff["changes"]["status"] == {"from": "running", "to": "compensated"}
    assert [e["offset"] for e in diff["events"]] == [e["offset"] for e in lines[1:]]
    human = choreo("state", workflow_id, env=cli_env)
    assert human.returncode == 0
    assert "compensated" in human.stdout
    recorded = choreo("record", workflow_id, env=cli_env)
    recording = Recording.loads(recorded.stdout.encode())
    assert recording.final_state is not None
    assert recording.final_state["status"] == "compensated"
    assert recording.check() == [], "a fresh recording replays through the code that made it"


