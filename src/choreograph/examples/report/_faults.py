"""Fault injection for `make chaos` (bench/chaos.py); off unless REPORT_FAULTS_DIR is set.

The chaos harness writes a plan for a workflow before it publishes the goal, as
`$REPORT_FAULTS_DIR/<workflow id>.json`, for example
`{"transient": ["analyze"], "poison": ["chart"], "crash": {"draft": "effect"}, "undo_ms": 600}`:

- transient: the step's first attempt raises FlakyUpstream (say, a rental API timing out); a
  retry succeeds.
- poison: the step raises PoisonPayload on every attempt (a bug on some input): retries run out
  and the step fails.
- crash: read by the chaos agent runner (bench/_chaos_agent.py), which kills its own process once
  at that point (after the step's effect, or after its result is in the log).
- undo_ms: each compensation of the workflow takes this long, so that a coordinator can be killed
  while the saga compensates.

"Once" is remembered in files (`$REPORT_FAULTS_DIR/once/`), so it holds across restarts of a process
and across the copies of an agent. Without REPORT_FAULTS_DIR nothing here reads a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_plans: dict[str, dict[str, Any]] = {}  # a plan is written before its goal: a miss is final too


class FlakyUpstream(ConnectionError):
    """A transient failure of a dependency: the next attempt succeeds."""


class PoisonPayload(ValueError):
    """The handler cannot process this payload, however often it is retried."""


def faults_dir() -> Path | None:
    """Where plans and once-markers live, or None when fault injection is off."""
    path = os.environ.get("REPORT_FAULTS_DIR")
    return Path(path) if path else None


def plan_of(workflow_id: str) -> dict[str, Any]:
    """The fault plan of a workflow ({} for none, and always when fault injection is off)."""
    root = faults_dir()
    if root is None:
        return {}
    plan = _plans.get(workflow_id)
    if plan is None:
        try:
            plan = json.loads((root / f"{workflow_id}.json").read_bytes())
        except (OSError, ValueError):  # no plan for this workflow (most), or a name that is not a file name
            plan = {}
        _plans[workflow_id] = plan
    return plan


def first_time(workflow_id: str, step: str, fault: str) -> bool:
    """True the first time it is asked for (workflow, step, fault) in any process of the run."""
    root = faults_dir()
    if root is None:
        return False
    marker = root / "once" / f"{workflow_id}.{step}.{fault}"
    marker.parent.mkdir(exist_ok=True)
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def raise_planned(workflow_id: str, step: str) -> None:
    """Raise the failure planned for this attempt of the step, if any (before any effect)."""
    plan = plan_of(workflow_id)
    if not plan:
        return
    if step in plan.get("poison", ()):
        raise PoisonPayload(f"{step} cannot process the payload of {workflow_id} (planned poison)")
    if step in plan.get("transient", ()) and first_time(workflow_id, step, "transient"):
        raise FlakyUpstream(f"{step}: upstream timed out (planned transient failure, first attempt only)")


def undo_seconds(workflow_id: str) -> float:
    """How long each compensation of the workflow takes, as planned (0 by default)."""
    return float(plan_of(workflow_id).get("undo_ms", 0)) / 1000
