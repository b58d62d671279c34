"""The contract suite's fixtures: every test runs once on the memory log and once on Kafka (the
session broker of tests/conftest.py), each in its own namespace."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers.transport import Clients

from choreograph.transport import (
    KafkaTransport,
    MemoryLog,
    MemoryTransport,
    Settings,
    Transport,
)


@pytest.fixture(params=["memory", "kafka"])
def transport(request: pytest.FixtureRequest) -> Transport:
    """The transport under test, in a namespace of its own."""
    if request.param == "memory":
        return MemoryTransport(MemoryLog(), Settings(bootstrap_servers="memory", namespace=f"t{uuid.uuid4().hex[:10]}"))
    settings: Settings = request.getfixturevalue("settings")
    return KafkaTransport(settings)


@pytest.fixture
async def clients(transport: Transport) -> AsyncIterator[Clients]:
    made = Clients(transport)
    try:
        yield made
    finally:
        await made.close()


HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test collected under tests/integration/contract is marked `contract`."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.contract)
