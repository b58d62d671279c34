"""Recordings: one workflow's records with what is needed to replay them anywhere, in a file.

`choreo record WORKFLOW_ID > file` writes one; tests/golden/ holds recordings the golden tests fold
through the current coordinator code. JSON lines: a header object (format, workflow, the step
contracts its graph came from, the final state as recorded), then one record per line, byte exact
(value in base64) with a readable `event` beside it that loading ignores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigurationError, DecodeError, SchemaError, WorkflowError
from ..events._avro import SchemaStore
from ..events._models import StepContract
from ..events._records import StoredRecord
from ..saga._entries import HistoryEntry, entries_of, entry_of
from ..saga._graph import Graph
from ..saga._replay import Mismatch, catalog_for, check, fold
from ..security._verify import Rejected, Verifier
from ..transport._registry import framework_store
from ..transport._settings import Settings
from ._history import History

FORMAT = "choreograph-recording/1"


@dataclass
class Recording:
    """One workflow's records, with the step contracts its graph came from and its final state.

    Attributes:
        workflow_id: The workflow instance's id.
        workflow: The workflow's name.
        contracts: The step contracts of the workflow's own graph (see recording_of), as announced
            when it was recorded.
        records: The workflow's records, byte exact, in log order.
        final_state: The state folded from the records when recorded (Snapshot.json without "at",
            "events_folded" and "decided"); None if not recorded.
    """

    workflow_id: str
    workflow: str
    contracts: list[StepContract]
    records: list[StoredRecord]
    final_state: dict[str, Any] | None = None
    _store: SchemaStore | None = field(default=None, repr=False)

    @property
    def store(self) -> SchemaStore:
        """Framework schemas plus every schema the workflow's contracts announce."""
        if self._store is None:
            self._store = framework_store()
            for contract in self.contracts:
                for schema in (*contract.consumes, contract.completes_with):
                    try:
                        self._store.add_json(schema.avro_schema)
                    except (SchemaError, ValueError):  # a hand-made file's; its events stay undecoded
                        continue
        return self._store

    def events(self) -> list[tuple[StoredRecord, HistoryEntry]]:
        """Each record that is an event, with its decoded entry (decoded once per call)."""
        return [(r, e) for r in self.records if (e := entry_of(r, self.store)) is not None]

    def entries(self) -> list[HistoryEntry]:
        """The decoded events (see events)."""
        return [e for _, e in self.events()]

    def believed(self, verifier: Verifier | None) -> list[tuple[StoredRecord, HistoryEntry]]:
        """The events the services would act on: those `verifier` admits (all of them without one).

        Args:
            verifier: The policy's verifier (None: CHOREO_VERIFY=off, nothing is checked).
        """
        return [(r, e) for r, e in self.events() if verifier is None
                or not isinstance(verifier.admit_record(r.key, r.value, r.headers, r.timestamp), Rejected)]

    def catalog(self) -> dict[str, Graph]:
        """The workflow's step graph: made from its contracts, else as its WorkflowStarted recorded it.

        Empty when it has neither; a refusal (Graph.refusal) when its contracts form a cycle, as the
        coordinator would hold for them.
        """
        if self.contracts:
            try:
                return {self.workflow: Graph.from_contracts(self.workflow, self.contracts)}
            except WorkflowError as exc:  # only a hand-made file: recorded contracts come from one graph
                reason = f"its recorded step contracts make no graph: {exc}"
                return {self.workflow: Graph.refusal(self.workflow, reason)}
        return dict(catalog_for(self.entries()))

    def check(self) -> list[Mismatch]:
        """Replay through the current coordinator code; every difference from the recording."""
        events = self.events()
        values = {e.event_id: r.value or b"" for r, e in events}
        return check([e for _, e in events], values, self.catalog(), self.final_state)

    def dumps(self) -> bytes:
        """The recording file's content: JSON lines, the header first, then a line per record."""
        header = {"format": FORMAT, "workflow_id": self.workflow_id, "workflow": self.workflow,
                  "contracts": [c.model_dump(mode="json") for c in self.contracts],
                  "final_state": self.final_state}
        lines = [orjson.dumps(header)]
        for record in self.records:
            line = record.to_json()
            entry = entry_of(record, self.store)
            if entry is not None:
                line["event"] = {"kind": entry.kind, "step": entry.step, "type": entry.type, "data": entry.data}
            lines.append(orjson.dumps(line))
        return b"\n".join(lines) + b"\n"

    @classmethod
    def loads(cls, text: bytes, name: str = "<recording>") -> Recording:
        """Read a recording from a recording file's content (see dumps).

        Args:
            text: The content.
            name: What to call it in errors (the file's name).

        Returns:
            The recording.

        Raises:
            ConfigurationError: The text is not a recording, or not a readable one.
        """
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            header = orjson.loads(lines[0])
            if header.get("format") != FORMAT:
                raise ConfigurationError(f"{name}: not a choreograph recording (format {header.get('format')!r})")
            contracts = [StepContract.model_validate(c) for c in header["contracts"]]
            records = [StoredRecord.from_json(orjson.loads(line)) for line in lines[1:]]
        except (IndexError, KeyError, ValueError) as exc:
            raise ConfigurationError(f"{name}: unreadable recording: {exc}") from exc
        return cls(header["workflow_id"], header["workflow"], contracts, records, header.get("final_state"))

    @classmethod
    def load(cls, path: Path) -> Recording:
        """Read a recording file (see loads).

        Raises:
            OSError: The file cannot be read.
            ConfigurationError: The file is not a recording, or not a readable one.
        """
        return cls.loads(path.read_bytes(), str(path))


def recording_of(workflow_id: str, records: Iterable[StoredRecord], contracts: Iterable[StepContract],
                 store: SchemaStore) -> Recording:
    """A recording of the workflow's records, with its contracts and the final state folded from them.

    The contracts kept are those of the workflow's own graph: once its WorkflowStarted is recorded,
    only the steps that graph names, so that a step announced after the workflow started is not
    replayed into it. Before that, every contract of the workflow (the graph it would start with).

    Args:
        workflow_id: The workflow instance's id.
        records: Its records, in log order.
        contracts: Announced contracts; those of other workflows, and of steps its recorded graph
            does not have, are left out.
        store: The writer schemas to decode the records with.

    Returns:
        The recording.

    Raises:
        ConfigurationError: No record is an event, or the events cannot be folded.
    """
    records = list(records)
    entries = entries_of(records, store)
    if not entries:
        raise ConfigurationError(f"no events of workflow {workflow_id!r}")
    workflow = entries[0].workflow
    mine = [c for c in contracts if c.workflow == workflow]
    started = catalog_for(entries).get(workflow)
    if started is not None:
        mine = [c for c in mine if c.step in started.nodes]
    recording = Recording(workflow_id, workflow, mine, records)
    try:
        snapshot = fold(entries, recording.catalog()).json()
    except DecodeError as exc:
        raise ConfigurationError(f"cannot fold {workflow_id}: {exc}") from exc
    recording.final_state = {k: v for k, v in snapshot.items() if k not in ("at", "events_folded", "decided")}
    return recording


async def record(settings: Settings | None, workflow_id: str, archive: Path | None = None) -> Recording:
    """Record a workflow: its records to its partition's end, from the broker or an archive directory.

    Args:
        settings: The broker and namespace to read; None for Settings.from_env(). Unused with `archive`.
        workflow_id: The workflow instance's id.
        archive: An archive directory to read instead of the broker.

    Returns:
        The recording.

    Raises:
        ConfigurationError: The workflow has no events there (or they cannot be folded), or no
            broker is configured (BrokerUnavailable).
        ArchiveError: `archive` is not a directory.
    """
    if archive is not None:
        from ._archive import Archive  # deferred: only reading an archive needs its segment schema parsed

        source = Archive(archive)
        return recording_of(workflow_id, source.workflow_records(workflow_id), source.contracts().contracts.values(),
                            source.store)
    async with History(settings or Settings.from_env()) as reader:
        records = [r async for r in reader.records(workflow_id, to_end=True)]
        return recording_of(workflow_id, records, reader.registry.contracts.values(), reader.store)
