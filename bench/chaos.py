"""`make chaos`: named fault scenarios on real processes, audited, ending with one JSON line.

One broker (embedded unless --bootstrap-servers), one namespace; two coordinators (one group) and two
copies of each `report` agent, each its own process, kept running by the harness (a service that
dies is started again). The scenarios run one after another on that fleet:

  kills                     300 goals (10% failing, some with a transient error) while a random
                            service is SIGKILLed and restarted every 2 s (at least 30 kills)
  crash_windows             agents die once after a step's effect (before its result is published),
                            or after the result is in the log (before the input is committed): 26
                            planned of each, at least 20 must happen (bench/_chaos_agent.py)
  duplicates                goals, results and decisions written again: at once, out of order, late
  poison                    a step that raises on every attempt for some payloads
  malformed                 unreadable records (garbage, truncated, unknown schemas and types)
  coordinator_compensating  every coordinator SIGKILLed while sagas compensate
  agent_down                every copy of `draft` stopped for good (its step times out, the saga
                            compensates within the timeout plus a stated slack; a goal deadline ends
                            `timed_out`), then for less than its timeout (the sagas complete)

Then it waits for every group to commit to the log's end, reads the log once, and audits each goal
(bench/_chaos_audit.py). Exit 0 only when every invariant and check holds: nothing lost, no duplicate
outcome or logged result, compensations exact, every handler re-run explained by a death inside its
crash window; 1 otherwise, 2 if the setup failed, 130 if interrupted. `--short --parallel` is the
variant `make test` runs (tests/e2e/test_chaos_short.py): small sizes, the scenarios at once.

Faults are planned per goal (src/choreograph/examples/report/_faults.py: transient, poison, crash, slow undo), so
every scenario can share one fleet; a handler's effect is a line in the effect log.

Usage: python -m bench.chaos [--scenario NAME|all] [--seed K] [--short] [--parallel] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from choreograph import ChoreographError, Client, EmbeddedBroker, Settings
from choreograph.transport import PROFILES, Kafka, TopicPartition

from . import _chaos_down, _chaos_inputs, _chaos_kills
from ._chaos_audit import Audit, Log, committed_lags, read_effects, read_log
from ._chaos_fleet import COPIES, Fleet, report_roles
from ._chaos_plan import MAX_ATTEMPTS, Chaos, Scenario, Sizes
from ._chaos_report import Outcome, judge, print_report, totals
from ._chaos_watch import Watch

Run = Callable[[Chaos, dict[str, Any]], Awaitable[Scenario]]
# In the order they run: agent_down last, as it leaves `draft` with its own timeout.
SCENARIOS: dict[str, tuple[Run, Sizes]] = {
    "kills": (_chaos_kills.kills, _chaos_kills.KILLS),
    "crash_windows": (_chaos_kills.crash_windows, _chaos_kills.CRASHES),
    "duplicates": (_chaos_inputs.duplicates, _chaos_inputs.DUPLICATES),
    "poison": (_chaos_inputs.poison, _chaos_inputs.POISON),
    "malformed": (_chaos_inputs.malformed, _chaos_inputs.MALFORMED),
    "coordinator_compensating": (_chaos_kills.coordinator_compensating, _chaos_kills.COMPENSATING),
    "agent_down": (_chaos_down.agent_down, _chaos_down.DOWN),
}
SETTLE_S = 30.0  # at the end, for every group to commit up to the log's end


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scenario", action="append", default=None, metavar="NAME",
                        help=f"a scenario, or all (default); repeatable or comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--seed", type=int, default=1, help="seeds the goal mix, faults and victims (default 1)")
    parser.add_argument("--short", action="store_true", help="small sizes: the variant `make test` runs")
    parser.add_argument("--parallel", action="store_true",
                        help="run the scenarios at once (agent_down still alone, last): quicker, figures mixed")
    parser.add_argument("--goals", type=int, default=None, help="goals of the kills scenario (default 300)")
    parser.add_argument("--copies", type=int, default=COPIES, help="copies of each service (default 2)")
    parser.add_argument("--step-delay-ms", type=int, default=50, help="each handler's work (default 50)")
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of an embedded one")
    parser.add_argument("--broker-kind", default="tansu", choices=sorted(PROFILES), help="its kind (default tansu)")
    parser.add_argument("--keep", action="store_true", help="keep the logs even when everything held")
    args = parser.parse_args(argv)
    names = [n.strip() for item in (args.scenario or ["all"]) for n in item.split(",") if n.strip()]
    unknown = sorted(set(names) - {*SCENARIOS, "all"})
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)} or all")
    args.scenarios = list(SCENARIOS) if "all" in names else [n for n in SCENARIOS if n in names]
    return args


def sizes(args: argparse.Namespace, name: str) -> dict[str, Any]:
    size = dict(SCENARIOS[name][1]["short" if args.short else "full"])
    if name == "kills" and args.goals is not None:
        size["goals"] = args.goals
    return size


def chaos_settings(servers: str, kind: str) -> Settings:
    """A fresh namespace on the run's broker, with the tests' short group session (3 s)."""
    profile = replace(PROFILES[kind], session_timeout_ms=3000, heartbeat_interval_ms=1000)
    return Settings(bootstrap_servers=servers, broker=profile, namespace=f"chaos-{uuid.uuid4().hex[:6]}",
                    partitions=4)


async def drive(settings: Settings, fleet: Fleet, args: argparse.Namespace, faults: Path) -> tuple[
        Chaos, list[Scenario], dict[str, int], dict[int, int]]:
    """Run the scenarios one after another, then wait for every group's commits."""
    kafka = Kafka(settings)
    starts = await kafka.end_offsets([TopicPartition(settings.events_topic, p) for p in range(settings.partitions)])
    scenarios: list[Scenario] = []
    async with Client(settings, source="choreo://chaos") as client, Watch(settings) as watch, \
            Chaos(settings, fleet, client, watch, random.Random(args.seed), faults) as chaos:
        await client.goal_schema("report")
        keeper = asyncio.create_task(chaos.keep())
        try:
            together = [n for n in args.scenarios if n != "agent_down"] if args.parallel else []
            if together:
                scenarios += await asyncio.gather(*(run_one(chaos, args, name) for name in together))
            for name in args.scenarios:
                if name not in together:
                    scenarios.append(await run_one(chaos, args, name))
            lags = await settle(settings, SETTLE_S)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
    return chaos, scenarios, lags, {tp.partition: offset for tp, offset in starts.items()}


async def run_one(chaos: Chaos, args: argparse.Namespace, name: str) -> Scenario:
    _say(f"{name}: running")
    started = time.monotonic()
    scenario = await SCENARIOS[name][0](chaos, sizes(args, name))
    _say(f"{name}: done in {time.monotonic() - started:.0f} s")
    return scenario


async def settle(settings: Settings, timeout_s: float) -> dict[str, int]:
    """Each group's committed lag, once all are zero or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    lags = await committed_lags(settings)
    while any(lags.values()) and time.monotonic() < deadline:
        await asyncio.sleep(1)
        lags = await committed_lags(settings)
    return lags


def audit(chaos: Chaos, scenarios: list[Scenario], log: Log, effects: Path, seed: int) -> list[Outcome]:
    """Each scenario's goals against the log and the effect log; kills are the scenario's own
    (planned crashes of its workflows, SIGKILLs while it ran)."""
    runs = read_effects(effects)
    every_kill = chaos.fleet.all_kills()
    outcomes = []
    for scenario in scenarios:
        found = Audit(every_kill, chaos.injected)
        for goal in scenario.goals:
            found.add(goal, log.entries.get(goal.workflow_id, []), runs.get(goal.workflow_id, {}))
        checks = [*scenario.checks, *(scenario.verify(log, found) if scenario.verify else [])]
        ours = {g.workflow_id for g in scenario.goals}
        kills = [k for k in every_kill if k.workflow_id in ours or (
            not k.workflow_id and scenario.started_ns <= k.at_ns <= scenario.ended_ns)]
        outcomes.append(judge(scenario, found, kills, checks, chaos.last_outcome_ns(scenario.goals), seed))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and print their figures; every process started is stopped by pid before returning."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # so the finally clause below stops every process
    workdir = Path(tempfile.mkdtemp(prefix="choreo-chaos-"))
    effects, faults = workdir / "effects.log", workdir / "faults"
    faults.mkdir()
    broker = EmbeddedBroker(workdir / "broker.log") if args.bootstrap_servers is None else None
    fleet: Fleet | None = None
    started = time.monotonic()
    try:
        try:
            servers = broker.start().bootstrap_servers if broker is not None else args.bootstrap_servers
            settings = chaos_settings(servers, "tansu" if broker is not None else args.broker_kind)
            fleet = Fleet(settings, workdir, {
                "REPORT_STEP_DELAY_MS": str(args.step_delay_ms), "REPORT_EFFECTS_FILE": str(effects),
                "REPORT_FAULTS_DIR": str(faults), "REPORT_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
                "CHAOS_KILLS_FILE": str(workdir / "kills.log")})
            roles = report_roles(args.copies)
            _say(f"starting {len(roles)} services on {servers} (logs in {workdir})")
            fleet.start(roles)
        except ChoreographError as exc:
            print(f"chaos: setup failed: {exc}\nlogs: {workdir}", file=sys.stderr)
            return 2
        chaos, scenarios, lags, starts = asyncio.run(drive(settings, fleet, args, faults))
        log = asyncio.run(read_log(settings, {g.workflow_id for g in chaos.goals}, starts))
        crashes = fleet.crash_report()
    except KeyboardInterrupt:
        print(f"chaos: interrupted; stopping every process (logs: {workdir})", file=sys.stderr)
        return 130
    finally:
        if fleet is not None:
            fleet.stop()
        if broker is not None:
            broker.stop()
    outcomes = audit(chaos, scenarios, log, effects, args.seed)
    total = totals(outcomes, fleet, lags, args.seed, time.monotonic() - started, crashes,
                   chaos.last_outcome_ns(chaos.goals))
    print_report(outcomes, total, fleet, crashes, str(workdir), args.keep)
    if total["ok"] and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if total["ok"] else 1


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _say(message: str) -> None:
    print(f"  chaos: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
