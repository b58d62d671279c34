"""`choreo dlq ls|show|redrive`: dead letters you can read and send back (see transport._dlq)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from ..events._redact import REDACTED
from ..transport._keyring import service_verifier
from ._agents import run
from ._config import cli_settings
from ._input import USAGE, err, fail, since_ms

if TYPE_CHECKING:
    from ..transport._deadletter import DeadLetter

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list them, show one, redrive them.")



async def _letters(workflow: str | None = None, since: int | None = None) -> list[DeadLetter]:
    from ..transport._dlq import DeadLetterBox
    from ..transport._kafka import Kafka

    return await DeadLetterBox(Kafka(cli_settings())).read(
        since_ms=since, key=None if workflow is None else workflow.encode())


@dlq_app.command("ls")
def ls(
    workflow: Annotated[str | None, typer.Option(help="only dead letters of this workflow id")] = None,
    reason: Annotated[str | None, typer.Option(help="only those whose reason contains TEXT (any case)")] = None,
    since: Annotated[str | None, typer.Option(help="only those written since TIME (ISO 8601) or a duration "
                                              "ago (10m, 2h, 1d)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per dead letter")] = False,
) -> None:
    """Dead letters, oldest first: id, time, consumer, origin, workflow, reason, redrives."""
    letters = run(_letters(workflow, None if since is None else since_ms(since)))
    if reason is not None:
        letters = [x for x in letters if reason.lower() in x.reason.lower()]
    if as_json:
        for letter in letters:
            print(orjson.dumps(letter.json()).decode())
        return
    if not letters:
        print("no dead letters")
        return
    # One line each, the reason last and whole: reasons are long, and they are what one reads.
    rows = [["id", "time", "consumer", "origin", "workflow id", "kind", "redrives", "redriven", "reason"]]
    for x in letters:
        data = x.json()
        origin = "?" if data["topic"] is None else f"{data['topic']}:{data['origin_partition']}@{data['origin_offset']}"
        rows.append([x.id, x.time[:19].replace("T", " "), x.consumer or "?", origin, x.workflow_id or "-",
                     data["kind"] or "-", str(x.redrive_count), ",".join(x.redriven) or "-",
                     x.reason + (" [truncated]" if x.truncated else "")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])


def _find(letters: list[DeadLetter], letter_id: str) -> DeadLetter:
    from ..transport._deadletter import letter_id as id_of
    from ..transport._deadletter import parse_letter_id

    parsed = parse_letter_id(letter_id)
    if parsed is None:
        raise fail(f"{letter_id!r} is not a dead letter id (OFFSET, or PARTITION:OFFSET; see `choreo dlq ls`)", USAGE)
    wanted = id_of(*parsed)
    found = next((x for x in letters if x.id == wanted), None)
    if found is None:
        span = f"ids {letters[0].id} to {letters[-1].id}" if letters else "no dead letters"
        raise fail(f"no dead letter {wanted} (the dead-letter topic has {span})")
    return found


def _bytes_as_base64(value: Any) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


@dlq_app.command("show")
def show(
    letter_id: Annotated[str, typer.Argument(metavar="ID", help="a dead letter's id, from `choreo dlq ls`")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """One dead letter: where it came from, why, who, when, its headers, key, value and redrives."""

    async def go() -> tuple[DeadLetter, Any, bool]:
        from ..events._redact import payload_has_sensitive, redact_payload
        from ..transport._kafka import Kafka
        from ..transport._registry import Registry

        letter = _find(await _letters(), letter_id)
        registry = await Registry.read(Kafka(cli_settings()), verifier=service_verifier())
        store, value = registry.store, letter.value or b""
        secret = payload_has_sensitive(store, value)  # then its raw bytes are not shown either
        try:
            return letter, redact_payload(store, value, store.decode(value)), secret
        except Exception:  # unreadable is why most dead letters are here: show the bytes instead
            return letter, None, secret

    letter, decoded, secret = run(go())
    data = letter.json(preview=512)
    data["decoded"] = decoded
    if secret and data["value_preview"] is not None:
        data["value_preview"] = f"{REDACTED} (its schema marks sensitive fields)"
    if as_json:
        print(orjson.dumps(data, default=_bytes_as_base64, option=orjson.OPT_INDENT_2).decode())
        return
    origin = "unknown" if data["topic"] is None else \
        f"{data['topic']} partition {data['origin_partition']} offset {data['origin_offset']}"
    lines = [f"dead letter {letter.id} (written {letter.time or '?'} by {letter.consumer or '?'})",
             f"  reason:    {letter.reason}", f"  origin:    {origin}",
             f"  workflow:  {data['workflow'] or '-'} {letter.workflow_id or '-'}",
             f"  event:     {data['kind'] or '-'} {data['type'] or '-'} step {data['step'] or '-'} id "
             f"{data['event_id'] or '-'}",
             f"  size:      {letter.size} bytes, sha256 {letter.digest}" + (
                 " (TRUNCATED: only the start is kept; it cannot be redriven)" if letter.truncated else ""),
             f"  redrives:  {letter.redrive_count} before this dead letter; redriven since: "
             f"{', '.join(letter.redriven) or 'no'}",
             f"  key:       {data['key']}", "  headers:"]
    lines += [f"    {name}: {value}" for name, value in data["headers"]]
    if decoded is not None:
        lines.append("  value (decoded): " + orjson.dumps(decoded, default=_bytes_as_base64).decode()[:2000])
    else:
        preview = data["value_preview"] if secret else repr(data["value_preview"])
        lines.append(f"  value ({data['value_bytes']} bytes, not decodable): {preview}")
    for line in lines:
        print(line)


@dlq_app.command("redrive")
def redrive(
    letter_id: Annotated[str | None, typer.Argument(metavar="ID", help="a dead letter's id")] = None,
    workflow: Annotated[str | None, typer.Option(help="every dead letter of this workflow id")] = None,
    everything: Annotated[bool, typer.Option("--all", help="every dead letter")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be redriven; send nothing")] = False,
    again: Annotated[bool, typer.Option("--again", help="also redrive dead letters redriven before")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per original record")] = False,
) -> None:
    """Send dead letters' records back to where they came from, with ce_redrive one higher.

    The original key, headers (less dlq_*) and bytes go to the original topic and partition. A
    record that fails again is dead-lettered again with its count; one that duplicates a record
    already handled changes nothing. Truncated dead letters and duplicate goals are not redriven.
    Exit 1 if the dead letter named by ID could not be redriven.
    """
    if sum([letter_id is not None, workflow is not None, everything]) != 1:
        raise fail("give one of: ID, --workflow ID, --all", USAGE)

    async def go() -> list[Any]:
        from ..transport._dlq import DeadLetterBox
        from ..transport._kafka import Kafka

        letters = await _letters(workflow)
        if letter_id is not None:
            chosen = [_find(letters, letter_id)]
        else:
            chosen = [x for x in letters if again or not x.redriven]
        return await DeadLetterBox(Kafka(cli_settings())).redrive(chosen, dry_run=dry_run, again=again)

    done = run(go())
    for item in done:
        if as_json:
            print(orjson.dumps(item.json()).decode())
        elif item.action == "skipped":
            err(f"dead letter {', '.join(item.ids)} ({item.origin or 'origin unknown'}) not redriven: {item.why}",
                "skipped", "yellow")
        else:
            to = f" -> {item.to}" if item.to else ""
            print(f"{item.action}: dead letter {', '.join(item.ids)} ({item.origin}){to}, redrive {item.count}")
    if not done and not as_json:
        print("nothing to redrive")
    if letter_id is not None and any(item.action == "skipped" for item in done):
        raise typer.Exit(1)
