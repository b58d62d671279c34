"""An agent down for good (its step times out, the saga compensates in bounded time), an agent down
for less than its step timeout (the sagas complete), and a workflow deadline shorter than the wait.

The step's timeout is the scenario's: the harness announces `draft`'s contract with it, as a copy of
`draft` started with REPORT_STEP_TIMEOUT_S would at start-up (no process restart needed), and the
goals published after it run with it (a workflow's graph is fixed when its goal is read).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from choreograph import HistoryEntry
from choreograph.events import RetryPolicy, WorkflowStarted, agent_source
from choreograph.runtime import load_agent
from choreograph.security import Identity
from choreograph.transport import Trust, announce

from ._chaos_audit import Audit, Log
from ._chaos_kills import attempts_failed
from ._chaos_plan import Chaos, Check, Goal, Scenario, Sizes

STEP, BEFORE = "draft", "analyze"  # the step whose agent goes down, and the step that feeds it
# Stated slack over the step's deadline: the coordinator's timer fires, then StepTimedOut, the
# compensation of the two steps before it and the outcome are published and handled (well under 1 s
# on a quiet machine; the rest is room for a loaded one).
SLACK_S = 5.0
STARTED = WorkflowStarted.type_name()
# "brief": how the agent is down for a while: SIGKILLed and started again after its group sessions
# expired, or frozen (SIGSTOP, then SIGCONT) for less than a session: quicker, for the short variant.
DOWN: Sizes = {
    "full": {"timeout": 4.0, "attempts": 2, "goals": 10, "deadline_goals": 2, "deadline_s": 2.0,
             "less_timeout": 30.0, "less_goals": 10, "down_s": 5.0, "brief": "restart"},
    "short": {"timeout": 2.0, "attempts": 1, "goals": 2, "deadline_goals": 1, "deadline_s": 1.0,
              "less_timeout": 10.0, "less_goals": 2, "down_s": 1.0, "brief": "freeze"},
}


async def agent_down(chaos: Chaos, size: dict[str, Any]) -> Scenario:
    """Every copy of `draft` stopped, first for good, then for less than its step timeout."""
    from choreograph.examples.report._events import RETRY

    scenario = Scenario("agent_down")
    roles = chaos.fleet.roles(f"report.{STEP}.")
    policy = dataclasses.replace(RETRY, max_attempts=size["attempts"]).policy()

    def bound_ms(workflow_id: str) -> int:
        waits = sum(policy.delay_ms(workflow_id, STEP, a) for a in range(1, size["attempts"]))
        return int(size["attempts"] * size["timeout"] * 1000 + waits + SLACK_S * 1000)

    scenario.started_ns = time.time_ns()
    stopped, late = await _down_for_good(chaos, scenario.name, roles, size, policy, bound_ms)
    brief, downtime = await _down_briefly(chaos, scenario.name, roles, size)
    scenario.ended_ns = time.time_ns()
    scenario.goals = stopped + late + brief
    scenario.figures.update({"step_timeout_s": size["timeout"], "attempts": size["attempts"], "slack_s": SLACK_S,
                             "brief_outage": size["brief"], "brief_downtime_s": round(downtime, 1),
                             "brief_step_timeout_s": size["less_timeout"]})
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
        graphs = sum(1 for g in stopped if _timeout_ms(log.entries.get(g.workflow_id, [])) == size["timeout"] * 1000)
        return [
            Check(f"the goals ran with {STEP}'s announced timeout", graphs == len(stopped),
                  f"{graphs}/{len(stopped)} graphs with {size['timeout']} s"),
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


async def _down_for_good(chaos: Chaos, name: str, roles: list[str], size: dict[str, Any], policy: RetryPolicy,
                         bound_ms: Callable[[str], int]) -> tuple[list[Goal], list[Goal]]:
    """Every copy SIGKILLed after announcing a short timeout; goals (some with a workflow deadline
    shorter than the step's) wait for it until their deadlines pass."""
    for role in roles:
        chaos.fleet.kill(role, restart=False)
    await _announce(chaos, size["timeout"], policy)
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
    """Back up, announcing the longer timeout; then down while goals arrive, and back before it passes."""
    for role in roles:
        chaos.fleet.release(role)
    await asyncio.to_thread(chaos.fleet.wait_ready, roles)
    await _announce(chaos, size["less_timeout"], None)
    down = time.monotonic()
    pids = [chaos.fleet.current[role].process.pid for role in roles]
    if size["brief"] == "freeze":
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
    else:
        for role in roles:
            chaos.fleet.kill(role, restart=False)
    brief: list[Goal] = []
    for _ in range(size["less_goals"]):
        if goal := await chaos.publish(name, plan={"down": "briefly"}):
            brief.append(goal)
    # A SIGKILLed member is dropped from its group after the session (~3 s): started again sooner,
    # the new members would wait for that anyway. A frozen one stays a member if back within it.
    await asyncio.sleep(max(0.0, size["down_s"] - (time.monotonic() - down)))
    if size["brief"] == "freeze":
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    else:
        for role in roles:
            chaos.fleet.release(role)
        await asyncio.to_thread(chaos.fleet.wait_ready, roles)
    downtime = time.monotonic() - down
    await chaos.drain(brief, size["less_timeout"] + 30)
    return brief, downtime


async def _announce(chaos: Chaos, timeout_s: float, policy: RetryPolicy | None) -> None:
    """Announce `draft`'s contract with this timeout (and retry policy, if given) as its agent would."""
    contract = load_agent(f"choreograph.examples.report.{STEP}:agent").contract()
    update: dict[str, Any] = {"timeout_ms": int(timeout_s * 1000)}
    if policy is not None:
        update["retry"] = policy
    settings = chaos.settings
    # Signed as draft's agent would sign it: the services believe a contract only from its own agent.
    producer = Trust.from_env(Identity.agent("report", STEP)).producer(chaos.producer)
    await announce(producer, settings.registry_topic, settings.events_topic, settings.partitions,
                   contract.model_copy(update=update), agent_source("report", STEP))


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


def _timeout_ms(entries: list[HistoryEntry]) -> int | None:
    """STEP's timeout in the graph the workflow started with (its WorkflowStarted event)."""
    for entry in entries:
        if entry.type == STARTED:
            nodes = (entry.data or {}).get("steps") or []
            return next((n.get("timeout_ms") for n in nodes if n.get("name") == STEP), None)
    return None


def _status(entries: list[HistoryEntry]) -> str | None:
    return next((str((e.data or {}).get("status")) for e in entries if e.kind == "outcome"), None)
