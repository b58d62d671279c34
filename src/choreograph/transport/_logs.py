"""Logs that name their workflow: a context per handler run (or coordinator record), and two formats.

The runtime sets the log context (`enter`) once around each handler or compensation run, and the
coordinator around each record it handles: a context variable, so any logger used inside (`ctx.log`,
a library's, the user's own `logging.getLogger(__name__)`) is covered, and nothing is formatted
unless a line is actually logged. A handler run is a task of its own (a copy of the context), so
its context never reaches the consumer loop.

`ContextFilter` copies the context onto each record (`workflow_id`, `workflow`, `step`, `event_id`,
`trace_id`, `span_id`, `service`); `configure` installs it on the root handler of a service with
the format CHOREO_LOG_FORMAT names: `text` for people (a `[wf=<id> step=<step>]` suffix inside a
workflow) or `json`, one orjson object per line for log shippers.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from ..events._envelope import Envelope
from ._settings import log_format, log_level

# What a record carries, in the order a JSON line shows them after the fixed fields.
FIELDS = ("workflow_id", "workflow", "step", "event_id", "trace_id", "span_id")

_OUTSIDE = dict.fromkeys(FIELDS)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogContext(NamedTuple):
    """The workflow a piece of work belongs to: who does it, for which step, caused by which event.

    Attributes:
        service: The service doing the work (an agent's name, `coordinator`).
        envelope: The event being handled (a handler run's cause): workflow, id, event id, traceparent.
        step: The step the work belongs to (an agent's own step); None: the event's.
    """

    service: str
    envelope: Envelope
    step: str | None = None


_context: ContextVar[LogContext | None] = ContextVar("choreograph_log_context", default=None)
_service = ""  # the process's service, for lines outside any workflow (configure)


def enter(context: LogContext) -> Token[LogContext | None]:
    """Make `context` the current one (until `leave`, or the end of the task it is set in)."""
    return _context.set(context)


def leave(token: Token[LogContext | None]) -> None:
    """Restore the context that was current before `enter` returned `token`."""
    _context.reset(token)


def current() -> LogContext | None:
    """The current log context, if the code runs inside a workflow's work."""
    return _context.get()


def trace_ids(traceparent: str | None) -> tuple[str | None, str | None]:
    """(trace id, span id) of a W3C traceparent (`00-<trace>-<span>-<flags>`); (None, None) if malformed."""
    if traceparent is None or len(traceparent) != 55 or traceparent[2] != "-" or traceparent[35] != "-":
        return None, None
    return traceparent[3:35], traceparent[36:52]


_span_source: Callable[[], tuple[str, str] | None] | None = None


def use_span_source(source: Callable[[], tuple[str, str] | None] | None) -> None:
    """Where `current_trace` finds the current span: set by choreograph.telemetry once tracing is on."""
    global _span_source
    _span_source = source


def current_trace() -> tuple[str | None, str | None]:
    """(trace id, span id) of the current work: the one place that says which span a log line belongs to.

    With tracing on, the current span when one is recording (a handler run's CONSUMER span); else
    the handled event's trace, and its span (the hop that published it).
    """
    if _span_source is not None and (ids := _span_source()) is not None:
        return ids
    context = _context.get()
    return (None, None) if context is None else trace_ids(context.envelope.traceparent)


class ContextFilter(logging.Filter):
    """Copies the current log context onto every record it sees (and lets every record through).

    Installed on a handler it covers every logger whose records reach that handler; installed on a
    logger (ctx.log's) it covers that logger's records wherever they go (pytest's caplog too).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        fields = record.__dict__
        if context is None:
            if "workflow_id" not in fields:  # else set by a filter before this one (the same context)
                fields.update(_OUTSIDE, service=_service)
            return True
        envelope = context.envelope
        if _span_source is None or (ids := _span_source()) is None:
            trace_id, span_id = trace_ids(envelope.traceparent)
        else:
            trace_id, span_id = ids
        fields.update(service=context.service, workflow_id=envelope.workflow_id, workflow=envelope.workflow,
                      step=context.step or envelope.step, event_id=envelope.id, trace_id=trace_id, span_id=span_id)
        return True


class TextFormatter(logging.Formatter):
    """The readable format; a line logged inside a workflow ends with `[wf=<id> step=<step>]`."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging's name
        # The message line only: a traceback follows the suffix, not the other way round.
        line = super().formatMessage(record)
        workflow_id = getattr(record, "workflow_id", None)
        if not workflow_id:  # outside a workflow (or a keyless record the coordinator dead-letters)
            return line
        step = getattr(record, "step", None)
        return f"{line} [wf={workflow_id}]" if step is None else f"{line} [wf={workflow_id} step={step}]"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (never more than one line): the fixed fields, the context's, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "service": getattr(record, "service", None) or _service,
        }
        for name in FIELDS:
            if (value := getattr(record, name, None)) is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # Strings are escaped (a newline is `\n`), so a traceback never splits the line.
        return orjson.dumps(line, default=str).decode()


def name_service(service: str) -> None:
    """Name the process's service on lines outside any workflow (an agent's name, once it is loaded)."""
    global _service
    _service = service


def formatter(kind: str, fmt: str = TEXT_FORMAT) -> logging.Formatter:
    """The formatter of CHOREO_LOG_FORMAT `kind` (`text` with `fmt`, or `json`)."""
    return JsonFormatter() if kind == "json" else TextFormatter(fmt)


def configure(service: str, fmt: str = TEXT_FORMAT) -> None:
    """Set up a service's logging: stderr at CHOREO_LOG_LEVEL, in CHOREO_LOG_FORMAT, with the log context.

    Does nothing to a root logger that has handlers already (as logging.basicConfig).

    Args:
        service: The service's name on lines outside any workflow (`coordinator`, `supervisor`, ...).
        fmt: The text format (a %-style logging format); the context suffix is added to it.

    Raises:
        ConfigurationError: CHOREO_LOG_LEVEL or CHOREO_LOG_FORMAT is bad.
    """
    level, kind = log_level(), log_format()
    name_service(service)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter(kind, fmt))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
