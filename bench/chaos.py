"""`make chaos`: sagas under fault injection, with figures instead of assertions.

One fresh embedded broker; two coordinators (one group) and two copies of each `report` agent,
each its own process. Goals (about 70% happy, the rest failing at a random step) are published
through the Client at a steady rate over `--seconds`, with at most `--in-flight` open at a time,
while every `--kill-every` seconds a random service is SIGKILLed and started again at once under
the same role. Then the killing stops, the run waits (bounded) for every outcome and for the
groups' commits, and checks each workflow's history (see _chaos_audit.py).

Usage: python -m bench.chaos [--goals N] [--kill-every S] [--seconds T] [--seed K]
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from choreograph import ChoreographError, Client, EmbeddedBroker, Settings, history
from choreograph.transport import PROFILES, Kafka

from ._chaos_audit import STEPS, Audit, committed_lags, read_effects
from ._chaos_fleet import Fleet, report_roles
from ._chaos_report import print_report

HAPPY_SHARE = 0.7
OUTCOME_WAIT_S = 180.0  # after the last goal, for the outcomes still missing
SETTLE_S = 20.0  # then for every group to commit up to the log's end
AUDIT_CONCURRENCY = 4  # history reads at a time


@dataclass
class Run:
    """What happened while the faults were on, and the waits after."""

    published: dict[str, str | None] = field(default_factory=dict)  # workflow id -> fail_at
    publish_errors: int = 0
    chaos_s: float = 0.0
    seconds: float = 0.0  # first goal to the last outcome seen (at least the publishing)
    with_outcome: int = 0
    lags: dict[str, int] = field(default_factory=dict)


class OutcomeWatch:
    """Follows the events topic from its current end and notes which workflows have an outcome."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._kafka = Kafka(settings)
        self._done: dict[str, asyncio.Event] = {}
        self.last_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OutcomeWatch:
        tps = [TopicPartition(self._settings.events_topic, p) for p in range(self._settings.partitions)]
        ends = await self._kafka.end_offsets(tps)
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._watch(ends, ready))
        await ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _event(self, workflow_id: str) -> asyncio.Event:
        return self._done.setdefault(workflow_id, asyncio.Event())

    def has_outcome(self, workflow_id: str) -> bool:
        return self._event(workflow_id).is_set()

    async def wait(self, workflow_id: str, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._event(workflow_id).wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def wait_all(self, workflow_ids: list[str], timeout_s: float) -> None:
        """Until each of the workflows has an outcome, or `timeout_s` is up."""
        deadline = time.monotonic() + timeout_s
        for workflow_id in workflow_ids:
            if not await self.wait(workflow_id, max(0.0, deadline - time.monotonic())):
                return

    async def _watch(self, ends: dict[TopicPartition, int], ready: asyncio.Event) -> None:
        async with self._kafka.reader(ends) as consumer:
            for tp, offset in ends.items():
                consumer.seek(tp, offset)
            ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        if record.key and dict(record.headers).get("ce_kind") == b"outcome":
                            self._event(record.key.decode()).set()
                            self.last_at = time.monotonic()


def plan_goals(count: int, rng: random.Random) -> list[str | None]:
    """fail_at per goal: None for about HAPPY_SHARE of them, else a random step."""
    return [None if rng.random() < HAPPY_SHARE else rng.choice(STEPS) for _ in range(count)]


async def publish_all(client: Client, watch: OutcomeWatch, plan: list[str | None], run: Run,
                      seconds: float, in_flight: int) -> None:
    """Publish the planned goals evenly over `seconds`, never more than `in_flight` without an outcome."""
    window = asyncio.Semaphore(in_flight)
    releases: list[asyncio.Task[None]] = []

    async def release_on_outcome(workflow_id: str) -> None:
        try:
            await watch.wait(workflow_id, 60)  # a lost saga frees its slot after a minute
        finally:
            window.release()

    loop = asyncio.get_running_loop()
    start, interval = loop.time(), seconds / max(1, len(plan))
    try:
        for i, fail_at in enumerate(plan):
            await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
            await window.acquire()
            try:
                goal = await client.publish("report", {"topic": f"chaos {i}", "fail_at": fail_at})
            except (ChoreographError, KafkaError) as exc:  # the broker's doing, not the services'
                window.release()
                run.publish_errors += 1
                print(f"publishing goal {i} failed: {exc}", file=sys.stderr)
                continue
            run.published[goal.workflow_id] = fail_at
            releases.append(asyncio.create_task(release_on_outcome(goal.workflow_id)))
    finally:
        for task in releases:
            task.cancel()
        await asyncio.gather(*releases, return_exceptions=True)


async def supervise(fleet: Fleet, rng: random.Random, kill_every: float, killing: asyncio.Event) -> None:
    """Restart services that died on their own; while `killing` is set, SIGKILL one every `kill_every` s."""
    next_kill = time.monotonic() + kill_every
    while True:
        fleet.revive_crashed()
        if killing.is_set() and time.monotonic() >= next_kill:
            candidates = fleet.ready_roles()
            if candidates:
                fleet.kill_and_restart(rng.choice(candidates))
            next_kill += kill_every
        await asyncio.sleep(0.1)


async def drive(settings: Settings, fleet: Fleet, args: argparse.Namespace) -> Run:
    """Publish under faults, stop the faults, and wait for outcomes and commits."""
    rng = random.Random(args.seed)
    plan = plan_goals(args.goals, rng)
    run = Run()
    killing = asyncio.Event()
    async with Client(settings, source="choreo://chaos") as client, OutcomeWatch(settings) as watch:
        await client.goal_schema("report")
        keeper = asyncio.create_task(supervise(fleet, rng, args.kill_every, killing))
        try:
            started = time.monotonic()
            killing.set()
            _say(f"publishing {len(plan)} goals over {args.seconds:.0f} s, a SIGKILL every {args.kill_every} s")
            await publish_all(client, watch, plan, run, args.seconds, args.in_flight)
            killing.clear()
            run.chaos_s = time.monotonic() - started
            _say(f"published in {run.chaos_s:.0f} s with {fleet.kills} kills; waiting for outcomes")
            await watch.wait_all(list(run.published), args.wait)
            run.with_outcome = sum(map(watch.has_outcome, run.published))
            run.seconds = max(watch.last_at, run.chaos_s + started) - started
            _say(f"{run.with_outcome}/{len(run.published)} outcomes after {time.monotonic() - started:.0f} s; "
                 "waiting for the groups' commits")
            run.lags = await settle(settings, SETTLE_S)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
    return run


async def settle(settings: Settings, timeout_s: float) -> dict[str, int]:
    """Each group's committed lag, once all are zero or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    lags = await committed_lags(settings)
    while any(lags.values()) and time.monotonic() < deadline:
        await asyncio.sleep(1)
        lags = await committed_lags(settings)
    return lags


async def audit(settings: Settings, run: Run, effects: Path) -> Audit:
    """Every published workflow's history (to the end of its partition) and its handler runs."""
    started = time.monotonic()
    runs = read_effects(effects)
    found = Audit()
    gate = asyncio.Semaphore(AUDIT_CONCURRENCY)

    async def check(workflow_id: str, fail_at: str | None) -> None:
        async with gate:
            entries = await history(settings, workflow_id, to_end=True)
        found.add(workflow_id, fail_at, entries, runs.get(workflow_id, {}))

    await asyncio.gather(*(check(w, f) for w, f in run.published.items()))
    _say(f"read {len(run.published)} histories in {time.monotonic() - started:.0f} s")
    return found


def chaos_settings(broker: EmbeddedBroker) -> Settings:
    """A fresh namespace on the run's broker, with the tests' short group session (3 s)."""
    base = broker.settings(namespace=f"chaos-{uuid.uuid4().hex[:6]}", partitions=4)
    profile = replace(PROFILES["tansu"], session_timeout_ms=3000, heartbeat_interval_ms=1000)
    return replace(base, broker=profile)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--goals", type=int, default=300, help="goals to publish (default 300)")
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds between SIGKILLs (default 2)")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="spread the goals over this long, killing all along (default 120)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the goal mix and the victims (default 1)")
    parser.add_argument("--in-flight", type=int, default=32, help="goals open at most at once (default 32)")
    parser.add_argument("--step-delay-ms", type=int, default=50, help="each handler's work (default 50)")
    parser.add_argument("--wait", type=float, default=OUTCOME_WAIT_S, help="seconds to wait for outcomes")
    parser.add_argument("--keep", action="store_true", help="keep the logs even when nothing went wrong")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the scenario and print its figures: 0 whatever they are, 2 if the setup failed, 130 if
    interrupted. Every process started is stopped by pid before returning, in every case."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # so the finally clause below stops every process
    workdir = Path(tempfile.mkdtemp(prefix="choreo-chaos-"))
    effects = workdir / "effects.log"
    broker = EmbeddedBroker(workdir / "broker.log")
    fleet: Fleet | None = None
    try:
        try:
            broker.start()
            settings = chaos_settings(broker)
            fleet = Fleet(settings, workdir, {"REPORT_STEP_DELAY_MS": str(args.step_delay_ms),
                                              "REPORT_EFFECTS_FILE": str(effects)})
            _say(f"starting {len(report_roles())} services on {broker.bootstrap_servers} (logs in {workdir})")
            fleet.start(report_roles())
        except ChoreographError as exc:
            print(f"chaos: setup failed: {exc}\nlogs: {workdir}", file=sys.stderr)
            return 2
        run = asyncio.run(drive(settings, fleet, args))
        found = asyncio.run(audit(settings, run, effects))
        crashes = fleet.crash_report()
    except KeyboardInterrupt:
        print(f"chaos: interrupted; stopping every process (logs: {workdir})", file=sys.stderr)
        return 130
    finally:
        if fleet is not None:
            fleet.stop()
        broker.stop()
    clean = print_report(args, run, found, fleet, crashes, workdir)
    if clean and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _say(message: str) -> None:
    print(f"  chaos: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
