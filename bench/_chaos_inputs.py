"""Scenarios of bad input: duplicated and reordered deliveries, a poison payload, and malformed
bytes or unknown schemas written to the events topic behind the services' backs."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from choreograph.events import Envelope, Kind, agent_source, new_workflow_id
from choreograph.transport import Record

from ._chaos_audit import STEPS, Audit, Log
from ._chaos_kills import attempts_failed
from ._chaos_plan import MAX_ATTEMPTS, Chaos, Check, Scenario, Sizes

COPY = "chaos_copy"  # header on a copy the harness wrote, so it is never copied again
COPIED_KINDS = {"goal", "step_completed", "step_failed", "compensation_requested", "compensation_completed", "other",
                "step_attempt_failed", "step_timed_out"}
DUPLICATES: Sizes = {
    "full": {"goals": 60, "seconds": 12, "in_flight": 16, "share": 0.5, "late": 20, "drain": 90},
    "short": {"goals": 6, "seconds": 2, "in_flight": 6, "share": 0.6, "late": 3, "drain": 30},
}
POISON: Sizes = {
    "full": {"goals": 30, "poison": 10, "fail": 4, "seconds": 8, "in_flight": 16, "drain": 90},
    "short": {"goals": 4, "poison": 2, "fail": 1, "seconds": 1, "in_flight": 4, "drain": 30},
}
MALFORMED: Sizes = {
    "full": {"goals": 30, "records": 24, "seconds": 8, "in_flight": 16, "drain": 90},
    "short": {"goals": 4, "records": 8, "seconds": 1, "in_flight": 4, "drain": 30},
}
MAGIC = b"\xc3\x01"  # Avro single-object encoding


async def duplicates(chaos: Chaos, size: dict[str, Any]) -> Scenario:
    """Copies of goals, results, decisions and compensations, written again (same bytes, same event
    id): some at once, some seconds later (after newer events: out of order), and some long after the
    saga ended. Each must change nothing: no second saga, result, outcome or handler run."""
    rng, scenario = chaos.rng, Scenario("duplicates")
    seen: dict[str, list[Record]] = {}
    copies: list[asyncio.Task[Any]] = []
    counts = {"at_once": 0, "later": 0, "after_outcome": 0}

    async def copy(record: Record, delay: float, what: str) -> None:
        await asyncio.sleep(delay)
        await chaos.inject(record.value, record.key, [*record.headers, (COPY, b"1")], record.partition)
        counts[what] += 1

    def on_record(record: Record, kind: str | None) -> None:
        workflow_id = (record.key or b"").decode(errors="replace")
        if chaos.scenario_of.get(workflow_id) != scenario.name or kind not in COPIED_KINDS or \
                any(name == COPY for name, _ in record.headers):
            return
        seen.setdefault(workflow_id, []).append(record)
        if rng.random() < size["share"]:
            later = rng.random() < 0.5
            copies.append(asyncio.create_task(copy(record, rng.uniform(0.2, 2.5) if later else 0.0,
                                                   "later" if later else "at_once")))

    plans = [{"fail_at": f, "expect": "compensated"} if (f := rng.choice([None, None, None, *STEPS])) else {}
             for _ in range(size["goals"])]
    chaos.watch.listeners.append(on_record)
    scenario.started_ns = time.time_ns()
    try:
        scenario.goals = await chaos.publish_paced(scenario.name, plans, size["seconds"], size["in_flight"])
        await chaos.drain(scenario.goals, size["drain"])
        await asyncio.gather(*copies)
    finally:
        chaos.watch.listeners.remove(on_record)
    # Long after the end: a saga's goal and one of its results again, the result first.
    for goal in rng.sample(scenario.goals, min(size["late"], len(scenario.goals))):
        records = seen.get(goal.workflow_id, [])
        for record in sorted(rng.sample(records, min(2, len(records))), key=lambda r: -r.offset):
            await copy(record, 0.0, "after_outcome")
    scenario.ended_ns = time.time_ns()
    scenario.figures["copies"] = counts
    scenario.checks.append(Check("copies written", sum(counts.values()) > 0, str(counts)))
    return scenario


async def poison(chaos: Chaos, size: dict[str, Any]) -> Scenario:
    """Goals whose payload one step can never process: its handler raises on every attempt."""
    rng, scenario = chaos.rng, Scenario("poison")
    plans: list[dict[str, Any]] = [{"plan": {"poison": [rng.choice(STEPS)]}, "expect": "compensated"}
                                   for _ in range(size["poison"])]
    plans += [{"fail_at": rng.choice(STEPS), "expect": "compensated"} for _ in range(size["fail"])]
    plans += [{} for _ in range(size["goals"] - len(plans))]
    rng.shuffle(plans)
    crashes = len(chaos.fleet.crashes)
    scenario.started_ns = time.time_ns()
    scenario.goals = await chaos.publish_paced(scenario.name, plans, size["seconds"], size["in_flight"])
    await chaos.drain(scenario.goals, size["drain"])
    scenario.ended_ns = time.time_ns()
    scenario.checks.append(Check("no service crashed (no crash loop)", len(chaos.fleet.crashes) == crashes,
                                 f"{len(chaos.fleet.crashes) - crashes} exits"))
    poisoned = {g.workflow_id: g.plan["poison"][0] for g in scenario.goals if g.plan.get("poison")}

    def verify(log: Log, audit: Audit) -> list[Check]:
        exhausted = 0
        for workflow_id, step in poisoned.items():
            entries = log.entries.get(workflow_id, [])
            failed = [e for e in entries if e.kind == "step_failed" and e.step == step]
            if failed and attempts_failed(entries, step) == MAX_ATTEMPTS - 1 and \
                    (failed[0].data or {}).get("attempts") == MAX_ATTEMPTS:
                exhausted += 1
        return [Check("poison retried to exhaustion, then the step failed", exhausted == len(poisoned),
                      f"{exhausted}/{len(poisoned)} with {MAX_ATTEMPTS - 1} failed attempts, then "
                      f"step_failed(attempts={MAX_ATTEMPTS})", needs="agent retries (item 2)")]

    scenario.verify = verify
    return scenario


async def malformed(chaos: Chaos, size: dict[str, Any]) -> Scenario:
    """Goals flowing while records nobody can read are written among them: no headers, garbage or
    truncated bodies, unknown writer schemas, unknown types, tombstones, a bad kind."""
    rng, scenario = chaos.rng, Scenario("malformed")
    shapes = await _shapes(chaos)
    plans = [{"fail_at": f, "expect": "compensated"} if (f := rng.choice([None, None, None, *STEPS])) else {}
             for _ in range(size["goals"])]
    crashes = len(chaos.fleet.crashes)
    written: dict[tuple[int, int], str] = {}

    async def write_all() -> None:
        for i in range(size["records"]):
            await asyncio.sleep(size["seconds"] / size["records"])
            name, (value, key, headers) = list(shapes.items())[i % len(shapes)]
            written[await chaos.inject(value, key, headers)] = name

    scenario.started_ns = time.time_ns()
    writer = asyncio.create_task(write_all())
    scenario.goals = await chaos.publish_paced(scenario.name, plans, size["seconds"], size["in_flight"])
    await writer
    await chaos.drain(scenario.goals, size["drain"])
    scenario.ended_ns = time.time_ns()
    scenario.figures["malformed_records"] = len(written)
    scenario.checks.append(Check("no service crashed", len(chaos.fleet.crashes) == crashes,
                                 f"{len(chaos.fleet.crashes) - crashes} exits"))

    def verify(log: Log, audit: Audit) -> list[Check]:
        missing = sorted({name for at, name in written.items() if not log.dead_letters.get(at)})
        scenario.figures["dead_lettered"] = sum(1 for at in written if log.dead_letters.get(at))
        return [Check("every malformed record dead-lettered", not missing,
                      f"{scenario.figures['dead_lettered']}/{len(written)}"
                      + (f"; never dead-lettered: {', '.join(missing)}" if missing else ""))]

    scenario.verify = verify
    return scenario


async def _shapes(chaos: Chaos) -> dict[str, tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """One record of each unreadable shape, keyed by a workflow id of its own (value, key, headers)."""
    from choreograph.runtime._client import conform  # the client's own validation

    schema = await chaos.client.goal_schema("report")
    valid = schema.encode(conform(schema, {"topic": "malformed", "fail_at": None}))
    research = agent_source("report", "research")

    def headers(type_name: str, kind: Kind, step: str | None = None, source: str = "choreo://chaos") -> tuple[
            bytes, list[tuple[str, bytes]]]:
        envelope = Envelope.new(type=type_name, source=source, workflow="report", workflow_id=new_workflow_id(),
                                kind=kind, step=step)
        return envelope.key, envelope.headers()

    def shape(value: bytes | None, made: tuple[bytes, list[tuple[str, bytes]]]) -> tuple[
            bytes | None, bytes, list[tuple[str, bytes]]]:
        return value, made[0], made[1]

    goal = schema.name
    bad_kind = [(n, b"bogus" if n == "ce_kind" else v) for n, v in headers(goal, Kind.GOAL)[1]]
    from choreograph.examples.report._events import ResearchCompleted

    return {
        "no headers": (os.urandom(40), new_workflow_id().encode(), []),
        "garbage goal": shape(os.urandom(40), headers(goal, Kind.GOAL)),
        "unknown schema": shape(MAGIC + os.urandom(8) + valid[10:], headers(goal, Kind.GOAL)),
        "truncated goal": shape(valid[: len(valid) // 2], headers(goal, Kind.GOAL)),
        "garbage result": shape(os.urandom(40), headers(ResearchCompleted.type_name(), Kind.STEP_COMPLETED,
                                                        "research", research)),
        "unknown type": shape(MAGIC + os.urandom(8) + b"\x02", headers("report.Mystery", Kind.OTHER)),
        "tombstone goal": shape(None, headers(goal, Kind.GOAL)),
        "bad kind": (valid, new_workflow_id().encode(), bad_kind),
    }
