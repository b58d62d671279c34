"""Forged records for the saga kit (issue 12): every record a saga reacts to, signed by a party that may
not publish it, unsigned, or with a signature that does not verify; written into the log right after a
chosen record of a running saga; and what a saga's run looked like, to compare with a run without them.

`from helpers.forgeries import ...`; used by tests/unit/test_forged_state.py.
"""

from __future__ import annotations

import base64
import enum
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from choreograph import Agent, CompensationRequested, PublishedGoal, StepContext
from choreograph.events import (
    COORDINATOR_SOURCE,
    RESTORE_SOURCE,
    CancellationRequested,
    CompensationCompleted,
    CompensationFailed,
    Envelope,
    Event,
    Kind,
    OutcomeStatus,
    RestoreStarted,
    StepAttemptFailed,
    StepFailed,
    StepHeartbeat,
    StepNode,
    StepTimedOut,
    WorkflowOutcome,
    WorkflowStarted,
    agent_source,
)
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.examples.report._events import (
    AnalysisCompleted,
    ChartCompleted,
    DraftCompleted,
    ReportGoal,
    ResearchCompleted,
    ReviewCompleted,
)
from choreograph.security import COORDINATOR, SIGNATURE_HEADER, Identity, KeyPair, Signer
from choreograph.testing import SagaKit
from choreograph.transport import MemoryLog, MemoryRecord, TopicPartition

WORKFLOW = "report"
STEPS = ("research", "analyze", "chart", "draft", "review")
PUBLISHER = Identity.parse("publisher:testing")  # the kit's parties (choreograph.testing keys them all)
OPERATOR = Identity.parse("operator:testing")
SPY = Identity.agent("other", "spy")  # a trusted agent of another workflow, keyed by `forging_kit`
KIT_SOURCE = "choreo://testing"  # the source of the kit's goals


class Mode(enum.StrEnum):
    """How a forgery is signed."""

    WRONG = "wrong identity"  # a real, trusted key of a party that may not publish the record
    OWN_HEADERS = "own headers"  # its own key and headers, another step's business in the body (`body`)
    UNSIGNED = "unsigned"
    CORRUPTED = "corrupted signature"  # the rightful party's signature, one byte flipped
    TAMPERED = "tampered body"  # the rightful party's signature over another body
    UNKNOWN = "unknown key"  # the rightful identity, but a key the policy does not trust


def _completion(step: str) -> Event:
    made: dict[str, Event] = {
        "research": ResearchCompleted(topic="forged", sources=["forged"]),
        "analyze": AnalysisCompleted(topic="forged", findings=["forged"]),
        "chart": ChartCompleted(topic="forged", chart_uri="forged"),
        "draft": DraftCompleted(topic="forged", text="forged"),
        "review": ReviewCompleted(topic="forged", approved=False, notes="forged"),
    }
    return made[step]


def _contract(step: str) -> Event:
    """The step's real contract, made harmful: not compensable and timing out after 1 ms."""
    agent = next(a for a in REPORT if a.step == step)
    return agent.contract().model_copy(update={"compensable": False, "timeout_ms": 1})


_AGENT = "agent"  # the record is its step's agent's to publish
# What a saga reacts to: kind name -> (body for a step, ce_kind, publisher, about a step (ce_step)).
KINDS: dict[str, tuple[Callable[[str], Event], Kind, str, bool]] = {
    "goal": (lambda s: ReportGoal(topic="forged", fail_at="research"), Kind.GOAL, KIT_SOURCE, False),
    "workflow_started": (lambda s: WorkflowStarted(workflow=WORKFLOW, steps=[
        StepNode(name=s, depends_on=[], compensable=False)]), Kind.OTHER, COORDINATOR_SOURCE, False),
    "step_completed": (_completion, Kind.STEP_COMPLETED, _AGENT, True),
    "step_failed": (lambda s: StepFailed(step=s, reason="forged", error_type="Forged"), Kind.STEP_FAILED,
                    _AGENT, True),
    "attempt_failed": (lambda s: StepAttemptFailed(step=s, attempt=1, reason="forged", error_type="Forged",
                                                   next_attempt_at=2**50), Kind.STEP_ATTEMPT_FAILED, _AGENT, True),
    "heartbeat": (lambda s: StepHeartbeat(step=s, attempt=1), Kind.HEARTBEAT, _AGENT, True),
    "timed_out": (lambda s: StepTimedOut(step=s, attempt=1, reason="forged", deadline=0), Kind.STEP_TIMED_OUT,
                  COORDINATOR_SOURCE, True),
    "compensation_requested": (lambda s: CompensationRequested(step=s, failed_step="review", reason="forged"),
                               Kind.COMPENSATION_REQUESTED, COORDINATOR_SOURCE, True),
    "compensation_completed": (lambda s: CompensationCompleted(step=s), Kind.COMPENSATION_COMPLETED, _AGENT, True),
    "compensation_failed": (lambda s: CompensationFailed(step=s, reason="forged", error_type="Forged"),
                            Kind.COMPENSATION_FAILED, _AGENT, True),
    "outcome": (lambda s: WorkflowOutcome(workflow=WORKFLOW, status=OutcomeStatus.FAILED, failed_step=s,
                                          reason="forged", completed_steps=[], compensated_steps=[]),
                Kind.OUTCOME, COORDINATOR_SOURCE, False),
    "step_contract": (_contract, Kind.OTHER, _AGENT, True),
    "restore_started": (lambda s: RestoreStarted(restore_id="forged", archive="/nowhere", records=0,
                                                 until_timestamp=2**62), Kind.OTHER, RESTORE_SOURCE, False),
    "cancel_requested": (lambda s: CancellationRequested(reason="forged"), Kind.CANCEL_REQUESTED, KIT_SOURCE,
                         False),
}


def rightful(what: str, step: str) -> Identity:
    """The party that may publish a record of kind `what` about `step`."""
    source = KINDS[what][2]
    return {KIT_SOURCE: PUBLISHER, COORDINATOR_SOURCE: COORDINATOR, RESTORE_SOURCE: OPERATOR}.get(
        source, Identity.agent(WORKFLOW, step))


def allowed(what: str, step: str) -> set[Identity]:
    """Every party that may publish a record of kind `what` about `step`: the rightful one, and for a
    cancellation an operator too (security.may_publish): neither forges it."""
    return {rightful(what, step), *((OPERATOR,) if what == "cancel_requested" else ())}


def parties() -> list[Identity]:
    """Every party holding a trusted key in a forging kit."""
    return [COORDINATOR, PUBLISHER, OPERATOR, SPY, *(Identity.agent(WORKFLOW, s) for s in STEPS)]


@dataclass(frozen=True)
class Forgery:
    """One forged record, written right after the `after`-th record of its saga (-1: before its goal).

    Attributes:
        what: Its kind (a key of KINDS).
        step: The step it is about.
        mode: How it is signed.
        forger: Who signs it (Mode.WRONG only).
        saga: Which of the run's sagas it targets.
        after: Written after that saga's record number `after` (0: its goal), or after its outcome
            if the saga has fewer records; or after its first record of this (ce_kind, ce_step).
        body: The body, instead of the kind's own (Mode.OWN_HEADERS).
    """

    what: str
    step: str
    mode: Mode
    forger: Identity | None = None
    saga: int = 0
    after: int | tuple[str, str] = -1
    body: Event | None = None

    def __str__(self) -> str:
        by = f" by {self.forger}" if self.mode is Mode.WRONG else ""
        return f"{self.what}({self.step}) {self.mode.value}{by} on saga {self.saga} after record {self.after}"


@dataclass
class Written:
    """A forgery in the log, and the key id its signature names (for a bad or unknown one; else "")."""

    forgery: Forgery
    partition: int
    offset: int
    key_id: str = ""


def expected_reason(written: Written) -> str | None:
    """What the coordinator's dead letter of a forgery says (every forgery gets exactly one).

    An operator may publish a StepContract marker (a retirement's); an announcement it signs is then
    refused by may_announce, and the coordinator dead-letters it with that reason.
    """
    f = written.forgery
    assert f.mode is not Mode.OWN_HEADERS, "a record its signer may publish: what happens to it is the test's"
    match f.mode:
        case Mode.WRONG:
            assert f.forger is not None
            if f.what == "step_contract" and f.forger == OPERATOR:
                return f"{OPERATOR} may not announce"
            return str(f.forger)
        case Mode.UNSIGNED:
            return "unsigned (no ce_keyid or ce_signature)"
        case Mode.UNKNOWN:
            return f"signed with unknown key {written.key_id}"
    return f"bad signature for key {written.key_id} ({rightful(f.what, f.step)})"


class ForgingLog(MemoryLog):
    """The kit's memory log, writing forgeries right after chosen records of the sagas they target."""

    def __init__(self, kit: SagaKit) -> None:
        super().__init__(clock=kit.clock.now_ms)
        self.kit = kit
        self.plans: dict[str, list[Forgery]] = {}  # workflow id -> forgeries still to write
        self.seen: Counter[str] = Counter()
        self.written: list[Written] = []

    def append(self, topic: str, value: bytes | None, key: bytes | None, partition: int | None,
               headers: Sequence[tuple[str, bytes]] | None, timestamp_ms: int | None) -> MemoryRecord:
        """Store the record; then the forgeries due after it, if it is a record of a targeted saga."""
        record = super().append(topic, value, key, partition, headers, timestamp_ms)
        workflow_id = (key or b"").decode(errors="replace")
        if topic == self.kit.settings.events_topic and (plan := self.plans.get(workflow_id)):
            number = self.seen[workflow_id]
            self.seen[workflow_id] += 1
            said = dict(headers or ())
            this = (said.get("ce_kind", b"").decode(), said.get("ce_step", b"").decode())
            for forgery in [f for f in plan if this[0] == "outcome" or f.after == this
                            or (isinstance(f.after, int) and f.after <= number)]:
                plan.remove(forgery)
                self.forge(forgery, workflow_id, record.partition)
        return record

    def plan(self, forgeries: Sequence[Forgery], sagas: Sequence[PublishedGoal]) -> None:
        """Arm forgeries of sagas not published yet (their workflow ids chosen), or write them now (after -1)."""
        for f in forgeries:
            goal = sagas[f.saga % len(sagas)]
            if isinstance(f.after, int) and f.after < 0:
                self.forge(f, goal.workflow_id, goal.partition)
            else:
                self.plans.setdefault(goal.workflow_id, []).append(f)

    def forge(self, f: Forgery, workflow_id: str, partition: int) -> None:
        """Write one forgery on the saga's partition."""
        make, kind, source, about_step = KINDS[f.what]
        source = agent_source(WORKFLOW, f.step) if source == _AGENT else source
        key = f"{WORKFLOW}/{f.step}" if f.what == "step_contract" else workflow_id
        body = f.body or make(f.step)
        envelope = Envelope.new(type=body.type_name(), source=source, workflow=WORKFLOW, workflow_id=key,
                                kind=kind, step=f.step if about_step else None)
        key_bytes, value = envelope.key, body.encode()
        headers, key_id = self._signed(f, key_bytes, value, envelope.headers())
        record = super().append(self.kit.settings.events_topic, value, key_bytes, partition, headers, None)
        self.written.append(Written(f, record.partition, record.offset, key_id))

    def _signed(self, f: Forgery, key: bytes, value: bytes,
                headers: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], str]:
        claimed = rightful(f.what, f.step)
        if f.mode is Mode.UNSIGNED:
            return headers, ""
        if f.mode is Mode.UNKNOWN:
            stranger = KeyPair.generate(claimed)
            return Signer(stranger).sign(key, value, headers), stranger.key_id
        signed = self.kit.signed(key, value + b"\0" if f.mode is Mode.TAMPERED else value, headers,
                                 signed_as=f.forger if f.mode is Mode.WRONG else claimed)
        if f.mode is Mode.CORRUPTED:
            at = next(i for i, (n, _) in enumerate(signed) if n == SIGNATURE_HEADER)
            raw = bytearray(base64.b64decode(signed[at][1]))
            raw[0] ^= 1
            signed[at] = (SIGNATURE_HEADER, base64.b64encode(bytes(raw)))
        assert self.kit.keys is not None
        return signed, "" if f.mode is Mode.WRONG else self.kit.keys.pairs[claimed].key_id


# the example workflow, its compensations counted ------------------------------------------------------

COMPENSATIONS: Counter[tuple[str, str]] = Counter()  # (workflow id, step) -> compensation runs


def _counted(agent: Agent) -> Agent:
    """A copy of `agent` whose compensation runs are counted in COMPENSATIONS."""
    copy = Agent(agent.workflow, agent.step, name=agent.name)
    copy.__dict__.update(agent.__dict__)
    undo = agent.compensation_fn
    assert undo is not None

    async def counted(ctx: StepContext, request: CompensationRequested) -> None:
        await undo(ctx, request)
        COMPENSATIONS[(ctx.workflow_id, ctx.step)] += 1

    copy.compensation_fn = counted
    return copy


REPORT = tuple(_counted(a) for a in (research.agent, analyze.agent, chart.agent, draft.agent, review.agent))


def forging_kit() -> tuple[SagaKit, ForgingLog]:
    """A kit of the example workflow (signing on) on a ForgingLog, with a key for SPY too."""
    kit = SagaKit(*REPORT, partitions=2)
    log = ForgingLog(kit)
    kit.log = log
    kit.trust(SPY)
    return kit, log


# what a run looked like -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What one saga did, its workflow id written as "W": comparable across runs.

    Attributes:
        outcome: Status, failed step, reason, completed and compensated steps, as its client saw them.
        records: Every record of the workflow but the forgeries, as (source, kind, step, type, data), sorted.
        handler_runs: Per step, how many times its handler ran to the end.
        compensations: Per step, how many times its compensation ran to the end.
    """

    outcome: tuple[Any, ...]
    records: tuple[tuple[str, str, str, str, str], ...]
    handler_runs: tuple[tuple[str, int], ...]
    compensations: tuple[tuple[str, int], ...]


async def seen(kit: SagaKit, goal: PublishedGoal, forged: set[tuple[int, int]], timeout_s: float = 5.0) -> Seen:
    """What saga `goal` did, leaving out the records at `forged` (partition, offset)."""
    wid = goal.workflow_id
    out = await kit.outcome(goal, timeout_s)
    outcome = (out.status.value, out.failed_step, (out.reason or "").replace(wid, "W"),
               tuple(sorted(out.completed_steps)), tuple(sorted(out.compensated_steps)))
    records = tuple(sorted((e.source, e.kind, e.step or "", e.type, repr(e.data).replace(wid, "W"))
                           for e in await kit.events(goal) if (e.partition, e.offset) not in forged))
    runs = tuple(sorted((s, n) for (w, s), n in kit.handler_runs.items() if w == wid))
    undone = tuple(sorted((s, n) for (w, s), n in COMPENSATIONS.items() if w == wid))
    return Seen(outcome, records, runs, undone)


def dead_letters(kit: SagaKit) -> list[MemoryRecord]:
    """Every record of the dead-letter topic."""
    topic = kit.settings.deadletter_topic
    return [r for p in range(kit.log.partitions_of(topic)) for r in kit.log.records(TopicPartition(topic, p))]


def header(record: MemoryRecord, name: str) -> str:
    """The last header `name` of `record`, as text ("" if absent)."""
    return next((v.decode(errors="replace") for k, v in reversed(record.headers) if k == name), "")
