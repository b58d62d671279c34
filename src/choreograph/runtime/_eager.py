"""Start a coroutine eagerly: run it now, inside the caller, until it first suspends.

Python 3.12's eager tasks, for 3.11. Most handler runs never suspend (the producer only buffers),
and creating and scheduling a Task for each costs more than the handler itself at relay rates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """None if `coro` ran to completion; else a Task carrying it on from where it suspended.

    An exception raised before the first suspension propagates to the caller, as in a plain call.
    """
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_carry_on(coro, yielded))


async def _carry_on(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    """Drive a suspended coroutine as a Task would: await what it yielded, send the result back."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)  # a bare yield asks for one turn of the loop
                value = None
            else:
                yielded._asyncio_future_blocking = False  # the future protocol, as Task.__step does
                value = await yielded
        except GeneratorExit:
            # Closed (a pending Task garbage-collected): the inner coroutine may be collected and
            # closed already, and throwing into it would raise "cannot reuse already awaited".
            coro.close()
            raise
        except BaseException as exc:  # cancellation included: the coroutine decides what it means
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            yielded = coro.send(value)
        except StopIteration:
            return
