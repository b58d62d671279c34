"""What the pages show, read where the command line reads it: the index file, the broker, the registry.

`Source` is the web view's only way to its data, so the pages can be tested on a fake one (tests/unit).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ChoreographError, WorkflowFinished
from ..index._query import Listing, list_workflows, status_counts, workflow_row
from ..index._stats import StepStats, step_stats
from ..index._store import index_path
from ..index._summary import IndexedEvent, Summary, fold
from ..runtime._client import Client
from ..saga._entries import HistoryEntry
from ..timetravel._agents import agents_report
from ..timetravel._history import History
from ..transport._dlq import DeadLetterBox
from ..transport._kafka import Kafka
from ..transport._keyring import service_verifier
from ..transport._registry import Registry
from ..transport._settings import Settings

# The reason a cancellation from the web view gives when its form's is empty.
CANCELLED_FROM_UI = "cancelled from choreo ui"


@dataclass(frozen=True)
class Filters:
    """The workflows page's filters (empty: all).

    Attributes:
        workflow: Only workflows of this name.
        status: Only workflows with this status.
        since: Only workflows started since: ISO 8601 with a zone, or a duration ago (`10m`, `2h`, `1d`).
        limit: At most this many rows, newest first.
    """

    workflow: str = ""
    status: str = ""
    since: str = ""
    limit: int = 100

    def since_ms(self, now_ms: int) -> int | None:
        """The `since` filter as Unix ms; None when empty.

        Raises:
            ValueError: Neither an ISO time with a zone nor a duration.
        """
        text = self.since.strip()
        if not text:
            return None
        units = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
        if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
            return now_ms - round(float(text[:-1]) * units[text[-1]])
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError("give a time zone (e.g. a trailing Z for UTC)")
        return round(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Overview:
    """The workflows page's data.

    Attributes:
        index: The index file read.
        listing: Its rows; None when there is no index file.
        counts: How many workflows have each status (under the workflow and since filters).
        problem: Why nothing could be listed (no index, a bad filter), if so.
    """

    index: Path
    listing: Listing | None
    counts: dict[str, int] = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True)
class StepsView:
    """The Steps page's data: each step's runs that ended in the window (index.step_stats).

    Attributes:
        index: The index file read.
        window: The window as asked for (`5m`).
        stats: One entry per workflow, step and compensation with a run in the window.
        updated_ms: When the indexer last wrote the file (Unix ms); None if never.
        problem: Why nothing could be read (no index, not an index of this version), if so.
    """

    index: Path
    window: str
    stats: list[StepStats] = field(default_factory=list)
    updated_ms: int | None = None
    problem: str | None = None


@dataclass(frozen=True)
class WorkflowView:
    """One workflow's page data, from its events.

    Attributes:
        workflow_id: The workflow instance's id.
        entries: Its events in log order, dead letters (kind `dead_letter`) after what they copy.
        summary: Its steps and status, folded from the believed events as the index folds them.
    """

    workflow_id: str
    entries: list[HistoryEntry]
    summary: Summary

    @property
    def events(self) -> list[HistoryEntry]:
        """The events, without dead letters."""
        return [e for e in self.entries if e.kind != "dead_letter"]

    @property
    def dead_letters(self) -> list[HistoryEntry]:
        """The workflow's dead letters."""
        return [e for e in self.entries if e.kind == "dead_letter"]

    @property
    def trace_id(self) -> str | None:
        """The W3C trace id its events carry (the goal's, the first that has one)."""
        for entry in self.entries:
            parts = (entry.traceparent or "").split("-")
            if len(parts) == 4 and len(parts[1]) == 32:
                return parts[1]
        return None


def fold_entries(workflow_id: str, entries: list[HistoryEntry]) -> Summary:
    """The workflow's summary from its events, as the index folds them (refused ones and dead letters left out)."""
    summary: Summary | None = None
    for e in entries:
        if e.kind == "dead_letter" or e.rejected is not None:
            continue
        summary = fold(summary, IndexedEvent(e.workflow_id or workflow_id, e.workflow, e.kind, e.type, e.step,
                                             e.timestamp, e.data))
    return summary if summary is not None else Summary(workflow_id)


@dataclass(frozen=True)
class Agents:
    """The agents page's data.

    Attributes:
        rows: One per announced step (timetravel.agents_report's rows).
        graphs: Each workflow's step graph from its contracts: step -> the steps it depends on, in order.
        io: (workflow, step) -> the event types it consumes and the one it completes with.
    """

    rows: list[dict[str, Any]]
    graphs: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    io: dict[tuple[str, str], tuple[list[str], str]] = field(default_factory=dict)


class Source:
    """The web view's data for one namespace: `Source(settings, home)`.

    Args:
        settings: The broker and namespace.
        home: CHOREO_HOME, where the index file is (`<home>/index/<namespace>.sqlite`).
    """

    def __init__(self, settings: Settings, home: Path) -> None:
        self.settings = settings
        self.index = index_path(home, settings.namespace)

    def overview(self, filters: Filters, now_ms: int | None = None) -> Overview:
        """The workflows the filters select, newest first, and the counts by status."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if not self.index.exists():
            return Overview(self.index, None, problem=f"No workflow index here ({self.index}): `choreo up` runs "
                                                       "one (or `choreo index run`).")
        try:
            since = filters.since_ms(now)
        except ValueError as exc:
            return Overview(self.index, None, problem=f"since {filters.since!r}: {exc}; give an ISO time "
                                                       "(2026-01-31T09:30:00Z) or a duration ago (10m, 2h, 1d)")
        try:
            listing = list_workflows(self.index, status=filters.status or None, workflow=filters.workflow or None,
                                     since_ms=since, limit=filters.limit, now_ms=now)
            counts = status_counts(self.index, workflow=filters.workflow or None, since_ms=since)
        except sqlite3.Error as exc:
            return Overview(self.index, None, problem=f"{self.index}: not a workflow index ({exc})")
        return Overview(self.index, listing, counts)

    def steps(self, window: str, window_s: float, now_ms: int | None = None) -> StepsView:
        """Each step's runs, failures and p50/p95 duration over the last `window_s` (as `choreo stats`).

        Took 110 ms of CPU, 232-246 ms wall, over 35,000 runs in the window (index._stats): callers run it
        in a thread and no more often than every few seconds.
        """
        if not self.index.exists():
            return StepsView(self.index, window, problem=f"No workflow index here ({self.index}): `choreo up` runs "
                                                         "one (or `choreo index run`).")
        try:
            stats = step_stats(self.index, window_s, now_ms)
            updated = list_workflows(self.index, limit=0).updated_ms
        except sqlite3.Error as exc:
            return StepsView(self.index, window, problem=f"{self.index}: not a workflow index of this version ({exc})")
        return StepsView(self.index, window, stats, updated)

    def index_row(self, workflow_id: str) -> dict[str, Any] | None:
        """The workflow's row of the index (status, events), or None (no index, no row)."""
        if not self.index.exists():
            return None
        try:
            return workflow_row(self.index, workflow_id)
        except sqlite3.Error:
            return None

    async def workflow(self, workflow_id: str) -> WorkflowView:
        """The workflow's events and dead letters from the broker, as `choreo history --to-end` reads them.

        To the partition's end, not the outcome: late results of a cancelled workflow and their
        compensations come after it (and the index counts them: see the page's live reload).
        """
        async with History(self.settings) as reader:
            entries = [e async for e in reader.entries(workflow_id, to_end=True)]
        return WorkflowView(workflow_id, entries, fold_entries(workflow_id, entries))

    async def agents(self) -> Agents:
        """Every announced step (as `choreo agents --json`) and each workflow's step graph and contracts.

        The graph is the one the coordinator assembles from the contracts the services believe.
        """
        kafka = Kafka(self.settings)
        registry = await Registry.read(kafka, verifier=service_verifier())
        graphs = {w: {name: list(node.depends_on) for name in g.order if (node := g.nodes.get(name)) is not None}
                  for w, g in registry.catalog.items() if g.refused is None}
        io = {(c.workflow, c.step): ([t.name for t in c.consumes], c.completes_with.name)
              for c in registry.contracts.values()}
        return Agents(await agents_report(self.settings, transport=kafka), graphs, io)

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first (as `choreo dlq ls --json`)."""
        return [letter.json() for letter in await DeadLetterBox(Kafka(self.settings)).read()]

    async def cancel(self, workflow_id: str, reason: str) -> tuple[bool, str]:
        """Ask the coordinator to cancel the workflow (Client.cancel): whether it was asked, and what to say."""
        try:
            async with Client(replace(self.settings, client_id="choreo-ui"), source="choreo://ui") as client:
                asked = await client.cancel(workflow_id, reason or CANCELLED_FROM_UI)
        except WorkflowFinished as exc:
            return False, str(exc)
        except ChoreographError as exc:
            return False, f"not cancelled: {exc}"
        return True, (f"Cancellation requested (partition {asked.partition}, offset {asked.offset}): the "
                      "coordinator compensates what completed, then ends it cancelled.")
