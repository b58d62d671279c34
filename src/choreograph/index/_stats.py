"""Per-step statistics over a recent window (`choreo stats`), from the index's step runs: no broker.

A step run counts in the window when it ended in it (its `finished_ms` within the last `window_s`).
Its duration runs from when its inputs were all in the log (its goal, for a first step) to its result:
the time a workflow spent on the step, waiting for a free agent included. A compensation's runs from
the coordinator's request to the agent's answer, and are counted apart (`compensation=True`).
Percentiles are nearest-rank over the window's durations, computed here. The worst case measured:
every run of 5,000 workflows in the window (35,000 step runs, `python -m bench --only faust-index`)
took 110 ms of CPU, 232-246 ms wall on a 2-core machine at load 6-8; SQLite alone spends 45 ms on a
GROUP BY of 33,000 rows and 66 ms fetching them, and percentiles by SQL window functions took 4 times
as long as this in the same measurement. A window of the last minutes holds only the runs that
ended in it.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._store import SCHEMA_VERSION

FAILED = frozenset(("failed", "compensation_failed"))
"""Step run statuses counted as failures (a step's, or its compensation's)."""


@dataclass(frozen=True)
class StepStats:
    """One step's runs that ended in the window.

    Attributes:
        workflow: The workflow's name.
        step: The step's name.
        compensation: Whether these are the step's compensations.
        count: Runs that ended in the window.
        failed: Of them, those that failed (`failed`, or `compensation_failed`).
        failure_rate: failed / count.
        p50_ms: The median duration, in ms; None if no run's start is known.
        p95_ms: The 95th percentile duration, in ms; None if no run's start is known.
    """

    workflow: str
    step: str
    compensation: bool
    count: int
    failed: int
    failure_rate: float
    p50_ms: int | None
    p95_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        """As `choreo stats --json` prints it."""
        return asdict(self)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_window(text: str) -> float:
    """Seconds in a window as `choreo stats --window` and the web view's Steps page take it.

    Here, below both the command line and the web view (which may not import typer), so the two read
    a window alike: plain seconds, or a duration with units (`30s`, `10m`, `1h30m`, `500ms`, `1d`).

    Raises:
        ValueError: Not a duration, or not above 0 (the message says which; the caller names the option).
    """
    value = text.strip().lower()
    try:
        seconds: float | None = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        ok = bool(parts) and "".join(n + u for n, u in parts) == value
        seconds = sum(float(n) * _UNIT_S[u] for n, u in parts) if ok else None
    if seconds is None:
        raise ValueError("expected a duration such as 30s, 10m or 1h30m")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError("expected a duration > 0")
    return seconds


def percentile(values: list[int], q: float) -> int | None:
    """The nearest-rank `q` percentile (0 < q <= 1) of values sorted ascending; None if empty."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def step_stats(path: Path, window_s: float, now_ms: int | None = None, *,
               workflow: str | None = None) -> list[StepStats]:
    """Each step's count, failures and p50/p95 duration over the runs that ended in the last `window_s`.

    Args:
        path: The index file (see index_path); it must exist.
        window_s: The window, in seconds back from now.
        now_ms: Now, Unix ms (default: the clock).
        workflow: Only this workflow's steps.

    Returns:
        One entry per (workflow, step, compensation) with a run in the window: by workflow, then steps
        before compensations, then by when the step's runs first started (graph order, roughly).

    Raises:
        sqlite3.Error: The file is not an index of this version (the indexer rebuilds an older one when it
            starts), or is unreadable.
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    query = ("SELECT workflow, step, compensation, status, duration_ms, coalesce(started_ms, finished_ms) FROM steps "
             "WHERE finished_ms > ? AND finished_ms <= ?")
    params: list[str | int] = [now - round(window_s * 1000), now]
    if workflow is not None:
        query += " AND workflow = ?"
        params.append(workflow)
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version}, not {SCHEMA_VERSION}: the indexer rebuilds it "
                                        "when it starts (`choreo up`, `choreo index run`)")
        rows = db.execute(query, params).fetchall()
    finally:
        db.close()
    groups: dict[tuple[str, str, bool], _Group] = {}
    for name, step, compensation, status, duration, started in rows:
        group = groups.get((name, step, bool(compensation)))
        if group is None:
            group = groups[(name, step, bool(compensation))] = _Group(started)
        group.count += 1
        group.failed += status in FAILED
        group.first = min(group.first, started)
        if duration is not None:
            group.durations.append(duration)
    out = []
    for (name, step, compensation), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[1].first,
                                                                                 kv[0][1])):
        g.durations.sort()
        out.append(StepStats(name, step, compensation, g.count, g.failed, round(g.failed / g.count, 4),
                             percentile(g.durations, 0.5), percentile(g.durations, 0.95)))
    return out


@dataclass
class _Group:
    first: int
    count: int = 0
    failed: int = 0
    durations: list[int] = field(default_factory=list)
