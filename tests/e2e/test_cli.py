"""The `choreo` command-line contract, run as a user would run it."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from helpers import choreo, clean_env

from choreograph import Settings

KINDS = {"goal", "step_completed", "step_failed", "compensation_requested", "compensation_completed",
         "compensation_failed", "outcome", "other"}
HISTORY_KEYS = {"topic", "partition", "offset", "timestamp", "type", "kind", "step", "event_id", "causation_id",
                "source", "data"}


def test_up_publish_history_down_against_a_configured_cluster(cli_env: dict[str, str], tmp_path: Path) -> None:
    up = choreo("up", env=cli_env)
    try:
        assert up.returncode == 0, up.stderr
        assert "coordinator" in up.stdout
        assert "report.review" in up.stdout

        done = choreo("publish", "report", "--data", '{"topic": "cli"}', "--wait", "60", env=cli_env)
        assert done.returncode == 0, done.stderr
        result = orjson.loads(done.stdout)
        assert result["status"] == "completed"
        assert result["workflow_id"]

        failing = choreo("publish", "report", "--data", '{"topic": "cli", "fail_at": "draft"}', "--wait", "60",
                         env=cli_env)
        assert failing.returncode == 1, "exit 1: compensated, not completed"
        assert orjson.loads(failing.stdout)["status"] == "compensated"

        history = choreo("history", orjson.loads(failing.stdout)["workflow_id"], "--json", env=cli_env)
        assert history.returncode == 0, history.stderr
        lines = [orjson.loads(line) for line in history.stdout.splitlines()]
        assert lines[0]["kind"] == "goal"
        assert lines[-1]["kind"] == "outcome"
        for line in lines:
            assert line.keys() >= HISTORY_KEYS
            assert line["kind"] in KINDS
        assert [line["offset"] for line in lines] == sorted(line["offset"] for line in lines)
        assert {line["step"] for line in lines if line["kind"] == "step_failed"} == {"draft"}
    finally:
        down = choreo("down", env=cli_env)
    assert down.returncode == 0
    assert "coordinator" in down.stdout
    assert "broker" not in down.stdout, "a configured cluster is used, never a broker of our own"
    assert not (tmp_path / "home" / "broker.json").exists()


@pytest.mark.parametrize("data", ['{"topic": 42}', '{"fail_at": "chart"}', '{"topic": "x", "colour": "red"}',
                                  "not json", "[1, 2]"])
def test_publish_rejects_invalid_goal_data_with_exit_2_and_publishes_nothing(
        cli_env: dict[str, str], data: str, settings: Settings) -> None:
    import asyncio

    from aiokafka import TopicPartition

    from choreograph.runtime import AgentRuntime, load_agent
    from choreograph.transport import Kafka

    async def announce_then_count() -> int:
        """Goals in the log, after (re-)announcing the goal's consumer."""
        kafka = Kafka(settings)
        async with AgentRuntime(load_agent("choreograph.examples.report.research:agent"), settings):
            pass  # announcing the contract is enough for publish to know the goal schema
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
        return sum([1 async for record in kafka.read(tps) if ("ce_kind", b"goal") in record.headers])

    before = asyncio.run(announce_then_count())
    result = choreo("publish", "report", "--data", data, env=cli_env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert re.search(r"error", result.stderr)
    assert asyncio.run(announce_then_count()) == before


def test_publish_to_an_unknown_workflow_says_which_ones_exist(cli_env: dict[str, str]) -> None:
    result = choreo("publish", "nosuch", "--data", "{}", env=cli_env)
    assert result.returncode == 1
    assert "nosuch" in result.stderr


def test_demo_runs_on_its_own_embedded_broker_and_ends_with_the_summary(tmp_path: Path) -> None:
    """From a directory that is no project: the example agents ship in the package."""
    env = {**clean_env(tmp_path / "home"), "REPORT_STEP_DELAY_MS": "20"}
    (tmp_path / "elsewhere").mkdir()
    demo = choreo("demo", env=env, timeout=240, cwd=tmp_path / "elsewhere")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert demo.stdout.splitlines()[-1] == "completed=3 compensated=3 failed=0"
    assert not (tmp_path / "home" / "services.json").exists()
    assert not (tmp_path / "home" / "broker.json").exists()


def test_broker_start_status_stop(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    assert choreo("broker", "status", env=env).returncode == 1
    started = choreo("broker", "start", env=env)
    try:
        assert re.fullmatch(r"127\.0\.0\.1:\d+\n", started.stdout)
        assert choreo("broker", "status", env=env).stdout == started.stdout
        assert choreo("broker", "start", env=env).stdout == started.stdout, "start is idempotent"
    finally:
        assert choreo("broker", "stop", env=env).stdout.strip() == "stopped"
    assert choreo("broker", "status", env=env).returncode == 1


def test_broker_up_and_down_print_json_for_scripts(tmp_path: Path) -> None:
    """`--json` on the commands that print data (issue 13): broker start/status/stop, up, down."""
    env = clean_env(tmp_path / "home")
    status = choreo("broker", "status", "--json", env=env)
    assert (status.returncode, orjson.loads(status.stdout)) == (1, {"running": False, "address": None})
    started = orjson.loads(choreo("broker", "start", "--json", env=env).stdout)
    try:
        assert orjson.loads(choreo("broker", "status", "--json", env=env).stdout) == {
            "running": True, "address": started["address"]}
        up = choreo("up", "--json", env=env, timeout=180)
        assert up.returncode == 0, up.stderr
        names = {s["name"] for s in orjson.loads(up.stdout)["services"]}
        assert {"coordinator", "report.research", "report.review"} <= names
        down = orjson.loads(choreo("down", "--json", env=env).stdout)
        assert set(down["stopped"]) >= names
    finally:
        assert orjson.loads(choreo("broker", "stop", "--json", env=env).stdout) == {"stopped": True}
