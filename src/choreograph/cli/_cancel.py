"""`choreo cancel ID`: ask the coordinator to cancel a running workflow (Client.cancel)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer

from ..errors import EventTooLarge, GoalRejected, WorkflowError, WorkflowFinished
from ._config import cli_settings
from ._input import FAILED, USAGE, JsonFlag, fail, run_async, seconds, workflow_id

# The reason given when --reason is not (runtime._client.CANCELLED_ON_REQUEST; not imported here: the
# runtime would be imported for every command's --help).
DEFAULT_REASON = "cancelled on request"


def cancel(
    workflow: Annotated[str, typer.Argument(metavar="ID", callback=workflow_id, show_default=False,
                                            help="the workflow id")],
    reason: Annotated[str, typer.Option(help="why: the outcome's reason")] = DEFAULT_REASON,
    wait: Annotated[float | None, typer.Option(help="wait up to SECONDS for the outcome", callback=seconds)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Cancel a running workflow: its completed steps are compensated, its outcome is `cancelled`.

    Nothing is published for a workflow that has an outcome already (`error: ID is already STATUS;
    nothing published`, exit 1) or whose goal is not in the log (exit 1). With --wait, print the
    outcome as `publish --wait` does; exit 0 when it is `cancelled`, 1 otherwise (another outcome, the
    cancellation refused, or still running when the wait ran out).
    """
    from ..runtime._client import Client

    refused: list[GoalRejected] = []

    async def go() -> dict[str, Any]:
        async with Client(cli_settings(), source="choreo://cli") as client:
            asked = await client.cancel(workflow, reason)
            result: dict[str, Any] = {"workflow_id": workflow, "workflow": asked.workflow, "cancel_requested": True,
                                      "reason": reason, "partition": asked.partition, "offset": asked.offset}
            if wait is not None:
                try:
                    outcome = await client.wait(asked, wait)
                except GoalRejected as exc:  # the coordinator dead-lettered the cancellation
                    refused.append(exc)
                    result["status"] = "rejected"
                    return result
                result["status"] = outcome.status.value if outcome else "running"
                if outcome is not None:
                    result["outcome"] = outcome.model_dump(mode="json")
            return result

    try:
        result = run_async(go())
    except WorkflowFinished as exc:
        raise fail(str(exc), FAILED) from exc
    except EventTooLarge as exc:
        raise fail(f"{exc} (CHOREO_MAX_EVENT_BYTES)", USAGE) from exc
    except WorkflowError as exc:
        raise fail(str(exc), FAILED) from exc
    if as_json:
        print(orjson.dumps(result).decode())
    elif "status" not in result:
        print(f"{workflow}: cancellation requested (partition {result['partition']}, offset {result['offset']})")
    else:
        outcome = result.get("outcome") or {}
        why = f": {outcome['reason']}" if outcome.get("reason") else ""
        print(f"{workflow}: {result['status']}{why}")
    if refused:
        raise fail(f"the coordinator refused the cancellation of {workflow}: {refused[0]}", FAILED)
    if wait is not None and result.get("status") != "cancelled":
        raise typer.Exit(FAILED)
