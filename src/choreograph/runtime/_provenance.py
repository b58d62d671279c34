"""Which records an agent takes its inputs from: a goal, or the completion of the step that produces the type.

A signature proves who sent a record's headers (runtime._gate), not that its body is that party's to
say: review may publish heartbeats and completions of review, and one whose body is a
ResearchCompleted is still review's record. So a record whose ce_type the agent consumes is an input
only:

- as a goal (ce_kind `goal`) of a type no step of the workflow completes with: the workflow's goal
  type (who may publish goals of which workflow is the policy's, see security.may_publish);
- as a `step_completed` whose ce_step is a step that completes with that type, by its own contract
  (announced under that step's key: the registry checks security.may_announce);

and only of the agent's own workflow (ce_workflow). Anything else of a consumed type is skipped
with a warning, never dead-lettered: every agent consuming the type would write its own copy. The
coordinator dead-letters a completion of a type its step's contract does not complete with, once
(runtime._admission).

Which step completes with which type is learned from the registry: read to its end before the agent
handles any event, again when partitions are assigned (before the look-back reads them), and again
for a completion by a step not known to complete with its type, at most once per batch of records.
An agent's contract is in the registry before it publishes anything (`announce` returns once the
broker has it), so a reading begun after a record was fetched knows that record's producer if it
has one: a step added while sagas run is believed from its first completion on, and a completion
still unexplained after that reading is skipped. What a step once announced stays known (see
transport.Contracts.completions), so sagas started before it changed or retired still finish.

The check is a dict lookup and header comparisons the event path reads anyway, before any decode
or signature check: about 0.1 us per record of a consumed type (docs/performance.md, issue 12).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from ..events._envelope import Kind
from ..transport._port import Record
from ._decoding import Decoding

log = logging.getLogger("choreograph.agent")

COMPLETED = Kind.STEP_COMPLETED.value.encode()
GOAL = Kind.GOAL.value.encode()
Take = Callable[[], Coroutine[Any, Any, None]]


class Provenance:
    """Per type an agent consumes, the steps whose completion of it the agent believes.

    Args:
        name: The agent's name (for logs).
        workflow: The agent's workflow.
        consumed: The event types it consumes (their ce_type).
        decoding: Its reader of the registry.

    Attributes:
        producers: Consumed type -> the steps (ce_step) known to complete with it; none: a goal type.
            Read on the event path, where the rule is inlined (see `admits`).
        batch: The number of the batch of records in hand (the agent counts its batches, right after
            each is fetched): a registry read begun during it knows the producer of each of its records.
    """

    __slots__ = ("_changes", "_decoding", "_name", "_read_in", "_workflow", "batch", "producers")

    def __init__(self, name: str, workflow: str, consumed: Iterable[bytes], decoding: Decoding) -> None:
        self._name = name
        self._workflow = workflow
        self._decoding = decoding
        self._changes = -1
        self.producers: dict[bytes, frozenset[bytes]] = dict.fromkeys(consumed, frozenset())
        self.batch = 0
        self._read_in = -1  # the batch during which the last registry read began

    def admits(self, event_type: bytes, kind: bytes | None, step: bytes | None) -> bool:
        """Whether a record of the consumed type `event_type` may be an input, by its ce_kind and ce_step."""
        producers = self.producers[event_type]
        return step in producers if kind == COMPLETED else kind == GOAL and not producers

    async def catch_up(self) -> None:
        """Read the registry to its end, and learn which step completes with which consumed type."""
        began = self.batch
        await self._decoding.learn_schemas()
        self._read_in = began
        self._learn()

    def _learn(self) -> None:
        """Index the registry's completions for the event path (again only when they changed)."""
        contracts = self._decoding.contracts
        if contracts is None or contracts.changes == self._changes:
            return
        self._changes = contracts.changes
        mine = [(step, types) for (workflow, step), types in contracts.completions.items()
                if workflow == self._workflow]
        for event_type in self.producers:
            name = event_type.decode()
            self.producers[event_type] = frozenset(step.encode() for step, types in mine if name in types)

    def unproven(self, record: Record, event_type: bytes, take: Take) -> Coroutine[Any, Any, None] | None:
        """What to do with a record of a consumed type that `admits` refused with what is known.

        Args:
            record: The record.
            event_type: Its ce_type.
            take: Takes the record as an input (decodes it, checks its signature, joins it).

        Returns:
            The coroutine that reads the registry and then takes the record if its step turns out to
            complete with its type: for a completion of the agent's workflow while the registry was not
            read during this batch. Else None: the record was skipped (logged).
        """
        headers = dict(record.headers)  # a rare path: clarity over the event path's single pass
        if headers.get("ce_workflow", b"").decode(errors="replace") != self._workflow:
            # Another workflow speaking a type this one consumes: its business, not a forgery.
            log.debug("%s: %s of another workflow, not an input", self._name, event_type.decode(errors="replace"))
            return None
        self._learn()  # a schema miss may have read the registry since
        if self.admits(event_type, kind := headers.get("ce_kind"), step := headers.get("ce_step")):
            return take()
        if kind == COMPLETED and self._read_in != self.batch:
            return self._check_again(record, event_type, step, take)
        self._skip(record, event_type, headers)
        return None

    async def _check_again(self, record: Record, event_type: bytes, step: bytes | None, take: Take) -> None:
        await self.catch_up()
        if step in self.producers[event_type]:
            await take()
        else:
            self._skip(record, event_type, dict(record.headers))

    def _skip(self, record: Record, event_type: bytes, headers: dict[str, bytes]) -> None:
        def text(name: str) -> str:
            return headers.get(name, b"-").decode(errors="replace")

        steps = sorted(s.decode() for s in self.producers[event_type])
        believed = (f"as a step_completed of {', '.join(steps)}" if steps
                    else f"as a goal of workflow {self._workflow} (no step completes with it)")
        log.warning("%s: not an input: %s[%d]@%d, a %s of step %s from %s: %s is an input only %s", self._name,
                    record.topic, record.partition, record.offset, text("ce_kind"), text("ce_step"),
                    text("ce_source"), text("ce_type"), believed)
