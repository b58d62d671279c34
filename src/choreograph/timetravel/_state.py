"""`choreo state`: a workflow's state at a point of its history, or what changed between two points.

The history is read from the broker or an archive and folded with the coordinator's code (see
saga.fold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..saga._replay import Point, catalog_for, fold
from ..saga._replay import diff as state_diff
from ..transport._settings import Settings
from ._recording import record


async def state_report(workflow_id: str, *, settings: Settings | None = None, at: Point | None = None,
                       diff: tuple[Point, Point] | None = None, archive: Path | None = None) -> dict[str, Any]:
    """`choreo state`'s JSON: a snapshot (saga.Snapshot.json), or `from`, `to`, `changes`, `events`.

    Args:
        workflow_id: The workflow instance's id.
        settings: The broker and namespace to read; None for Settings.from_env().
        at: The point to fold up to; None for the whole history.
        diff: Two points to compare instead: the snapshots at each, what changed (saga.diff) and the
            events in between.
        archive: An archive directory to read instead of the broker.

    Returns:
        The JSON-ready report.

    Raises:
        ConfigurationError: The workflow has no events there, or no broker is configured.
        ArchiveError: `archive` is not a directory.
    """
    recording = await record(settings, workflow_id, archive)
    entries = recording.entries()
    catalog = catalog_for(entries, recording.catalog())
    if diff is None:
        return fold(entries, catalog, at).json()
    before, after = fold(entries, catalog, diff[0]).json(), fold(entries, catalog, diff[1]).json()
    start = before["at"]["offset"] if before["at"] else -1
    end = after["at"]["offset"] if after["at"] else -1
    between = [{"offset": e.offset, "kind": e.kind, "step": e.step, "type": e.type, "event_id": e.event_id}
               for e in entries if start < e.offset <= end]
    return {"workflow_id": workflow_id, "from": before, "to": after, "changes": state_diff(before, after),
            "events": between}
