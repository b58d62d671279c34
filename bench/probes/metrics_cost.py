"""What metrics cost an agent per record, off and on (CHOREO_METRICS_PORT), in nanoseconds.

A relay hop is, for the agent: its record counted as consumed (once per partition per fetched batch:
here a batch of one, the worst case), one handler run timed (two perf_counter reads and a histogram
record), one result sent through the counting producer (a Python frame and a counter add). Off, the
agent holds no instruments: what is left is an `is not None` test per batch-partition and per run.
Usage:

    python -m bench.probes.metrics_cost [--records 200000]

Needs the `otel` extra (the SDK and the Prometheus exporter's reader; no HTTP server is started:
collection happens only on a scrape, not per record).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider

from choreograph.telemetry import AgentMetrics, CountingProducer
from choreograph.transport import RecordMetadata

TOPIC = "choreo.events"


class _NullProducer:
    """A producer that takes every record at once: only the wrapper's cost is left to measure."""

    def __init__(self) -> None:
        self._done: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                   partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                   timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        return self._done

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                            partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                            timestamp_ms: int | None = None) -> RecordMetadata:
        raise NotImplementedError

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}


async def _hops(records: int, metrics: AgentMetrics | None, producer: object) -> float:
    """ns per record of the metrics' share of a hop (the same statements the runtime runs)."""
    send = producer.send  # type: ignore[attr-defined]
    started = time.perf_counter_ns()
    for n in range(records):
        partition = n & 3
        if metrics is not None:  # the consumer loop, per partition of a batch
            metrics.consumed(partition, 1)
        if metrics is None:  # the runner, per run
            pass
        else:
            began = time.perf_counter()
            metrics.processed(time.perf_counter() - began, False, None)
        await send(TOPIC, b"v", b"k", partition=partition, headers=())
    return (time.perf_counter_ns() - started) / records


async def _before(records: int, producer: object) -> float:
    """ns per record of the same loop without any metrics statement (the code before metrics)."""
    send = producer.send  # type: ignore[attr-defined]
    started = time.perf_counter_ns()
    for n in range(records):
        partition = n & 3
        await send(TOPIC, b"v", b"k", partition=partition, headers=())
    return (time.perf_counter_ns() - started) / records


async def main(records: int) -> None:
    null = _NullProducer()
    # As a service makes it (telemetry._prometheus): exemplars off.
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()], exemplar_filter=AlwaysOffExemplarFilter())
    metrics = AgentMetrics(provider.get_meter("choreograph"), workflow="report", step="research",
                           group="choreo.agent.report.research", topic=TOPIC)
    counting = CountingProducer(null, metrics)
    rounds: dict[str, list[float]] = {"before": [], "off": [], "on": []}
    for _ in range(5):
        rounds["before"].append(await _before(records, null))
        rounds["off"].append(await _hops(records, None, null))
        rounds["on"].append(await _hops(records, metrics, counting))
    best = {name: min(times) for name, times in rounds.items()}  # the least disturbed of 5 rounds
    counts: dict[int, int] = {}
    started = time.perf_counter_ns()
    for n in range(records):
        counts[n & 3] = counts.get(n & 3, 0) + 1
    increment = (time.perf_counter_ns() - started) / records
    print(f"records {records}, ns/record (best of 5): before {best['before']:.0f}, off {best['off']:.0f} "
          f"(+{best['off'] - best['before']:.0f}), on {best['on']:.0f} (+{best['on'] - best['before']:.0f}); "
          f"a dict increment {increment:.0f}")
    provider.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().records))
