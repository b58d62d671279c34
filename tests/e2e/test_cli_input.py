"""Bad input to `choreo` is one line on stderr and a non-zero exit (2: bad input or settings), never a
traceback. Most cases fail before the broker is touched, so they need none; the rest use the
session's broker, each test in its own namespace."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import ROOT, choreo, clean_env

from choreograph import OutcomeStatus, Settings, WorkflowOutcome
from choreograph.errors import EventTooLarge, GoalRejected

# Arguments as Python gives argv bytes that are not UTF-8 (the shell's $'\xff'): a lone surrogate,
# which subprocess encodes back to the byte.
NOT_UTF8 = os.fsdecode(b"\xff")
ANY_SERVERS = "127.0.0.1:1"  # valid, never contacted: these commands stop before the broker


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (asserting it is one line, with no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == "", "nothing on stdout"
    return result.stderr.rstrip("\n")


def choreo_with_stdin(*args: str, env: dict[str, str], stdin: bytes) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "choreograph", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, timeout=120)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No broker configured or running: a command that needs one and gets this far says so (exit 1)."""
    return clean_env(tmp_path / "home")


# Settings --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "message"), [
    ("CHOREO_PARTITIONS", "abc", "CHOREO_PARTITIONS='abc': expected an integer >= 1"),
    ("CHOREO_SESSION_TIMEOUT_MS", "abc",
     "CHOREO_SESSION_TIMEOUT_MS='abc': expected an integer from 1000 to 1800000 (milliseconds)"),
    ("CHOREO_FETCH_MAX_WAIT_MS", "-5",
     "CHOREO_FETCH_MAX_WAIT_MS='-5': expected an integer from 0 to 30000 (milliseconds)"),
    ("CHOREO_NAMESPACE", "bad ns!", "CHOREO_NAMESPACE='bad ns!': expected 1 to 238 characters from a-z A-Z 0-9 . _ -"),
    ("CHOREO_MAX_EVENT_BYTES", "1k",
     "CHOREO_MAX_EVENT_BYTES='1k': expected an integer from 1024 to 2147483647 (bytes)"),
    ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "KAFKA_BOOTSTRAP_SERVERS='localhost': expected host:port[,host:port...]"),
    ("CHOREO_BROKER", "redpanda", "CHOREO_BROKER='redpanda': expected one of: kafka, tansu"),
    ("CHOREO_LOG_FORMAT", "yaml", "CHOREO_LOG_FORMAT='yaml': expected one of: text, json"),
])
def test_a_bad_setting_is_one_line_and_exit_2(env: dict[str, str], name: str, value: str, message: str) -> None:
    result = choreo("publish", "report", "--data", "{}", env={**env, name: value})
    assert result.returncode == 2
    assert one_line(result) == f"error: {message}"


@pytest.mark.parametrize("command", [
    ["history", "some-id"], ["state", "some-id"], ["record", "some-id"], ["replay", "some-id", "--sandbox", "s"],
    ["archive", "--to", "{tmp}/archive", "--until-idle"], ["archive", "restore", "{tmp}"],
    ["agent", "run", "choreograph.examples.report.research:agent"], ["coordinator", "run"], ["up"],
])
def test_every_command_that_reads_settings_refuses_a_bad_one(
        env: dict[str, str], tmp_path: Path, command: list[str]) -> None:
    bad = {**env, "KAFKA_BOOTSTRAP_SERVERS": ANY_SERVERS, "CHOREO_PARTITIONS": "abc"}
    result = choreo(*(arg.replace("{tmp}", str(tmp_path)) for arg in command), env=bad)
    assert result.returncode == 2
    assert one_line(result) == "error: CHOREO_PARTITIONS='abc': expected an integer >= 1"


@pytest.mark.parametrize("command", [["agent", "run", "choreograph.examples.report.research:agent"],
                                     ["coordinator", "run"]])
def test_a_bad_log_level_stops_a_service_with_one_line(env: dict[str, str], command: list[str]) -> None:
    result = choreo(*command, env={**env, "KAFKA_BOOTSTRAP_SERVERS": ANY_SERVERS, "CHOREO_LOG_LEVEL": "verbose"})
    assert result.returncode == 2
    assert one_line(result) == "error: CHOREO_LOG_LEVEL='verbose': expected one of: DEBUG, INFO, WARNING, ERROR, " \
                               "CRITICAL"


def test_up_with_a_bad_setting_starts_nothing(env: dict[str, str], tmp_path: Path) -> None:
    result = choreo("up", env={**env, "CHOREO_NAMESPACE": "bad ns!"})
    assert result.returncode == 2
    assert one_line(result).startswith("error: CHOREO_NAMESPACE='bad ns!': expected")
    assert not (tmp_path / "home" / "broker.json").exists(), "no broker was started"
    assert not (tmp_path / "home" / "services.json").exists()


def test_choreo_home_under_a_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    home = str(tmp_path / "afile" / "home")
    result = choreo("broker", "start", env={**env, "CHOREO_HOME": home})
    assert result.returncode == 2
    assert one_line(result) == f"error: CHOREO_HOME={home!r}: expected a directory, or a path where one can be " \
                               f"created ({tmp_path / 'afile'} is a file)"


# Options ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["publish", "report", "--data", "{}", "--wait", "-1"], "--wait -1: expected a number of seconds >= 0"),
    (["publish", "report", "--data", "{}", "--wait", "nan"], "--wait nan: expected a number of seconds >= 0"),
    (["history", "some-id", "--follow", "--timeout", "-0.5"], "--timeout -0.5: expected a number of seconds >= 0"),
    (["replay", "some-id", "--sandbox", "s", "--timeout", "-3"], "--timeout -3: expected a number of seconds >= 0"),
    (["up", "--timeout", "-3"], "--timeout -3: expected a number of seconds >= 0"),
    (["archive", "--to", "{tmp}", "--flush-interval", "0"], "--flush-interval 0: expected a number of seconds > 0"),
])
def test_negative_durations_are_refused(env: dict[str, str], tmp_path: Path, args: list[str], message: str) -> None:
    result = choreo(*(arg.replace("{tmp}", str(tmp_path)) for arg in args), env=env)
    assert result.returncode == 2
    assert one_line(result) == f"error: {message}"


@pytest.mark.parametrize("command", [["history"], ["state"], ["record"], ["replay", "--sandbox", "s"]])
def test_a_workflow_id_that_is_not_utf8_is_one_line(cli_env: dict[str, str], command: list[str]) -> None:
    result = choreo(command[0], NOT_UTF8, *command[1:], env=cli_env)
    assert result.returncode == 2
    assert one_line(result) == r"error: workflow id b'\xff' is not UTF-8 text"


# Goal data from a file or stdin --------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    (None, ": No such file or directory"),
    (b"not json", " is not JSON: "),
    (b'{"topic": ', " is not JSON: "),
    (b"\xff\xfe{}", " is not JSON: "),
])
def test_data_from_a_file_that_cannot_be_read_or_is_not_json(
        env: dict[str, str], tmp_path: Path, content: bytes | None, message: str) -> None:
    goal = tmp_path / "goal.json"
    if content is not None:
        goal.write_bytes(content)
    result = choreo("publish", "report", "--data", f"@{goal}", "--wait", "5", env=env)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith(f"error: --data @{goal}{message}")


def test_data_from_a_directory_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    result = choreo("publish", "report", "--data", f"@{tmp_path}", env=env)
    assert result.returncode == 2
    assert one_line(result) == f"error: --data @{tmp_path}: Is a directory"


def test_data_from_stdin_that_is_not_json(env: dict[str, str]) -> None:
    result = choreo_with_stdin("publish", "report", "--data", "-", env=env, stdin=b'{"topic": "x"')
    assert result.returncode == 2
    assert one_line(result).startswith("error: --data - (stdin) is not JSON: ")


def test_a_goal_larger_than_a_command_line_comes_from_a_file_or_stdin(
        cli_env: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    from choreograph.runtime import AgentRuntime, load_agent

    async def announce() -> None:
        async with AgentRuntime(load_agent("choreograph.examples.report.research:agent"), settings):
            pass  # announcing the contract is enough for publish to know the goal schema

    asyncio.run(announce())
    topic = "t" * 200_000  # over Linux's 128 KiB limit for one argument
    goal = tmp_path / "goal.json"
    goal.write_bytes(orjson.dumps({"topic": topic}))
    with pytest.raises(OSError, match="too long"):
        choreo("publish", "report", "--data", goal.read_text(), env=cli_env)
    from_file = choreo("publish", "report", "--data", f"@{goal}", env=cli_env)
    assert from_file.returncode == 0, from_file.stderr
    from_stdin = choreo_with_stdin("publish", "report", "--data", "-", env=cli_env, stdin=goal.read_bytes())
    assert from_stdin.returncode == 0, from_stdin.stderr
    for published in (from_file, from_stdin):
        history = choreo("history", orjson.loads(published.stdout)["workflow_id"], "--json", "--to-end", env=cli_env)
        assert history.returncode == 0, history.stderr
        assert orjson.loads(history.stdout.splitlines()[0])["data"]["topic"] == topic
    too_big = tmp_path / "too-big.json"
    too_big.write_bytes(orjson.dumps({"topic": "t" * 5_000_000}))
    refused = choreo("publish", "report", "--data", f"@{too_big}", env=cli_env)
    assert refused.returncode == 2
    assert one_line(refused).startswith("error: the goal of workflow 'report' is ")
    assert "over the maximum event size of 1048576 bytes" in refused.stderr


# Archives --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["empty", "other files"])
def test_restoring_a_directory_that_holds_no_archive_says_so(
        cli_env: dict[str, str], tmp_path: Path, content: str) -> None:
    directory = tmp_path / "not-an-archive"
    directory.mkdir()
    if content == "other files":
        (directory / "notes.txt").write_text("hello")
        (directory / "x" / "y").mkdir(parents=True)
        (directory / "x" / "y" / "z.avro").write_bytes(b"not a segment name")
    result = choreo("archive", "restore", str(directory), env=cli_env)
    assert result.returncode == 1
    assert one_line(result) == f"error: {directory}: holds no archive (no segments " \
                               "<topic>/<hour>/<partition>-<first>-<last>.avro of an events, registry or deadletter " \
                               "topic)"


# What the client raises (Client.publish and Client.wait; stubbed: this checks what the CLI prints) ----

class _Client:
    """Stands in for runtime.Client: publish and wait raise what the test sets."""

    publish_error: Exception | None = None
    wait_error: Exception | None = None

    def __init__(self, settings: Settings, source: str) -> None:
        pass

    async def __aenter__(self) -> _Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def publish(self, workflow: str, data: dict[str, Any], deadline: Any = None) -> Any:
        from choreograph.runtime._client import PublishedGoal

        if self.publish_error is not None:
            raise self.publish_error
        return PublishedGoal(workflow, "0190f1a2-0000-7000-8000-000000000001", 2, 17)

    async def wait(self, goal: Any, timeout_s: float) -> Any:
        if self.wait_error is not None:
            raise self.wait_error
        return self.outcome

    outcome: Any = None


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`choreo ARGS` in this process with the stub client: (exit status, stdout, stderr)."""
    from choreograph.cli import main

    monkeypatch.setattr("choreograph.runtime._client.Client", _Client)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", ANY_SERVERS)
    monkeypatch.setattr(sys, "argv", ["choreo", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return int(exited.value.code or 0), out, err


def test_a_goal_over_the_maximum_event_size_is_one_line_and_exit_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_Client, "publish_error", EventTooLarge("the goal of workflow 'report'", 2_000_000, 1_048_576))
    code, out, err = _main(monkeypatch, capsys, "publish", "report", "--data", "{}")
    assert (code, out) == (2, "")
    assert err == "error: the goal of workflow 'report' is 2000000 bytes, over the maximum event size of 1048576 " \
                  "bytes (CHOREO_MAX_EVENT_BYTES)\n"


def test_a_rejected_goal_is_one_line_and_exit_1_with_its_id_on_stdout(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    reason = "goal 0190f1a2-0000-7000-8000-000000000001 rejected: duplicate workflow id"
    monkeypatch.setattr(_Client, "wait_error", GoalRejected(reason))
    code, out, err = _main(monkeypatch, capsys, "publish", "report", "--data", "{}", "--wait", "5")
    assert code == 1
    assert orjson.loads(out) == {"workflow_id": "0190f1a2-0000-7000-8000-000000000001", "workflow": "report",
                                 "partition": 2, "offset": 17, "status": "rejected", "reason": reason}
    assert err == f"error: {reason}\n"


@pytest.mark.parametrize(("name", "value"), [("CHOREO_PARTITIONS", "abc"), ("CHOREO_LOG_LEVEL", "verbose"),
                                             ("CHOREO_LOG_FORMAT", "yaml")])
def test_a_service_started_directly_with_a_bad_setting_says_so_in_one_line(
        tmp_path: Path, name: str, value: str) -> None:
    env = {**clean_env(tmp_path / "home"), "KAFKA_BOOTSTRAP_SERVERS": "localhost:1", name: value}
    result = subprocess.run([sys.executable, "-m", "choreograph", "coordinator", "run"], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert one_line(result).startswith(f"error: {name}={value!r}: expected ")


@pytest.mark.parametrize(("status", "flags", "code"), [
    ("completed", (), 0), ("compensated", (), 1), ("timed_out", (), 1), (None, (), 1),
    ("compensated", ("--no-fail",), 0), (None, ("--no-fail",), 0)])
def test_publish_wait_exits_1_unless_the_outcome_is_completed(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], status: str | None,
        flags: tuple[str, ...], code: int) -> None:
    """Before: `publish --wait` exited 0 whatever the outcome, so a script could not tell."""
    outcome = None if status is None else WorkflowOutcome(workflow="report", status=OutcomeStatus(status),
                                                          completed_steps=[], compensated_steps=[])
    monkeypatch.setattr(_Client, "outcome", outcome)
    exited, out, err = _main(monkeypatch, capsys, "publish", "report", "--data", "{}", "--wait", "5", *flags)
    assert exited == code
    assert orjson.loads(out)["status"] == (status or "running")
    assert err == ""


@pytest.mark.parametrize("args", [("history", "0190f1a2-0000-7000-8000-000000000001"),
                                  ("state", "0190f1a2-0000-7000-8000-000000000001"),
                                  ("publish", "report", "--data", "{}"),
                                  ("dlq", "ls")])
def test_an_unreachable_broker_is_one_line_and_exit_3_in_every_command(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Before: `choreo history` printed aiokafka's 60-line traceback and exited 1."""
    env = {**clean_env(tmp_path / "home"), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = choreo(*args, env=env)
    assert (result.returncode, result.stdout) == (3, ""), result.stderr
    assert one_line(result).startswith("error: ")
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {**clean_env(tmp_path / "home"), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = choreo("--debug", "history", "0190f1a2-0000-7000-8000-000000000001", env=env)
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_replay_errors_exit_2_as_diff_does(tmp_path: Path) -> None:
    """diff's convention: 0 the same, 1 differences, 2 trouble (before: 1 for both)."""
    env = {**clean_env(tmp_path / "home"), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = choreo("replay", "0190f1a2-0000-7000-8000-000000000001", "--sandbox", "x", env=env)
    assert result.returncode == 2
    assert one_line(result).startswith("error: ")
