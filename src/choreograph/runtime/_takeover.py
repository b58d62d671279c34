"""An agent taking over partitions: where each one starts, what it learns back, which retries it re-arms.

It stands alone because it runs once per assignment, never per record: the group member
(transport/_member.py) calls `set_up` before any record of the new partitions is handled, and
`on_ready` once they are installed. The reading back itself is runtime._lookback; this decides the
positions around it and hands the pending attempts it finds to the agent's attempts (runtime._attempts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from ..events._avro import SchemaStore
from ..events._models import Event
from ..transport._offsets import PartitionProgress
from ..transport._port import Consumer, Record, TopicPartition, Transport
from ._agent import Agent
from ._attempts import Attempt, Attempts
from ._decoding import Decoding
from ._lookback import LookBack
from ._provenance import Provenance
from ._tracking import Done

log = logging.getLogger("choreograph.agent")


class Takeover:
    """Sets up one agent's newly assigned partitions, and arms the retries found there once installed.

    Args:
        agent: The agent.
        transport: The broker port.
        topic: The events topic.
        lookback: Records per partition read back before its position.
        completes: The type name of the agent's own completions.
        consumed: The agent's input types, by type name.
        store: The agent's schemas.
        done: Tracking keys of results in the log (filled by the look-back).
        ended: Workflows with an outcome (filled by the look-back).
        believed: Whether a record's signature is believed.
        provenance: Which steps produce each input type.
        decoding: Learns newer schemas for the look-back.
        attempts: Where found retries are armed.
    """

    def __init__(self, agent: Agent, transport: Transport, topic: str, lookback: int, *, completes: bytes,
                 consumed: Mapping[bytes, type[Event]], store: SchemaStore, done: Done, ended: Done,
                 believed: Callable[[Record], bool], provenance: Provenance, decoding: Decoding,
                 attempts: Attempts) -> None:
        self._agent, self._kafka, self._topic, self._lookback = agent, transport, topic, lookback
        self._source, self._step, self._completes = agent.source.encode(), agent.step.encode(), completes
        self._consumed, self._store, self._done, self._ended = consumed, store, done, ended
        self._believed, self._provenance, self._decoding, self._attempts = believed, provenance, decoding, attempts
        self._recovered: dict[TopicPartition, list[Attempt]] = {}  # found by set-up, armed once installed

    async def set_up(self, consumer: Consumer, assigned: set[TopicPartition]) -> dict[
            TopicPartition, tuple[int, PartitionProgress]]:
        """Set up newly assigned partitions before any of their records is handled.

        Each one's position is its committed offset, or the true end for a new agent; the agent's
        past results, pending retries and the workflows' outcomes are read back from the log.
        """
        states: dict[TopicPartition, tuple[int, PartitionProgress]] = {}
        start: dict[TopicPartition, int] = {}
        ends = await self._kafka.end_offsets(assigned)
        for tp in assigned:
            committed = await consumer.committed(tp)
            if committed is None:
                # A new agent starts from now. The true end, not auto_offset_reset=latest, which
                # lands inside the last batch on Tansu. Committed at once so a restart resumes here.
                position = ends[tp]
                await consumer.commit({tp: position})
            else:
                position = committed
            states[tp] = (position, PartitionProgress(position, tp.partition))
            start[tp] = max(0, position - self._lookback)
            self._recovered.pop(tp, None)
        await self._provenance.catch_up()  # after `ends`: it knows the producers of every record before them
        look = LookBack(self._source, self._step, self._completes, self._consumed, self._store, self._done,
                        self._ended, compensable=self._agent.compensation_fn is not None, believed=self._believed,
                        admits=self._provenance.admits)
        # To the end, not the position: what the agent did after its last commit counts too.
        self._recovered.update(await look.recover(self._kafka, self._topic, start, ends,
                                                  {tp: s[1] for tp, s in states.items()}, self._decoding.learn_schemas))
        return states

    async def on_ready(self, parts: dict[TopicPartition, PartitionProgress]) -> None:
        """Partitions installed: arm the retries their set-up found."""
        running = self._attempts.running
        for tp in parts:
            for attempt in self._recovered.pop(tp, ()):
                if attempt.key not in running and attempt.key not in self._done:
                    log.info("%s: attempt %d of %s due at %d (from the log)", self._agent.name, attempt.number,
                             attempt.workflow_id, attempt.due)
                    self._attempts.arm(attempt)
