"""Codec: what one event costs to encode and decode, envelope included, in microseconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from choreograph.events import Envelope, Kind
from choreograph.events._envelope import fixed_headers  # the agent runtime's own header cache, timed here
from choreograph.transport import framework_store

# The example workflow's research result: a typical small payload (a topic, a few sources).
PAYLOAD = {"topic": "EU battery supply chain", "fail_at": None,
           "sources": [f"https://example.org/source/{i}" for i in range(5)]}


@dataclass(frozen=True)
class CodecResult:
    encode_us: float
    decode_us: float
    payload_bytes: int
    header_bytes: int

    @property
    def round_trip_us(self) -> float:
        return self.encode_us + self.decode_us


def run(rounds: int = 20_000) -> CodecResult:
    from choreograph.examples.report._events import ResearchCompleted

    store = framework_store()
    store.add(ResearchCompleted.avro)
    event = ResearchCompleted(**PAYLOAD)
    cause = Envelope.new(type="report.ReportGoal", source="choreo://client", workflow="report",
                         workflow_id="wf-1", kind=Kind.GOAL)
    source = "choreo://agent/report/research"
    fixed = fixed_headers(source, "report", Kind.STEP_COMPLETED, "research")

    def encode() -> tuple[bytes, list[tuple[str, bytes]]]:
        envelope = Envelope.new(type="report.ResearchCompleted", source=source, workflow="report",
                                workflow_id="wf-1", kind=Kind.STEP_COMPLETED, step="research", cause=cause)
        return event.encode(), envelope.headers_with(fixed)

    value, headers = encode()

    def decode() -> None:
        Envelope.from_record(b"wf-1", headers)
        ResearchCompleted.decode(value, store)

    encode_us = _per_call_us(encode, rounds)
    decode_us = _per_call_us(decode, rounds)
    return CodecResult(encode_us, decode_us, len(value), sum(len(k) + len(v) for k, v in headers))


def _per_call_us(fn: Callable[[], object], rounds: int) -> float:
    """Best of five timed runs: the least disturbed by the rest of the machine."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds // 5):
            fn()
        best = min(best, (time.perf_counter() - started) / (rounds // 5) * 1e6)
    return best
