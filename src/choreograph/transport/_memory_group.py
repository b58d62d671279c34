"""A consumer group of the memory log: its members, committed offsets and eager rebalances."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._port import TopicPartition

if TYPE_CHECKING:
    from ._memory import MemoryLog
    from ._memory_consumer import MemoryConsumer


def round_robin(subscriptions: dict[str, frozenset[str]], partitions_of: Callable[[str], int]
                ) -> dict[str, set[TopicPartition]]:
    """Assign as aiokafka does by default: round robin.

    Partitions sorted by topic and number are dealt to members sorted by id in turn, skipping
    members not subscribed to the partition's topic.

    Args:
        subscriptions: Subscribed topics by member id.
        partitions_of: Partition count of a topic (0 if it does not exist).

    Returns:
        Partitions by member id (every member present, maybe with none).
    """
    plan: dict[str, set[TopicPartition]] = {member: set() for member in subscriptions}
    members = sorted(subscriptions)
    if not members:
        return plan
    turn = itertools.cycle(members)
    for topic in sorted(set().union(*subscriptions.values())):
        for partition in range(partitions_of(topic)):
            member = next(turn)
            while topic not in subscriptions[member]:
                member = next(turn)
            plan[member].add(TopicPartition(topic, partition))
    return plan


class MemoryGroup:
    """Members, committed offsets and rebalances of one group; rebalances run one at a time.

    Args:
        log: The log the group lives on.
        group_id: Its id.
    """

    def __init__(self, log: MemoryLog, group_id: str) -> None:
        self.log = log
        self.group_id = group_id
        self.committed: dict[TopicPartition, int] = {}
        self.members: dict[str, MemoryConsumer] = {}
        self.generation = 0
        self._joins = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def join(self, member: MemoryConsumer) -> str:
        """Add a member and rebalance.

        Args:
            member: The joining consumer.

        Returns:
            Its member id (ids sort in order of joining).
        """
        member_id = f"{self.group_id}-{next(self._joins):06d}"
        self.members[member_id] = member
        self.request_rebalance()
        return member_id

    def leave(self, member_id: str) -> None:
        """Remove a member (stopped or crashed) and rebalance the rest.

        Args:
            member_id: Its id.
        """
        if self.members.pop(member_id, None) is not None:
            self.request_rebalance()

    def topic_created(self, topic: str) -> None:
        """Rebalance if a member subscribes to a topic that was just created.

        Args:
            topic: The new topic.
        """
        if any(topic in member.subscription for member in self.members.values()):
            self.request_rebalance()

    @property
    def rebalancing(self) -> bool:
        """Whether a rebalance is under way or requested."""
        return self._task is not None and not self._task.done()

    def request_rebalance(self) -> None:
        """Start a rebalance, or run one more after the one under way."""
        if self.rebalancing:
            self._again = True
            return
        self._task = self.log.spawn(self._until_stable(), f"rebalance {self.group_id}")

    async def wait_idle(self) -> None:
        """Wait until no rebalance is under way."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def _until_stable(self) -> None:
        while True:
            self._again = False
            await self._rebalance()
            if not self._again:
                return

    async def _rebalance(self) -> None:
        taking_part = sorted(self.members.items())
        for _, member in taking_part:
            member.begin_reassignment()
        # Every member hands over (commits) before anything is assigned: the JoinGroup barrier.
        await asyncio.gather(*(member.revoke() for _, member in taking_part))
        live = {member_id: member for member_id, member in taking_part if self.members.get(member_id) is member}
        plan = round_robin({member_id: member.subscription for member_id, member in live.items()},
                           self.log.partitions_of)
        self.generation += 1
        for member_id, member in live.items():
            member.take_assignment(plan[member_id], self.committed)
        self.log.wake()
        # Active already: a member's fetches see its partitions while its callback runs.
        await asyncio.gather(*(member.assigned(plan[member_id]) for member_id, member in live.items()))

    def commit(self, offsets: Iterable[tuple[TopicPartition, int]]) -> None:
        """Store committed offsets.

        Args:
            offsets: Pairs of partition and next offset to read.
        """
        self.committed.update(offsets)
