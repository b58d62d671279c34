"""Signed records and who may say what (choreograph.security): a forged, changed, unsigned or
unauthorized record is refused with a reason naming the identity; rotation rejects nothing signed
during a change-over; private keys never show."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreograph.errors import ConfigurationError
from choreograph.events import Envelope, Kind
from choreograph.events._envelope import (
    CLIENT_SOURCE,
    COORDINATOR_SOURCE,
    REDRIVE_HEADER,
    RESTORE_SOURCE,
    agent_source,
)
from choreograph.security import (
    COORDINATOR,
    Identity,
    KeyPair,
    Policy,
    PolicyFile,
    Rejected,
    Signer,
    Verifier,
    local_key,
    may_publish,
)
from choreograph.transport import MemoryLog, MemoryTransport, Settings, SigningProducer, TopicPartition

T0 = 1_763_000_000_000
DRAFT, REVIEW, CHART = (Identity.agent("report", s) for s in ("draft", "review", "chart"))
WEB, ALICE = Identity.parse("publisher:web"), Identity.parse("operator:alice")


def keys() -> dict[Identity, KeyPair]:
    return {i: KeyPair.generate(i) for i in (COORDINATOR, DRAFT, REVIEW, CHART, WEB, ALICE)}


def policy_of(pairs: dict[Identity, KeyPair]) -> Policy:
    policy = Policy()
    for identity, pair in pairs.items():
        policy = policy.trust(identity, pair.public, now_ms=T0, goals=("report",) if identity == WEB else None)
    return policy


Signed = tuple[Envelope, bytes, bytes, list[tuple[str, bytes]]]


def record(pair: KeyPair, *, kind: Kind, source: str, step: str | None, type: str = "report.DraftCompleted",
           workflow: str = "report", value: bytes = b"\xc3\x01payload") -> Signed:
    envelope = Envelope.new(type=type, source=source, workflow=workflow, workflow_id="wf-1", kind=kind, step=step)
    headers = Signer(pair).sign(envelope.key, value, envelope.headers())
    return envelope, envelope.key, value, headers


PAIRS = keys()
VERIFIER = Verifier(policy_of(PAIRS))


def admit(pair: KeyPair, **fields: object) -> Identity | Rejected:
    envelope, key, value, headers = record(pair, **fields)  # type: ignore[arg-type]
    return VERIFIER.admit(envelope, key, value, headers, T0 + 1)


def test_each_party_may_publish_what_it_owns() -> None:
    assert admit(PAIRS[DRAFT], kind=Kind.STEP_COMPLETED, source=agent_source("report", "draft"), step="draft") == DRAFT
    assert admit(PAIRS[COORDINATOR], kind=Kind.OUTCOME, source=COORDINATOR_SOURCE, step=None,
                 type="choreograph.WorkflowOutcome") == COORDINATOR
    assert admit(PAIRS[WEB], kind=Kind.GOAL, source=CLIENT_SOURCE, step=None, type="report.ReportGoal") == WEB
    assert admit(PAIRS[ALICE], kind=Kind.OTHER, source=RESTORE_SOURCE, step=None,
                 type="choreograph.RestoreStarted") == ALICE


@pytest.mark.parametrize(("signer", "fields", "names"), [
    # The forgeries of the issue, each signed with a real key of the wrong party.
    (DRAFT, {"kind": Kind.OUTCOME, "source": COORDINATOR_SOURCE, "step": None, "type": "choreograph.WorkflowOutcome"},
     ["agent:report/draft", "may publish only its own step"]),
    (WEB, {"kind": Kind.COMPENSATION_REQUESTED, "source": COORDINATOR_SOURCE, "step": "draft",
           "type": "choreograph.CompensationRequested"}, ["publisher:web", "only goals of report"]),
    (REVIEW, {"kind": Kind.STEP_COMPLETED, "source": agent_source("report", "chart"), "step": "chart",
              "type": "report.ReviewCompleted"}, ["agent:report/review", "its own step"]),
    (CHART, {"kind": Kind.STEP_COMPLETED, "source": agent_source("report", "chart"), "step": "analyze",
             "type": "report.AnalysisCompleted"}, ["agent:report/chart"]),
    (WEB, {"kind": Kind.OTHER, "source": agent_source("report", "draft"), "step": "draft",
           "type": "choreograph.StepContract"}, ["publisher:web"]),
    (DRAFT, {"kind": Kind.OTHER, "source": RESTORE_SOURCE, "step": None, "type": "choreograph.RestoreStarted"},
     ["agent:report/draft may not publish restore markers"]),
    (COORDINATOR, {"kind": Kind.STEP_COMPLETED, "source": COORDINATOR_SOURCE, "step": "draft"}, ["coordinator"]),
    (WEB, {"kind": Kind.GOAL, "source": CLIENT_SOURCE, "step": None, "workflow": "payroll",
           "type": "payroll.Run"}, ["publisher:web may publish only goals of report"]),
    (ALICE, {"kind": Kind.GOAL, "source": CLIENT_SOURCE, "step": None, "type": "report.ReportGoal"},
     ["operator:alice"]),
])
def test_a_party_speaking_for_another_is_refused_with_a_reason_naming_it(
        signer: Identity, fields: dict[str, object], names: list[str]) -> None:
    verdict = admit(PAIRS[signer], **fields)
    assert isinstance(verdict, Rejected), verdict
    for name in names:
        assert name in verdict


def test_a_changed_record_is_refused() -> None:
    _envelope, key, value, headers = record(PAIRS[DRAFT], kind=Kind.STEP_COMPLETED,
                                           source=agent_source("report", "draft"), step="draft")
    assert VERIFIER.signer(key, value, headers, T0) == DRAFT
    changed_value = VERIFIER.signer(key, value + b"x", headers, T0)
    changed_key = VERIFIER.signer(b"wf-2", value, headers, T0)
    changed_header = VERIFIER.signer(key, value, [(n, b"report.ReviewCompleted" if n == "ce_type" else v)
                                                  for n, v in headers], T0)
    added_header = VERIFIER.signer(key, value, [*headers, ("ce_deadline", b"1")], T0)
    for verdict in (changed_value, changed_key, changed_header, added_header):
        assert isinstance(verdict, Rejected), verdict
        assert "bad signature" in verdict


def test_header_order_and_a_redrive_count_do_not_break_a_signature() -> None:
    _envelope, key, value, headers = record(PAIRS[DRAFT], kind=Kind.STEP_COMPLETED,
                                           source=agent_source("report", "draft"), step="draft")
    fresh = Verifier(VERIFIER.policy)  # nothing remembered
    assert fresh.signer(key, value, [*reversed(headers), (REDRIVE_HEADER, b"2")], T0) == DRAFT


def test_unsigned_unknown_and_malformed_signatures_are_refused() -> None:
    envelope = Envelope.new(type="report.DraftCompleted", source=agent_source("report", "draft"), workflow="report",
                            workflow_id="wf-1", kind=Kind.STEP_COMPLETED, step="draft")
    assert "unsigned" in VERIFIER.signer(envelope.key, b"v", envelope.headers(), T0)
    stranger = KeyPair.generate(DRAFT)  # the right name, a key nobody trusted
    signed = Signer(stranger).sign(envelope.key, b"v", envelope.headers())
    assert f"unknown key {stranger.key_id}" in VERIFIER.signer(envelope.key, b"v", signed, T0)
    garbled = [(n, b"!!" if n == "ce_signature" else v) for n, v in signed]
    assert isinstance(VERIFIER.signer(envelope.key, b"v", garbled, T0), Rejected)


def test_rotation_rejects_nothing_signed_during_the_change_over() -> None:
    old, new = PAIRS[DRAFT], KeyPair.generate(DRAFT)
    policy = policy_of(PAIRS).trust(DRAFT, new.public, now_ms=T0 + 10)
    both = [record(p, kind=Kind.STEP_COMPLETED, source=agent_source("report", "draft"), step="draft")
            for p in (old, new)]
    verifier = Verifier(policy)
    assert [verifier.signer(k, v, h, T0 + 20) for _, k, v, h in both] == [DRAFT, DRAFT]  # both keys valid
    retired = Verifier(policy.retire(old.key_id, now_ms=T0 + 30))
    _, key, value, headers = both[0]
    assert retired.signer(key, value, headers, T0 + 20) == DRAFT  # logged before the retirement
    late = retired.signer(key, value, headers, T0 + 31)
    assert isinstance(late, Rejected)
    assert "retired" in late
    revoked = Verifier(policy.retire(old.key_id, revoke=True))
    assert isinstance(revoked.signer(key, value, headers, T0 + 20), Rejected)
    # A verifier that remembered the signature still honours a later revocation.
    remembering = Verifier(policy)
    assert remembering.signer(key, value, headers, T0 + 20) == DRAFT
    remembering._source = policy.retire(old.key_id, revoke=True)
    assert isinstance(remembering.signer(key, value, headers, T0 + 20), Rejected)


def test_the_policy_file_round_trips_and_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(policy_of(PAIRS).to_json())
    assert Policy.from_json(path.read_bytes()) == policy_of(PAIRS)
    live = PolicyFile(path, every_s=0)
    newcomer = KeyPair.generate(Identity.agent("report", "summary"))
    _envelope, key, value, headers = record(newcomer, kind=Kind.STEP_COMPLETED,
                                           source=agent_source("report", "summary"), step="summary")
    verifier = Verifier(live)
    assert isinstance(verifier.signer(key, value, headers, T0), Rejected)
    PolicyFile(path).update(live.current().trust(newcomer.identity, newcomer.public))
    assert verifier.signer(key, value, headers, T0) == newcomer.identity
    assert Policy.from_json(path.read_bytes()).goals(WEB) == ("report",)


def test_a_policy_file_that_is_not_one_says_so(tmp_path: Path) -> None:
    for text in (b"{", b"{}", b'{"identities": {"nobody": {}}}',
                 b'{"identities": {"coordinator": {"keys": [{"key_id": "00", "public": "ed25519:AAAA"}]}}}'):
        with pytest.raises(ConfigurationError):
            Policy.from_json(text)


def test_private_keys_are_never_shown_and_never_overwritten(tmp_path: Path) -> None:
    pair = KeyPair.generate(DRAFT)
    seed_text = (tmp_path / "k.json")
    pair.save(seed_text)
    assert stat.S_IMODE(os.stat(seed_text).st_mode) == 0o600
    secret = seed_text.read_text().split('"seed":"')[1].split('"')[0]
    assert secret not in repr(pair)
    assert secret not in str(pair)
    assert KeyPair.load(seed_text).key_id == pair.key_id
    assert KeyPair.from_text(f"agent:report/draft {secret}").key_id == pair.key_id
    with pytest.raises(ConfigurationError, match="never overwritten"):
        pair.save(seed_text)
    with pytest.raises(ConfigurationError) as refused:
        KeyPair.from_text(f"agent:report/draft {secret[:-4]}")
    assert secret[:10] not in str(refused.value)


def test_identities_parse_and_print() -> None:
    for text in ("coordinator", "agent:report/draft", "publisher:web", "operator:alice"):
        assert str(Identity.parse(text)) == text
    for bad in ("root", "agent:report", "agent:/x", "publisher:", "coordinator:x", "operator:a b"):
        with pytest.raises(ConfigurationError):
            Identity.parse(bad)
    assert may_publish(DRAFT, type="report.DraftCompleted", kind=Kind.STEP_COMPLETED,
                       source=agent_source("report", "draft"), workflow="report", step="draft") is None


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=7), st.binary(min_size=1, max_size=8))
def test_no_change_to_a_signed_part_passes(value: bytes, which: int, noise: bytes) -> None:
    _envelope, key, _, headers = record(PAIRS[DRAFT], kind=Kind.STEP_COMPLETED,
                                       source=agent_source("report", "draft"), step="draft", value=value)
    signed = [(n, v) for n, v in headers if n != "ce_signature"]
    name, old = signed[which % len(signed)]
    changed = [(n, (old + noise) if n == name else v) for n, v in headers]
    verdict = Verifier(VERIFIER.policy).signer(key, value, changed, T0)
    assert isinstance(verdict, Rejected)


async def test_a_signing_producer_signs_what_it_sends_on_the_log() -> None:
    settings = Settings("memory", namespace="signing", partitions=2)
    transport = MemoryTransport(MemoryLog(), settings)
    await transport.ensure_topics()
    producer = SigningProducer(transport.producer(), Signer(PAIRS[DRAFT]))
    await producer.start()
    envelope = Envelope.new(type="report.DraftCompleted", source=agent_source("report", "draft"), workflow="report",
                            workflow_id="wf-9", kind=Kind.STEP_COMPLETED, step="draft")
    meta = await producer.send_and_wait(settings.events_topic, b"\xc3\x01body", envelope.key,
                                        headers=envelope.headers())
    await producer.stop()
    tp = TopicPartition(settings.events_topic, meta.partition)
    records = [r async for r in transport.read([tp])]
    assert [VERIFIER.admit(envelope, r.key, r.value, r.headers, r.timestamp) for r in records] == [DRAFT]


def test_local_keys_are_made_once_and_trusted(tmp_path: Path) -> None:
    first = local_key(tmp_path, DRAFT)
    again = local_key(tmp_path, DRAFT)
    coordinator = local_key(tmp_path, COORDINATOR)
    publisher = local_key(tmp_path, WEB)
    assert first.key_id == again.key_id
    policy = PolicyFile(tmp_path / "policy.json").current()
    assert policy.key(first.key_id) is not None
    assert policy.key(coordinator.key_id) is not None
    assert policy.goals(WEB) == ("*",)
    assert publisher.identity == WEB
