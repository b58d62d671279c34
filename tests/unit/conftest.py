"""tests/unit: pure tests. No broker (asking for one fails), no processes (starting one fails), and
the whole folder runs in well under 30 s (`make test-unit`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test collected under tests/unit is marked `unit`."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def bootstrap() -> tuple[str, str]:
    """Overrides the broker of tests/conftest.py: a unit test that needs one belongs in tests/integration."""
    pytest.fail("a unit test asked for a broker: move it to tests/integration (or tests/e2e)")


@pytest.fixture(autouse=True)
def _no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """subprocess.Popen (and asyncio's subprocesses, built on it) fails: processes are for tests/e2e."""

    def refuse(self: subprocess.Popen[bytes], args: object, *rest: object, **kwargs: object) -> NoReturn:
        pytest.fail(f"a unit test started a process ({args!r}): move it to tests/e2e")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


@pytest.fixture
def no_settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No broker or choreograph variable from the outer environment; a run directory of the test's own."""
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "CHOREO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CHOREO_HOME", str(tmp_path / "home"))
