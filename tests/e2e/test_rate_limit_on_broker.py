"""A rate-limited agent on real processes (issue 12, item 4): under a burst of 500 goals it keeps its
rate (handler starts per second over the steady part, from the times its handler recorded) within 10%
of the limit, every saga completes, nothing is dead-lettered, and `choreo agents` shows the limit."""

from __future__ import annotations

from pathlib import Path

import orjson
from helpers import Stack, agent_spec, choreo, coordinator_spec

from choreograph import Client, OutcomeStatus, Settings
from choreograph.transport import Kafka, TopicPartition

LIMIT = 50  # starts per second: 500 goals take about 9 s after the burst
GOALS = 500

RATED_AGENTS = '''
import os
import time
from pathlib import Path

from choreograph import Agent, Event, RateLimit, StepContext

_FIELDS = [{"name": "n", "type": "long"}]


class RatedGoal(Event, schema={"type": "record", "name": "RatedGoal", "namespace": "rated", "fields": _FIELDS}):
    n: int


class RatedDone(Event, schema={"type": "record", "name": "RatedDone", "namespace": "rated", "fields": _FIELDS}):
    n: int


STARTS = Path(os.environ["RATED_STARTS"])
call = Agent(workflow="rated", step="call", rate_limit=RateLimit(per_second=LIMIT))


@call.handler
async def call_provider(ctx: StepContext, goal: RatedGoal) -> RatedDone:
    with STARTS.open("a") as starts:
        starts.write(f"{time.time():.6f}\\n")
    return RatedDone(n=goal.n)
'''.replace("LIMIT", str(LIMIT))


async def dead_letters(settings: Settings) -> int:
    kafka = Kafka(settings)
    topic = settings.deadletter_topic
    tps = [TopicPartition(topic, p) for p in range(await kafka.partition_count(topic))]
    return sum((await kafka.end_offsets(tps)).values())


async def test_a_rate_limited_agent_keeps_its_rate_under_a_burst_of_goals_and_every_saga_completes(
        stack: Stack, tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "rated_agents.py").write_text(RATED_AGENTS)
    starts_file = tmp_path / "starts.txt"
    stack.extra_env["RATED_STARTS"] = str(starts_file)
    stack.start(coordinator_spec(), agent_spec("call", "rated_agents:call"), pythonpath=tmp_path)
    async with Client(stack.settings) as client:
        goals = [await client.publish("rated", {"n": n}) for n in range(GOALS)]
        outcomes = await client.wait_many(goals, 120)
    assert len(outcomes) == GOALS, stack.log("call")
    assert {o.status for o in outcomes.values()} == {OutcomeStatus.COMPLETED}
    starts = sorted(float(line) for line in starts_file.read_text().split())
    assert len(starts) == GOALS, "one handler start per goal: none failed, none ran twice"
    # The steady part: after the first burst (one second's worth, let through at once), until the last start.
    steady = starts[LIMIT:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    assert abs(rate - LIMIT) <= 0.1 * LIMIT, f"{rate:.1f} starts/s, limit {LIMIT}/s"
    assert await dead_letters(stack.settings) == 0

    done = choreo("agents", "--json", env=cli_env)
    assert done.returncode == 0, done.stderr
    [row] = [r for r in orjson.loads(done.stdout)["steps"] if r["step"] == "call"]
    assert row["rate_limit"] == {"per_second": LIMIT, "burst": LIMIT}
    table = choreo("agents", env=cli_env).stdout
    assert f"{LIMIT}/s" in next(line for line in table.splitlines() if " call " in line), table
    assert f"rate limit {LIMIT}/s burst {LIMIT}" in table
