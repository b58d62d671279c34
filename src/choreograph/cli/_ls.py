"""`choreo ls` (workflows, from the index file: no broker needed) and `choreo index run` (the indexer)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from ..transport._settings import Settings, _env_namespace, check_env, run_dir
from ._input import USAGE, err, fail, since_ms

index_app = typer.Typer(no_args_is_help=True, help="The workflow index `choreo ls` reads.")

# Outcome statuses are the outcome event's own strings (a status added later lists without a change
# here); these are the ones --status is checked against, with any status the index holds.
KNOWN_STATUSES = ("running", "compensating", "completed", "compensated", "failed", "timed_out", "cancelled")
# An indexer commits or touches its file at least every 5 s while it runs (index._indexer): three
# periods of silence, and no running `index` service, and the rows may be behind the log.
STALE_MS = 15_000


@index_app.command("run")
def index_run() -> None:
    """Run the workflow indexer in this process until SIGTERM (`choreo up` runs it as `index`)."""
    from ..index._indexer import Indexer  # deferred: only this command runs a service
    from ..runtime._service import configure_logging, ready_file, serve
    from ..telemetry._prometheus import serve_metrics
    from ._agents import run

    check_env()  # before logging is configured from CHOREO_LOG_LEVEL
    configure_logging("index")
    settings = Settings.from_env()
    server = serve_metrics("choreo-index")  # CHOREO_METRICS_PORT: the process's own metrics (CPU, memory)
    try:
        run(serve(Indexer(settings, ready_file=ready_file())))
    finally:
        if server is not None:
            server.close()


def index_file() -> Path:
    """This namespace's workflow index file (CHOREO_HOME, CHOREO_NAMESPACE); a clear error if there is none."""
    from ..index._store import index_path

    check_env()
    path = index_path(run_dir(), _env_namespace())
    if not path.exists():
        raise fail(f"no workflow index here ({path}); `choreo up` runs one (or `choreo index run`)")
    return path


def ls(
    workflow: Annotated[str | None, typer.Option(help="only workflows of this NAME")] = None,
    status: Annotated[str | None, typer.Option(help="only workflows with this status: " + ", ".join(KNOWN_STATUSES))
                      ] = None,
    since: Annotated[str | None, typer.Option(help="only workflows started since TIME (ISO 8601) or a duration "
                                              "ago (10m, 2h, 1d)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most N workflows, newest first")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per workflow")] = False,
) -> None:
    """Workflows, newest first: id, workflow, status, started, last event, duration, current or failed step.

    Read from the workflow index (`<CHOREO_HOME>/index/<namespace>.sqlite`) that the `index` service of
    `choreo up` (or `choreo index run`) keeps; no broker is asked.
    """
    import sqlite3  # deferred, as every command's own imports: `choreo --help` stays fast

    from ..index._query import list_workflows

    path = index_file()
    try:
        listing = list_workflows(path, status=status, workflow=workflow,
                                 since_ms=None if since is None else since_ms(since), limit=limit)
    except sqlite3.Error as exc:
        raise fail(f"{path}: not a workflow index ({exc})") from exc
    if status is not None and status not in KNOWN_STATUSES and not listing.rows and not _held(path, status):
        raise fail(f"--status {status!r}: expected one of: {', '.join(KNOWN_STATUSES)}", USAGE)
    if as_json:
        for row in listing.rows:
            print(orjson.dumps(row).decode())
    else:
        _print_table(listing.rows)
    if not _indexer_alive(_env_namespace(), listing.updated_ms):
        updated = listing.updated_ms
        ago = "never" if updated is None else f"{_short((time.time_ns() // 1_000_000 - updated) / 1000)} ago"
        err(f"the indexer is not running (last update {ago}): the index may be behind the log; `choreo up` runs it",
            "warning", "yellow")


def _held(path: Path, status: str) -> bool:
    """Whether any row of the index has this status (a status a newer outcome introduced)."""
    import sqlite3  # deferred: only for a --status not known here

    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return db.execute("SELECT 1 FROM workflows WHERE status = ? LIMIT 1", (status,)).fetchone() is not None
    finally:
        db.close()


def _indexer_alive(namespace: str, updated_ms: int | None) -> bool:
    """A running `index` service of this namespace (as `choreo ps` sees it), or a recent update of the file."""
    from ..runtime._stackstate import read_state, same_process  # deferred: only when the file is stale

    if updated_ms is not None and time.time_ns() // 1_000_000 - updated_ms < STALE_MS:
        return True
    state = read_state() or {}
    if (state.get("settings") or {}).get("CHOREO_NAMESPACE", namespace) != namespace:
        return False
    return any(s.get("name") == "index" and same_process(s.get("pid"), s.get("pid_ticks"))
               for s in state.get("services", []))


def _short(seconds: float) -> str:
    whole = int(max(0, seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _print_table(rows: list[dict[str, Any]]) -> None:
    """One line per workflow, as `choreo dlq ls` prints: padded columns, the step (or reason) last."""
    if not rows:
        print("no workflows")
        return
    lines = [["workflow id", "workflow", "status", "started (UTC)", "last event", "duration", "step"]]
    for r in rows:
        step = f"{r['failed_step']} failed" if r["failed_step"] else ",".join(r["current_steps"]) or "-"
        if r["failed_step"] and r["reason"]:
            step += f": {r['reason']}"
        lines.append([r["workflow_id"], r["workflow"], r["status"], r["started"][:19].replace("T", " "),
                      f"{r['last_event'][11:19]} {r['last_kind']}", _short(r["duration_ms"] / 1000), step])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])
