"""Fixtures every layer may share: one real broker per test session (embedded Tansu unless
KAFKA_BOOTSTRAP_SERVERS is set) and a unique namespace per test (its own topics and groups).

Tests live in layers, one folder each, and each folder's conftest.py marks what it collects:
tests/unit (`unit`: pure, no broker, no processes), tests/integration (`integration`: a real broker,
everything in this process; tests/integration/contract adds `contract`), tests/e2e (`e2e`: real
processes, the `choreo` command line). A test outside those folders, or marked for another layer
than its folder's, stops the run. Helpers are imported from `helpers`, never from a conftest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import SESSION_TIMEOUT_MS

from choreograph import EmbeddedBroker, Settings
from choreograph.transport import PROFILES

LAYERS = ("unit", "integration", "e2e")
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[tuple[str, str]]:
    """(bootstrap servers, broker kind) for the whole session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured, os.environ.get("CHOREO_BROKER", "kafka")
        return
    broker = EmbeddedBroker().start()
    try:
        yield broker.bootstrap_servers, "tansu"
    finally:
        broker.stop()


@pytest.fixture(autouse=True)
def settings_variables_restored() -> Iterator[None]:
    """choreograph's variables (CHOREO_*, KAFKA_*) as they were before each test: a test that sets one
    directly (as `choreo`'s main() applies a project file's defaults in process) cannot leak it into
    later tests, which under pytest-xdist would be whichever ran next on the same worker."""
    prefixes = ("CHOREO_", "KAFKA_")
    before = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
    yield
    for name in [k for k in os.environ if k.startswith(prefixes) and k not in before]:
        del os.environ[name]
    os.environ.update(before)


@pytest.fixture(autouse=True)
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test has its own CHOREO_HOME, so its services, its `choreo` commands and its in-process
    clients share one local development policy and its keys (signing is on by default), and no
    test trusts another's keys."""
    home = tmp_path / "home"
    monkeypatch.setenv("CHOREO_HOME", str(home))
    for name in ("CHOREO_POLICY", "CHOREO_KEY", "CHOREO_KEY_FILE", "CHOREO_KEYS_DIR", "CHOREO_VERIFY"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def settings(bootstrap: tuple[str, str]) -> Settings:
    servers, kind = bootstrap
    profile = replace(PROFILES[kind], session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=1000)
    return Settings(bootstrap_servers=servers, broker=profile, namespace=f"t{uuid.uuid4().hex[:10]}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """After the folders' conftests marked their tests: every test carries exactly its folder's layer."""
    wrong = []
    for item in (item for item in items if item.path.is_relative_to(TESTS)):
        layers = {mark.name for mark in item.iter_markers() if mark.name in LAYERS}
        parts = item.path.relative_to(TESTS).parts
        folder = parts[0] if len(parts) > 1 else ""
        if layers != {folder}:
            wrong.append(f"{item.nodeid}: marked {sorted(layers) or 'with no layer'}, lives in tests/{folder}")
        elif "contract" in {mark.name for mark in item.iter_markers()} and \
                not item.path.is_relative_to(TESTS / "integration" / "contract"):
            wrong.append(f"{item.nodeid}: marked contract outside tests/integration/contract/")
    if wrong:
        raise pytest.UsageError("tests must live in tests/unit, tests/integration or tests/e2e and carry only "
                                "that folder's layer marker:\n  " + "\n  ".join(wrong))
