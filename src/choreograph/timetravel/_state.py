"""`choreo state`: a workflow's state at a point of its history, or what changed between two points.

The history is read from the broker or an archive and folded with the coordinator's code (see
saga.fold). A running workflow's report also lists its pending steps: each step whose inputs are all
in the log but that has not finished, and each compensation requested and not yet done, with how
long it has waited and (read now, from the broker) the live instances of its agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..saga._entries import HistoryEntry
from ..saga._replay import Point, catalog_for, fold
from ..saga._replay import diff as state_diff
from ..transport._clock import SYSTEM_CLOCK, Clock
from ..transport._groups import group_members
from ..transport._keyring import service_verifier
from ..transport._presence import read_status, serving
from ..transport._settings import Settings
from ._recording import record

_ATTEMPTS = ("step_attempt_failed", "step_timed_out")


async def state_report(workflow_id: str, *, settings: Settings | None = None, at: Point | None = None,
                       diff: tuple[Point, Point] | None = None, archive: Path | None = None,
                       clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """`choreo state`'s JSON: a snapshot (saga.Snapshot.json) with `pending`, or `from`, `to`, `changes`, `events`.

    Args:
        workflow_id: The workflow instance's id.
        settings: The broker and namespace to read; None for Settings.from_env().
        at: The point to fold up to; None for the whole history.
        diff: Two points to compare instead: the snapshots at each, what changed (saga.diff) and the
            events in between.
        archive: An archive directory to read instead of the broker.
        clock: Now, for how long pending steps have waited (at the end of the history).

    Returns:
        The JSON-ready report.

    Raises:
        ConfigurationError: The workflow has no events there, or no broker is configured.
        ArchiveError: `archive` is not a directory.
    """
    settings = settings or (None if archive is not None else Settings.from_env())
    recording = await record(settings, workflow_id, archive)
    # Folded as the coordinator folds: without the records the services refuse (forged, unsigned).
    entries = [e for _, e in recording.believed(service_verifier())]
    catalog = catalog_for(entries, recording.catalog())
    if diff is None:
        report = fold(entries, catalog, at).json()
        # Waits run to now on the broker; to the point's own time for a past point or an archive.
        live = at is None and archive is None
        now = clock.now_ms() if live else (report["at"] or {}).get("timestamp", clock.now_ms())
        report["pending"] = pending_steps(entries, report, now)
        if live and settings is not None and report["pending"]:
            await _who_serves(report["pending"], report["workflow"], settings, clock)
        return report
    before, after = fold(entries, catalog, diff[0]).json(), fold(entries, catalog, diff[1]).json()
    start = before["at"]["offset"] if before["at"] else -1
    end = after["at"]["offset"] if after["at"] else -1
    between = [{"offset": e.offset, "kind": e.kind, "step": e.step, "type": e.type, "event_id": e.event_id}
               for e in entries if start < e.offset <= end]
    return {"workflow_id": workflow_id, "from": before, "to": after, "changes": state_diff(before, after),
            "events": between}


def pending_steps(entries: Sequence[HistoryEntry], snapshot: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
    """What a running workflow waits for: steps whose inputs are all in the log, and requested compensations.

    A step waits from the moment its last input was logged: the latest completion of the steps it
    depends on, or its goal for a first step. A compensation waits from its request.

    Args:
        entries: The workflow's events, in log order (those past the snapshot's point are ignored).
        snapshot: The snapshot's JSON (saga.Snapshot.json).
        now_ms: Now (or the snapshot's time): what the waits are measured to.

    Returns:
        One item per waiting step: step, compensation, since (Unix ms), waited_s, attempts_failed,
        next_attempt_at.
    """
    if snapshot["status"] != "running" or not snapshot["graph"]:
        return []
    at = snapshot["at"]["offset"] if snapshot.get("at") else None
    seen = [e for e in entries if at is None or e.offset <= at]
    logged: dict[tuple[str, str | None], int] = {}
    for e in seen:
        logged.setdefault((e.kind, e.step), e.timestamp)
    goal_at = next((e.timestamp for e in seen if e.kind == "goal"), None)
    completed, failed = set(snapshot["completed"]), set(snapshot["failed"])
    live: set[str] = set()
    waiting: list[tuple[str, bool, int | None]] = []
    # A cancelled workflow waits for no step, only for the compensations it asked for.
    graph = () if "cancelled" in snapshot else snapshot["graph"]
    for node in graph:  # in graph order: a step's dependencies come before it
        step, deps = node["step"], node["depends_on"]
        if step in completed or step in failed or not all(d in completed or d in live for d in deps):
            continue
        live.add(step)
        if all(d in completed for d in deps):
            times = [logged.get(("step_completed", d)) for d in deps] if deps else [goal_at]
            waiting.append((step, False, max((t for t in times if t is not None), default=None)))
    undone = set(snapshot["compensated"]) | set(snapshot["compensation_failed"])
    for step in snapshot["compensation_requested"]:
        if step not in undone:
            waiting.append((step, True, logged.get(("compensation_requested", step))))
    return [_pending(seen, step, compensation, since, now_ms) for step, compensation, since in waiting]


def _pending(entries: Sequence[HistoryEntry], step: str, compensation: bool, since: int | None,
             now_ms: int) -> dict[str, Any]:
    """One pending step's item (see pending_steps)."""
    attempts = [e for e in entries if e.kind in _ATTEMPTS and e.step == step
                and bool((e.data or {}).get("compensation", False)) == compensation]
    return {
        "step": step, "compensation": compensation, "since": since,
        "waited_s": None if since is None else round(max(0, now_ms - since) / 1000, 1),
        "attempts_failed": len(attempts),
        "next_attempt_at": (attempts[-1].data or {}).get("next_attempt_at") if attempts else None,
    }


async def _who_serves(pending: list[dict[str, Any]], workflow: str, settings: Settings, clock: Clock) -> None:
    """Add to each pending item the live instances of its agent, read now (see transport.serving)."""
    from ..transport._kafka import Kafka  # deferred: an archive's state needs no broker client

    kafka = Kafka(settings)
    status = await read_status(kafka, clock=clock)
    groups = {item["step"]: settings.agent_group(workflow, item["step"]) for item in pending}
    members = await group_members(kafka, sorted(set(groups.values())))
    now = clock.now_ms()
    for item in pending:
        step = item["step"]
        count, by = serving(status, workflow, step, now, members.get(groups[step]))
        item["live"] = count
        item["live_by"] = by
        item["instances"] = [i.presence.instance for i in status.of(workflow, step) if i.live(now)]
        item["no_live_agent"] = None if count is None else count == 0
