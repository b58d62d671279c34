"""Command-line input, checked before anything runs, and the one-line errors of `choreo`.

Exit statuses, the same for every command (README, "Exit codes"): 0 done; 1 the operation failed
or its result is not the wanted one (no such workflow, a goal the coordinator rejected, `publish
--wait` with an outcome other than completed); 2 bad input or settings, nothing done (a
ConfigurationError, a goal over the maximum event size); 3 the broker cannot be reached
(BrokerUnavailable, aiokafka's connection errors); 130 Ctrl-C. `replay` follows diff instead: 0 the
same, 1 differences, 2 an error.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
import time
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer

from ..errors import BrokerUnavailable, ChoreographError, ConfigurationError, EventTooLarge

T = TypeVar("T")
FAILED = 1
USAGE = 2
UNREACHABLE = 3
INTERRUPTED = 130


# `--json`: a command's output as JSON, for scripts.
JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON")]


def err(message: str, label: str = "error", colour: str = "red") -> None:
    """Print `label: message` on stderr; the message is plain text, never rich markup.

    Never wrapped (messages name files). rich is imported only here, so a command that succeeds does
    not pay for it.
    """
    from rich.console import Console
    from rich.markup import escape

    # Text from argv or files may hold lone surrogates (bytes that are not UTF-8): shown escaped.
    text = message.encode("utf-8", "backslashreplace").decode()
    Console(stderr=True, soft_wrap=True).print(f"[{colour}]{label}:[/{colour}] {escape(text)}", highlight=False)


def _print_version(value: bool) -> None:
    """`--version`: print `choreo <version>` (the installed distribution's) and exit 0."""
    if value:
        from importlib.metadata import version

        print(f"choreo {version('choreograph')}")
        raise typer.Exit()


def root(
    _version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                           help="print choreo's version and exit")] = False,
) -> None:
    """The options of `choreo` itself, before any command."""


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with Ctrl-C as a quiet exit 130 (`--follow` is usually ended that way)."""
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as an error; return the exit to raise with `code`."""
    err(message)
    return typer.Exit(code)


def exit_code(exc: BaseException) -> int:
    """The exit status of an error that ends a command (see the module's docstring)."""
    exc = _own(exc)
    if isinstance(exc, BrokerUnavailable):
        return UNREACHABLE
    if isinstance(exc, EventTooLarge | ConfigurationError):
        return USAGE
    return FAILED


def debugging() -> bool:
    """Whether errors show their traceback (`--debug`, or CHOREO_DEBUG=1)."""
    return os.environ.get("CHOREO_DEBUG", "") not in ("", "0")


def one_line(exc: BaseException) -> str:
    """An error as the one line `choreo` prints.

    The library's own messages as they are (a broker client's error made one of them); anything
    else with its type (the traceback: --debug).
    """
    exc = _own(exc)
    if isinstance(exc, ChoreographError):
        return str(exc)
    text = " ".join(str(exc).split())  # one line, whatever the message held
    return f"{type(exc).__name__}: {text} (--debug or CHOREO_DEBUG=1 shows the traceback)"


def _own(exc: BaseException) -> BaseException:
    """`exc`, or the library's error for a Kafka client's (transport owns aiokafka: imported only then)."""
    if isinstance(exc, ChoreographError) or type(exc).__module__.split(".")[0] != "aiokafka":
        return exc
    from ..transport._kafka import as_broker_error

    return as_broker_error(exc) or exc


def _raw(text: str) -> str:
    """How a user would recognise an argument that is not UTF-8: the bytes it was given as."""
    try:
        return repr(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # a surrogate that did not come from undecodable bytes
        return ascii(text)


def workflow_id(value: str) -> str:
    """Typer callback: a workflow id that can be a record's key (UTF-8 text), or exit 2.

    Python gives argv bytes that are not UTF-8 as lone surrogates, which no key can hold.
    """
    try:
        value.encode()
    except UnicodeEncodeError:
        raise fail(f"workflow id {_raw(value)} is not UTF-8 text", USAGE) from None
    return value


def seconds(param: typer.CallbackParam, value: float | None) -> float | None:
    """Typer callback: a number of seconds, finite and >= 0, or exit 2."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise fail(f"{param.opts[0]} {value:g}: expected a number of seconds >= 0", USAGE)
    return value


def positive_seconds(param: typer.CallbackParam, value: float) -> float:
    """Typer callback: a number of seconds, finite and > 0, or exit 2."""
    if not (math.isfinite(value) and value > 0):
        raise fail(f"{param.opts[0]} {value:g}: expected a number of seconds > 0", USAGE)
    return value


def goal_data(data: str) -> Any:
    """The value of `--data`: JSON text, `@FILE` for a file holding it, or `-` for standard input.

    Files and stdin take goals larger than a command line can hold.

    Raises:
        typer.Exit: Exit 2 after one error line: the file cannot be read, or the text is not JSON.
    """
    where = "--data"
    text: str | bytes = data
    if data == "-":
        where, text = "--data - (stdin)", sys.stdin.buffer.read()
    elif data.startswith("@"):
        where = f"--data {data}"
        try:
            text = Path(data[1:]).read_bytes()
        except OSError as exc:
            raise fail(f"{where}: {exc.strerror or exc}", USAGE) from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise fail(f"{where} is not JSON: {exc}", USAGE) from None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(text: str) -> float | None:
    """Seconds in a duration written with units (`30s`, `10m`, `1h30m`, `500ms`, `1d`); None for anything else."""
    value = text.strip().lower()
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def duration(text: str, option: str) -> float:
    """Seconds in a duration as an option takes it: `30s`, `10m`, `1h30m`, `500ms`, or plain seconds; else exit 2."""
    try:
        seconds_: float | None = float(text.strip())
    except ValueError:
        seconds_ = duration_s(text)
    if seconds_ is None:
        raise fail(f"{option} {text!r}: expected a duration such as 30s, 10m or 1h30m", USAGE)
    if not (math.isfinite(seconds_) and seconds_ > 0):
        raise fail(f"{option} {text!r}: expected a duration > 0", USAGE)
    return seconds_


def since_ms(text: str, now_ms: int | None = None) -> int:
    """The moment `--since` names: an ISO 8601 time with a zone, or a duration ago (`90s`, `10m`, `2h`, `1d`).

    Raises:
        ConfigurationError: Neither.
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if (ago := duration_s(text)) is not None:
        return now - round(ago * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigurationError(f"--since {text!r}: give an ISO 8601 time (2026-01-31T09:30:00Z) or a "
                                 "duration ago (90s, 10m, 2h, 1d)") from exc
    if moment.tzinfo is None:
        raise ConfigurationError(f"--since {text!r}: give a time zone (e.g. a trailing Z for UTC)")
    return round(moment.timestamp() * 1000)
