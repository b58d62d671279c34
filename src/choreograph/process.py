"""Running a service (an agent or the coordinator) as an OS process until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from pathlib import Path
from typing import Protocol, Self

from .agent import load_agent
from .settings import Settings


class Service(Protocol):
    async def start(self) -> None: ...
    async def run(self) -> None: ...
    async def stop(self) -> None: ...
    def request_stop(self) -> None: ...


class ServiceBase:
    """The lifecycle the services share: `async with service:` runs start() and stop();
    request_stop() (from a signal handler) ends run() at its next turn."""

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
        self._stopping.set()


def ready_file() -> Path | None:
    """Where to signal readiness (set by `choreo up`), if anywhere."""
    path = os.environ.get("CHOREO_READY_FILE")
    return Path(path) if path else None


async def serve(service: Service) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
    await service.start()
    # Everything built so far (modules, schemas, models, clients) lives as long as the process:
    # out of the collector's sight, a full collection no longer walks it (relay: ~13% less CPU).
    gc.freeze()
    try:
        await service.run()
    finally:
        await service.stop()


def configure_logging() -> None:
    logging.basicConfig(level=os.environ.get("CHOREO_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def run_agent(spec: str) -> None:
    """Body of `choreo agent run MODULE:ATTR`."""
    from ._runtime import AgentRuntime

    configure_logging()
    agent = load_agent(spec)
    asyncio.run(serve(AgentRuntime(agent, Settings.from_env(), ready_file=ready_file())))


def run_coordinator() -> None:
    """Body of `choreo coordinator run` and of services/coordinator.py."""
    from .coordinator import Coordinator

    configure_logging()
    asyncio.run(serve(Coordinator(Settings.from_env(), ready_file=ready_file())))
