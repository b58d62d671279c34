"""Step contracts that cannot break the coordinator (issue 10, item 4), and recordings that keep their
own graph (item 5): no broker, no processes; the coordinator runs on the memory log in the kit."""

from __future__ import annotations

import logging
from dataclasses import replace

import orjson
import pytest
from helpers import GOLDEN
from helpers.sagas import announce_in_kit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreograph import Agent, Client, Event, OutcomeStatus, StepContext, WorkflowError
from choreograph.events import (
    COORDINATOR_SOURCE,
    Envelope,
    EventSchema,
    Kind,
    StepContract,
    StepNode,
    StoredRecord,
    WorkflowStarted,
)
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.saga import Fact, Graph, SagaState, catalog_for, check, fact_of, fold, handle
from choreograph.security import Identity
from choreograph.testing import COORDINATOR, SagaKit
from choreograph.timetravel import Recording
from choreograph.timetravel._recording import recording_of
from choreograph.transport import Contracts, MemoryLog, MemoryTransport, Registry, Settings, announce

REPORT = (research.agent, analyze.agent, chart.agent, draft.agent, review.agent)


def _schema(name: str) -> dict[str, object]:
    return {"type": "record", "name": name, "namespace": "loop", "fields": [{"name": "n", "type": "long"}]}


class LoopGoal(Event, schema=_schema("LoopGoal")):
    n: int


class FirstDone(Event, schema=_schema("FirstDone")):
    n: int


class ThirdDone(Event, schema=_schema("ThirdDone")):
    n: int


FIRST = Agent(workflow="loop", step="first")
THIRD = Agent(workflow="loop", step="third")


@FIRST.handler
async def first(ctx: StepContext, goal: LoopGoal) -> FirstDone:
    return FirstDone(n=goal.n)


@THIRD.handler
async def third(ctx: StepContext, done: FirstDone) -> ThirdDone:
    return ThirdDone(n=done.n)


def contract(step: str, consumes: list[EventSchema], completes_with: EventSchema,
             workflow: str = "loop") -> StepContract:
    return StepContract(workflow=workflow, step=step, agent=step, consumes=consumes, completes_with=completes_with,
                        compensable=False)


# third, announced as completing with the goal type: first consumes it, so first -> third -> first.
CYCLIC_THIRD = contract("third", [EventSchema.of(FirstDone)], EventSchema.of(LoopGoal))
BROKEN = EventSchema(name="loop.Broken", avro_schema="{not json")
REFUSED_THIRD = "step contract loop/third refused: dependency cycle first -> third -> first"
CYCLE_REASON = f"workflow 'loop' cannot start: {REFUSED_THIRD}"
SCHEMA_REASON = ("workflow 'loop' cannot start: step contract loop/ghost refused: unreadable schema of event type "
                 "'loop.Broken': ")


# The registry alone -----------------------------------------------------------------------------------


def test_a_contract_closing_a_cycle_is_refused_once_and_its_workflow_gets_a_refusal(
        caplog: pytest.LogCaptureFixture) -> None:
    known = Contracts()
    known.apply(FIRST.contract().encode())
    known.apply(research.agent.contract().encode())
    with caplog.at_level(logging.WARNING, logger="choreograph.registry"):
        for _ in range(3):  # the registry record and a marker on each events partition
            known.apply(CYCLIC_THIRD.encode())
    assert known.catalog["report"].order == ("research",)  # another workflow is untouched
    assert len(caplog.records) == 1, caplog.records
    assert "loop/third" in caplog.text
    assert "dependency cycle" in caplog.text
    assert known.refused == {"loop/third": REFUSED_THIRD}
    assert set(known.contracts) == {"loop/first", "report/research"}
    refusal = known.catalog["loop"]
    assert refusal.refused == known.refused["loop/third"]
    assert not refusal.nodes


@pytest.mark.parametrize("schema", ["{not json", '"string"', '{"type": "record"}', "[1, 2]", ""])
def test_a_contract_with_an_unreadable_schema_is_refused(schema: str) -> None:
    known = Contracts()
    known.apply(FIRST.contract().encode())
    fine = EventSchema.of(ThirdDone)
    known.apply(contract("ghost", [EventSchema(name="loop.Broken", avro_schema=schema)], fine).encode())
    assert known.refused["loop/ghost"].startswith(
        "step contract loop/ghost refused: unreadable schema of event type 'loop.Broken': ")
    assert known.catalog["loop"].refused == known.refused["loop/ghost"]
    assert set(known.contracts) == {"loop/first"}
    assert known.store.decode(ThirdDone(n=1).encode()) == {"n": 1}  # its readable schema is learned: events decode


def test_a_later_valid_announcement_or_a_tombstone_lifts_a_refusal() -> None:
    known = Contracts()
    known.apply(FIRST.contract().encode())
    known.apply(CYCLIC_THIRD.encode())
    known.apply(THIRD.contract().encode())
    assert not known.refused
    assert known.catalog["loop"].order == ("first", "third")

    known.apply(contract("ghost", [BROKEN], EventSchema.of(ThirdDone)).encode())
    assert known.catalog["loop"].refused is not None
    known.apply(None, key=b"loop/ghost")
    assert not known.refused
    assert known.catalog["loop"].order == ("first", "third")
    known.apply(None, key=b"loop/third")
    assert set(known.contracts) == {"loop/first"}
    known.apply(None, key=b"\xff\xfe not utf-8")
    known.apply(None)  # a tombstone without a key says nothing
    assert set(known.contracts) == {"loop/first"}


def test_a_refused_contract_is_taken_once_the_other_end_of_its_cycle_changes() -> None:
    known = Contracts()
    known.apply(CYCLIC_THIRD.encode())  # read first: third is accepted, and first closes the cycle
    known.apply(FIRST.contract().encode())
    assert set(known.refused) == {"loop/first"}
    known.apply(THIRD.contract().encode())  # third fixed: first is offered again, and fits
    assert not known.refused
    assert known.catalog["loop"].order == ("first", "third")


def test_a_restored_tombstone_removes_only_a_restored_contract() -> None:
    known = Contracts()
    known.apply(FIRST.contract().encode())
    known.apply(THIRD.contract().encode(), keep_existing=True)
    known.apply(None, keep_existing=True, key=b"loop/first")  # announced by a running agent: it stays
    known.apply(None, keep_existing=True, key=b"loop/third")
    assert set(known.contracts) == {"loop/first"}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(st.none() | st.binary(max_size=64), st.none() | st.binary(max_size=12), st.booleans()),
                max_size=8))
def test_no_bytes_make_apply_or_the_catalog_raise(records: list[tuple[bytes | None, bytes | None, bool]]) -> None:
    known = Contracts()
    for value, key, restored in records:
        known.apply(value, keep_existing=restored, key=key)
        known.apply(value and StepContract.avro.header + value, key=key)  # a contract's header, any body
    assert isinstance(dict(known.catalog), dict)


TYPES = st.sampled_from(["A", "B", "C", "D"])


def _typed(name: str, broken: bool) -> EventSchema:
    if broken:
        return BROKEN
    return EventSchema(name=f"wf.{name}",
                       avro_schema=f'{{"type": "record", "name": "{name}", "namespace": "wf", "fields": []}}')


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3", "s4"]), st.lists(TYPES, max_size=2), TYPES,
                          st.booleans(), st.booleans()), max_size=12))
def test_any_announcements_and_removals_leave_a_valid_graph_or_a_refusal(
        steps: list[tuple[str, list[str], str, bool, bool]]) -> None:
    known = Contracts()
    for step, consumes, completes, removed, broken in steps:
        if removed:
            known.apply(None, key=f"wf/{step}".encode())
            continue
        known.apply(contract(step, [_typed(t, broken) for t in consumes], _typed(completes, broken),
                             workflow="wf").encode())
    for graph in known.catalog.values():
        if graph.refused is None:
            assert set(graph.order) == set(graph.nodes) == {c.step for c in known.contracts.values()}
            for index, name in enumerate(graph.order):
                assert set(graph.nodes[name].depends_on) <= set(graph.order[:index])


async def test_the_registry_reader_passes_the_key_so_a_tombstone_removes_a_contract() -> None:
    log = MemoryLog()
    settings = Settings(bootstrap_servers="memory", namespace="contracts", partitions=2)
    transport = MemoryTransport(log, settings)
    await transport.ensure_topics()
    producer = transport.producer()
    await producer.start()
    registry = Registry(transport)
    await registry.start()
    try:
        for agent in (FIRST, THIRD):
            await announce(producer, settings.registry_topic, settings.events_topic, 2, agent.contract(), "test")
        await producer.send_and_wait(settings.registry_topic, value=None, key=b"loop/third")
        await registry.catch_up()
        assert set(registry.contracts) == {"loop/first"}
    finally:
        await registry.stop()
        await producer.stop()


# The decision ---------------------------------------------------------------------------------------


def test_a_goal_of_a_refused_workflow_fails_with_the_reason() -> None:
    catalog = {"loop": Graph.refusal("loop", REFUSED_THIRD),
               "report": Graph.of("report", [StepNode(name="research", depends_on=[], compensable=True)])}
    state, [decision] = handle(SagaState("wf-1"), Fact(Kind.GOAL, "loop"), catalog)
    assert state.outcome is OutcomeStatus.FAILED
    assert decision.kind is Kind.OUTCOME
    assert decision.event.model_dump()["reason"] == CYCLE_REASON
    assert decision.event.model_dump()["failed_step"] is None
    _, [started] = handle(SagaState("wf-2"), Fact(Kind.GOAL, "report"), catalog)
    assert started.kind is Kind.OTHER


# The coordinator on the memory log ----------------------------------------------------------------------


async def test_a_cyclic_contract_fails_its_workflows_goals_until_a_valid_one_replaces_it() -> None:
    async with SagaKit(*REPORT, FIRST, THIRD) as kit:
        await announce_in_kit(kit, CYCLIC_THIRD)
        other = await kit.given_goal("report", {"topic": "untouched"})
        await kit.expect_outcome(other, OutcomeStatus.COMPLETED)
        goal = await kit.given_goal("loop", {"n": 1})
        outcome = await kit.expect_outcome(goal, OutcomeStatus.FAILED)
        assert outcome.reason == CYCLE_REASON
        kit.check_alive()
        await kit.stop_service("third")
        await kit.start_service("third")  # it announces its own, valid contract again
        again = await kit.given_goal("loop", {"n": 2})
        await kit.expect_outcome(again, OutcomeStatus.COMPLETED)
        await kit.idle()


async def test_an_unreadable_schema_fails_its_workflows_goals_until_a_tombstone_removes_it() -> None:
    async with SagaKit(*REPORT, FIRST, THIRD) as kit:
        await announce_in_kit(kit, contract("ghost", [BROKEN], EventSchema.of(ThirdDone)))
        other = await kit.given_goal("report", {"topic": "untouched"})
        await kit.expect_outcome(other, OutcomeStatus.COMPLETED)
        goal = await kit.given_goal("loop", {"n": 1})
        outcome = await kit.expect_outcome(goal, OutcomeStatus.FAILED)
        assert outcome.reason is not None
        assert outcome.reason.startswith(SCHEMA_REASON), outcome.reason
        kit.check_alive()

        operator = kit.trust(Identity.parse("operator:testing"))
        producer = operator.producer(MemoryTransport(kit.log, kit.settings).producer())
        await producer.start()
        await producer.send_and_wait(kit.settings.registry_topic, value=None, key=b"loop/ghost")
        await producer.stop()
        await kit.idle()
        await kit.stop_service(COORDINATOR)
        await kit.start_service(COORDINATOR)  # it reads the registry, tombstone included, from the start
        again = await kit.given_goal("loop", {"n": 2})
        await kit.expect_outcome(again, OutcomeStatus.COMPLETED)
        await kit.idle()


async def test_a_client_validates_goals_only_against_contracts_their_own_agents_announced() -> None:
    """A contract changing the goal schema, signed by another agent, and a retirement nobody signed, on the
    registry (issue 12): a client that believed them would ask users for another goal, or find two."""
    budget = {"type": "record", "name": "ReportGoal", "namespace": "report",
              "fields": [{"name": "topic", "type": "string"}, {"name": "budget", "type": "int"}]}
    forged = research.agent.contract().model_copy(
        update={"consumes": [EventSchema(name="report.ReportGoal", avro_schema=orjson.dumps(budget).decode())]})
    async with SagaKit(*REPORT) as kit:
        for signer, key, value in [(Identity.agent("report", "draft"), b"report/research", forged.encode()),
                                   (None, b"report/review", None)]:
            producer = kit.trust(signer).producer(MemoryTransport(kit.log, kit.settings).producer())
            await producer.start()
            await producer.send_and_wait(kit.settings.registry_topic, value=value, key=key)
            await producer.stop()
        client = Client(kit.settings, transport=MemoryTransport(kit.log, kit.settings),
                        trust=kit.trust(Identity.parse("publisher:testing")))
        async with client:
            schema = await client.goal_schema("report")
        assert [f["name"] for f in schema.source["fields"]] == ["topic", "fail_at"]


# A WorkflowStarted whose steps make no graph ---------------------------------------------------------------


CYCLIC_STEPS = [StepNode(name="a", depends_on=["b"], compensable=True),
                StepNode(name="b", depends_on=["a"], compensable=True)]
UNKNOWN_STEPS = [StepNode(name="a", depends_on=["nowhere"], compensable=True)]


@pytest.mark.parametrize("steps", [CYCLIC_STEPS, UNKNOWN_STEPS], ids=["cycle", "unknown dependency"])
def test_fact_of_a_started_workflow_without_a_graph_raises_workflow_error(steps: list[StepNode]) -> None:
    started = WorkflowStarted(workflow="report", steps=steps)
    envelope = Envelope.new(type=started.type_name(), source="choreo://rogue", workflow="report",
                            workflow_id="wf-1", kind=Kind.OTHER)
    with pytest.raises(WorkflowError) as raised:
        fact_of(envelope, started.model_dump())
    assert not isinstance(raised.value, ValueError)


def _with_rogue_start(recording: Recording, steps: list[StepNode]) -> Recording:
    """The recording with a WorkflowStarted of `steps` from someone else, right after the goal."""
    goal = next(r for r in recording.records if r.header("ce_kind") == b"goal")
    started = WorkflowStarted(workflow=recording.workflow, steps=steps)
    envelope = Envelope.new(type=started.type_name(), source="choreo://rogue", workflow=recording.workflow,
                            workflow_id=recording.workflow_id, kind=Kind.OTHER)
    rogue = StoredRecord(goal.topic, goal.partition, goal.offset + 1, goal.timestamp, envelope.key, started.encode(),
                         tuple(envelope.headers()))
    records = [r if r.offset <= goal.offset else replace(r, offset=r.offset + 1) for r in recording.records]
    records.insert(records.index(goal) + 1, rogue)
    return Recording(recording.workflow_id, recording.workflow, recording.contracts, records, recording.final_state)


@pytest.mark.parametrize("steps", [CYCLIC_STEPS, UNKNOWN_STEPS], ids=["cycle", "unknown dependency"])
def test_state_and_replay_skip_a_started_workflow_without_a_graph(steps: list[StepNode]) -> None:
    happy = Recording.load(GOLDEN / "happy.jsonl")
    rogue = _with_rogue_start(happy, steps)
    entries = rogue.entries()
    assert [e.source for e in entries].count(COORDINATOR_SOURCE) == \
        [e.source for e in happy.entries()].count(COORDINATOR_SOURCE)
    # `choreo state`: the catalog is the coordinator's recorded graph, and the fold skips the rogue record.
    catalog = catalog_for(entries, rogue.catalog())
    assert catalog == catalog_for(happy.entries())
    snapshot = fold(entries, catalog)
    assert snapshot.events == len(happy.entries()) + 1
    assert {k: v for k, v in snapshot.json().items() if k not in ("at", "events_folded", "decided")} == \
        happy.final_state
    # The golden replayer and the sandbox's graph.
    assert [str(m) for m in rogue.check()] == []
    assert catalog_for(entries).get("report") == catalog_for(happy.entries())["report"]
    values = {e.event_id: r.value or b"" for r, e in rogue.events()}
    assert check(entries, values, Recording(rogue.workflow_id, rogue.workflow, [], rogue.records).catalog(),
                 rogue.final_state) == []


# Recordings keep their own graph ------------------------------------------------------------------------------


def test_a_recording_keeps_only_the_contracts_of_its_recorded_graph() -> None:
    happy = Recording.load(GOLDEN / "happy.jsonl")
    later = contract("summary", [EventSchema(name="report.ReviewCompleted",
                                             avro_schema=happy.contracts[-1].completes_with.avro_schema)],
                     EventSchema.of(ThirdDone), workflow="report")  # announced after the workflow started
    other = contract("first", [EventSchema.of(LoopGoal)], EventSchema.of(FirstDone))
    recorded = recording_of(happy.workflow_id, happy.records, [*happy.contracts, later, other], happy.store)
    assert sorted(c.step for c in recorded.contracts) == sorted(c.step for c in happy.contracts)
    assert recorded.final_state == happy.final_state
    assert [str(m) for m in recorded.check()] == []
    assert Recording.loads(recorded.dumps()).contracts == recorded.contracts


def test_a_recording_before_its_workflow_started_keeps_every_contract_of_the_workflow() -> None:
    happy = Recording.load(GOLDEN / "happy.jsonl")
    goal = next(r for r in happy.records if r.header("ce_kind") == b"goal")
    later = contract("summary", [EventSchema.of(FirstDone)], EventSchema.of(ThirdDone), workflow="report")
    recorded = recording_of(happy.workflow_id, [goal], [*happy.contracts, later], happy.store)
    assert sorted(c.step for c in recorded.contracts) == sorted([*(c.step for c in happy.contracts), "summary"])
