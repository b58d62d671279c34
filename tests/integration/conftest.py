"""tests/integration: a real broker (the session's `bootstrap`, a fresh namespace per test through
`settings`), with every service in this process (helpers.serving); no processes are started here."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test collected under tests/integration is marked `integration`."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
