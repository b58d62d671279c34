"""`choreo agents`: announced steps and who serves them; `choreo agents retire`: remove a step."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
import typer

from ._config import cli_settings
from ._input import fail

T = TypeVar("T")

agents_app = typer.Typer(help="Announced steps with their live agents, lag, breaker and rate limit; `retire` "
                                "removes a step.")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with Ctrl-C as a quiet exit 130."""
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@agents_app.callback(invoke_without_command=True)
def agents(
    ctx: typer.Context,
    workflow: Annotated[str | None, typer.Option(help="only this workflow's steps")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='one JSON object: {"steps": [...]}')] = False,
) -> None:
    """Every announced step: its agent, live instances, last seen, lag, breaker, rate limit, retry and timeout.

    The rate column is the step's handler starts per second per instance, marked "throttled" when an
    instance waited for a token (consumption paused) in its last presence interval.

    A step that no live agent serves is flagged NO LIVE AGENT (and "no_live_agent": true): its
    sagas wait for it. Live means a presence within 3 of its intervals, or, for agents that send
    none, a member in the step's consumer group.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..timetravel._agents import agents_report

    rows = run(agents_report(cli_settings(), workflow=workflow))
    if workflow is not None and not rows:
        raise fail(f"no step of workflow {workflow!r} is announced")
    if as_json:
        print(orjson.dumps({"steps": rows}, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        print("no step is announced")
        return
    _print_agents(rows)


@agents_app.command("retire")
def retire(
    workflow: str,
    step: str,
    force: Annotated[bool, typer.Option("--force", help="retire it even while agents serve it, or while "
                                        "other steps need what it completes with")] = False,
) -> None:
    """Remove STEP of WORKFLOW: new goals no longer wait for it; started workflows keep their graph.

    A tombstone on the registry removes the step's contract; a marker on every events partition
    puts the removal in order with goals. Refused while live agents serve the step (they announce it
    again when they restart) or while other steps consume what only it completes with, unless --force.
    Exit 1 if no such step is announced.
    """
    from ..timetravel._agents import retire_step

    done = run(retire_step(cli_settings(), workflow, step, force=force))
    left = ", ".join(done["steps_left"]) or "none"
    print(f"retired {workflow}/{step}: new goals of {workflow!r} run without it (its steps now: {left}); "
          "workflows already started keep their graph")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _ms(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:g}s"


def _retry(policy: dict[str, Any] | None) -> str:
    if not policy:
        return "none"
    return f"{policy['max_attempts']}x {_ms(policy['initial_ms'])}*{policy['multiplier']:g}≤{_ms(policy['max_ms'])}"


def _rate(limit: dict[str, Any] | None, throttled: bool | None) -> str:
    if limit is None:
        return "-"
    return f"{limit['per_second']:g}/s" + (" throttled" if throttled else "")


def _print_agents(rows: list[dict[str, Any]]) -> None:
    """The steps as a table, a step with no live agent in red."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("workflow", "step", "agent", "live", "last seen", "lag", "breaker", "rate", "retry", "timeout",
                   ""):
        table.add_column(column, no_wrap=True)
    for row in rows:
        live = "?" if row["live"] is None else str(row["live"]) + (" (group)" if row["live_by"] == "group" else "")
        flag = "NO LIVE AGENT" if row["no_live_agent"] else ""
        if row["refused"]:
            flag = f"{flag} refused: {row['refused']}".strip()
        table.add_row(row["workflow"], row["step"], row["agent"] or "-", live, _ago(row["last_seen_ago_s"]),
                      "-" if row["lag"] is None else str(row["lag"]), row["breaker"] or "-",
                      _rate(row["rate_limit"], row["throttled"]), _retry(row["retry"]),
                      _ms(row["timeout_ms"]), flag, style="red" if row["no_live_agent"] else None)
    console.print(table)
    if any(row["live"] is None for row in rows):
        console.print("live ?: unknown; no agent instance publishes presence on the status topic, and this "
                      "broker's group membership is not trusted")
    for row in rows:
        for instance in row["instances"]:
            if instance["live"]:
                started = datetime.fromtimestamp(instance["started_at"] / 1000, UTC).isoformat(timespec="seconds")
                console.print(f"  {row['workflow']}/{row['step']}: {instance['instance']} pid {instance['pid']} on "
                              f"{instance['host']}, up since {started}, seen {_ago(instance['seen_ago_s'])}, "
                              f"running {instance['running']}, breaker {instance['breaker']}"
                              + _limit_of(instance))


def _limit_of(instance: dict[str, Any]) -> str:
    """The end of an instance's line: its rate limit and whether it was throttled ("" without a limit)."""
    limit = instance.get("rate_limit")
    if limit is None:
        return ""
    return (f", rate limit {limit['per_second']:g}/s burst {limit['burst']}"
            + (" (throttled)" if instance.get("throttled") else ""))


def print_pending(console: Any, pending: list[dict[str, Any]]) -> None:
    """`choreo state`'s pending steps: how long each has waited, who serves it (flagged if nobody)."""
    for item in pending:
        what = f"compensation of {item['step']}" if item["compensation"] else item["step"]
        waited = "?" if item["waited_s"] is None else f"{item['waited_s']:g}s"
        tries = f", {item['attempts_failed']} failed attempt(s)" if item["attempts_failed"] else ""
        line = f"  pending: {what}, waiting {waited}{tries}"
        if item.get("live", 0) is None:
            line += ", live agents unknown (no presence on the status topic)"
        elif "live" in item:
            if item["no_live_agent"]:
                console.print(f"{line}, [red]NO LIVE AGENT[/red]")
                continue
            who = ", ".join(item["instances"]) or f"{item['live']} group member(s)"
            line += f", served by {who}"
        console.print(line)
