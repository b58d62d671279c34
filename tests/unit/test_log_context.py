"""Logs that name their workflow (issue 14, item 5): the log context, its filter and the two formats.

Every line logged inside a handler run (through ctx.log or any other logger) names the workflow id,
step, event id, trace id and span id; no line outside one does, not even the consumer loop's right
after a run. CHOREO_LOG_FORMAT=json writes one JSON object per line; text adds `[wf=<id> step=<step>]`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from helpers.trip import Booked, Paid, trip

from choreograph import NonRetryable, OutcomeStatus, StepContext
from choreograph.events._envelope import Envelope, Kind
from choreograph.testing import SagaKit
from choreograph.transport._logs import (
    ContextFilter,
    JsonFormatter,
    LogContext,
    TextFormatter,
    current_trace,
    enter,
    leave,
    trace_ids,
)

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
CAUSE = Envelope("ev-1", "shop.Ordered", "agent:shop/order", "2026-01-01T00:00:00.000Z", "shop", "wf-42",
                 Kind.STEP_COMPLETED, "order", None, f"00-{TRACE}-{SPAN}-01")


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """A root handler as a service installs it in JSON (filter and formatter), writing to a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_trace_and_span_ids_come_from_the_traceparent() -> None:
    assert trace_ids(CAUSE.traceparent) == (TRACE, SPAN)
    assert trace_ids(None) == trace_ids("garbage") == (None, None)
    assert current_trace() == (None, None)
    token = enter(LogContext("shop.pay", CAUSE, "pay"))
    try:
        assert current_trace() == (TRACE, SPAN)
    finally:
        leave(token)
    assert current_trace() == (None, None)


def test_a_json_line_names_the_workflow_inside_a_context_and_nothing_outside(lines: io.StringIO) -> None:
    user = logging.getLogger("user")
    user.info("before")
    token = enter(LogContext("shop.pay", CAUSE, "pay"))
    try:
        user.warning("inside %s", "the run")
    finally:
        leave(token)
    user.info("after")
    before, inside, after = parsed(lines)
    assert inside.pop("time").endswith("Z")
    assert inside == {"level": "WARNING", "logger": "user", "message": "inside the run", "service": "shop.pay",
                      "workflow_id": "wf-42", "workflow": "shop", "step": "pay", "event_id": "ev-1",
                      "trace_id": TRACE, "span_id": SPAN}
    for line in (before, after):
        assert set(line) == {"time", "level", "logger", "message", "service"}, line


def test_an_exception_and_a_multiline_message_stay_on_one_line(lines: io.StringIO) -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logging.getLogger("user").exception("two\nlines")
    [line] = parsed(lines)
    assert line["message"] == "two\nlines"
    assert line["exception"].startswith("Traceback")
    assert "ValueError: bad\nvalue" in line["exception"]


def test_text_adds_the_workflow_and_step_to_the_message_line_only() -> None:
    formatter = TextFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord("user", logging.ERROR, __file__, 1, "failed", None, None)
    ContextFilter().filter(record)
    assert formatter.format(record) == "ERROR user: failed"
    token = enter(LogContext("coordinator", CAUSE))
    try:
        try:
            raise KeyError("x")
        except KeyError:
            record = logging.LogRecord("user", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
        ContextFilter().filter(record)
    finally:
        leave(token)
    first, *rest = formatter.format(record).splitlines()
    assert first == "ERROR user: failed [wf=wf-42 step=order]", "the event's own step where no step is given"
    assert rest[0].startswith("Traceback")


async def test_a_runs_context_does_not_reach_the_loop_that_started_it(lines: io.StringIO) -> None:
    """A handler run is a task: what it enters stays in its copy of the context (even when it never leaves)."""
    loop_log = logging.getLogger("choreograph.agent")

    async def run() -> None:
        enter(LogContext("shop.pay", CAUSE, "pay"))
        await asyncio.sleep(0)
        loop_log.info("in the run")

    await asyncio.create_task(run())
    loop_log.info("the loop, after the run")
    inside, after = parsed(lines)
    assert inside["workflow_id"] == "wf-42"
    assert "workflow_id" not in after
    assert "trace_id" not in after


async def test_under_the_kit_every_handler_line_names_its_workflow_and_trace(
        lines: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    """ctx.log and the user's own logger, in a step and in a compensation; the runtime's lines outside runs not."""
    caplog.set_level(logging.INFO)
    user = logging.getLogger("user")

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        ctx.log.info("paying %d", booked.n)
        user.info("card charged?")
        raise NonRetryable("card declined")

    async def undo(ctx: StepContext) -> None:
        ctx.log.warning("cancelling the booking")
        user.info("booking cancelled")

    async with SagaKit(*trip(pay, retry=None, undo=undo)) as kit:
        goal = await kit.given_goal("trip", {"n": 3})
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, compensated=["book"])
        events = await kit.events(goal)
    [goal_event] = [e for e in events if e.kind == "goal"]
    [booked] = [e for e in events if e.kind == "step_completed" and e.step == "book"]
    [request] = [e for e in events if e.kind == "compensation_requested"]
    trace, _ = trace_ids(goal_event.traceparent)
    assert trace is not None
    found = {line["message"]: line for line in parsed(lines)}
    for message, step, cause in [("paying 3", "pay", booked), ("card charged?", "pay", booked),
                                 ("cancelling the booking", "book", request), ("booking cancelled", "book", request)]:
        line = found[message]
        assert (line["workflow_id"], line["workflow"], line["step"]) == (goal.workflow_id, "trip", step), line
        assert line["service"] == f"trip.{step}"
        assert (line["event_id"], line["trace_id"], line["span_id"]) == (cause.event_id, trace,
                                                                         trace_ids(cause.traceparent)[1]), line
    ready = [line for message, line in found.items() if " ready " in message]
    assert ready
    assert not any("workflow_id" in line for line in ready), "no workflow outside a run"
    # ctx.log's own records carry the fields to any handler, pytest's caplog included.
    [paying] = [r for r in caplog.records if r.getMessage() == "paying 3"]
    assert getattr(paying, "workflow_id", None) == goal.workflow_id
