"""Sensitive fields (issue 12, item 5): a field marked `"sensitive": true` in its Avro schema is kept in the
log and redacted wherever choreograph shows a payload: history entries (what `choreo history` prints,
table and --json), an archive's history, an event's repr (what a handler's log line shows) and its
validation errors. On the memory log with the test kit; tests/e2e/test_sensitive_cli.py runs the CLI."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from choreograph import Agent, Archive, Event, InvalidPayloadError, OutcomeStatus, StepContext
from choreograph.cli._render import Timeline
from choreograph.events import REDACTED, SchemaStore, StoredRecord, redact
from choreograph.events._avro import AvroSchema
from choreograph.events._redact import redact_payload
from choreograph.security import Identity
from choreograph.testing import SagaKit
from choreograph.timetravel import History, write_segment
from choreograph.transport import MemoryTransport, TopicPartition

CARD_NUMBER, PIN, GOAL_SECRET, SPARE_NUMBER = "4111-1111-1111-1111", "8642", "s3cr3t-goal", "5500-0000-0000-0004"
SECRETS = (CARD_NUMBER, PIN, GOAL_SECRET, SPARE_NUMBER)

CARD: dict[str, Any] = {"type": "record", "name": "Card", "fields": [
    {"name": "holder", "type": "string"}, {"name": "number", "type": "string", "sensitive": True}]}
PAYMENT: dict[str, Any] = {"type": "record", "name": "Payment", "namespace": "sensitivetest", "fields": [
    {"name": "n", "type": "long"},
    {"name": "card", "type": CARD},
    {"name": "spares", "type": {"type": "array", "items": "Card"}},
    {"name": "pin", "type": ["null", "string"], "default": None, "sensitive": True}]}


class Card(BaseModel):
    holder: str
    number: str


class Order(Event, schema={"type": "record", "name": "Order", "namespace": "sensitivetest", "fields": [
        {"name": "n", "type": "long"}, {"name": "secret", "type": "string", "sensitive": True}]}):
    n: int
    secret: str


class Payment(Event, schema=PAYMENT):
    n: int
    card: Card
    spares: list[Card]
    pin: str | None = None


class Receipt(Event, schema={"type": "record", "name": "Receipt", "namespace": "sensitivetest",
                             "fields": [{"name": "n", "type": "long"}]}):
    n: int


def agents() -> tuple[Agent, Agent]:
    charge, receipt = Agent("shop", "charge"), Agent("shop", "receipt")

    @charge.handler
    async def charge_it(ctx: StepContext, order: Order) -> Payment:
        return Payment(n=order.n, card=Card(holder="Ada", number=CARD_NUMBER),
                       spares=[Card(holder="Ada", number=SPARE_NUMBER)], pin=PIN)

    @receipt.handler
    async def send_receipt(ctx: StepContext, payment: Payment) -> Receipt:
        ctx.log.info("receipt: charged %s", payment)  # what a handler's log line would show
        ctx.log.info("receipt: %r", payment)
        return Receipt(n=payment.n)

    return charge, receipt


def test_redact_replaces_marked_fields_at_any_depth_and_keeps_the_rest() -> None:
    record: dict[str, Any] = {
        "n": 1, "card": {"holder": "Ada", "number": CARD_NUMBER},
        "spares": [{"holder": "Bob", "number": SPARE_NUMBER}, {"holder": "Cy", "number": "x"}], "pin": PIN}
    shown = redact(Payment.avro, record)
    assert shown == {"n": 1, "card": {"holder": "Ada", "number": REDACTED},
                     "spares": [{"holder": "Bob", "number": REDACTED}, {"holder": "Cy", "number": REDACTED}],
                     "pin": REDACTED}
    assert record["card"]["number"] == CARD_NUMBER  # the record itself is left as it was
    assert redact(PAYMENT, {**record, "pin": None})["pin"] is None  # absent stays absent; JSON data works too
    plain = {"n": 1}
    assert redact(Receipt.avro, plain) is plain  # nothing marked: nothing copied


def test_redact_follows_maps_unions_and_recursive_records() -> None:
    node: dict[str, Any] = {"type": "record", "name": "Node", "namespace": "x", "fields": [
        {"name": "key", "type": "string", "sensitive": True},
        {"name": "next", "type": ["null", "Node"], "default": None}]}
    chain = {"key": "a", "next": {"key": "b", "next": None}}
    assert redact(node, chain) == {"key": REDACTED, "next": {"key": REDACTED, "next": None}}
    holder: dict[str, Any] = {"type": "record", "name": "Holder", "namespace": "x", "fields": [
        {"name": "cards", "type": {"type": "map", "values": CARD}},
        {"name": "maybe", "type": ["null", "string", "Card"], "default": None}]}
    shown = redact(holder, {"cards": {"main": {"holder": "A", "number": "1"}},
                            "maybe": {"holder": "B", "number": "2"}})
    assert shown == {"cards": {"main": {"holder": "A", "number": REDACTED}},
                     "maybe": {"holder": "B", "number": REDACTED}}
    unmarked = {**node, "name": "Plain", "fields": [{"name": "key", "type": "string"},
                                                    {"name": "next", "type": ["null", "Plain"], "default": None}]}
    assert redact(unmarked, chain) is chain


def test_the_mark_changes_no_fingerprint_and_a_mark_added_later_is_honoured() -> None:
    unmarked = {**PAYMENT, "fields": [{k: v for k, v in f.items() if k != "sensitive"} for f in PAYMENT["fields"]]}
    unmarked["fields"][1] = {"name": "card", "type": {**CARD, "fields": [{"name": "holder", "type": "string"},
                                                                        {"name": "number", "type": "string"}]}}
    before, after = AvroSchema.from_json(unmarked), AvroSchema.from_json(PAYMENT)
    assert before.fingerprint == after.fingerprint  # marking a field is not a schema change
    store = SchemaStore()
    store.add(before)  # announced before the mark was added: the store decodes with this one
    store.add(after)
    payload = Payment(n=1, card=Card(holder="A", number=CARD_NUMBER), spares=[], pin=PIN).encode()
    shown = redact_payload(store, payload, store.decode(payload))
    assert (shown["card"]["number"], shown["pin"]) == (REDACTED, REDACTED)


def test_an_events_repr_and_its_validation_errors_show_no_sensitive_value() -> None:
    payment = Payment(n=1, card=Card(holder="Ada", number=CARD_NUMBER), spares=[], pin=PIN)
    for shown in (repr(payment), str(payment), f"{payment}"):
        assert CARD_NUMBER not in shown
        assert PIN not in shown
        assert "Ada" in shown
    assert payment.card.number == CARD_NUMBER  # the data is intact

    class Short(Event, schema={"type": "record", "name": "Short", "namespace": "sensitivetest", "fields": [
            {"name": "code", "type": "string", "sensitive": True}]}):
        code: Annotated[str, Field(max_length=4)]

    store = SchemaStore()
    store.add(Short.avro)
    with pytest.raises(InvalidPayloadError) as raised:
        Short.decode(Short.avro.encode({"code": GOAL_SECRET}), store)  # valid Avro, fails the model
    assert GOAL_SECRET not in str(raised.value)


async def test_history_shows_sensitive_fields_redacted_while_the_log_keeps_them(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    caplog.set_level(logging.INFO)
    async with SagaKit(*agents()) as kit:
        goal = await kit.given_goal("shop", {"n": 1, "secret": GOAL_SECRET})
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        believes = kit.trust(Identity.parse("publisher:testing")).verifier  # what the kit's services believe
        async with History(kit.settings, MemoryTransport(kit.log, kit.settings), believes) as reader:
            entries = [e async for e in reader.entries(goal.workflow_id)]
        logged = kit.log.records(TopicPartition(kit.settings.events_topic, goal.partition))
        raw = b"".join(r.value or b"" for r in logged)
        for topic in (kit.settings.events_topic, kit.settings.registry_topic):  # an archive of both
            write_segment(tmp_path / topic / "2026-01-01T00" / "0-0-999.avro",
                          [StoredRecord.of(r) for p in range(kit.log.partitions_of(topic))
                           for r in kit.log.records(TopicPartition(topic, p))])
    assert [e.data for e in Archive(tmp_path).history(goal.workflow_id)] == [e.data for e in entries]
    [order] = [e for e in entries if e.kind == "goal"]
    [paid] = [e for e in entries if e.type == Payment.type_name()]
    assert order.data == {"n": 1, "secret": REDACTED}
    assert paid.data is not None
    assert (paid.data["card"], paid.data["pin"]) == ({"holder": "Ada", "number": REDACTED}, REDACTED)
    for secret in SECRETS:
        assert secret.encode() in raw  # the log keeps what happened
        assert secret not in caplog.text
    assert "receipt: charged" in caplog.text
    assert REDACTED in caplog.text
    for as_json in (False, True):
        timeline = Timeline(goal.workflow_id, as_json=as_json, stream=False)
        for entry in entries:
            timeline.add(entry)
        timeline.done()
        printed = capsys.readouterr().out
        assert Payment.type_name().rsplit(".", 1)[-1] in printed
        assert not [secret for secret in SECRETS if secret in printed]
