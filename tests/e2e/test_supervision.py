"""`choreo up` supervises what it starts: a killed service comes back, a crash loop is shown, `down` leaves nothing.

Each test runs the CLI in a copy of the project (tests break an agent's module on purpose), on the
session's broker, in its own namespace and run directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from helpers import ROOT
from helpers.metrics import free_ports, scrape, total

from choreograph.transport._broker import alive

T = TypeVar("T")


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    # Short backoffs: a crash loop (5 exits within 60 s) is reached in a few seconds.
    return {**cli_env, "CHOREO_RESTART_BACKOFF_MS": "50", "CHOREO_RESTART_BACKOFF_MAX_MS": "2000"}


def make_project(path: Path, *, agents: bool = True) -> Path:
    """A user's project: empty (the coordinator needs no file), or with a copy of the example report
    agents as its own package `report/`, named in its choreo.toml (so a test can break one)."""
    path.mkdir(parents=True)
    if agents:
        shutil.copytree(ROOT / "src" / "choreograph" / "examples" / "report", path / "report",
                        ignore=shutil.ignore_patterns("__pycache__"))
        steps = ("research", "analyze", "chart", "draft", "review")
        (path / "choreo.toml").write_text(f"agents = {[f'report.{step}:agent' for step in steps]}\n")
    return path


def run(project: Path, *args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`choreo ARGS...` from the project's directory, as a user runs it there."""
    return subprocess.run([sys.executable, "-m", "choreograph", *args], cwd=project, env=env, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ps(project: Path, env: dict[str, str]) -> dict[str, Any]:
    result = run(project, "ps", "--json", env=env)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = orjson.loads(result.stdout)
    return parsed


def service(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in report["services"] if s["name"] == name)
    return found


def until(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def processes_in(project: Path) -> list[int]:
    """Live processes whose working directory is the project (the supervisor and every service)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == project.resolve() and alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_killed_agent_is_restarted_a_broken_one_is_a_crash_loop_and_down_stops_everything(
        env: dict[str, str], tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    seen: set[int] = set()
    base = free_ports(7)  # metrics: each service its own port, from this one on
    env = {**env, "CHOREO_METRICS_PORT": str(base)}
    up = run(project, "up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "report.draft" in up.stdout
        first = ps(project, env)
        assert [(s["name"], s["metrics_port"]) for s in first["services"]] == [
            (name, base + k) for k, name in enumerate(["coordinator", "index", "report.research", "report.analyze",
                                                       "report.chart", "report.draft", "report.review"])]
        assert first["supervisor"]["running"]
        seen.add(first["supervisor"]["pid"])
        assert {s["state"] for s in first["services"]} == {"running"}
        assert all(s["ready"] and s["restarts"] == 0 and s["lag"] is not None for s in first["services"]), \
            first["services"]
        seen.update(s["pid"] for s in first["services"])

        killed = service(first, "report.draft")["pid"]
        os.kill(killed, signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            draft = service(ps(project, env), "report.draft")
            seen.add(draft["pid"] or killed)
            back = draft["pid"] not in (None, killed) and draft["ready"] and draft["state"] == "running"
            return draft if back and draft["restarts"] == 1 else None

        draft = until(restarted, 30, "report.draft restarted and ready")
        assert draft["last_exit"] == -signal.SIGKILL
        published = run(project, "publish", "report", "--data", '{"topic": "after a kill"}', "--wait", "60", env=env)
        assert orjson.loads(published.stdout)["status"] == "completed", published.stderr
        # The restarted draft serves its metrics on its own port still: its run is there.
        assert total(scrape(draft["metrics_port"]), "messaging_process_duration_seconds_count",
                     choreograph_step="draft") == 1

        # A module that now fails at import: every restart exits at once, until it is a crash loop.
        chart = project / "report" / "chart.py"
        chart.write_text('raise RuntimeError("chart is broken on purpose")\n' + chart.read_text())
        os.kill(service(first, "report.chart")["pid"], signal.SIGKILL)

        def looping() -> dict[str, Any] | None:
            entry = service(ps(project, env), "report.chart")
            seen.add(entry["pid"] or killed)
            return entry if entry["state"] == "crash-loop" else None

        # Each restart is a Python start (~1 s alone, several on a loaded machine): 30 s was short at load 10.
        crashing = until(looping, 90, "report.chart in a crash loop")
        assert crashing["restarts"] >= 4
        assert crashing["last_exit"] == 1
        assert "chart is broken on purpose" in crashing["log_tail"]
        table = run(project, "ps", env=env)
        assert table.returncode == 0
        assert "crash-loop" in table.stdout
        assert "chart is broken on purpose" in table.stdout
        assert "CRASH LOOP: report.chart" in (tmp_path / "home" / "logs" / "supervisor.log").read_text()
        assert service(ps(project, env), "report.draft")["state"] == "running", "the others are untouched"
    finally:
        down = run(project, "down", env=env)
    assert down.returncode == 0, down.stderr
    assert down.stdout.split()[:3] == ["supervisor", "coordinator", "index"]
    assert [pid for pid in seen if alive(pid)] == []
    assert processes_in(project) == []
    assert not (tmp_path / "home" / "services.json").exists()
    assert run(project, "down", env=env).stdout.strip() == "nothing to stop", "down is idempotent"


def test_down_stops_the_services_of_a_supervisor_that_was_sigkilled_and_the_broker_up_started(
        env: dict[str, str], tmp_path: Path) -> None:
    own = {k: v for k, v in env.items() if not k.startswith("KAFKA_")}  # no broker given: `up` starts one
    project = make_project(tmp_path / "project", agents=False)
    up = run(project, "up", env=own)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stderr.startswith("note: no agents found"), up.stderr
        before = ps(project, own)
        coordinator = service(before, "coordinator")["pid"]
        assert before["broker_started"]
        assert service(before, "coordinator")["lag"] == 0
        assert service(before, "index")["lag"] == 0
        os.kill(before["supervisor"]["pid"], signal.SIGKILL)
        until(lambda: not alive(before["supervisor"]["pid"]), 10, "the supervisor gone")
        orphaned = run(project, "ps", "--json", env=own)
        assert orphaned.returncode == 1
        assert "supervisor" in orphaned.stderr
        assert "not running" in orphaned.stderr
        assert service(orjson.loads(orphaned.stdout), "coordinator")["pid"] == coordinator
        assert alive(coordinator), "the services outlive their supervisor until `down`"

        broker = orjson.loads((tmp_path / "home" / "broker.json").read_bytes())["pid"]
        os.kill(broker, signal.SIGKILL)
        until(lambda: not alive(broker), 10, "the broker gone")
        table = run(project, "ps", env=own)
        assert "Traceback" not in table.stderr
        assert re.search(r"^coordinator +\d+ .* \?$", table.stdout, re.MULTILINE), table.stdout
    finally:
        down = run(project, "down", env=own)
    assert down.returncode == 0, down.stderr
    assert down.stdout.split() == ["coordinator", "index", "broker"]
    assert not alive(coordinator)
    assert processes_in(project) == []
    assert not (tmp_path / "home" / "broker.json").exists()


def test_up_stops_everything_when_a_service_fails_before_it_is_ready(env: dict[str, str], tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", agents=False)
    (project / "services" / "broken").mkdir(parents=True)  # the older services/ convention
    (project / "services" / "broken" / "__init__.py").write_text("")
    (project / "services" / "broken" / "agent.py").write_text('raise RuntimeError("broken at import")\n')
    up = run(project, "up", env=env)
    assert up.returncode == 2
    assert "error: service broken.agent exited with 1" in up.stderr
    assert "broken at import" in up.stderr
    assert processes_in(project) == []
    assert not (tmp_path / "home" / "services.json").exists()
    nothing = run(project, "ps", env=env)
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == "error: nothing is up (no .choreo/services.json); start it with `choreo up`"
    assert run(project, "down", env=env).stdout.strip() == "nothing to stop"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("CHOREO_RESTART_BACKOFF_MS", "0", "an integer from 1 to 3600000 (milliseconds)"),
    ("CHOREO_RESTART_BACKOFF_MAX_MS", "10", "an integer from 50 to 3600000 (milliseconds)"),
])
def test_a_bad_restart_setting_starts_nothing(env: dict[str, str], tmp_path: Path, name: str, value: str,
                                               expected: str) -> None:
    result = run(make_project(tmp_path / "project", agents=False), "up", env={**env, name: value})
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {name}={value!r}: expected {expected}"
    assert not (tmp_path / "home" / "services.json").exists()
