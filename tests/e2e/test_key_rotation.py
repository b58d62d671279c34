"""Key rotation on real processes (issue 12's acceptance): a new key trusted, services switch to it,
the old key retired, and no event signed during the change-over is rejected by anyone.

The change-over is what an operator does with `choreo keys`: `keys new IDENTITY` (the old key stays
trusted), restart the identity's services (they read the new key at start), `keys retire OLD`. Goals
keep coming throughout, and the old key signs its last records while the new one already signs.
"""

from __future__ import annotations

import signal
from typing import Any

import orjson
from helpers import Stack, agent_spec, choreo, coordinator_spec

from choreograph import Client, OutcomeStatus, PublishedGoal, Settings
from choreograph.transport import Kafka, TopicPartition

ROTATED = ("coordinator", "agent:report/draft", "publisher:local")


def _keys(env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    done = choreo("keys", "ls", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {i["identity"]: i["keys"] for i in orjson.loads(done.stdout)["identities"]}


async def _publish(settings: Settings, label: str, n: int) -> list[PublishedGoal]:
    async with Client(settings) as client:  # reads the publisher's key as it is now
        return [await client.publish("report", {"topic": f"{label} {i}"}) for i in range(n)]


async def test_keys_rotate_with_services_running_and_nothing_rejected(
        stack: Stack, cli_env: dict[str, str], settings: Settings) -> None:
    stack.start_examples()
    workflows = await _publish(settings, "before", 3)
    old = {identity: [k["key_id"] for k in keys] for identity, keys in _keys(cli_env).items()
           if identity in ROTATED}
    assert all(len(old[i]) == 1 for i in ROTATED), old

    for identity in ROTATED:  # new keys trusted; the old ones still are
        made = choreo("keys", "new", identity, env=cli_env)
        assert made.returncode == 0, made.stderr
    # Goals signed with the new publisher key while the coordinator and draft still sign with their old ones.
    workflows += await _publish(settings, "change-over", 3)
    stack.kill("coordinator", signal.SIGTERM)
    stack.start(coordinator_spec())
    stack.kill("report.draft", signal.SIGTERM)
    stack.start(agent_spec("report.draft", "choreograph.examples.report.draft:agent"))
    workflows += await _publish(settings, "switched", 3)

    for identity in ROTATED:
        retired = choreo("keys", "retire", old[identity][0], env=cli_env)
        assert retired.returncode == 0, retired.stderr
    states = {i: {k["key_id"]: k["state"] for k in keys} for i, keys in _keys(cli_env).items() if i in ROTATED}
    assert all(states[i][old[i][0]] == "retired" and len(states[i]) == 2 for i in ROTATED), states
    workflows += await _publish(settings, "after", 3)

    async with Client(settings) as client:
        outcomes = {g.workflow_id: await client.wait(g, 90) for g in workflows}
    assert {w: o.status if o else None for w, o in outcomes.items()} == dict.fromkeys(outcomes, OutcomeStatus.COMPLETED)

    # Nothing rejected: no dead letter at all, and the history of the first workflow (signed with
    # the keys now retired) and of the last (the new keys) shows no record marked rejected.
    letters = [r async for r in Kafka(settings).read([TopicPartition(settings.deadletter_topic, 0)])]
    assert letters == []
    for goal in (workflows[0], workflows[-1]):
        shown = choreo("history", goal.workflow_id, "--json", env=cli_env)
        assert shown.returncode == 0, shown.stderr
        entries = [orjson.loads(line) for line in shown.stdout.splitlines()]
        assert entries
        assert [e for e in entries if e.get("rejected")] == []

    # The services did switch: the last workflow's records carry none of the old key ids.
    last = workflows[-1].workflow_id.encode()
    events = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
    key_ids = {dict(r.headers).get("ce_keyid", b"").decode() async for r in Kafka(settings).read(events)
               if r.key == last}
    assert key_ids
    assert not key_ids & {old[i][0] for i in ROTATED}, (key_ids, old)
