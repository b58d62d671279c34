"""The lifecycle every long-running service shares (agents, coordinator, archiver)."""

from __future__ import annotations

import asyncio
from typing import Self


class ServiceBase:
    """The lifecycle the services share.

    `async with service:` runs start() and stop(); request_stop() (from a signal handler) ends
    run() at its next turn.
    """

    _stopping: asyncio.Event

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def request_stop(self) -> None:
        """Ask run() to return at its next turn (safe from a signal handler)."""
        self._stopping.set()
