"""What a service counts and times, through the OpenTelemetry metrics API; decided once per process.

Metrics are off unless something enables them: `serve_metrics` (see _prometheus) does in a service
process where CHOREO_METRICS_PORT (or OTEL_METRICS_EXPORTER=otlp) is set, and a program running
services in its own process can call `enable_metrics` with its own MeterProvider. A service asks
`service_meter()` once, when it is made: None means off, and then it holds no instrument at all, so
its per-record code pays one `is not None` test (within the noise of bench/probes/metrics_cost.py)
and builds no attribute dict. On, the attribute sets are built once per service (per partition, per
topic, per error type) and reused for every record.

The names follow the OpenTelemetry messaging semantic conventions where they define one
(`messaging.process.duration`, `messaging.client.consumed.messages`, `messaging.client.sent.messages`
with `messaging.system=kafka`, `messaging.destination.name`, `messaging.consumer.group.name`,
`error.type`); the rest are `choreograph.*`. Only `opentelemetry-api` is imported here, and only
once metrics are on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import NonRetryable
from ..events._envelope import Kind
from ..events._models import WorkflowOutcome, WorkflowStarted
from ..saga._facts import Decision, Fact
from ..transport._port import Producer, RecordMetadata, TopicPartition
from ..transport._wrapped import WrappedProducer

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

T = TypeVar("T")
Attributes = dict[str, str | int]

SCOPE = "choreograph"
# The semantic conventions' advice for messaging.process.duration (seconds); the SDK's default
# boundaries (0 to 10,000) are meant for milliseconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)
# How long a scrape waits for the service's event loop to read its consumer's positions.
SAMPLE_TIMEOUT_S = 1.0

_meter: Meter | None = None
# Observable instruments, one per meter and name, each reading every source a service of this process
# gave it: the SDK keeps the callbacks of an instrument's first creation only, and several services
# (the test kit, a program running agents in one process) share the process's meter.
Source = Callable[[], list["Observation"]]
_sources: dict[str, list[Source]] = {}
_observed: set[tuple[Meter, str]] = set()  # the meter itself: an id could be reused once it is gone


def enable_metrics(provider: MeterProvider | None = None) -> None:
    """Give the services made from now on in this process their instruments, from `provider`.

    Args:
        provider: Where the instruments come from; the global MeterProvider when None.
    """
    from opentelemetry import metrics  # deferred: the API is loaded only by a process whose metrics are on

    global _meter
    _meter = (provider or metrics.get_meter_provider()).get_meter(SCOPE)


def disable_metrics() -> None:
    """Services made from now on in this process count nothing (the default)."""
    global _meter
    _meter = None


def service_meter() -> Meter | None:
    """The meter of this process's services; None when metrics are off."""
    return _meter


def _observation(value: int, attributes: Attributes) -> Observation:
    from opentelemetry.metrics import Observation  # deferred: loaded only once metrics are on

    return Observation(value, attributes)


def error_type(exc: BaseException) -> str:
    """The `error.type` of an exception: its class name (a NonRetryable's cause's, as StepFailed says)."""
    cause = exc.__cause__ if isinstance(exc, NonRetryable) else None
    return type(cause or exc).__name__


class ServiceMetrics:
    """The instruments of every service: records consumed and sent, dead letters, consumer lag.

    Args:
        meter: Where the instruments come from.
        group: The service's consumer group (messaging.consumer.group.name).
        topic: The topic it consumes (messaging.destination.name).
    """

    def __init__(self, meter: Meter, group: str, topic: str) -> None:
        self.meter = meter
        self.base: Attributes = {"messaging.system": "kafka", "messaging.destination.name": topic,
                                 "messaging.consumer.group.name": group}
        self._dead = meter.create_counter(
            "choreograph.dead_letters", unit="{message}",
            description="Records the service could not read and wrote to the dead-letter topic, by reason.")
        self._watching: list[tuple[str, Source]] = []
        self._by_partition: dict[int, Attributes] = {}
        self._by_topic: dict[tuple[str, str | None], Attributes] = {}
        self._by_reason: dict[str, Attributes] = {}
        # Records consumed and sent are counted in plain dicts and read when metrics are collected
        # (observable counters): they are counted per record, and an SDK counter's add() costs about a
        # hundred dict increments (measured 20 us against 0.19 us, 2-core VM under load).
        self._consumed: dict[int, int] = {}
        self._sent: dict[tuple[str, str | None], int] = {}
        self._observe("messaging.client.consumed.messages", self._consumed_now, unit="{message}", counter=True,
                      description="Records the service fetched from the topic it consumes, by partition.")
        self._observe("messaging.client.sent.messages", self._sent_now, unit="{message}", counter=True,
                      description="Records the service handed to its producer, by topic (error.type when refused).")

    def consumed(self, partition: int, count: int) -> None:
        """`count` records of `partition` were fetched (called once per partition per batch)."""
        consumed = self._consumed
        consumed[partition] = consumed.get(partition, 0) + count

    def sent(self, topic: str, error: str | None = None) -> None:
        """One record was handed to the producer for `topic` (or refused with `error`)."""
        sent, key = self._sent, (topic, error)
        sent[key] = sent.get(key, 0) + 1

    def _consumed_now(self) -> list[Observation]:
        observations = []
        for partition, count in dict(self._consumed).items():  # a copy: the service's thread adds keys
            attributes = self._by_partition.get(partition)
            if attributes is None:
                attributes = self._by_partition[partition] = {
                    **self.base, "messaging.operation.name": "poll",
                    "messaging.destination.partition.id": str(partition)}
            observations.append(_observation(count, attributes))
        return observations

    def _sent_now(self) -> list[Observation]:
        observations = []
        for (topic, error), count in dict(self._sent).items():
            attributes = self._by_topic.get((topic, error))
            if attributes is None:
                attributes = {**self.base, "messaging.destination.name": topic, "messaging.operation.name": "send"}
                if error is not None:
                    attributes["error.type"] = error
                self._by_topic[topic, error] = attributes
            observations.append(_observation(count, attributes))
        return observations

    def dead_letter(self, reason: str) -> None:
        """One record was dead-lettered; `reason` is its class (unreadable, untrusted, contract, refused)."""
        attributes = self._by_reason.get(reason)
        if attributes is None:
            attributes = self._by_reason[reason] = {**self.base, "choreograph.dead_letter.reason": reason}
        self._dead.add(1, attributes)

    def producer(self, producer: Producer) -> Producer:
        """`producer`, counting every record sent through it (messaging.client.sent.messages)."""
        return CountingProducer(producer, self)

    def watch_lag(self, lags: Callable[[], dict[TopicPartition, int]], loop: asyncio.AbstractEventLoop) -> None:
        """Report `lags()` (records not handled yet, by partition) as the gauge messaging.kafka.consumer.lag.

        Args:
            lags: Read on the service's event loop (it reads the consumer's state).
            loop: That loop; a scrape from another thread waits up to SAMPLE_TIMEOUT_S for it.
        """
        from opentelemetry.metrics import Observation  # deferred: loaded only once metrics are on

        base = self.base

        def observe() -> list[Observation]:
            sample = on_loop(loop, lags, dict[TopicPartition, int]())
            return [Observation(lag, {**base, "messaging.destination.partition.id": str(tp.partition)})
                    for tp, lag in sorted(sample.items())]

        self._observe("messaging.kafka.consumer.lag", observe, unit="{message}", description=(
            "Records of each owned partition not handled yet: the log end the last fetch saw minus the next "
            "offset to handle."))

    def _observe(self, name: str, source: Source, *, unit: str, description: str, gauge: bool = True,
                 counter: bool = False) -> None:
        """Feed `source` to the process's observable instrument `name` (made on first use) until close()."""
        sources = _sources.setdefault(name, [])
        sources.append(source)
        self._watching.append((name, source))
        if (self.meter, name) in _observed:
            return
        _observed.add((self.meter, name))

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [observation for source in list(sources) for observation in source()]

        meter = self.meter
        create = (meter.create_observable_counter if counter else meter.create_observable_gauge if gauge
                  else meter.create_observable_up_down_counter)
        create(name, callbacks=[observe], unit=unit, description=description)

    def close(self) -> None:
        """Stop feeding the observable instruments (the service stopped)."""
        for name, source in self._watching:
            if source in (sources := _sources.get(name, [])):
                sources.remove(source)
        self._watching.clear()


class AgentMetrics(ServiceMetrics):
    """An agent's instruments: each handler run's duration (messaging.process.duration) and runs in progress.

    Args:
        meter: Where the instruments come from.
        workflow: The agent's workflow.
        step: Its step.
        group: Its consumer group.
        topic: The events topic.
    """

    def __init__(self, meter: Meter, *, workflow: str, step: str, group: str, topic: str) -> None:
        super().__init__(meter, group, topic)
        self.base.update({"choreograph.workflow": workflow, "choreograph.step": step})
        self._duration = meter.create_histogram(
            "messaging.process.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            description="How long each handler run took (a step, or its compensation), by outcome.")
        self._runs: dict[tuple[bool, str | None], Attributes] = {}

    def processed(self, seconds: float, compensation: bool, error: str | None) -> None:
        """One handler run ended after `seconds`: a step's or a compensation's; `error` its error.type if it failed."""
        attributes = self._runs.get((compensation, error))
        if attributes is None:
            attributes = {**self.base, "messaging.operation.name": "compensate" if compensation else "process"}
            if error is not None:
                attributes["error.type"] = error
            self._runs[compensation, error] = attributes
        self._duration.record(seconds, attributes)

    def watch_runs(self, runs: Collection[Any], limit: int) -> None:
        """Report how many handler runs are in progress (`len(runs)`) and the agent's limit.

        Args:
            runs: The runs in progress (its length is read from the scraping thread: one atomic read).
            limit: How many may run at once (max_concurrency).
        """
        from opentelemetry.metrics import Observation  # deferred: loaded only once metrics are on

        base = self.base
        limit_attributes = {**base, "choreograph.handler.state": "limit"}
        active_attributes = {**base, "choreograph.handler.state": "active"}

        def observe() -> list[Observation]:
            return [Observation(len(runs), active_attributes), Observation(limit, limit_attributes)]

        self._observe("choreograph.handler.concurrency", observe, unit="{run}", gauge=False, description=(
            "Handler runs in progress (state=active) and how many may run at once (state=limit)."))


class CoordinatorMetrics(ServiceMetrics):
    """The coordinator's instruments: workflows started and finished, compensations requested and done.

    Args:
        meter: Where the instruments come from.
        group: The coordinator's consumer group.
        topic: The events topic.
    """

    def __init__(self, meter: Meter, group: str, topic: str) -> None:
        super().__init__(meter, group, topic)
        self._started = meter.create_counter(
            "choreograph.workflows.started", unit="{workflow}",
            description="Workflows the coordinator started (fixed their step graph), by workflow.")
        self._finished = meter.create_counter(
            "choreograph.workflows.finished", unit="{workflow}",
            description="Workflow outcomes the coordinator decided, by workflow and status.")
        self._requested = meter.create_counter(
            "choreograph.compensations.requested", unit="{compensation}",
            description="Compensations the coordinator asked for, by workflow and step.")
        self._compensated = meter.create_counter(
            "choreograph.compensations.finished", unit="{compensation}",
            description="Compensations agents reported done (status=completed) or failed (status=failed).")
        self._attributes: dict[tuple[str, ...], Attributes] = {}

    def _of(self, *key: str) -> Attributes:
        attributes = self._attributes.get(key)
        if attributes is None:
            names = ("choreograph.workflow", "choreograph.step", "choreograph.status")
            attributes = self._attributes[key] = {
                "messaging.system": "kafka", **{name: value for name, value in zip(names, key, strict=False) if value}}
        return attributes

    def decided(self, workflow: str, decision: Decision) -> None:
        """Count a decision the coordinator published: a start, an outcome, a compensation request.

        A decision published again after a restart (owed, found by the silent replay) counts again.
        """
        event = decision.event
        if isinstance(event, WorkflowStarted):
            self._started.add(1, self._of(workflow))
        elif isinstance(event, WorkflowOutcome):
            self._finished.add(1, self._of(workflow, "", event.status.value))
        elif decision.kind is Kind.COMPENSATION_REQUESTED:
            self._requested.add(1, self._of(workflow, decision.step or ""))

    def folded(self, fact: Fact) -> None:
        """Count a fact the coordinator folded live: an agent's compensation done or failed."""
        if fact.kind is Kind.COMPENSATION_COMPLETED or fact.kind is Kind.COMPENSATION_FAILED:
            status = "failed" if fact.kind is Kind.COMPENSATION_FAILED else "completed"
            self._compensated.add(1, self._of(fact.workflow, fact.step or "", status))


def on_loop(loop: asyncio.AbstractEventLoop, read: Callable[[], T], default: T) -> T:
    """`read()` called on `loop` (from its own thread at once); `default` if the loop does not answer in time.

    Observable instruments are read by whoever collects: the Prometheus exporter's HTTP thread. The
    consumer's state belongs to the service's loop, so it is read there.
    """
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return read()
    answer: concurrent.futures.Future[T] = concurrent.futures.Future()

    def call() -> None:
        try:
            answer.set_result(read())
        except Exception as exc:
            answer.set_exception(exc)

    try:
        loop.call_soon_threadsafe(call)
        return answer.result(timeout=SAMPLE_TIMEOUT_S)
    except Exception:  # a closed or busy loop, or a read that failed mid-rebalance: nothing this time
        return default


class CountingProducer(WrappedProducer):
    """Wraps a Producer: every record sent through it is counted (one dict lookup and one add per send).

    Args:
        producer: The producer to send with (started and stopped through this one).
        metrics: Where the records are counted.
    """

    def __init__(self, producer: Producer, metrics: ServiceMetrics) -> None:
        super().__init__(producer)
        self.metrics = metrics

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                   partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                   timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Send and count. See `Producer.send`."""
        try:
            future = await self.producer.send(topic, value, key, partition=partition, headers=headers,
                                              timestamp_ms=timestamp_ms)
        except Exception as exc:
            self.metrics.sent(topic, type(exc).__name__)
            raise
        self.metrics.sent(topic)
        return future
