"""Running a service (an agent or the coordinator) as an OS process until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from pathlib import Path
from typing import Protocol

from ..transport._settings import Settings
from ._agent import load_agent
from ._agent_runtime import AgentRuntime
from ._coordinator import Coordinator


class Service(Protocol):
    async def start(self) -> None: ...
    async def run(self) -> None: ...
    async def stop(self) -> None: ...
    def request_stop(self) -> None: ...


def ready_file() -> Path | None:
    """Where to signal readiness (set by `choreo up`), if anywhere."""
    path = os.environ.get("CHOREO_READY_FILE")
    return Path(path) if path else None


async def serve(service: Service) -> None:
    """Run a service until SIGTERM or SIGINT: start, run, and always stop."""
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
    configure_logging()
    agent = load_agent(spec)
    asyncio.run(serve(AgentRuntime(agent, Settings.from_env(), ready_file=ready_file())))


def run_coordinator() -> None:
    """Body of `choreo coordinator run` and of services/coordinator.py."""
    configure_logging()
    asyncio.run(serve(Coordinator(Settings.from_env(), ready_file=ready_file())))
