"""Sensitive fields on real processes (issue 12, item 5): a goal and a result with fields marked
`"sensitive": true` (one nested, one in an array of records) run through two agent processes; the
broker's bytes keep them, while `choreo history` (table and --json), `choreo dlq show` (text and --json)
and the agents' logs show "[redacted]" in their place."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
from helpers import Stack, agent_spec, choreo, coordinator_spec

from choreograph import Settings
from choreograph.events import REDACTED, Envelope, Kind, StoredRecord, new_workflow_id
from choreograph.timetravel import History
from choreograph.transport import Kafka

CARD_NUMBER, SPARE_NUMBER, GOAL_SECRET = "4111-1111-1111-1111", "5500-0000-0000-0004", "s3cr3t-goal"
SECRETS = (CARD_NUMBER, SPARE_NUMBER, GOAL_SECRET)

SHOP_AGENTS = '''
from pydantic import BaseModel

from choreograph import Agent, Event, StepContext

CARD = {"type": "record", "name": "Card", "fields": [
    {"name": "holder", "type": "string"}, {"name": "number", "type": "string", "sensitive": True}]}


class Card(BaseModel):
    holder: str
    number: str


class Order(Event, schema={"type": "record", "name": "Order", "namespace": "shop", "fields": [
        {"name": "n", "type": "long"}, {"name": "secret", "type": "string", "sensitive": True}]}):
    n: int
    secret: str


class Payment(Event, schema={"type": "record", "name": "Payment", "namespace": "shop", "fields": [
        {"name": "n", "type": "long"}, {"name": "card", "type": CARD},
        {"name": "spares", "type": {"type": "array", "items": "Card"}}]}):
    n: int
    card: Card
    spares: list[Card]


class Receipt(Event, schema={"type": "record", "name": "Receipt", "namespace": "shop",
                             "fields": [{"name": "n", "type": "long"}]}):
    n: int


charge = Agent("shop", "charge")
receipt = Agent("shop", "receipt")


@charge.handler
async def charge_it(ctx: StepContext, order: Order) -> Payment:
    ctx.log.info("charge: order %s", order)
    return Payment(n=order.n, card=Card(holder="Ada", number="CARD_NUMBER"),
                   spares=[Card(holder="Ada", number="SPARE_NUMBER")])


@receipt.handler
async def send_receipt(ctx: StepContext, payment: Payment) -> Receipt:
    ctx.log.info("receipt: charged %r", payment)
    return Receipt(n=payment.n)
'''.replace("CARD_NUMBER", CARD_NUMBER).replace("SPARE_NUMBER", SPARE_NUMBER)


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def run(env: dict[str, str], *args: str) -> str:
    done = choreo(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert not leaked(done.stderr)
    return done.stdout


def poll(check: Any, timeout_s: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return result


async def raw_records(settings: Settings, workflow_id: str) -> list[StoredRecord]:
    """The workflow's records as the broker holds them."""
    async with History(settings) as reader:
        return [r async for r in reader.records(workflow_id)]


async def forge(settings: Settings, workflow_id: str, value: bytes) -> None:
    """A goal record whose body is a Payment while ce_type says Order: dead-lettered, payload and all."""
    envelope = Envelope.new(type="shop.Order", source="choreo://client", workflow="shop", workflow_id=workflow_id,
                            kind=Kind.GOAL)
    producer = Kafka(settings).producer()
    await producer.start()
    try:
        await producer.send_and_wait(settings.events_topic, value=value, key=envelope.key, headers=envelope.headers())
    finally:
        await producer.stop()


def test_sensitive_fields_are_in_the_log_and_nowhere_choreograph_shows_them(
        stack: Stack, cli_env: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "shop_agents.py").write_text(SHOP_AGENTS)
    # The agents' module, then this run's own path (`pythonpath=` would drop it: a checkout's src/).
    stack.extra_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    stack.start(coordinator_spec(), agent_spec("charge", "shop_agents:charge"),
                agent_spec("receipt", "shop_agents:receipt"))
    published = orjson.loads(run(cli_env, "publish", "shop", "--data", orjson.dumps(
        {"n": 1, "secret": GOAL_SECRET}).decode(), "--wait", "60"))
    assert published["status"] == "completed", published
    workflow_id = published["workflow_id"]

    records = asyncio.run(raw_records(settings, workflow_id))
    values = b"".join(r.value or b"" for r in records)
    assert not [secret for secret in SECRETS if secret.encode() not in values]  # the log keeps them all

    table = run(cli_env, "history", workflow_id)
    lines = [orjson.loads(line) for line in run(cli_env, "history", workflow_id, "--json").splitlines()]
    assert "Payment" in table
    assert not leaked(table)
    [goal] = [e["data"] for e in lines if e["kind"] == "goal"]
    [payment] = [e["data"] for e in lines if e["type"] == "shop.Payment"]
    assert goal == {"n": 1, "secret": REDACTED}
    assert payment["card"] == {"holder": "Ada", "number": REDACTED}
    assert payment["spares"] == [{"holder": "Ada", "number": REDACTED}]
    assert not leaked(orjson.dumps(lines).decode())

    logs = stack.log("charge") + stack.log("receipt")
    assert "charge: order" in logs
    assert "receipt: charged" in logs
    assert REDACTED in logs
    assert not leaked(logs)

    # A dead-lettered record that carries them: `choreo dlq show` decodes it, redacted, and hides its bytes.
    forged = new_workflow_id()
    [paid] = [r.value for r in records if r.header("ce_type") == b"shop.Payment"]
    assert paid is not None
    asyncio.run(forge(settings, forged, paid))
    letters = poll(lambda: [orjson.loads(x) for x in run(cli_env, "dlq", "ls", "--json", "--workflow", forged
                                                            ).splitlines()], what="the forged goal dead-lettered")
    for letter in letters:
        shown = run(cli_env, "dlq", "show", letter["id"])
        as_json = orjson.loads(run(cli_env, "dlq", "show", letter["id"], "--json"))
        assert not leaked(shown)
        assert not leaked(orjson.dumps(as_json).decode())
        assert as_json["decoded"]["card"] == {"holder": "Ada", "number": REDACTED}
        assert as_json["value_preview"].startswith(REDACTED)

