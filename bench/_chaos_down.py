"""An agent down for good (its step times out, the saga compensates in bounded time), an agent down
for less than its step timeout (the sagas complete), and a workflow deadline shorter than the wait."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from choreograph import HistoryEntry

from ._chaos_audit import Audit, Log
from ._chaos_kills import attempts_failed
from ._chaos_plan import Chaos, Check, Goal, Scenario

STEP, BEFORE = "draft", "analyze"  # the step whose agent goes down, and the step that feeds it
# Stated slack over the step's deadline: the coordinator's timer fires, then StepTimedOut, the
# compensation of the two steps before it and the outcome are published and handled (well under 1 s
# on a quiet machine; the rest is room for a loaded one).
SLACK_S = 5.0
DOWN = {"full": {"timeout": 4.0, "attempts": 2, "goals": 10, "deadline_goals": 2, "deadline_s": 2.0,
                 "less_timeout": 30.0, "less_goals": 10, "down_s": 5.0},
        "short": {"timeout": 2.0, "attempts": 1, "goals": 2, "deadline_goals": 1, "deadline_s": 1.0,
                  "less_timeout": 20.0, "less_goals": 2, "down_s": 3.5}}


async def agent_down(chaos: Chaos, size: dict[str, Any]) -> Scenario:
    """Every copy of `draft` stopped, first for good, then for less than its step timeout."""
    from services.report._events import RETRY

    scenario = Scenario("agent_down")
    roles = chaos.fleet.roles(f"report.{STEP}.")
    policy = dataclasses.replace(RETRY, max_attempts=size["attempts"]).policy()

    def bound_ms(workflow_id: str) -> int:
        waits = sum(policy.delay_ms(workflow_id, STEP, a) for a in range(1, size["attempts"]))
        return int(size["attempts"] * size["timeout"] * 1000 + waits + SLACK_S * 1000)

    scenario.started_ns = time.time_ns()
    stopped, late = await _down_for_good(chaos, scenario.name, roles, size, bound_ms)
    brief, downtime = await _down_briefly(chaos, scenario.name, roles, size)
    scenario.ended_ns = time.time_ns()
    scenario.goals = stopped + late + brief
    scenario.figures.update({"step_timeout_s": size["timeout"], "attempts": size["attempts"], "slack_s": SLACK_S,
                             "brief_downtime_s": round(downtime, 1), "brief_step_timeout_s": size["less_timeout"]})
    scenario.checks.append(Check("brief outage shorter than the step timeout", downtime < size["less_timeout"],
                                 f"{downtime:.1f} s < {size['less_timeout']} s"))

    def verify(log: Log, audit: Audit) -> list[Check]:
        in_time, seconds = 0, []
        for goal in stopped:
            took = _timed_out_after_ms(log.entries.get(goal.workflow_id, []))
            if took is not None:
                seconds.append(took / 1000)
                in_time += took <= bound_ms(goal.workflow_id)
        timed_out = sum(1 for g in late if _status(log.entries.get(g.workflow_id, [])) == "timed_out")
        clean = sum(1 for g in brief if attempts_failed(log.entries.get(g.workflow_id, []), STEP) == 0
                    and _status(log.entries.get(g.workflow_id, [])) == "completed")
        scenario.figures["down_for_good_s"] = max(seconds, default=None)
        return [
            Check(f"down for good: compensated, {STEP} timed out, within {size['attempts']} x "
                  f"{size['timeout']} s + backoff + {SLACK_S} s slack", in_time == len(stopped),
                  f"{in_time}/{len(stopped)}; slowest {max(seconds, default=0):.1f} s after {BEFORE} completed",
                  needs="step timeouts in the coordinator (item 3)"),
            Check("workflow deadline passed: outcome timed_out", timed_out == len(late),
                  f"{timed_out}/{len(late)}", needs="workflow deadlines (item 3)"),
            Check("down for less than the timeout: completed, no attempt timed out", clean == len(brief),
                  f"{clean}/{len(brief)}"),
        ]

    scenario.verify = verify
    return scenario


async def _down_for_good(chaos: Chaos, name: str, roles: list[str], size: dict[str, Any],
                         bound_ms: Callable[[str], int]) -> tuple[list[Goal], list[Goal]]:
    """Agents announcing a short timeout, stopped before any goal; goals (some with a workflow
    deadline shorter than the step's) wait for them until their deadlines pass."""
    await _restart(chaos, roles, {"REPORT_STEP_TIMEOUT_S": str(size["timeout"]),
                                  "REPORT_MAX_ATTEMPTS": str(size["attempts"])})
    for role in roles:
        chaos.fleet.kill(role, restart=False)
    stopped: list[Goal] = []
    for _ in range(size["goals"]):
        if goal := await chaos.publish(name, expect="compensated", plan={"down": "for good"}):
            stopped.append(goal)
    late: list[Goal] = []
    for _ in range(size["deadline_goals"]):
        deadline = time.time_ns() // 1_000_000 + int(size["deadline_s"] * 1000)
        if goal := await chaos.publish(name, expect="timed_out", plan={"down": "deadline"}, deadline_ms=deadline):
            late.append(goal)
    longest = max((bound_ms(g.workflow_id) for g in stopped), default=0) / 1000
    await chaos.drain(stopped + late, longest + 10)
    return stopped, late


async def _down_briefly(chaos: Chaos, name: str, roles: list[str], size: dict[str, Any]) -> tuple[list[Goal], float]:
    """Agents with a longer timeout stopped while goals arrive, and back before it passes."""
    await _restart(chaos, roles, {"REPORT_STEP_TIMEOUT_S": str(size["less_timeout"])}, held=True)
    # SIGKILLed, and started again once their sessions have expired (after ~3 s; sooner, the new
    # members would wait for the group to drop the dead ones).
    killed = time.monotonic()
    for role in roles:
        chaos.fleet.kill(role, restart=False)
    brief: list[Goal] = []
    for _ in range(size["less_goals"]):
        if goal := await chaos.publish(name, plan={"down": "briefly"}):
            brief.append(goal)
    await asyncio.sleep(size["down_s"])
    await _restart(chaos, roles, None, held=True)
    downtime = time.monotonic() - killed
    await chaos.drain(brief, size["less_timeout"] + 30)
    return brief, downtime


async def _restart(chaos: Chaos, roles: list[str], env: dict[str, str] | None, *, held: bool = False) -> None:
    """Start the roles again (with `env` from now on, if given) and wait until each is ready; a role
    still running is stopped gracefully first (it leaves its group at once, so the new one joins fast)."""
    for role in roles:
        if not held:
            await asyncio.to_thread(chaos.fleet.stop_role, role)
        chaos.fleet.release(role, env)
    await asyncio.to_thread(chaos.fleet.wait_ready, roles)


def _timed_out_after_ms(entries: list[HistoryEntry]) -> int | None:
    """Milliseconds from the moment STEP's input was in the log to a `compensated` outcome whose failed
    step is STEP after it timed out; None if the saga did not end that way."""
    ready = next((e.timestamp for e in entries if e.kind == "step_completed" and e.step == BEFORE), None)
    outcome = next((e for e in entries if e.kind == "outcome"), None)
    if ready is None or outcome is None or not any(e.kind == "step_timed_out" and e.step == STEP for e in entries):
        return None
    data = outcome.data or {}
    if data.get("status") != "compensated" or data.get("failed_step") != STEP:
        return None
    return outcome.timestamp - ready


def _status(entries: list[HistoryEntry]) -> str | None:
    return next((str((e.data or {}).get("status")) for e in entries if e.kind == "outcome"), None)
