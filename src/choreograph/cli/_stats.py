"""`choreo stats`: each step's runs, failure rate and p50/p95 duration over a recent window, from the index."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from ..transport._settings import _env_namespace
from ._input import USAGE, err, fail
from ._ls import _indexer_alive, index_file


def stats(
    window: Annotated[str, typer.Option(help="over the step runs that ended in this last WINDOW (30s, 5m, 1h)")
                      ] = "5m",
    workflow: Annotated[str | None, typer.Option(help="only the steps of workflow NAME")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per step")] = False,
) -> None:
    """Per step, over the last minutes: runs ended, failures, failure rate, p50 and p95 duration.

    A step's duration runs from when its inputs were all in the log to its result (waiting for an agent
    included); compensations are listed apart (`↺step`). Read from the workflow index, as `choreo ls`
    reads it; no broker is asked.
    """
    import sqlite3  # deferred, as every command's own imports: `choreo --help` stays fast

    from ..index._query import list_workflows
    from ..index._stats import parse_window, step_stats

    try:  # the web view's Steps page reads its window with the same parser
        window_s = parse_window(window)
    except ValueError as exc:
        raise fail(f"--window {window!r}: {exc}", USAGE) from None
    path = index_file()
    try:
        found = step_stats(path, window_s, workflow=workflow)
        updated = list_workflows(path, limit=0).updated_ms
    except sqlite3.Error as exc:
        raise fail(f"{path}: not a workflow index of this version ({exc})") from exc
    if as_json:
        for entry in found:
            print(orjson.dumps(entry.as_dict()).decode())
    elif not found:
        print(f"no step ended in the last {window}")
    else:
        lines = [["workflow", "step", "runs", "failed", "failure rate", "p50", "p95"]]
        lines += [[s.workflow, f"↺{s.step}" if s.compensation else s.step, str(s.count), str(s.failed),
                   f"{s.failure_rate:.1%}", _ms(s.p50_ms), _ms(s.p95_ms)] for s in found]
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        for line in lines:
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    if not _indexer_alive(_env_namespace(), updated):
        err("the indexer is not running: the figures may be behind the log; `choreo up` runs it", "warning",
            "yellow")


def _ms(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value} ms" if value < 1000 else f"{value / 1000:.1f} s"
