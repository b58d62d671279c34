"""Guards: checks a step declares on its result, run before anything of the attempt is published.

    @agent.guard
    def no_api_keys(draft: DraftCompleted) -> str | None:
        return "the draft quotes an API key" if "sk-" in draft.text else None

    agent.guard(max_bytes(64_000))
    agent.guard(forbid(r"(?i)password", field="text"))

A guard takes the typed result (the handler's return value) and returns None to pass it or a reason
to reject it; it may be a coroutine function. Guards run in declaration order, in the attempt's own
task (after the handler returned, before its side events and result are sent), and the first
rejection wins: the attempt fails with GuardRejected, retried per the step's `Retry` like any
handler exception. A guard that raises rejects the result too, its reason naming the exception.
Compensations are not guarded (they return nothing).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ..errors import AgentDefinitionError, GuardRejected
from ..events._models import Event

Guard = Callable[[Any], str | Awaitable[str | None] | None]


def guard_name(guard: Guard) -> str:
    """How a guard is named in its rejections: its qualified name (the ready ones name their setting)."""
    return str(getattr(guard, "__qualname__", None) or repr(guard))


def checked(guard: Guard, owner: str) -> Guard:
    """`guard`, if it can be called with the result alone.

    Raises:
        AgentDefinitionError: It is not callable, or its signature does not take exactly one argument.
    """
    if not callable(guard):
        raise AgentDefinitionError(f"{owner}: a guard must be a function of the result, got {guard!r}")
    try:
        signature = inspect.signature(guard)
    except (TypeError, ValueError):  # some builtins have none: let them be tried
        return guard
    try:
        signature.bind(None)
    except TypeError as exc:
        raise AgentDefinitionError(f"{owner}: guard {guard_name(guard)} must take the result as its only "
                                   f"argument ({exc})") from exc
    return guard


async def screen(guards: list[Guard], result: Event) -> GuardRejected | None:
    """Run `guards` on `result` in order; the first rejection, or None if every guard passed it.

    A guard rejects by returning a reason, by returning anything that is neither None nor a string,
    or by raising (the exception is then the rejection's `__cause__`).
    """
    for guard in guards:
        try:
            verdict = guard(result)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception as exc:  # a broken guard must not let a result through, nor kill the agent
            rejected = GuardRejected(guard_name(guard), f"it raised {exc!r}")
            rejected.__cause__ = exc
            return rejected
        if verdict is None:
            continue
        if isinstance(verdict, str):
            return GuardRejected(guard_name(guard), verdict or "no reason given")
        return GuardRejected(guard_name(guard), f"it returned {verdict!r}; a guard returns None (pass) or a "
                                                "reason (reject)")
    return None


def _named(fn: Callable[[Event], str | None], name: str) -> Callable[[Event], str | None]:
    fn.__qualname__ = fn.__name__ = name
    return fn


def max_bytes(limit: int) -> Callable[[Event], str | None]:
    """A guard: the result's encoded payload (Avro single-object bytes) is at most `limit` bytes.

    Stricter than the namespace's maximum event size when a step's consumers expect small results
    (an LLM that rambles); a result over that maximum fails its step anyway (EventTooLarge).

    Raises:
        AgentDefinitionError: `limit` is not a positive number.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise AgentDefinitionError(f"max_bytes: the limit must be a positive number of bytes, got {limit!r}")

    def guard(result: Event) -> str | None:
        size = len(result.encode())
        return f"the result is {size} bytes, over {limit}" if size > limit else None

    return _named(guard, f"max_bytes({limit})")


def forbid(pattern: str | re.Pattern[str], *, field: str | None = None) -> Callable[[Event], str | None]:
    """A guard: no text of the result matches `pattern` (`re.search`).

    The reason names the field and the pattern, never the text that matched (it may be what must
    not leak).

    Args:
        pattern: A regular expression (text or compiled).
        field: Only this field of the result (a dotted path for nested records, e.g. `card.note`);
            None for every string anywhere in the result (nested records, arrays and maps included).

    Raises:
        AgentDefinitionError: `pattern` is not a valid regular expression.
    """
    try:
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    except re.error as exc:
        raise AgentDefinitionError(f"forbid: {pattern!r} is not a regular expression: {exc}") from exc
    path = None if field is None else field.split(".")

    def guard(result: Event) -> str | None:
        data: Any = result.model_dump()
        for part in path or ():
            data = data[part]  # a field the result lacks raises: a rejection naming the KeyError
        for at, text in _texts(data, field or ""):
            if compiled.search(text):
                return f"field {at} matches the banned pattern {compiled.pattern!r}"
        return None

    return _named(guard, f"forbid({compiled.pattern!r}" + ("" if field is None else f", field={field!r}") + ")")


def _texts(value: Any, at: str) -> Iterator[tuple[str, str]]:
    """Every string in `value` (dicts, lists and nested records), with its dotted path."""
    if isinstance(value, str):
        yield at, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(item, f"{at}.{key}" if at else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _texts(item, f"{at}[{index}]")
