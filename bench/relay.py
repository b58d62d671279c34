"""Relay throughput and hop latency: each contender's relay service in its own process, fed and
drained by this driver with plain aiokafka (the same producer and sink for every contender).

choreograph's relay runs twice: signed (the default: it verifies each ping and signs each pong) and
`choreograph-unsigned` (CHOREO_VERIFY=off in its environment). The driver signs its pings as the
publisher it claims to be in the signed run only, and before the measured phases start (see
_drive), so the difference between the two is the relay service's cost of signing, not the driver's.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import NewTopic

from choreograph.events import Envelope, Kind
from choreograph.security import Identity, Signer
from choreograph.transport import Kafka, Settings, Trust

from ._procs import Processes, agent, cpu_seconds, python
from .contenders.choreograph_agent import BenchPing, BenchPong

BODY = "x" * 290  # with the sequence number: a 300-byte payload (Avro: 2 + 290 + up to 8)
CHUNK = 500
WINDOW = 4000
PONG_TYPE = BenchPong.type_name().encode()


@dataclass(frozen=True)
class Contender:
    name: str
    module: str
    agent: bool = False  # run via `choreo agent run` on the namespace's events topic
    unsigned: bool = False  # an agent run with CHOREO_VERIFY=off, fed unsigned pings


CONTENDERS = [
    Contender("aiokafka", "bench.contenders.raw_aiokafka"),
    Contender("choreograph", "bench.contenders.choreograph_agent:agent", agent=True),
    Contender("choreograph-unsigned", "bench.contenders.choreograph_agent:agent", agent=True, unsigned=True),
    Contender("faust", "bench.contenders.faust_agent"),
    Contender("faststream", "bench.contenders.faststream_subscriber"),
]


@dataclass(frozen=True)
class RelayResult:
    contender: str
    events: int
    events_per_s: float
    hop_p50_ms: float
    hop_p99_ms: float
    hops: int
    hops_lost: int  # pings with no answer within 10 s
    relay_cpu: float  # the relay process's CPU use over the run, in cores
    cpu_us_per_event: float  # the relay's CPU time per relayed event in the throughput phase
    refused: int  # records the relay refused or dead-lettered (its log): 0, or the figures are wrong


class _Lane:
    """Where the driver writes pings and how the sink recognises relayed ones."""

    def __init__(self, contender: Contender, settings: Settings, tag: str) -> None:
        self.agent = contender.agent
        # A signed agent acts only on goals signed by a publisher the policy trusts, so the driver
        # signs as one: publisher:local, made and trusted in the run's CHOREO_HOME like the
        # services' keys. A bare Signer on that key: the driver reads nothing back to verify.
        self.signer: Signer | None = None
        if contender.agent and not contender.unsigned:
            trust = Trust.from_env(Identity.parse("publisher:local"))
            assert trust.signer is not None  # the bench clears CHOREO_VERIFY (see bench/__main__.py)
            self.signer = Signer(trust.signer.key)
        self.settings = settings
        self.source = settings.events_topic if contender.agent else f"{settings.namespace}.relay-in"
        self.target = settings.events_topic if contender.agent else f"{settings.namespace}.relay-out"
        self.group = f"{settings.namespace}.{contender.name}.{tag}"

    def message(self, seq: int) -> tuple[bytes, bytes, list[tuple[str, bytes]] | None]:
        key = f"w{seq}".encode()
        if not self.agent:
            return key, seq.to_bytes(8, "big") + BODY.encode()[:292], None
        envelope = Envelope.new(type=BenchPing.type_name(), source="choreo://bench", workflow="bench",
                                workflow_id=key.decode(), kind=Kind.GOAL)
        value, headers = BenchPing(seq=seq, body=BODY).encode(), envelope.headers()
        if self.signer is not None:
            self.signer.sign(key, value, headers)
        return key, value, headers

    def seq_of(self, record: ConsumerRecord) -> int:
        """The ping number a relayed record answers (contenders need not keep the key)."""
        if self.agent:
            return int(record.key[1:])
        return int.from_bytes(record.value[:8], "big")

    def relayed(self) -> Callable[[ConsumerRecord], bool]:
        if not self.agent:
            return lambda record: True
        return lambda record: any(k == "ce_type" and v == PONG_TYPE for k, v in record.headers)


async def _ensure(kafka: Kafka, *topics: str) -> None:
    async with kafka.admin() as admin:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(t, kafka.settings.partitions, 1) for t in topics if t not in existing]
        if wanted:
            await admin.create_topics(wanted)


class _Sink:
    """Counts relayed records on the target topic from its end at start; notes arrival times."""

    def __init__(self, kafka: Kafka, lane: _Lane) -> None:
        self._kafka, self._lane = kafka, lane
        self.count = 0
        self.last_at = 0.0
        self._changed = asyncio.Event()
        self._expected: dict[int, asyncio.Future[float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        tps = [TopicPartition(self._lane.target, p) for p in range(self._kafka.settings.partitions)]
        ends = await self._kafka.end_offsets(tps)
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ends, ready))
        await ready.wait()

    async def _run(self, ends: dict[TopicPartition, int], ready: asyncio.Event) -> None:
        relayed = self._lane.relayed()
        async with self._kafka.reader(ends) as consumer:
            for tp, offset in ends.items():
                consumer.seek(tp, offset)
            ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                now = time.perf_counter()
                relayed_now = [r for records in batch.values() for r in records if relayed(r)]
                n = len(relayed_now)
                for record in relayed_now if self._expected else ():
                    future = self._expected.pop(self._lane.seq_of(record), None)
                    if future is not None and not future.done():
                        future.set_result(now)
                if n:
                    self.count += n
                    self.last_at = now
                    self._changed.set()

    def expect(self, seq: int) -> asyncio.Future[float]:
        """A future resolved with the arrival time of the answer to ping `seq`."""
        future = self._expected[seq] = asyncio.get_running_loop().create_future()
        return future

    async def wait_for(self, count: int, timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        while self.count < count:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"sink saw {self.count} of {count} relayed events")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _drive(lane: _Lane, events: int, hops: int, max_seconds: float,
                 relay_cpu: Callable[[], float]) -> tuple[float, float, list[float], float, int]:
    """Events/s, the relay's CPU us per relayed event, hop latencies (ms), seconds driven, hops lost."""
    kafka = Kafka(lane.settings)
    producer: AIOKafkaProducer = kafka.producer()
    sink = _Sink(kafka, lane)
    began = time.perf_counter()
    await producer.start()
    await sink.start()
    try:
        # Warm-up: the relay has joined its group and relays (it started from the end).
        seq = 0
        deadline = time.perf_counter() + 120
        while sink.count == 0:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{lane.group}: relay never answered")
            key, value, headers = lane.message(seq)
            await producer.send_and_wait(lane.source, value, key=key, headers=headers)
            seq += 1
            with contextlib.suppress(TimeoutError):
                await sink.wait_for(1, 1.0)
        # The throughput phase's records are made before its clock starts, for every contender:
        # the driver's own work per record (an envelope, a signature: ~31 us each in the signed run)
        # is outside the measured window and off the shared cores while the relay runs, so the
        # signed and unsigned runs differ only in what the relay service does.
        messages = [lane.message(seq + i) for i in range(events)]
        await asyncio.sleep(0.5)  # late warm-up echoes land before counting starts
        # Throughput: N events end to end, produced in chunks with at most WINDOW unrelayed at a
        # time, so a slow contender is rated on what it relays within max_seconds and leaves no
        # backlog in front of the latency phase.
        base = sink.count
        cpu_before = relay_cpu()
        started = time.perf_counter()
        sent = 0
        while sent < events and time.perf_counter() - started < max_seconds:
            while sent - (sink.count - base) > WINDOW:
                with contextlib.suppress(TimeoutError):
                    await sink.wait_for(base + sent - WINDOW, 1.0)
                if time.perf_counter() - started > max_seconds:
                    break
            futures = []
            for key, value, headers in messages[sent:sent + CHUNK]:
                futures.append(await producer.send(lane.source, value, key=key, headers=headers))
            await asyncio.gather(*futures)
            sent += len(futures)
        with contextlib.suppress(TimeoutError):
            await sink.wait_for(base + sent, max(1.0, max_seconds - (time.perf_counter() - started)))
        rate = (sink.count - base) / (sink.last_at - started)
        # The relay's CPU per event over this phase alone: what it costs to relay one, whatever the
        # other processes on the shared cores took meanwhile (the events/s figure pays for those).
        cpu_us = (relay_cpu() - cpu_before) / max(1, sink.count - base) * 1e6
        seq += sent
        # Hop latency: one event at a time, produce to sink, once the throughput backlog has drained.
        with contextlib.suppress(TimeoutError):
            await sink.wait_for(base + sent, 60)
        await asyncio.sleep(0.5)
        latencies = []
        lost = 0
        hops_until = time.perf_counter() + 120  # bounds the bench when a contender stalls
        for i in range(hops):
            if time.perf_counter() > hops_until or lost >= 5:
                break
            key, value, headers = lane.message(seq + i)  # signed, if at all, before the clock starts
            answered = sink.expect(seq + i)
            sent_at = time.perf_counter()
            await producer.send(lane.source, value, key=key, headers=headers)
            try:
                latencies.append((await asyncio.wait_for(answered, 10) - sent_at) * 1000)
            except TimeoutError:
                lost += 1  # reported, not hidden: a contender that drops or stalls shows it
        return rate, cpu_us, latencies, time.perf_counter() - began, lost
    finally:
        await sink.stop()
        await producer.stop()


def run(contender: Contender, settings: Settings, workdir: Path, events: int, hops: int,
        max_seconds: float = 60) -> RelayResult:
    tag = uuid.uuid4().hex[:6]
    lane = _Lane(contender, settings, tag)
    kafka = Kafka(settings)
    asyncio.run(kafka.ensure_topics() if contender.agent else _ensure(kafka, lane.source, lane.target))
    env = {"RELAY_SOURCE": lane.source, "RELAY_TARGET": lane.target, "RELAY_GROUP": lane.group,
           "RELAY_FETCH_WAIT_MS": str(settings.broker.fetch_max_wait_ms),
           "RELAY_DATADIR": str(workdir / contender.name / f"data-{tag}")}
    if contender.unsigned:
        env["CHOREO_VERIFY"] = "off"
    with Processes(settings, workdir / contender.name, env) as processes:
        if contender.agent:
            processes.start(agent(contender.name, contender.module))
        else:
            argv = ["-m", contender.module] + (["worker", "-l", "warn"] if contender.name == "faust" else [])
            processes.spawn_unready(python(contender.name, *argv))

        def cpu_now() -> float:
            return sum(cpu_seconds(pid) for pid in processes.pids())

        cpu_before = cpu_now()
        rate, cpu_us, latencies, seconds, lost = asyncio.run(_drive(lane, events, hops, max_seconds, cpu_now))
        cpu = cpu_now() - cpu_before
    ordered = sorted(latencies) or [float("nan")]
    return RelayResult(contender.name, events, rate, statistics.median(ordered),
                       ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], len(latencies), lost, cpu / seconds,
                       cpu_us, processes.refusals())
