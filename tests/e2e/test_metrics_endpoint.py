"""Metrics of real service processes, scraped as Prometheus scrapes them (issue 14, item 4).

Two agents and the coordinator, each its own process with CHOREO_METRICS_PORT set to a free port, run a
saga that completes and one whose second step fails (so the first is compensated). Each endpoint then
shows what its service did: the steps' run durations (messaging.process.duration, with error.type on the
failure), records consumed and sent, consumer lag per partition, handler concurrency, and the
coordinator's workflows started and finished by status, compensations requested and finished.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from helpers import Stack, agent_spec, coordinator_spec, eventually
from helpers.metrics import Sample, free_ports, scrape, total

from choreograph import Client, OutcomeStatus

METERED_AGENTS = '''
from choreograph import Agent, CompensationRequested, Event, NonRetryable, StepContext

_FIELDS = [{"name": "n", "type": "long"}]


class Order(Event, schema={"type": "record", "name": "Order", "namespace": "metered", "fields": _FIELDS}):
    n: int


class Booked(Event, schema={"type": "record", "name": "Booked", "namespace": "metered", "fields": _FIELDS}):
    n: int


class Paid(Event, schema={"type": "record", "name": "Paid", "namespace": "metered", "fields": _FIELDS}):
    n: int


class PaymentRefused(Exception):
    pass


book = Agent(workflow="metered", step="book")
pay = Agent(workflow="metered", step="pay")


@book.handler
async def do_book(ctx: StepContext, order: Order) -> Booked:
    return Booked(n=order.n)


@book.compensation
async def unbook(ctx: StepContext, request: CompensationRequested) -> None:
    ctx.log.info("unbooking %s", ctx.workflow_id)


@pay.handler
async def do_pay(ctx: StepContext, booked: Booked) -> Paid:
    if booked.n % 2:
        raise NonRetryable("card refused") from PaymentRefused("odd")
    return Paid(n=booked.n)
'''

async def scraped_until(port: int, done: Callable[[list[Sample]], bool], what: str) -> list[Sample]:
    async def check() -> list[Sample] | None:
        samples = scrape(port)
        return samples if samples and done(samples) else None

    found: list[Sample] = await eventually(check, 30, what)
    return found


async def test_each_service_serves_its_metrics_to_prometheus(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "metered_agents.py").write_text(METERED_AGENTS)
    ports = {"coordinator": free_ports(), "book": free_ports(), "pay": free_ports()}
    for name, spec in [("coordinator", coordinator_spec()), ("book", agent_spec("book", "metered_agents:book")),
                       ("pay", agent_spec("pay", "metered_agents:pay"))]:
        stack.extra_env["CHOREO_METRICS_PORT"] = str(ports[name])
        stack.start(spec, pythonpath=tmp_path)
    async with Client(stack.settings) as client:
        good = await client.publish("metered", {"n": 2})
        bad = await client.publish("metered", {"n": 1})
        outcomes = [await client.wait(goal, 60) for goal in (good, bad)]
    assert [o.status if o else None for o in outcomes] == [OutcomeStatus.COMPLETED, OutcomeStatus.COMPENSATED]

    topic = stack.settings.events_topic
    step = {"choreograph_workflow": "metered", "messaging_system": "kafka", "messaging_destination_name": topic}
    book = await scraped_until(ports["book"], lambda s: total(
        s, "messaging_process_duration_seconds_count", messaging_operation_name="compensate") >= 1,
        "book's compensation in its metrics")
    runs = {"choreograph_step": "book", **step,
            "messaging_consumer_group_name": stack.settings.agent_group("metered", "book")}
    assert total(book, "messaging_process_duration_seconds_count", messaging_operation_name="process", **runs) == 2
    assert total(book, "messaging_process_duration_seconds_bucket", le="+Inf", **runs) == 3
    assert total(book, "messaging_process_duration_seconds_sum", **runs) > 0
    assert total(book, "messaging_client_consumed_messages_total", **step) >= 2  # the goals at least
    assert total(book, "messaging_client_sent_messages_total", messaging_destination_name=topic) >= 3
    lag = [labels for name, labels, _ in book if name == "messaging_kafka_consumer_lag"]
    assert lag, "a lag per partition the agent owns"
    assert {labels["messaging_destination_partition_id"] for labels in lag} <= {
        str(p) for p in range(stack.settings.partitions)}
    assert total(book, "choreograph_handler_concurrency", choreograph_handler_state="limit") == 64
    assert total(book, "choreograph_handler_concurrency", choreograph_handler_state="active") == 0
    assert total(book, "target_info", service_name="choreo-metered.book") == 1

    pay = await scraped_until(ports["pay"], lambda s: total(s, "messaging_process_duration_seconds_count") >= 2,
                              "pay's runs in its metrics")
    assert total(pay, "messaging_process_duration_seconds_count", choreograph_step="pay",
                 error_type="PaymentRefused") == 1, "the failure's error.type is its cause's, as StepFailed says"
    assert total(pay, "messaging_process_duration_seconds_count", choreograph_step="pay") == 2

    coordinator = await scraped_until(ports["coordinator"], lambda s: total(
        s, "choreograph_workflows_finished_total") >= 2, "the coordinator's outcomes in its metrics")
    workflow = {"choreograph_workflow": "metered"}
    assert total(coordinator, "choreograph_workflows_started_total", **workflow) == 2
    assert total(coordinator, "choreograph_workflows_finished_total", choreograph_status="completed", **workflow) == 1
    assert total(coordinator, "choreograph_workflows_finished_total", choreograph_status="compensated",
                 **workflow) == 1
    assert total(coordinator, "choreograph_compensations_requested_total", choreograph_step="book", **workflow) == 1
    assert total(coordinator, "choreograph_compensations_finished_total", choreograph_step="book",
                 choreograph_status="completed", **workflow) == 1
    assert total(coordinator, "messaging_client_consumed_messages_total",
                 messaging_consumer_group_name=stack.settings.coordinator_group) >= 8
    assert [labels for name, labels, _ in coordinator if name == "messaging_kafka_consumer_lag"]


def test_a_service_without_a_metrics_port_loads_no_sdk(tmp_path: Path) -> None:
    # What `choreo agent run` does before its service starts, in a fresh interpreter: metrics off.
    code = ("import sys; from choreograph.runtime import _service; from choreograph.telemetry import serve_metrics; "
            "print(serve_metrics('x'), [m for m in sys.modules if m.startswith(SDK)])")
    code = code.replace("SDK", repr(("opentelemetry.sdk", "opentelemetry.exporter", "prometheus_client")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHOREO_", "OTEL_"))}
    env["CHOREO_HOME"] = str(tmp_path)
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "None []"


class _Collector(BaseHTTPRequestHandler):
    """A tiny OTLP/HTTP receiver: keeps each request's path and body (protobuf, whose strings are plain bytes)."""

    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    received: list[tuple[str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_otel_metrics_exporter_otlp_pushes_the_same_metrics_to_a_collector(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "metered_agents.py").write_text(METERED_AGENTS)
    with collector() as (endpoint, received):
        stack.start(coordinator_spec(), agent_spec("pay", "metered_agents:pay"), pythonpath=tmp_path)
        stack.extra_env.update({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                "OTEL_METRIC_EXPORT_INTERVAL": "300"})
        stack.start(agent_spec("book", "metered_agents:book"), pythonpath=tmp_path)
        async with Client(stack.settings) as client:
            goal = await client.publish("metered", {"n": 2})
            outcome = await client.wait(goal, 60)
        assert outcome is not None
        assert outcome.status is OutcomeStatus.COMPLETED

        async def pushed() -> bool:
            return any(path == "/v1/metrics" and b"messaging.process.duration" in body
                       and b"choreo-metered.book" in body for path, body in list(received))

        await eventually(pushed, 30, "the book agent's run pushed over OTLP")
