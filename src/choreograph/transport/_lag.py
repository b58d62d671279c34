"""Consumer lag of the services' groups: records of the events topic past each group's committed offsets.

For `choreo ps`. An agent's group is `settings.agent_group(workflow, step)`; a running agent is known
by its name (what it writes to its ready file), so its workflow and step come from its contract on
the registry. The coordinator's group is `settings.coordinator_group`, the indexer's `settings.index_group`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

from aiokafka.errors import KafkaError

from ..errors import BrokerUnavailable
from ._groups import group_lags
from ._kafka import KafkaTransport
from ._keyring import service_verifier
from ._registry import Registry
from ._settings import Settings


async def _groups(kafka: KafkaTransport, agents: Mapping[str, str | None],
                  coordinators: Collection[str], indexes: Collection[str] = ()) -> dict[str, str | None]:
    """Service name -> its consumer group (None: an agent whose contract is not on the registry)."""
    groups: dict[str, str | None] = dict.fromkeys(coordinators, kafka.settings.coordinator_group)
    groups.update(dict.fromkeys(indexes, kafka.settings.index_group))
    wanted = {service: agent for service, agent in agents.items() if service not in groups}
    if not wanted:
        return groups
    registry = await Registry.read(kafka, verifier=service_verifier())
    by_agent = {c.agent: kafka.settings.agent_group(c.workflow, c.step) for c in registry.contracts.values()}
    return {**groups, **{service: by_agent.get(agent or "") for service, agent in wanted.items()}}


async def _lags(settings: Settings, agents: Mapping[str, str | None],
                coordinators: Collection[str], indexes: Collection[str]) -> dict[str, int | None]:
    kafka = KafkaTransport(settings)
    groups = await _groups(kafka, agents, coordinators, indexes)
    known = await group_lags(kafka, sorted({g for g in groups.values() if g is not None}), settings.events_topic)
    # A group that committed nowhere yet owes nothing: an agent starts at the log's end.
    return {service: None if group is None else known.get(group) or 0 for service, group in groups.items()}


async def service_lags(settings: Settings, agents: Mapping[str, str | None], coordinators: Collection[str] = (),
                       timeout_s: float = 10.0, indexes: Collection[str] = ()) -> dict[str, int | None]:
    """Each service's consumer lag on the events topic (None where its group is unknown).

    Args:
        settings: Where the broker is, and the namespace.
        agents: Service name -> the name of the agent it runs (None if not known yet).
        coordinators: Services that run the coordinator.
        indexes: Services that run the workflow indexer.
        timeout_s: How long the broker may take to answer everything.

    Returns:
        Service name -> records past its group's committed offsets, summed over partitions.

    Raises:
        BrokerUnavailable: The broker cannot be reached or did not answer in time.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await _lags(settings, agents, coordinators, indexes)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"cannot read consumer lag from {settings.bootstrap_servers}: "
                                f"{exc or type(exc).__name__}") from exc
