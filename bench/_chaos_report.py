"""The figures of a chaos run: a table saying what each one means, then one JSON line."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.table import Table

from ._chaos_audit import Audit
from ._chaos_fleet import Fleet

if TYPE_CHECKING:
    from .chaos import Run

PROBLEMS = ("lost", "duplicate_outcomes", "wrong_status", "wrong_compensations", "duplicate_results",
            "reruns_after_result")

RERUNS = """\
A handler re-run with a single result in the log is allowed: a service killed after the handler's
work but before its result was published (or before the input's offset was committed) runs it again
on restart; delivery is at least once, so handlers must tolerate it. A re-run that started after the
step's result was already in the log is the bug: the restarted member should have found the result
there and skipped the step. Duplicate results (two step_completed/step_failed for one step) mean two
runs both published, e.g. two members working on one partition during a rebalance. A run is
recorded when its work is done (services/report/_events.py), so a run killed mid-work leaves no line."""


def figures(run: Run, found: Audit, fleet: Fleet) -> dict[str, Any]:
    """The headline figures, as the final JSON line holds them."""
    return {
        "goals": len(run.published), "lost": found.lost, "duplicate_outcomes": found.duplicate_outcomes,
        "wrong_compensations": found.wrong_compensations, "wrong_status": found.wrong_status,
        "failed_outcomes": found.failed_outcomes, "reruns_after_result": found.reruns_after_result,
        "duplicate_results": found.duplicate_results, "handler_reruns_total": found.handler_reruns_total,
        "kills": fleet.kills, "crashes": len(fleet.crashes), "seconds": round(run.seconds, 1),
        "sagas_per_s": round(run.with_outcome / run.seconds, 2) if run.seconds else 0.0,
        "max_committed_lag": max(run.lags.values(), default=0),
    }


def print_report(args: argparse.Namespace, run: Run, found: Audit, fleet: Fleet,
                 crashes: dict[str, Counter[str]], workdir: Path) -> bool:
    """Print the table, the details worth a look and the JSON line; True when nothing went wrong."""
    out = figures(run, found, fleet)
    console = Console(width=120)
    table = Table(title=f"chaos: {out['goals']} sagas, a SIGKILL every {args.kill_every} s over "
                        f"{run.chaos_s:.0f} s (seed {args.seed}), 2 of each service, 4 partitions")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(found.statuses.items()))
    rows = [
        ("goals", out["goals"], f"published ({run.publish_errors} publish errors); outcomes: {statuses}"),
        ("lost", out["lost"], "sagas without an outcome in the log"),
        ("duplicate outcomes", out["duplicate_outcomes"], "sagas with more than one outcome"),
        ("wrong status", out["wrong_status"], "outcome not COMPLETED (happy) / COMPENSATED (fail_at set)"),
        ("  of which FAILED", out["failed_outcomes"], "outcome FAILED: a compensation gave up"),
        ("wrong compensations", out["wrong_compensations"],
         "compensations requested or completed != the steps that completed"),
        ("duplicate results", out["duplicate_results"], "(saga, step) pairs with more than one result record"),
        ("steps re-run", found.steps_rerun, "(saga, step) pairs whose handler ran more than once"),
        ("handler re-runs", out["handler_reruns_total"], "handler runs beyond the first, over all steps"),
        ("re-runs after result", out["reruns_after_result"],
         "handler runs that started after the step's result was logged"),
        ("kills", out["kills"], _per_role(fleet.killed)),
        ("crashes", out["crashes"], "services that exited on their own (restarted)"),
        ("seconds", out["seconds"], "first goal to last outcome"),
        ("sagas/s", out["sagas_per_s"], "outcomes per second over those seconds"),
    ]
    prefix = f"{fleet.settings.namespace}."
    rows += [(f"lag {group.removeprefix(prefix)}", lag, "the group's committed lag at the end (records)")
             for group, lag in run.lags.items()]
    for name, value, meaning in rows:
        style = "red" if name.strip() in {p.replace("_", " ") for p in PROBLEMS} and value else ""
        table.add_row(name, str(value), meaning, style=style)
    console.print(table)
    console.print(RERUNS, highlight=False)
    for problem, ids in found.examples.items():
        console.print(f"{problem}: e.g. {' '.join(ids)}", highlight=False)
    for results, count in found.lost_at.most_common():
        console.print(f"lost with results of {results}: {count}", markup=False, highlight=False)
    for workflow_id, events in found.trails.items():
        console.print(f"lost {workflow_id}: {events}", markup=False, highlight=False)
    for role, errors in crashes.items():
        for error, count in errors.most_common():
            console.print(f"{role}: {count} x {error}", style="red", markup=False, highlight=False)
    for role, code in fleet.crashes:
        console.print(f"{role} exited with {code} on its own", style="red", markup=False, highlight=False)
    clean = not any(out[p] for p in PROBLEMS) and not crashes and not fleet.crashes \
        and not out["max_committed_lag"]
    if not clean or args.keep:
        console.print(f"logs and the effect log: {workdir} (namespace {fleet.settings.namespace}, "
                      "broker stopped)", highlight=False)
    print(orjson.dumps(out).decode(), flush=True)
    return clean


def _per_role(killed: Counter[str]) -> str:
    by_role: Counter[str] = Counter()
    for role, n in killed.items():
        by_role[role.rsplit(".", 1)[0]] += n
    return "SIGKILLs: " + ", ".join(f"{role} {n}" for role, n in sorted(by_role.items()))
