"""Reading the index: `choreo ls`'s rows, from the SQLite file opened read-only (no broker needed)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ._summary import COMPENSATING, RUNNING, iso


@dataclass(frozen=True)
class Listing:
    """What `choreo ls` prints: the rows asked for, newest first, and how fresh the index is.

    Attributes:
        rows: One dict per workflow (see Summary.row for the fields).
        updated_ms: When the indexer last committed or found nothing new; None if never.
    """

    rows: list[dict[str, Any]]
    updated_ms: int | None


def list_workflows(path: Path, *, status: str | None = None, workflow: str | None = None,
                   since_ms: int | None = None, limit: int | None = 50, now_ms: int | None = None) -> Listing:
    """The workflows of the index at `path`, newest (by start) first.

    Args:
        path: The index file (see index_path); it must exist.
        status: Only workflows with this status.
        workflow: Only workflows of this name.
        since_ms: Only workflows started at or after this time (Unix ms).
        limit: At most this many rows; None for all.
        now_ms: Now, for the duration of running workflows.

    Returns:
        The listing.

    Raises:
        sqlite3.Error: The file is not an index (or is unreadable).
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    clauses: list[str] = []
    params: list[str | int] = []
    for column, value in (("status", status), ("workflow", workflow)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since_ms is not None:
        clauses.append("started_ms >= ?")
        params.append(since_ms)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    query = (f"SELECT workflow_id, workflow, status, started_ms, last_event_ms, last_kind, current_steps, "
             f"failed_step, reason, events FROM workflows {where} ORDER BY started_ms DESC, workflow_id DESC")
    if limit is not None:
        query += " LIMIT ?"
        params.append(limit)
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = [_row(r, now) for r in db.execute(query, params)]
        updated = db.execute("SELECT value FROM meta WHERE key = 'updated_ms'").fetchone()
    finally:
        db.close()
    return Listing(rows, None if updated is None else int(updated[0]))


def status_counts(path: Path, *, workflow: str | None = None, since_ms: int | None = None) -> dict[str, int]:
    """How many workflows of the index at `path` have each status (of `workflow`, started since `since_ms`).

    Raises:
        sqlite3.Error: The file is not an index (or is unreadable).
    """
    clauses, params = ["1"], list[str | int]()
    if workflow is not None:
        clauses.append("workflow = ?")
        params.append(workflow)
    if since_ms is not None:
        clauses.append("started_ms >= ?")
        params.append(since_ms)
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return dict(db.execute(f"SELECT status, COUNT(*) FROM workflows WHERE {' AND '.join(clauses)} "
                               "GROUP BY status ORDER BY status", params))
    finally:
        db.close()


def workflow_row(path: Path, workflow_id: str, now_ms: int | None = None) -> dict[str, Any] | None:
    """One workflow's row of the index at `path` (as list_workflows gives it), or None if it has none.

    Raises:
        sqlite3.Error: The file is not an index (or is unreadable).
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = db.execute("SELECT workflow_id, workflow, status, started_ms, last_event_ms, last_kind, "
                           "current_steps, failed_step, reason, events FROM workflows WHERE workflow_id = ?",
                           (workflow_id,)).fetchone()
    finally:
        db.close()
    return None if found is None else _row(found, now)


def _row(r: tuple[Any, ...], now: int) -> dict[str, Any]:
    (workflow_id, workflow, status, started, last, last_kind, current, failed_step, reason, events) = r
    end = max(now, last) if status in (RUNNING, COMPENSATING) else last
    return {"workflow_id": workflow_id, "workflow": workflow, "status": status,
            "started": iso(started), "started_ms": started, "last_event": iso(last), "last_event_ms": last,
            "last_kind": last_kind, "duration_ms": max(0, end - started), "current_steps": orjson.loads(current),
            "failed_step": failed_step, "reason": reason, "events": events}
