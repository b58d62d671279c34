"""start_eagerly behaves like create_task, minus the task when the coroutine never suspends."""

from __future__ import annotations

import asyncio

import pytest

from choreograph.runtime._eager import start_eagerly  # an internal part, tested directly: no public face has it


async def test_a_coroutine_that_never_suspends_runs_at_once_without_a_task() -> None:
    seen: list[str] = []

    async def quick() -> None:
        seen.append("ran")

    assert start_eagerly(quick()) is None
    assert seen == ["ran"]


async def test_a_suspending_coroutine_carries_on_as_a_task_with_awaited_results() -> None:
    seen: list[object] = []
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def slow() -> None:
        seen.append("before")
        await asyncio.sleep(0)
        seen.append(await gate)

    task = start_eagerly(slow())
    assert task is not None
    assert seen == ["before"]
    gate.set_result(42)
    await asyncio.wait_for(task, 5)
    assert seen == ["before", 42]


async def test_errors_before_and_after_suspension_surface_where_a_caller_would_see_them() -> None:
    async def fails_now() -> None:
        raise ValueError("now")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ValueError("later")

    with pytest.raises(ValueError, match="now"):
        start_eagerly(fails_now())
    task = start_eagerly(fails_later())
    assert task is not None
    with pytest.raises(ValueError, match="later"):
        await task


async def test_cancelling_the_task_cancels_the_coroutine_inside() -> None:
    cleaned: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append("finally")

    task = start_eagerly(waits())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


async def test_an_exception_thrown_into_a_future_is_delivered_to_the_coroutine() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    caught: list[str] = []

    async def guarded() -> None:
        try:
            await gate
        except KeyError:
            caught.append("caught")

    task = start_eagerly(guarded())
    assert task is not None
    gate.set_exception(KeyError("x"))
    await task
    assert caught == ["caught"]



async def test_a_carried_on_coroutine_closed_by_the_garbage_collector_raises_nothing() -> None:
    # A Task destroyed while pending has its coroutine closed by the collector, which may close the
    # inner coroutine first. Throwing into that closed one raised "cannot reuse already awaited
    # coroutine", an unraisable error (pytest turns it into a failure of whichever test is running).
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        await gate

    inner = waits()
    task = start_eagerly(inner)
    assert task is not None
    await asyncio.sleep(0)
    inner.close()  # the collector's order: the inner coroutine first
    task.get_coro().close()  # then the one carrying it: must not raise
    gate.cancel()
    task.cancel()
