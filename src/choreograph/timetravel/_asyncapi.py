"""`choreo asyncapi`: the AsyncAPI document of what the running agents announced (see events._asyncapi)."""

from __future__ import annotations

from typing import Any

from ..events._asyncapi import asyncapi_document
from ..security._verify import Verifier
from ..transport._kafka import Kafka
from ..transport._keyring import service_verifier
from ..transport._port import Transport
from ..transport._settings import Settings
from ._agents import _contracts


async def asyncapi_report(settings: Settings, *, workflow: str | None = None, transport: Transport | None = None,
                          verifier: Verifier | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the contracts announced on the registry now (accepted ones only).

    Args:
        settings: The broker, namespace and topics.
        workflow: Only this workflow's steps and event types.
        transport: The broker port; Kafka unless given.
        verifier: Which contracts to believe; the environment's (transport.service_verifier) when None,
            so a contract nobody entitled signed is not listed.

    Returns:
        The document, as JSON data.

    Raises:
        WorkflowError: `workflow` is given and no step of it is announced.
    """
    registry = await _contracts(transport if transport is not None else Kafka(settings),
                                verifier or service_verifier())
    return asyncapi_document(registry.contracts.values(), settings, workflow)
