"""tests/e2e: real processes on the session's broker: stacks of services (`stack`), each its own OS
process, and the `choreo` command line run as a user runs it (`cli_env` is its environment)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import Stack, clean_env

from choreograph import Settings

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test collected under tests/e2e is marked `e2e`."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
async def stack(settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    running = Stack(settings, tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return {**clean_env(tmp_path / "home"), **settings.env()}
