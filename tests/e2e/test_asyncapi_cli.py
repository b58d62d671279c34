"""`choreo asyncapi` against running example agents: a valid AsyncAPI 3.0.0 document (checked against the
official schema vendored in tests/data/asyncapi) listing every event type they announced, and only
contracts their own agents signed."""

from __future__ import annotations

import asyncio

import orjson
import yaml
from helpers import Stack, choreo, signing
from helpers.asyncapi import message_types, problems

from choreograph import Settings
from choreograph.events._envelope import agent_source
from choreograph.events._models import EventSchema, StepContract
from choreograph.runtime._agent import load_agent
from choreograph.transport import Kafka, announce

STEPS = ("research", "analyze", "chart", "draft", "review")
FORGED = orjson.dumps({"type": "record", "name": "Forged", "namespace": "forged", "fields": []}).decode()


async def _announce_forgeries(settings: Settings) -> None:
    """A contract for a step the signer does not run, and one nobody signed: neither may be listed."""
    schema = EventSchema(name="forged.Forged", avro_schema=FORGED)
    for workflow, producer in (("stolen", signing("agent:report/research", Kafka(settings).producer())),
                               ("unsigned", Kafka(settings).producer())):
        contract = StepContract(workflow=workflow, step="x", agent=f"{workflow}.x", consumes=[schema],
                                completes_with=schema, compensable=False)
        await producer.start()
        try:
            await announce(producer, settings.registry_topic, settings.events_topic, settings.partitions, contract,
                           agent_source(workflow, "x"))
        finally:
            await producer.stop()


def test_asyncapi_lists_every_type_the_running_agents_announced(stack: Stack, cli_env: dict[str, str],
                                                                settings: Settings) -> None:
    stack.start_examples()
    missing = choreo("asyncapi", "--workflow", "nosuch", env=cli_env)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.strip().splitlines() == ["error: no step of workflow 'nosuch' is announced"]

    asyncio.run(_announce_forgeries(settings))
    announced = {e.name for step in STEPS for c in [load_agent(f"choreograph.examples.report.{step}:agent").contract()]
                 for e in [*c.consumes, c.completes_with]}

    done = choreo("asyncapi", env=cli_env)
    assert done.returncode == 0, done.stderr
    document = yaml.safe_load(done.stdout)
    assert problems(document) == []
    assert document["channels"]["events"]["address"] == settings.events_topic
    types = message_types(document)
    assert announced <= types
    assert "forged.Forged" not in types
    assert {f"report.{s}.receive" for s in STEPS} <= set(document["operations"])
    assert not [name for name in document["operations"] if name.startswith(("stolen.", "unsigned."))]

    as_json = choreo("asyncapi", "--workflow", "report", "--json", env=cli_env)
    assert as_json.returncode == 0, as_json.stderr
    narrowed = orjson.loads(as_json.stdout)
    assert problems(narrowed) == []
    assert {**narrowed, "info": None} == {**document, "info": None}  # the only workflow believed

    # The forgeries are on the registry: a reader that believes anything (verification off) lists them.
    credulous = choreo("asyncapi", "--json", env={**cli_env, "CHOREO_VERIFY": "off"})
    assert credulous.returncode == 0, credulous.stderr
    assert {"stolen.x.send", "unsigned.x.send"} <= set(orjson.loads(credulous.stdout)["operations"])
