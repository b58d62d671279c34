"""Consumer groups seen from outside: how far behind each is, and how many members it has.

Lag comes through the port (the group's committed offsets against the log's ends); membership needs
the broker's DescribeGroups (aiokafka's admin client on Kafka, imported only then) or the memory
log's own bookkeeping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from ._memory_transport import MemoryTransport
from ._port import TopicPartition, Transport

# Broker kinds whose DescribeGroups lists members long gone (see group_members).
_STALE_MEMBERS = frozenset({"tansu"})


async def group_lags(transport: Transport, groups: Sequence[str], topic: str) -> dict[str, int | None]:
    """Records each group has yet to commit on `topic`: the sum over partitions of end - committed.

    A partition the group never committed on is left out of its sum (agents start at the end of
    the log, so nothing there is owed); a group that committed nowhere has lag None.

    Args:
        transport: The broker port.
        groups: The consumer groups.
        topic: The topic they consume.

    Returns:
        Group -> its lag, or None if unknown.
    """
    tps = [TopicPartition(topic, p) for p in range(await transport.partition_count(topic))]
    ends = await transport.end_offsets(tps)
    lags: dict[str, int | None] = {}
    for group in groups:
        consumer = transport.consumer(group_id=group)
        await consumer.start()  # not subscribed: it asks the group's coordinator, never joins
        try:
            committed = [(tp, await consumer.committed(tp)) for tp in tps]
        finally:
            await consumer.stop()
        known = [max(0, ends[tp] - offset) for tp, offset in committed if offset is not None]
        lags[group] = sum(known) if known else None
    return lags


async def group_members(transport: Transport, groups: Sequence[str]) -> dict[str, int | None]:
    """How many members each group has now (None when the broker cannot say).

    A member killed without leaving counts until the broker's session timeout expels it. Tansu keeps
    a member that left or died in the group until another member joins (measured: still listed 15 s
    after a clean leave with a 3 s session timeout), so it is not asked (None).

    Args:
        transport: The broker port.
        groups: The consumer groups.

    Returns:
        Group -> its member count, or None.
    """
    if isinstance(transport, MemoryTransport):
        return {group: len(transport.log.group(group).members) for group in groups}
    from ._kafka import KafkaTransport  # deferred: aiokafka only when the broker is Kafka

    if not isinstance(transport, KafkaTransport) or not groups or transport.settings.broker.name in _STALE_MEMBERS:
        return dict.fromkeys(groups)
    counts: dict[str, int | None] = dict.fromkeys(groups)
    with contextlib.suppress(Exception):  # a broker without DescribeGroups: membership stays unknown
        async with transport.admin() as admin:
            # One group per request: Tansu garbles a response describing several.
            for wanted in groups:
                for response in await admin.describe_consumer_groups([wanted]):
                    for described in response.groups:
                        error, group, state, members = described[0], described[1], described[2], described[5]
                        if error == 0 and group == wanted:
                            counts[group] = 0 if state in ("Dead", "Empty") else len(members)
    return counts
