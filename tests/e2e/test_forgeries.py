"""Each forgery of issue 12 (item 6) on real processes: not acted on, dead-lettered by the coordinator with
a reason naming the identity that signed it (or "unsigned") and what it may not do, and the saga it
targeted ends as it would have without it.

A forger writes raw records with a producer of its own, unsigned or signed with another party's real
key from the test's CHOREO_HOME (the services' local development keys). Cases that target sagas share
one stack (each its own workflow ids); forged step contracts change what every saga of the namespace
would run, so they have a stack of their own. Whether a forgery was skipped is known, not waited for:
after every forgery is written, a sentinel saga on each partition completes, so every agent and the
coordinator have read past all of them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from helpers import ROOT, Stack, choreo, coordinator_spec, eventually
from helpers.forger import (
    UNSIGNED,
    Forger,
    assert_dead_lettered,
    believed,
    effects,
    goal_carrying,
    key_of,
    record_at,
    sentinels_complete,
    trusted_publisher,
    workflow_id_on,
)
from helpers.sagas import steps_of

from choreograph import (
    Client,
    CompensationRequested,
    GoalRejected,
    HistoryEntry,
    OutcomeStatus,
    PublishedGoal,
    RestoreStarted,
    Settings,
    StepNode,
    WorkflowOutcome,
    WorkflowStarted,
    history,
)
from choreograph.events import COORDINATOR_SOURCE, RESTORE_SOURCE, EventSchema, Kind, agent_source
from choreograph.examples.report._events import AnalysisCompleted, ReportGoal, ResearchCompleted, ReviewCompleted
from choreograph.examples.report.chart import agent as chart_agent
from choreograph.examples.report.research import agent as research_agent
from choreograph.examples.report.review import agent as review_agent
from choreograph.security import COORDINATOR, Identity, KeyPair

STEPS = ("research", "analyze", "chart", "draft", "review")
PUBLISHER = Identity.parse("publisher:local")
OPERATOR = Identity.operator("local")
NARROW = Identity.parse("publisher:narrow")  # may start `billing` workflows only
OWN_STEP_ONLY = "may publish only its own step's results"
GOALS_ONLY = "publisher:local may publish only goals of any workflow"


def agent(step: str) -> Identity:
    """The identity of a step's agent of `report`."""
    return Identity.agent("report", step)


@dataclass
class Scene:
    """What every case shares: the stack, a forger, a client, the parties' real keys, the effects file."""

    stack: Stack
    forger: Forger
    client: Client
    keys: dict[Identity, KeyPair]
    effects: Path
    cli_env: dict[str, str]

    @property
    def settings(self) -> Settings:
        """The stack's broker and namespace."""
        return self.stack.settings

    async def ends(self, goal: PublishedGoal, status: OutcomeStatus = OutcomeStatus.COMPLETED) -> WorkflowOutcome:
        """The saga's outcome, which must have `status`."""
        outcome = await self.client.wait(goal, 60)
        assert outcome is not None, f"{goal.workflow_id}: no outcome"
        assert outcome.status is status, outcome
        return outcome


async def test_forgeries_of_saga_records_are_dead_lettered_and_change_no_saga(
        stack: Stack, cli_env: dict[str, str], tmp_path: Path) -> None:
    """Forgeries 1, 2, 3 and 5 and three of our own, on one stack at once; then a sentinel on each partition."""
    assert cli_env["CHOREO_HOME"] == os.environ["CHOREO_HOME"], "the CLI must share the services' keys"
    # Each step takes 1 s, so forgeries written right after a goal land before its real results: at
    # 400 ms, five signed writes took longer than research and analyze on a loaded machine (load 10).
    stack.extra_env.update(REPORT_STEP_DELAY_MS="1000", REPORT_EFFECTS_FILE=str(tmp_path / "effects.log"))
    stack.start_examples()  # every service has made and trusted its key now
    keys = {who: key_of(who) for who in (COORDINATOR, PUBLISHER, OPERATOR, *map(agent, STEPS))}
    keys[NARROW] = trusted_publisher(NARROW, goals=("billing",))
    async with Forger(stack.settings) as forger, Client(stack.settings) as client:
        scene = Scene(stack, forger, client, keys, tmp_path / "effects.log", cli_env)
        async with asyncio.TaskGroup() as cases:  # one failing cancels the others
            never_started = [cases.create_task(forged_outcomes_fool_no_cli_wait(scene)),
                             cases.create_task(goal_of_a_workflow_the_publisher_may_not_start(scene))]
            for case in (compensation_requests_after_completion, completions_under_other_steps_names,
                         tracking_record_under_research_source, restore_marker_before_a_goal):
                cases.create_task(case(scene))
        await sentinels_complete(client, stack.settings)
        for workflow_id in (task.result() for task in never_started):  # goals forged, never published
            entries = await history(stack.settings, workflow_id, to_end=True)
            assert {e.kind for e in entries} <= {"goal"}, f"{workflow_id} was acted on: {[e.kind for e in entries]}"
            assert not [k for k in effects(scene.effects) if k[0] == workflow_id]
        await assert_dead_lettered(stack.settings, forger.written)


async def forged_outcomes_fool_no_cli_wait(scene: Scene) -> str:
    """Forgery 1: `choreo publish --wait` and the coordinator take "completed" from nobody but the coordinator."""
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "choreograph", "publish", "report", "--data",
        orjson.dumps({"topic": topic, "fail_at": "review"}).decode(), "--wait", "60", "--no-fail",
        cwd=ROOT, env=scene.cli_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        workflow_id: str = await eventually(lambda: goal_carrying(scene.settings, topic), 60, "the CLI's goal")
        done = WorkflowOutcome(workflow="report", status=OutcomeStatus.COMPLETED, completed_steps=list(STEPS),
                               compensated_steps=[])
        forged = [await scene.forger.event(f"completed outcome {how}", done, workflow_id=workflow_id,
                                           kind=Kind.OUTCOME, source=COORDINATOR_SOURCE, step=None, by=by, says=says)
                  for how, by, says in [("unsigned", None, (UNSIGNED,)),
                                        ("by review", scene.keys[agent("review")],
                                         (f"{agent('review')} {OWN_STEP_ONLY}",)),
                                        ("by the publisher", scene.keys[PUBLISHER], (GOALS_ONLY,))]]
        out, err = await asyncio.wait_for(cli.communicate(), 90)
    finally:
        if cli.returncode is None:  # another case failed, or this one did: no CLI left waiting
            cli.kill()
            await cli.wait()
    assert cli.returncode == 0, err.decode()  # --no-fail: the compensated outcome is the one wanted here
    result = orjson.loads(out)
    assert result["workflow_id"] == workflow_id
    assert (result["status"], result["outcome"]["failed_step"]) == ("compensated", "review"), result
    assert result["outcome"]["compensated_steps"] == ["analyze", "chart", "draft", "research"]
    entries = believed(await history(scene.settings, workflow_id, to_end=True), forged)
    outcomes = [e for e in entries if e.kind == "outcome"]
    assert [(e.source, e.data and e.data["status"]) for e in outcomes] == [(COORDINATOR_SOURCE, "compensated")]
    assert max(f.offset for f in forged) < outcomes[0].offset, "forged while the saga was still running"
    assert sorted(steps_of(entries, "compensation_completed")) == ["analyze", "chart", "draft", "research"]
    shown = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "choreograph", "history", workflow_id, "--json", cwd=ROOT, env=scene.cli_env,
        stdout=asyncio.subprocess.PIPE)
    lines = [orjson.loads(line) for line in (await shown.communicate())[0].splitlines()]
    assert [(x["offset"], x["source"], x.get("rejected")) for x in lines if x["kind"] == "outcome"][-1] == (
        outcomes[0].offset, COORDINATOR_SOURCE, None), "`choreo history` reads on past the forged outcomes"
    return await replayed_outcome_fools_no_client(scene, outcomes[0])


async def replayed_outcome_fools_no_client(scene: Scene, real: HistoryEntry) -> str:
    """Own forgery: the coordinator's real outcome, re-addressed to a running saga (Client.wait is not fooled)."""
    goal = await scene.client.publish("report", {"topic": "replayed", "fail_at": "draft"})
    record = await record_at(scene.settings, real.partition, real.offset)
    kid = dict(record.headers)["ce_keyid"].decode()
    forged = [await scene.forger.raw(
        "a real outcome re-keyed", goal.workflow_id.encode(), record.value, record.headers,
        says=(f"bad signature for key {kid} ({COORDINATOR})", "the record was changed"))]
    stranger = KeyPair.generate(COORDINATOR)
    done = WorkflowOutcome(workflow="report", status=OutcomeStatus.COMPLETED, completed_steps=list(STEPS),
                           compensated_steps=[])
    forged.append(await scene.forger.event("outcome by an unknown key", done, workflow_id=goal.workflow_id,
                                           kind=Kind.OUTCOME, source=COORDINATOR_SOURCE, step=None, by=stranger,
                                           says=(f"signed with unknown key {stranger.key_id}",)))
    assert (await scene.ends(goal, OutcomeStatus.COMPENSATED)).failed_step == "draft"
    entries = believed(await history(scene.settings, goal.workflow_id, to_end=True), forged)
    assert max(f.offset for f in forged) < next(e.offset for e in entries if e.kind == "outcome")
    return await tampered_goal(scene, goal)


async def tampered_goal(scene: Scene, real: PublishedGoal) -> str:
    """Own forgery: a real goal replayed under another workflow id with its body changed after signing."""
    record = await record_at(scene.settings, real.partition, real.offset)
    workflow_id = f"tampered-{uuid.uuid4().hex[:8]}"
    kid = dict(record.headers)["ce_keyid"].decode()
    await scene.forger.raw("a real goal re-keyed, its body changed", workflow_id.encode(),
                           ReportGoal(topic="tampered", fail_at="research").encode(), record.headers,
                           says=(f"bad signature for key {kid} ({PUBLISHER})",))
    return workflow_id


async def compensation_requests_after_completion(scene: Scene) -> None:
    """Forgery 2: compensation requests for every step of a saga that completed; none is undone."""
    goal = await scene.client.publish("report", {"topic": "done"})
    await scene.ends(goal)
    stranger = KeyPair.generate(COORDINATOR)
    signers: dict[str, tuple[KeyPair | None, str]] = {
        "research": (None, UNSIGNED), "analyze": (scene.keys[PUBLISHER], GOALS_ONLY),
        "chart": (scene.keys[agent("review")], f"{agent('review')} {OWN_STEP_ONLY}"),
        "draft": (scene.keys[OPERATOR], f"{OPERATOR} may publish only restore markers, contract retirements"),
        "review": (stranger, f"signed with unknown key {stranger.key_id}")}
    forged = {step: await scene.forger.event(
        f"compensation request of {step}", CompensationRequested(step=step, failed_step="review", reason="forged"),
        workflow_id=goal.workflow_id, kind=Kind.COMPENSATION_REQUESTED, source=COORDINATOR_SOURCE, step=step,
        by=by, says=(says,)) for step, (by, says) in signers.items()}
    await sentinels_complete(scene.client, scene.settings, [goal.partition])
    assert not [k for k in effects(scene.effects) if k[0] == goal.workflow_id and k[1].startswith("undo:")]
    entries = believed(await history(scene.settings, goal.workflow_id, to_end=True), forged.values())
    assert [e.kind for e in entries if e.kind.startswith("compensation")] == []
    for step, f in forged.items():  # each agent saw its request and refused it
        assert f"refusing {f.topic}[{f.partition}]@{f.offset}" in scene.stack.log(f"report.{step}")


async def completions_under_other_steps_names(scene: Scene) -> None:
    """Forgery 3: completions of review and analyze by others; and a graph signed by an agent (own forgery)."""
    goal = await scene.client.publish("report", {"topic": "real"})
    wid, chart, publisher = goal.workflow_id, scene.keys[agent("chart")], scene.keys[PUBLISHER]
    review = ReviewCompleted(topic="forged", approved=False, notes="forged")
    analysis = AnalysisCompleted(topic="forged", findings=["forged"])
    graph = WorkflowStarted(workflow="report", steps=[StepNode(name="research", depends_on=[], compensable=False)])
    writes = [("review's completion by chart", review, agent_source("report", "chart"), "review", chart,
               f"{agent('chart')} {OWN_STEP_ONLY}"),
              ("review's completion, unsigned", review, agent_source("report", "review"), "review", None, UNSIGNED),
              ("analyze's completion by chart", analysis, agent_source("report", "analyze"), "analyze", chart,
               f"{agent('chart')} {OWN_STEP_ONLY}"),
              ("analyze's completion by the publisher", analysis, agent_source("report", "analyze"), "analyze",
               publisher, GOALS_ONLY)]
    forged = [await scene.forger.event(what, body, workflow_id=wid, kind=Kind.STEP_COMPLETED, source=source,
                                       step=step, by=by, says=(says,)) for what, body, source, step, by, says in writes]
    forged.append(await scene.forger.event(
        "a one-step graph by analyze", graph, workflow_id=wid, kind=Kind.OTHER, source=COORDINATOR_SOURCE, step=None,
        by=scene.keys[agent("analyze")], says=(f"{agent('analyze')} {OWN_STEP_ONLY}",)))
    await scene.ends(goal)
    entries = believed(await history(scene.settings, wid, to_end=True), forged)
    completed = {e.step or "": e for e in entries if e.kind == "step_completed"}
    assert sorted(completed) == sorted(STEPS)
    assert all(e.source == agent_source("report", s) for s, e in completed.items())
    assert max(f.offset for f in forged) < completed["analyze"].offset, "forged before the real results"
    assert {s: e.data and e.data["topic"] for s, e in completed.items()} == dict.fromkeys(STEPS, "real")
    started = [e.data for e in entries if e.type == WorkflowStarted.type_name()]
    assert [[n["name"] for n in s["steps"]] for s in started if s] == [list(STEPS)]
    assert [effects(scene.effects)[(wid, s)] for s in STEPS] == [1] * len(STEPS)


async def tracking_record_under_research_source(scene: Scene) -> None:
    """Forgery 3: records under research's own source, before the goal: research still runs it."""
    wid = workflow_id_on(0, scene.settings.partitions)
    body = ResearchCompleted(topic="forged", sources=["forged"])
    for by, says in [(None, UNSIGNED), (scene.keys[agent("analyze")], f"{agent('analyze')} {OWN_STEP_ONLY}")]:
        await scene.forger.event("research's result before its goal", body, workflow_id=wid,
                                 kind=Kind.STEP_COMPLETED, source=agent_source("report", "research"),
                                 step="research", by=by, says=(says,))
    goal = await scene.client.publish("report", {"topic": "tracked"}, wid)
    await scene.ends(goal)
    assert effects(scene.effects)[(wid, "research")] == 1
    entries = await history(scene.settings, wid, to_end=True)
    analysis = [e.data for e in entries if e.kind == "step_completed" and e.step == "analyze"]
    assert [a and a["topic"] for a in analysis] == ["tracked"]


async def restore_marker_before_a_goal(scene: Scene) -> None:
    """Forgery 5: restore markers that are no operator's, left open: the goal after them still runs."""
    wid = workflow_id_on(1, scene.settings.partitions)
    marker = RestoreStarted(restore_id="forged", archive="/nowhere", records=0, until_timestamp=2**62)
    stranger = KeyPair.generate(OPERATOR)
    for by, says in [(scene.keys[COORDINATOR], "coordinator may not publish restore markers: only an operator does"),
                     (stranger, f"signed with unknown key {stranger.key_id}")]:
        await scene.forger.event("an open restore bracket", marker, workflow_id="restore/forged", kind=Kind.OTHER,
                                 source=RESTORE_SOURCE, step=None, by=by, says=(says,), workflow="",
                                 partition=scene.forger.partition_of(wid))
    goal = await scene.client.publish("report", {"topic": "restored"}, wid)
    await scene.ends(goal)
    assert [effects(scene.effects)[(wid, s)] for s in STEPS] == [1] * len(STEPS)


async def goal_of_a_workflow_the_publisher_may_not_start(scene: Scene) -> str:
    """Own forgery: a trusted publisher's goal of a workflow the policy does not give it; the client is told."""
    wid = f"narrow-{uuid.uuid4().hex[:8]}"
    forged = await scene.forger.event("a goal of report by publisher:narrow", ReportGoal(topic="narrow"),
                                      workflow_id=wid, kind=Kind.GOAL, source="choreo://cli", step=None,
                                      by=scene.keys[NARROW], says=(f"{NARROW} may publish only goals of billing",))
    goal = PublishedGoal("report", wid, forged.partition, forged.offset, "forged", published_ms=0)
    with pytest.raises(GoalRejected, match=f"{NARROW} may publish only goals of billing"):
        await scene.client.wait(goal, 60)
    return wid


# step contracts: every saga of the namespace would run them, so a stack of their own ------------------

AUDIT = orjson.dumps({"type": "record", "name": "AuditCompleted", "namespace": "report",
                      "fields": [{"name": "ok", "type": "boolean"}]}).decode()
BUDGET = orjson.dumps({"type": "record", "name": "ReportGoal", "namespace": "report",
                       "fields": [{"name": "topic", "type": "string"}, {"name": "budget", "type": "int"}]}).decode()


async def test_forged_step_contracts_are_not_applied(stack: Stack, cli_env: dict[str, str]) -> None:
    """Forgery 4: an extra step, chart made non-compensable, another goal schema, review retired, and a restore
    marker on the registry, each by a party that may not make it, written as `announce` writes a contract: on
    the registry topic and as a marker on every events partition."""
    stack.start_examples()
    settings, registry = stack.settings, stack.settings.registry_topic
    keys = {who: key_of(who) for who in (PUBLISHER, *map(agent, STEPS))}
    real = research_agent.contract()
    last = review_agent.contract()  # an extra step after review: every saga would wait for it
    extra = last.model_copy(update={"step": "audit", "agent": "report.audit", "consumes": [last.completes_with],
                                    "completes_with": EventSchema(name="report.AuditCompleted", avro_schema=AUDIT)})
    other_goal = real.model_copy(update={"consumes": [EventSchema(name="report.ReportGoal", avro_schema=BUDGET)]})
    lazy = chart_agent.contract().model_copy(update={"compensable": False, "timeout_ms": 1})
    skip_chart, skip_review, skip_audit = (
        f"registry: skipping a {what} of report/{step}: {who} may not {how} the contract of report/{step}"
        for what, step, who, how in [("contract", "chart", agent("review"), "announce"),
                                     ("tombstone", "review", agent("chart"), "remove"),
                                     ("contract", "audit", PUBLISHER, "announce")])
    async with Forger(settings) as forger:
        # Their signers may publish a contract marker under their own headers; what it says (another
        # step's contract) is refused by Contracts.apply, and the coordinator dead-letters it.
        await forger.contract("chart made non-compensable by review", "report/chart", lazy.encode(),
                              "review", keys[agent("review")], (f"{agent('review')} may not announce",))
        await forger.contract("review retired by chart", "report/review", None, "chart",
                              keys[agent("chart")], (f"{agent('chart')} may not remove",))
        await forger.contract("an extra step by the publisher", "report/audit", extra.encode(), "audit",
                              keys[PUBLISHER], (GOALS_ONLY,))
        unsigned = await forger.contract("another goal schema, unsigned", "report/research",
                                         other_goal.encode(), "research", None, (UNSIGNED,))
        marker = await forger.event(
            "a restore marker on the registry", RestoreStarted(restore_id="forged", archive="/nowhere", records=0,
                                                               until_timestamp=2**62),
            workflow_id="restore/forged", kind=Kind.OTHER, source=RESTORE_SOURCE, step=None,
            by=keys[agent("draft")], says=(), topic=registry, partition=0, workflow="")
        ahead = await forger.event(  # read again by the look-back of a coordinator that starts after it
            "an outcome before its goal", WorkflowOutcome(workflow="report", status=OutcomeStatus.FAILED,
                                                         completed_steps=[], compensated_steps=[]),
            workflow_id=f"ahead-{uuid.uuid4().hex[:8]}", kind=Kind.OUTCOME, source=COORDINATOR_SOURCE, step=None,
            by=keys[agent("review")], says=(f"{agent('review')} {OWN_STEP_ONLY}",))
        await assert_dead_lettered(settings, forger.written)
        read = stack.log("coordinator")
        assert skip_chart in read
        assert skip_review in read
        stack.kill("coordinator", signal.SIGTERM)  # a coordinator started now reads them on the registry
        stack.start(coordinator_spec())
        read = stack.log("coordinator")[len(read):]
        for line in (skip_chart, skip_review, skip_audit, f"skipping {registry}@{unsigned.offset}: {UNSIGNED}",
                     f"registry: ignoring a restore marker at {registry}@{marker.offset}: {agent('draft')} may not "
                     "publish restore markers",  # and its look-back believes no forged outcome:
                     f"refusing {ahead.topic}[{ahead.partition}]@{ahead.offset}: {agent('review')} {OWN_STEP_ONLY}"):
            assert line in read, line
        async with Client(settings) as client:  # reads the registry too: the goal schema is the real one
            assert [f["name"] for f in (await client.goal_schema("report")).source["fields"]] == ["topic", "fail_at"]
            goal = await client.publish("report", {"topic": "after"})
            outcome = await client.wait(goal, 60)
            assert outcome is not None
            assert outcome.status is OutcomeStatus.COMPLETED, outcome
            wid = (await record_at(settings, ahead.partition, ahead.offset)).key or b""
            ahead_goal = await client.publish("report", {"topic": "ahead"}, wid.decode())
            outcome = await client.wait(ahead_goal, 60)  # not refused as a workflow that has finished
            assert outcome is not None
            assert outcome.status is OutcomeStatus.COMPLETED, outcome
    started = [e.data for e in await history(settings, goal.workflow_id) if e.type == WorkflowStarted.type_name()]
    assert [[(n["name"], n["compensable"]) for n in s["steps"]] for s in started if s] == [[(s, True) for s in STEPS]]
    done = choreo("publish", "report", "--data", '{"topic": "cli", "fail_at": "review"}', "--wait", "60",
                  "--no-fail", env=cli_env)  # compensated, as wanted: exit 0
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout)
    assert (result["status"], result["outcome"]["compensated_steps"]) == (
        "compensated", ["analyze", "chart", "draft", "research"]), result
    await assert_dead_lettered(settings, forger.written)


# a result type under another step's own headers (the agents' provenance rule, runtime/_provenance.py) --


async def test_a_result_type_under_another_steps_own_headers_is_no_input(stack: Stack) -> None:
    """Review's real key under review's own heartbeat headers, an AnalysisCompleted body, while analyze runs."""
    stack.extra_env["REPORT_STEP_DELAY_MS"] = "400"
    stack.start_examples()
    review = key_of(agent("review"))
    async with Forger(stack.settings) as forger, Client(stack.settings) as client:
        goal = await client.publish("report", {"topic": "real"})
        await forger.event("an analysis in review's heartbeat", AnalysisCompleted(topic="forged", findings=["forged"]),
                           workflow_id=goal.workflow_id, kind=Kind.HEARTBEAT, source=agent_source("report", "review"),
                           step="review", by=review, says=())
        outcome = await client.wait(goal, 60)
    assert outcome is not None
    entries = await history(stack.settings, goal.workflow_id)
    ran_on = {e.step: e.data and e.data["topic"] for e in entries if e.kind == "step_completed"}
    assert (ran_on.get("chart"), ran_on.get("draft")) == ("real", "real"), ran_on
