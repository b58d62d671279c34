"""`choreo asyncapi`'s document (events._asyncapi): valid AsyncAPI 3.0.0, against the official schema
vendored in tests/data/asyncapi, and listing every event type the contracts name and the framework's."""

from __future__ import annotations

import copy
import re
from typing import Any

import orjson
import pytest
import yaml
from helpers.asyncapi import message_types, problems

from choreograph import Settings
from choreograph.cli._asyncapi import to_yaml
from choreograph.errors import WorkflowError
from choreograph.events._asyncapi import AVRO_FORMAT, FRAMEWORK_TYPES, asyncapi_document
from choreograph.events._models import EventSchema, StepContract
from choreograph.runtime._agent import load_agent

STEPS = ("research", "analyze", "chart", "draft", "review")
SETTINGS = Settings(bootstrap_servers="broker-1:9092,broker-2:9092", namespace="shop")


@pytest.fixture(scope="module")
def contracts() -> list[StepContract]:
    return [load_agent(f"choreograph.examples.report.{step}:agent").contract() for step in STEPS]


def named(contracts: list[StepContract]) -> set[str]:
    return {e.name for c in contracts for e in [*c.consumes, c.completes_with]}


def test_the_example_workflow_document_is_valid_asyncapi_and_lists_every_type(contracts: list[StepContract]) -> None:
    document = asyncapi_document(contracts, SETTINGS, version="1.2.3")
    assert problems(document) == []
    assert document["asyncapi"] == "3.0.0"
    assert document["info"] == {**document["info"], "title": "choreograph shop", "version": "1.2.3"}
    assert document["servers"] == {"kafka": {"host": "broker-1:9092", "protocol": "kafka"},
                                   "kafka-2": {"host": "broker-2:9092", "protocol": "kafka"}}
    assert document["channels"]["events"]["address"] == "shop.events"
    assert document["channels"]["registry"]["address"] == "shop.registry"
    framework = {e.type_name() for e in FRAMEWORK_TYPES}
    assert {"report.ReportGoal", "report.ReviewCompleted"} <= named(contracts)
    assert {"choreograph.WorkflowStarted", "choreograph.WorkflowOutcome", "choreograph.CompensationRequested",
            "choreograph.StepFailed"} <= framework
    assert message_types(document) == named(contracts) | framework
    assert {f"report.{s}.{a}" for s in STEPS for a in ("receive", "send")} | {"coordinator.send"} <= set(
        document["operations"])


def test_each_message_carries_its_avro_schema_the_cloudevents_headers_and_the_workflow_id_key(
        contracts: list[StepContract]) -> None:
    document = asyncapi_document(contracts, SETTINGS)
    goal = document["components"]["messages"]["report.ReportGoal"]
    announced = next(e for c in contracts for e in c.consumes if e.name == "report.ReportGoal")
    assert goal["payload"] == {"schemaFormat": AVRO_FORMAT, "schema": orjson.loads(announced.avro_schema)}
    assert goal["bindings"]["kafka"]["key"]["type"] == "string"
    assert "workflow id" in goal["bindings"]["kafka"]["key"]["description"]
    headers = document["components"]["schemas"]["CloudEventsHeaders"]
    assert {"ce_id", "ce_type", "ce_source", "ce_time", "ce_specversion", "content-type", "ce_workflow", "ce_kind",
            "ce_step", "ce_causationid", "traceparent", "ce_goalid", "ce_deadline", "ce_keyid", "ce_signature",
            "ce_redrive"} == set(headers["properties"])
    research = document["operations"]["report.research.receive"]
    assert research["action"] == "receive"
    assert {"$ref": "#/channels/events/messages/report.ReportGoal"} in research["messages"]
    assert {"$ref": "#/channels/events/messages/report.ResearchCompleted"} in \
        document["operations"]["report.research.send"]["messages"]


def test_the_schema_check_is_not_vacuous(contracts: list[StepContract]) -> None:
    document = asyncapi_document(contracts, SETTINGS)
    broken: dict[str, Any] = copy.deepcopy(document)
    broken["components"]["messages"]["report.ReportGoal"]["payload"]["schema"] = {"type": "record", "name": 3}
    assert any("report.ReportGoal" in p for p in problems(broken))  # the Avro schema is checked too
    broken = copy.deepcopy(document)
    broken["components"]["messages"]["report.ReportGoal"]["bindings"]["kafka"]["key"] = "workflow id"
    assert problems(broken)
    broken = copy.deepcopy(document)
    broken["operations"]["report.research.send"]["action"] = "publish"  # AsyncAPI 2's word
    assert problems(broken)


def test_every_key_is_an_asyncapi_component_key(contracts: list[StepContract]) -> None:
    # The schema's patternProperties do not enforce it (nothing forbids other keys); the spec does.
    weird = contracts[0].model_copy(update={"workflow": "r&d", "step": "step one"})
    document = asyncapi_document([*contracts, weird], SETTINGS)
    keys = [*document["operations"], *document["channels"], *document["channels"]["events"]["messages"],
            *(k for kind in document["components"].values() for k in kind)]
    assert "r_d.step_one.receive" in keys
    assert [k for k in keys if not re.fullmatch(r"[a-zA-Z0-9.\-_]+", k)] == []


def test_a_workflow_narrows_the_steps_and_one_not_announced_is_an_error(contracts: list[StepContract]) -> None:
    other = StepContract(workflow="billing", step="charge", agent="billing.charge",
                         consumes=[EventSchema(name="billing.Goal", avro_schema=orjson.dumps(
                             {"type": "record", "name": "Goal", "namespace": "billing", "fields": []}).decode())],
                         completes_with=contracts[0].completes_with, compensable=False)
    both = asyncapi_document([*contracts, other], SETTINGS)
    assert problems(both) == []
    assert "billing.Goal" in message_types(both)
    report = asyncapi_document([*contracts, other], SETTINGS, workflow="report")
    assert "billing.Goal" not in message_types(report)
    assert not any(name.startswith("billing.") for name in report["operations"])
    with pytest.raises(WorkflowError, match="no step of workflow 'nosuch' is announced"):
        asyncapi_document(contracts, SETTINGS, workflow="nosuch")


def test_two_schemas_of_one_type_are_two_messages(contracts: list[StepContract]) -> None:
    v2 = orjson.dumps({"type": "record", "name": "ReportGoal", "namespace": "report", "fields": [
        {"name": "topic", "type": "string"}, {"name": "priority", "type": "int", "default": 0}]}).decode()
    newer = contracts[0].model_copy(update={"step": "research2", "consumes": [EventSchema(name="report.ReportGoal",
                                                                                          avro_schema=v2)]})
    document = asyncapi_document([*contracts, newer], SETTINGS)
    assert problems(document) == []
    messages = document["components"]["messages"]
    assert messages["report.ReportGoal-2"]["title"] == "report.ReportGoal"
    assert messages["report.ReportGoal-2"]["payload"]["schema"] == orjson.loads(v2)


def test_the_yaml_reads_back_as_the_document(contracts: list[StepContract]) -> None:
    document = asyncapi_document(contracts, SETTINGS)
    assert yaml.safe_load(to_yaml(document)) == document
    awkward = {"yes": "no", "null": None, "list": [[1, 2], {"a": [True, 1.5]}, [], {}], "s": "a: b\n\t'\"#é\u2028",
               "-x": "@", "01": "01", "": "~"}
    assert yaml.safe_load(to_yaml(awkward)) == awkward
