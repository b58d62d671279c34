"""A usage error in any `choreo` command (unknown option, missing argument, bad value) is one line on
stderr naming the command's --help, exit 2: the same convention as every other error (README, exit codes).
Run in process through the real entry point (`cli._main.main`), for every command the app has."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from choreograph.cli._app import app
from choreograph.cli._main import main


def commands() -> list[tuple[str, ...]]:
    """Every command's path, e.g. ("dlq", "ls"), found from the app itself so a new one is covered too."""
    found: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:  # typer's click Command, or a Group of them
        if path:  # a group too: `choreo agents --bogus` is as wrong as `choreo agents retire --bogus`
            found.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return sorted(found)


@pytest.fixture(autouse=True)
def outside_any_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """main() applies a project file's defaults to this process's environment: run where there is none."""
    monkeypatch.chdir(tmp_path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["choreo", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err


def test_the_app_has_the_commands_readme_lists() -> None:
    assert {("up",), ("publish",), ("history",), ("dlq", "ls"), ("keys", "new"), ("config",)} <= set(commands())


@pytest.mark.parametrize("path", commands(), ids=" ".join)
def test_an_unknown_option_is_one_line_exit_2(path: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run([*path, "--no-such-option"], capsys, monkeypatch)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1, err
    assert err.startswith("error: No such option: --no-such-option")
    assert err.rstrip().endswith(f"(see `choreo {' '.join(path)} --help`)")


@pytest.mark.parametrize(("argv", "message"), [
    (["publish"], "error: Missing argument 'workflow'. (see `choreo publish --help`)"),
    (["publish", "report", "--data", "{}", "--wait", "soon"], "error: Invalid value for '--wait': "),
    (["no-such-command"], "error: No such command 'no-such-command'. (see `choreo --help`)"),
    (["ui", "--port", "99999"], "error: Invalid value for '--port': "),
])
def test_a_missing_argument_a_bad_value_and_an_unknown_command_are_one_line_exit_2(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(argv, capsys, monkeypatch)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1, err
    assert err.startswith(message)


def test_help_and_version_still_exit_0(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(["publish", "--help"], capsys, monkeypatch)
    assert (code, err) == (0, "")
    assert "Usage:" in out
    code, out, err = run(["--version"], capsys, monkeypatch)
    assert (code, err) == (0, "")
    assert out.startswith("choreo ")
