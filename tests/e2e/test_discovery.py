"""Agent discovery end to end: which agents `choreo up` starts, as a user sees them in `choreo ps`.

`--agent MODULE:ATTR` beats everything; a project file's `agents` (with `instances`) is the whole
list, whatever is installed; a really pip-installed package's `choreograph.agents` entry points are
what runs in a directory that is no project; and `choreo replay --sandbox` finds the running stack's
agents from a directory that is not their project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import choreo

# One step workflows: an agent whose handler completes the goal, its two events bound to Avro schema
# files next to it, as `choreo init` writes them.
AGENT = '''\
"""{step}: the one step of the `{workflow}` workflow."""

from pathlib import Path

from choreograph import Agent, Event, StepContext

SCHEMAS = Path(__file__).resolve().parent / "schemas"


class {goal}(Event, schema=SCHEMAS / "{goal_file}.avsc"):
    {field}: str


class {done}(Event, schema=SCHEMAS / "{done_file}.avsc"):
    {field}: str
    reply: str


agent = Agent(workflow="{workflow}", step="{step}")


@agent.handler
async def {step}(ctx: StepContext, goal: {goal}) -> {done}:
    return {done}({field}=goal.{field}, reply="{step}: " + goal.{field})
'''
SCHEMA = '{{"type": "record", "name": "{name}", "namespace": "{workflow}", "fields": [{fields}]}}\n'
STRING = '{{"name": "{0}", "type": "string"}}'

DISTRIBUTION = '''\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "shipyard-agents"
version = "1.0"

[project.entry-points."choreograph.agents"]
shipping = "shipyard.send:agent"

[tool.hatch.build.targets.wheel]
packages = ["shipyard"]
'''


def write_agent(package: Path, module: str, workflow: str, step: str, goal: str, done: str, field: str) -> None:
    """A package holding one agent module and its schemas."""
    (package / "schemas").mkdir(parents=True)
    (package / "__init__.py").write_text(f'"""The `{workflow}` workflow."""\n')
    (package / f"{module}.py").write_text(AGENT.format(step=step, workflow=workflow, goal=goal, done=done,
                                                       goal_file=goal.lower(), done_file=done.lower(), field=field))
    for name, fields in ((goal, [field]), (done, [field, "reply"])):
        (package / "schemas" / f"{name.lower()}.avsc").write_text(
            SCHEMA.format(name=name, workflow=workflow, fields=", ".join(STRING.format(f) for f in fields)))


@dataclass(frozen=True)
class Code:
    """Agent code outside the repository: `lib` holds the package `pingpong` (agent `pingpong.pong:agent`,
    workflow `ping`), importable once on PYTHONPATH; `site` is a pip --target install of the
    distribution `shipyard-agents`, whose entry point `shipping` is `shipyard.send:agent` (workflow `ship`)."""

    lib: Path
    site: Path


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Code:
    base = tmp_path_factory.mktemp("code")
    write_agent(base / "lib" / "pingpong", "pong", "ping", "pong", "Ping", "Ponged", "name")
    source = base / "shipyard-agents"
    write_agent(source / "shipyard", "send", "ship", "send", "Order", "Shipped", "item")
    (source / "pyproject.toml").write_text(DISTRIBUTION)
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                                "--no-build-isolation", "--target", str(base / "site"), str(source)],
                               capture_output=True, text=True, timeout=180)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert list((base / "site").glob("shipyard_agents-1.0.dist-info/entry_points.txt"))
    return Code(base / "lib", base / "site")


def on_path(env: dict[str, str], *paths: Path) -> dict[str, str]:
    """`env` with `paths` first on PYTHONPATH (the caller's stays: a worktree's src/ must still win)."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [*map(str, paths), env.get("PYTHONPATH")]))}


def directory(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def up(env: dict[str, str], cwd: Path, *args: str) -> list[str]:
    """`choreo up --json ARGS`: the names of the services it started."""
    started = choreo("up", "--json", *args, env=env, cwd=cwd)
    assert started.returncode == 0, started.stderr
    return sorted(s["name"] for s in orjson.loads(started.stdout)["services"])


def running(env: dict[str, str], cwd: Path) -> list[str]:
    """The services `choreo ps --json` shows, each running and ready."""
    shown = choreo("ps", "--json", env=env, cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    services: list[dict[str, Any]] = orjson.loads(shown.stdout)["services"]
    assert all(s["state"] == "running" and s["ready"] and s["pid"] for s in services), services
    return sorted(s["name"] for s in services)


def completes(workflow: str, data: dict[str, str], env: dict[str, str], cwd: Path) -> str:
    """`choreo publish WORKFLOW --wait 60`: exits 0 with status completed; the workflow's id."""
    done = choreo("publish", workflow, "--data", orjson.dumps(data).decode(), "--wait", "60", env=env, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    result = orjson.loads(done.stdout)
    assert result["status"] == "completed"
    return str(result["workflow_id"])


def down(env: dict[str, str], cwd: Path) -> None:
    assert choreo("down", env=env, cwd=cwd).returncode == 0


def test_up_with_agent_runs_only_that_agent_though_a_package_offers_another(
        cli_env: dict[str, str], code: Code, tmp_path: Path) -> None:
    env = on_path(cli_env, code.lib, code.site)
    anywhere = directory(tmp_path / "anywhere")  # no project file, an entry point installed
    try:
        assert up(env, anywhere, "--agent", "pingpong.pong:agent") == ["coordinator", "index", "pingpong.pong"]
        assert running(env, anywhere) == ["coordinator", "index", "pingpong.pong"]
        completes("ping", {"name": "Ada"}, env, anywhere)
    finally:
        down(env, anywhere)


def test_a_project_file_is_the_whole_list_with_its_instances_and_replay_finds_them_from_elsewhere(
        cli_env: dict[str, str], code: Code, tmp_path: Path) -> None:
    """The project's agents live in its directory, as `choreo init` lays them out (not on PYTHONPATH)."""
    project = directory(tmp_path / "shop")
    shutil.copytree(code.lib / "pingpong", project / "pingpong")
    (project / "choreo.toml").write_text('agents = ["pingpong.pong:agent"]\ninstances = { "pingpong.pong" = 2 }\n')
    env = on_path(cli_env, code.site)  # the entry point's package is installed, yet not started here
    inside = directory(project / "docs")  # the project is found from a directory below it
    try:
        assert up(env, inside) == ["coordinator", "index", "pingpong.pong", "pingpong.pong-2"]
        assert running(env, inside) == ["coordinator", "index", "pingpong.pong", "pingpong.pong-2"]
        deadline = time.monotonic() + 30
        while (live := live_instances(env, inside, "pong")) != 2:
            assert time.monotonic() < deadline, f"choreo agents: {live} live instance(s) of ping.pong, not 2"
        workflow_id = completes("ping", {"name": "Ada"}, env, inside)

        elsewhere = directory(tmp_path / "elsewhere")  # not the project, nor below it
        replay = choreo("replay", workflow_id, "--sandbox", "elsewhere", env=env, cwd=elsewhere)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "pong=pingpong.pong:agent" in replay.stdout
        assert "identical" in replay.stdout
    finally:
        down(env, inside)


def live_instances(env: dict[str, str], cwd: Path, step: str) -> int | None:
    """How many live instances `choreo agents --json` counts for `step` (None: not announced yet)."""
    shown = choreo("agents", "--json", env=env, cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    rows = [row for row in orjson.loads(shown.stdout)["steps"] if row["step"] == step]
    return int(rows[0]["live"] or 0) if rows else None


def test_up_where_there_is_no_project_runs_the_installed_entry_points(
        cli_env: dict[str, str], code: Code, tmp_path: Path) -> None:
    env = on_path(cli_env, code.site)
    empty = directory(tmp_path / "empty")
    try:
        assert up(env, empty) == ["coordinator", "index", "shipping"]  # the entry point's name is the service's
        assert running(env, empty) == ["coordinator", "index", "shipping"]
        completes("ship", {"item": "boat"}, env, empty)
    finally:
        down(env, empty)


def test_replay_outside_any_project_finds_the_agents_of_the_running_demo(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "REPORT_STEP_DELAY_MS": "20"}
    nowhere = directory(tmp_path / "nowhere")
    try:
        demo = choreo("demo", "--keep", env=env, cwd=nowhere, timeout=240)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        kept = demo.stdout.split("still running", 1)[1].splitlines()[1:]
        outcomes = dict(line.split() for line in kept if len(line.split()) == 2)
        # A completed one: a compensated saga's re-run can differ by timing alone (a step still running
        # when another fails is compensated on its late result, or before it, whichever comes first).
        workflow_id = next(w for w, status in outcomes.items() if status == "completed")

        replay = choreo("replay", workflow_id, "--sandbox", "nowhere", env=env, cwd=nowhere)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "analyze=choreograph.examples.report.analyze:agent" in replay.stdout
        assert "identical" in replay.stdout

        down(env, nowhere)
        # With nothing running, discovery here finds no agent: it was the running stack's.
        alone = choreo("replay", workflow_id, "--sandbox", "alone", env=env, cwd=nowhere)
        assert alone.returncode == 2
        assert "no agent of report." in alone.stderr
    finally:
        down(env, nowhere)
