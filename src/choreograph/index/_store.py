"""The index's store: one SQLite file (WAL) of workflow rows, step runs and the offsets read.

Idempotent by tracking records: the rows a batch of records changed and each partition's next
offset are written in one transaction, and a record below its partition's stored offset is not
folded again. So a reader killed anywhere (even between two statements) resumes at the stored
offsets, neither losing nor counting twice. WAL with synchronous=NORMAL: a killed process loses
nothing committed; a power cut may lose the last transactions, rows and offsets together, which
are then read again.

The file carries its schema's version (SQLite's user_version): a file of another version is dropped
and made again when the indexer opens it, and the indexer, finding no offsets, rebuilds it from the
log's start (as for another log).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ._decode import Skip
from ._summary import IndexedEvent, StepRun, Summary, fold

log = logging.getLogger("choreograph.index")

SCHEMA_VERSION = 2
"""The store's schema version (1, unversioned: before `steps` had durations and an index by end time).

`steps_by_finished` covers step_stats's columns: its window is then read from the index alone (CPU
98 ms instead of 117 for 33,000 step runs, 15,000 workflows, on a loaded 2-core machine)."""
_TABLES = ("workflows", "steps", "offsets", "meta")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workflows (
    workflow_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL,
    started_ms INTEGER NOT NULL, last_event_ms INTEGER NOT NULL, last_kind TEXT NOT NULL,
    current_steps TEXT NOT NULL, failed_step TEXT, reason TEXT, events INTEGER NOT NULL, state TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS workflows_by_started ON workflows (started_ms, workflow_id);
CREATE INDEX IF NOT EXISTS workflows_by_status ON workflows (status, started_ms, workflow_id);
CREATE INDEX IF NOT EXISTS workflows_by_workflow ON workflows (workflow, started_ms, workflow_id);
CREATE TABLE IF NOT EXISTS steps (
    workflow_id TEXT NOT NULL, workflow TEXT NOT NULL, step TEXT NOT NULL, compensation INTEGER NOT NULL,
    status TEXT NOT NULL, started_ms INTEGER, finished_ms INTEGER, duration_ms INTEGER,
    PRIMARY KEY (workflow_id, step, compensation));
CREATE INDEX IF NOT EXISTS steps_by_step ON steps (workflow, step, finished_ms);
CREATE INDEX IF NOT EXISTS steps_by_finished ON steps (finished_ms, workflow, step, compensation, status, duration_ms,
                                                      started_ms);
CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    last_record TEXT, PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = ("workflow_id, workflow, status, started_ms, last_event_ms, last_kind, current_steps, failed_step, "
            "reason, events, state")

Indexed = tuple[int, int, IndexedEvent | Skip]
"""One record of a batch: (partition, offset, the event or why it is skipped)."""


def record_mark(timestamp: int, headers: Sequence[tuple[str, bytes]]) -> str:
    """What tells a record from the one at the same offset of another log: its timestamp and event id.

    A restore into a new cluster keeps both but moves records to other offsets, so the record at a
    stored offset of the old log is another one in the new.
    """
    event_id = next((v for k, v in headers if k == "ce_id"), b"")
    return f"{timestamp}/{event_id.decode(errors='replace')}"


def index_path(home: Path, namespace: str) -> Path:
    """Where a namespace's index lives: `<CHOREO_HOME>/index/<namespace>.sqlite`."""
    return home / "index" / f"{namespace}.sqlite"


class IndexStore:
    """The index file, opened for writing (the indexer's): `IndexStore(path)`; close() when done.

    Args:
        path: The SQLite file; made, with its directory, if missing.

    Attributes:
        migrated: Whether the file held another schema version, and was dropped and made again empty
            (its rows are then rebuilt from the log's start).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self.migrated = self._migrate()

    def _migrate(self) -> bool:
        """Make the tables; drop them first if the file holds another schema version. True if it did."""
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        held = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        dropped = bool(held) and version != SCHEMA_VERSION
        db.execute("BEGIN IMMEDIATE")
        try:
            if dropped:
                for table in _TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if dropped:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('rebuilt_ms', ?)", (str(_now_ms()),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if dropped:
            log.warning("index %s: schema version %s, this version reads %s: dropped, rebuilt from the log's start",
                        self.path, version, SCHEMA_VERSION)
        return dropped

    def close(self) -> None:
        """Close the file (what is committed stays)."""
        self._db.close()

    def offsets(self, topic: str) -> dict[int, int]:
        """Each partition's next offset to read, as last committed."""
        return dict(self._db.execute("SELECT partition, next_offset FROM offsets WHERE topic = ?", (topic,)))

    def last_records(self, topic: str) -> dict[int, str | None]:
        """Each partition's last record read (see record_mark), to tell this log from another at set-up."""
        return dict(self._db.execute("SELECT partition, last_record FROM offsets WHERE topic = ?", (topic,)))

    def meta(self) -> dict[str, str]:
        """The store's bookkeeping: `updated_ms` (last commit), `skipped_<reason>` counts, `rebuilt_ms`."""
        return dict(self._db.execute("SELECT key, value FROM meta"))

    def summaries(self, ids: Iterable[str]) -> dict[str, Summary]:
        """The stored summaries of these workflows (those that have one)."""
        wanted, found = list(ids), {}
        for i in range(0, len(wanted), 500):  # SQLite's default limit is 999 bound variables
            chunk = wanted[i:i + 500]
            query = f"SELECT {_COLUMNS} FROM workflows WHERE workflow_id IN ({','.join('?' * len(chunk))})"
            for row in self._db.execute(query, chunk):
                found[row[0]] = _summary_of(row)
        return found

    def fold_batch(self, topic: str, batch: Sequence[Indexed], marks: Mapping[int, str] | None = None) -> int:
        """Fold a batch of records into the rows, and store the offsets past it, in one transaction.

        A record below its partition's stored offset was folded before (a batch read again after a
        crash, or replayed) and is passed over.

        Args:
            topic: The topic the records were read from.
            batch: The records, in log order per partition.
            marks: Each partition's last record of the batch (record_mark), stored with its offset.

        Returns:
            How many records were folded (believed events, not seen before).
        """
        stored = self.offsets(topic)
        fresh = [item for item in batch if item[1] >= stored.get(item[0], 0)]
        if not fresh:
            return 0
        events = [e for _, _, e in fresh if isinstance(e, IndexedEvent)]
        rows = self.summaries({e.workflow_id for e in events})
        for event in events:
            rows[event.workflow_id] = fold(rows.get(event.workflow_id), event)
        touched = {e.workflow_id for e in events}
        nexts: dict[int, int] = {}
        skipped: dict[str, int] = {}
        for partition, offset, e in fresh:
            nexts[partition] = max(nexts.get(partition, 0), offset + 1)
            if isinstance(e, Skip):
                skipped[e.value] = skipped.get(e.value, 0) + 1
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(f"INSERT OR REPLACE INTO workflows ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           [_row_of(rows[w]) for w in touched])
            db.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?,?)",
                           [(w, rows[w].workflow, r.step, int(r.compensation), r.status, r.started_ms, r.finished_ms,
                             r.duration_ms) for w in touched for r in rows[w].runs.values()])
            db.executemany("INSERT OR REPLACE INTO offsets VALUES (?,?,?,?)",
                           [(topic, p, n, (marks or {}).get(p)) for p, n in nexts.items()])
            db.executemany("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                           "value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)",
                           [(f"skipped_{k}", str(v)) for k, v in skipped.items()])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('updated_ms', ?)", (str(_now_ms()),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(events)

    def touch(self) -> None:
        """Record that the indexer is alive and caught up (an idle indexer commits no batch)."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('updated_ms', ?)", (str(_now_ms()),))

    def reset(self) -> None:
        """Drop every row and offset: the index is rebuilt from the log's start."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in _TABLES:
                db.execute(f"DELETE FROM {table}")
            db.execute("INSERT INTO meta VALUES ('rebuilt_ms', ?)", (str(_now_ms()),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _row_of(s: Summary) -> tuple[Any, ...]:
    state = {"graph": s.graph, "completed": s.completed, "compensations": s.compensations,
             "runs": [[r.step, r.compensation, r.status, r.started_ms, r.finished_ms] for r in s.runs.values()]}
    return (s.workflow_id, s.workflow, s.status, s.started_ms, s.last_event_ms, s.last_kind,
            orjson.dumps(s.current_steps()).decode(), s.failed_step, s.reason, s.events, orjson.dumps(state).decode())


def _summary_of(row: Sequence[Any]) -> Summary:
    state = orjson.loads(row[10])
    runs = {(r[0], bool(r[1])): StepRun(r[0], bool(r[1]), r[2], r[3], r[4]) for r in state["runs"]}
    return Summary(row[0], row[1], row[2], row[3], row[4], row[5], row[7], row[8], row[9], state["graph"],
                   state["completed"], state["compensations"], runs)
