"""The figures of a chaos run: a table per scenario saying what failed and why, then one JSON line."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from ._chaos_audit import INVARIANTS, Audit
from ._chaos_fleet import Fleet, Kill
from ._chaos_plan import Check, Scenario

SUMMED = ("goals", "terminal", "lost", "duplicate_outcomes", "duplicate_results", "wrong_compensations",
          "wrong_status", "effects_rerun", "reruns_unexplained", "reruns_after_result")

RERUNS = """\
A handler run again is allowed only when the process of the run before it died (SIGKILL, or a planned
crash point) after that run's effect and before the step's result was in the log: delivery is at least
once, so handlers must tolerate it. Any other re-run, and any re-run that started after the step's
result was logged, is a bug. A run is recorded once its work is done (src/choreograph/examples/report/_events.py), so a
run killed mid-work leaves no line; a failed attempt (transient, poison) raises before its effect."""


@dataclass
class Outcome:
    """A scenario's verdict: its figures (audit and own), and the checks that failed."""

    scenario: Scenario
    audit: Audit
    kills: list[Kill]
    checks: list[Check]
    figures: dict[str, Any] = field(default_factory=dict)
    failed: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def judge(scenario: Scenario, audit: Audit, kills: list[Kill], checks: list[Check],
          last_outcome_ns: int | None, seed: int) -> Outcome:
    """Fold a scenario's audit, checks and kills into its figures and verdict."""
    failed = [c for c in checks if not c.ok]
    for name in (*INVARIANTS, "wrong_status"):
        if getattr(audit, name):
            examples = " ".join(audit.examples.get(name, []))
            failed.insert(0, Check(name, False, f"{getattr(audit, name)} (e.g. {examples})"))
    last_kill = max((k.at_ns for k in kills), default=None)
    drain = None
    if last_kill is not None and last_outcome_ns is not None:
        drain = round(max(0, last_outcome_ns - last_kill) / 1e9, 1)
    figures = {**audit.figures(), "kills": dict(Counter(k.cause for k in kills)),
               "drain_after_last_kill_s": drain, "seconds": round((scenario.ended_ns - scenario.started_ns) / 1e9, 1),
               **scenario.figures, "seed": seed, "ok": not failed,
               "failed": [c.name for c in failed], "needs": sorted({c.needs for c in failed if c.needs})}
    return Outcome(scenario, audit, kills, checks, figures, failed)


def totals(outcomes: list[Outcome], fleet: Fleet, lags: dict[str, int], seed: int, seconds: float,
           crashes: dict[str, Counter[str]], last_outcome_ns: int | None) -> dict[str, Any]:
    """The run's figures: the scenarios' sums, and what the whole fleet did (each death once, even
    when scenarios ran at once)."""
    total: dict[str, Any] = {name: sum(o.figures[name] for o in outcomes) for name in SUMMED}
    kills = fleet.all_kills()
    explained: Counter[str] = Counter()
    for outcome in outcomes:
        explained.update(outcome.figures["reruns_explained_by"])
    drain = None
    if kills and last_outcome_ns is not None:
        drain = round(max(0, last_outcome_ns - kills[-1].at_ns) / 1e9, 1)
    total.update({"kills": dict(Counter(k.cause for k in kills)), "reruns_explained_by": dict(explained),
                  "drain_after_last_kill_s": drain, "unexpected_exits": len(fleet.crashes),
                  "unexpected_errors": sum(sum(c.values()) for c in crashes.values()),
                  "max_committed_lag": max(lags.values(), default=0), "seconds": round(seconds, 1), "seed": seed})
    total["ok"] = all(o.ok for o in outcomes) and not total["unexpected_exits"] and \
        not total["unexpected_errors"] and not total["max_committed_lag"]
    return total


def print_report(outcomes: list[Outcome], total: dict[str, Any], fleet: Fleet,
                 crashes: dict[str, Counter[str]], workdir: str, keep: bool) -> None:
    """Print a table per scenario, the details worth a look, and the JSON line (last)."""
    console = Console(width=120)
    for outcome in outcomes:
        fig = outcome.figures
        verdict = "[green]ok[/green]" if outcome.ok else "[red]FAILED[/red]"
        table = Table(title=f"{outcome.scenario.name}: {verdict} ({fig['seconds']} s, seed {fig['seed']})")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for name in ("goals", "terminal", "lost", "duplicate_outcomes", "duplicate_results", "wrong_compensations",
                     "wrong_status", "effects_rerun", "reruns_unexplained", "reruns_after_result"):
            style = "red" if name not in ("goals", "terminal", "effects_rerun") and fig[name] else ""
            table.add_row(name.replace("_", " "), str(fig[name]), style=style)
        table.add_row("statuses", _pairs(fig["statuses"]))
        table.add_row("kills", _pairs(fig["kills"]) or "0")
        table.add_row("re-runs explained by", _pairs(fig["reruns_explained_by"]) or "0")
        table.add_row("drain after last kill (s)", str(fig["drain_after_last_kill_s"]))
        for check in outcome.checks:
            table.add_row(check.name, check.detail, style="" if check.ok else "red")
        console.print(table)
        for workflow_id, events in outcome.audit.trails.items():
            console.print(f"  lost {workflow_id}: {events}", markup=False, highlight=False)
        for check in outcome.failed:
            needs = f" [needs {check.needs}]" if check.needs else ""
            console.print(f"  failed: {check.name}: {check.detail}{needs}", style="red", markup=False,
                          highlight=False)
    console.print(RERUNS, highlight=False)
    for role, errors in crashes.items():
        for error, count in errors.most_common():
            console.print(f"{role}: {count} x {error}", style="red", markup=False, highlight=False)
    for role, pid, code in fleet.crashes:
        console.print(f"{role} (pid {pid}) exited with {code} on its own", style="red", markup=False,
                      highlight=False)
    if not total["ok"] or keep:
        console.print(f"logs, effect log and fault plans: {workdir} (namespace {fleet.settings.namespace}, "
                      "broker stopped)", highlight=False)
    print(orjson.dumps({"ok": total["ok"], "seed": total["seed"], "total": total,
                        "scenarios": {o.scenario.name: o.figures for o in outcomes}}).decode(), flush=True)


def _pairs(counts: dict[str, Any]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
