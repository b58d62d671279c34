"""Reading dead letters back, and redriving them to where they came from (`choreo dlq`).

A redrive republishes the original key, headers (less the dlq_* ones) and bytes to the original
topic and partition, with ce_redrive one more than the record carried. Then a marker on the
dead-letter topic (a record with a dlq_redriven header, not a dead letter) says which dead letters
were redriven and where to, so a second `redrive --all` does not send them again. A crash between
the two sends a record twice at worst: a redriven record that duplicates one already handled is a
no-op (agents skip inputs their tracking records say they handled; the coordinator folds a fact
twice to the same state, takes a decision once, and ignores a goal whose event id it folded).

Several consumers may dead-letter one record (the coordinator reads everything, and an agent reads
its inputs): their dead letters share an origin, and a redrive sends the record once for all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import orjson

from ._deadletter import REDRIVEN, TIME, DeadLetter
from ._port import Transport
from ._reading import read_since

# The coordinator's reason for a goal reusing a workflow id that has a goal: redriving it can never
# run it (the id is taken), so it is not redriven (see runtime._coordinator).
DUPLICATE_GOAL = "duplicate workflow id"


@dataclass(frozen=True)
class Redrive:
    """What a redrive did (or, dry, would do) with the dead letters of one original record.

    Attributes:
        ids: The dead letters of the record.
        origin: Where the record was, `topic:partition@offset`; "" if unknown.
        action: "redriven", "would redrive" (dry run) or "skipped".
        why: Why it was skipped.
        to: Where the redriven copy is, `topic:partition@offset`.
        count: The copy's ce_redrive.
    """

    ids: tuple[str, ...]
    origin: str
    action: str
    why: str = ""
    to: str = ""
    count: int = 0

    def json(self) -> dict[str, object]:
        """As `choreo dlq redrive --json` prints it."""
        return {"ids": list(self.ids), "origin": self.origin, "action": self.action, "why": self.why or None,
                "to": self.to or None, "redrive": self.count}


@dataclass
class DeadLetterBox:
    """The dead letters of a namespace: `letters = await DeadLetterBox(transport).read()`, then redrive.

    Args:
        transport: The broker port.
    """

    transport: Transport
    _markers: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def topic(self) -> str:
        """The dead-letter topic."""
        return self.transport.settings.deadletter_topic

    async def read(self, *, since_ms: int | None = None, key: bytes | None = None) -> list[DeadLetter]:
        """Every dead letter in offset order, each with where it was redriven to (`redriven`).

        Args:
            since_ms: Only dead letters written at or after this time (Unix ms; log time).
            key: Only dead letters of records with this key (a workflow id).

        Returns:
            The dead letters.
        """
        letters: list[DeadLetter] = []
        redriven: dict[str, list[str]] = {}
        async for record in read_since(self.transport, self.topic, since_ms):
            if any(name == REDRIVEN for name, _ in record.headers or ()):
                for letter_id, to in _marker(record.value):
                    redriven.setdefault(letter_id, []).append(to)
            elif (key is None or record.key == key) and (since_ms is None or record.timestamp >= since_ms):
                letters.append(DeadLetter.of(record))
        return [replace(letter, redriven=tuple(redriven.get(letter.id, ()))) for letter in letters]

    async def redrive(self, letters: Sequence[DeadLetter], *, dry_run: bool = False,
                      again: bool = False) -> list[Redrive]:
        """Republish the originals of `letters`, one send per original record (see the module).

        A letter is skipped, with the reason, when it is truncated (the original bytes are not all
        there), its origin is unknown, it is a duplicate goal, or it was redriven before (unless
        `again`).

        Args:
            letters: The dead letters to redrive.
            dry_run: Only say what would be redriven.
            again: Redrive letters that were redriven before, too.

        Returns:
            What was done with each original record, in the order of its first letter.
        """
        done: list[Redrive] = []
        producer = None
        partitions: dict[str, int] = {}
        try:
            for group in _by_origin(letters):
                ids = tuple(letter.id for letter in group)
                letter = next((x for x in group if not x.truncated), group[0])
                origin = letter.origin
                where = "" if origin is None else f"{origin[0].topic}:{origin[0].partition}@{origin[1]}"
                count = letter.redrive_count + 1
                why = _why_not(group, letter, again)
                if why or origin is None:
                    done.append(Redrive(ids, where, "skipped", why or "its origin is unknown"))
                    continue
                if dry_run:
                    done.append(Redrive(ids, where, "would redrive", count=count))
                    continue
                if producer is None:
                    producer = self.transport.producer()
                    await producer.start()
                tp = origin[0]
                if tp.topic not in partitions:
                    partitions[tp.topic] = await self.transport.partition_count(tp.topic)
                # The original partition keeps a workflow's events together (the key's, unless the
                # record came there another way); None if that partition is gone.
                partition = tp.partition if tp.partition < partitions[tp.topic] else None
                sent = await producer.send_and_wait(tp.topic, value=letter.value, key=letter.key,
                                                    headers=letter.redrive_headers(), partition=partition)
                to = f"{sent.topic}:{sent.partition}@{sent.offset}"
                marker = orjson.dumps({"redriven": list(ids), "to": to})
                await producer.send_and_wait(self.topic, value=marker, key=letter.key,
                                             headers=[(REDRIVEN, b"1"),
                                                      (TIME, datetime.now(UTC).isoformat().encode())])
                done.append(Redrive(ids, where, "redriven", to=to, count=count))
        finally:
            if producer is not None:
                await producer.stop()
        return done


def _why_not(group: Sequence[DeadLetter], letter: DeadLetter, again: bool) -> str:
    """Why the original record of `group` must not be redriven; "" if it may be."""
    if letter.truncated:
        return (f"truncated: only the start of the {letter.size}-byte original was kept (sha256 "
                f"{letter.digest[:16]}...); it cannot be redriven")
    if any(x.reason.startswith(DUPLICATE_GOAL) for x in group):
        return ("a duplicate goal: its workflow id already has a goal, so it could never run "
                "(publish the goal again under a new id)")
    redriven = sorted({to for x in group for to in x.redriven})
    if redriven and not again:
        return f"already redriven to {', '.join(redriven)} (pass --again to redrive it once more)"
    return ""


def _by_origin(letters: Iterable[DeadLetter]) -> list[list[DeadLetter]]:
    """Letters grouped by their original record, in the order of each group's first letter."""
    groups: dict[object, list[DeadLetter]] = {}
    for letter in letters:
        groups.setdefault(letter.origin or letter.id, []).append(letter)
    return list(groups.values())


def _marker(value: bytes | None) -> list[tuple[str, str]]:
    """(dead letter id, where it went) of a redrive marker; nothing for one that is not readable."""
    try:
        data = orjson.loads(value or b"")
        return [(str(letter_id), str(data["to"])) for letter_id in data["redriven"]]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return []
