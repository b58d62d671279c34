"""How `choreo history`, `choreo state` and `choreo replay` look on a terminal.

History is a timeline with causation arrows and compensations marked, and events the services
refuse marked REJECTED; state a short summary; a replay's report a table of the events that differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..saga._entries import HistoryEntry

if TYPE_CHECKING:
    from rich.console import Console

    from ..sandbox._compare import ReplayReport

_STYLE = {"compensation_requested": "yellow", "compensation_completed": "yellow", "compensation_failed": "red",
          "step_failed": "red", "outcome": "bold", "goal": "bold", "dead_letter": "red",
          "cancel_requested": "bold yellow"}
_MARK = {"compensation_requested": "↺", "compensation_completed": "↺", "compensation_failed": "↺✗",
         "step_failed": "✗", "outcome": "■", "goal": "▶", "dead_letter": "☠", "cancel_requested": "⊘"}


def detail(entry: HistoryEntry) -> str:
    """The one fact that matters most about an event, in a few words; first, that services refuse it."""
    if entry.rejected is not None:
        return f"REJECTED: {entry.rejected} (it says: {_fact(entry)})"
    return _fact(entry)


def _fact(entry: HistoryEntry) -> str:
    data = entry.data or {}
    if entry.kind == "dead_letter":
        return f"DEAD-LETTERED (dlq {data.get('id')}): {data.get('reason')}"
    if entry.error:
        return f"unreadable payload: {entry.error}"
    if entry.kind == "outcome":
        reason = f": {data['reason']}" if data.get("reason") else ""
        return f"{str(data.get('status', '?')).upper()}{reason}"
    if entry.kind in ("step_failed", "compensation_failed"):
        return f"{data.get('error_type', '')}: {data.get('reason', '')}"
    if entry.kind == "compensation_requested":
        # No failed step: the workflow was cancelled (or had ended), as its reason says.
        if data.get("failed_step"):
            return f"because {data.get('failed_step')} failed"
        return f"because {data.get('reason', '')}"
    if entry.kind == "cancel_requested":
        return f"CANCEL: {data.get('reason', '')}"
    if entry.type.endswith("WorkflowStarted"):
        return "graph: " + ", ".join(s["name"] for s in data.get("steps", ()))
    return entry.type.rsplit(".", 1)[-1]


def _style(entry: HistoryEntry) -> str | None:
    return "red" if entry.rejected is not None else _STYLE.get(entry.kind)


def _console() -> Console:
    """A console as wide as the terminal, or 160 columns when the output is a pipe or a file.

    rich is imported here, on first use: `--json` output never needs it.
    """
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)
    return console


class Timeline:
    """Collects entries and prints them: a table at the end, or a line per entry as it comes.

    Args:
        workflow_id: The workflow the entries belong to (the table's title).
        as_json: Print each entry as a JSON line as it comes, and no table.
        stream: Print each entry as a line as it comes (`--follow`), and no table.
    """

    def __init__(self, workflow_id: str, *, as_json: bool, stream: bool) -> None:
        self.workflow_id = workflow_id
        self.as_json = as_json
        self.stream = stream
        self.entries: list[HistoryEntry] = []
        self._offsets: dict[str, int] = {}
        self._console: Console | None = None

    def add(self, entry: HistoryEntry) -> None:
        """Add an entry, printing it now when streaming or printing JSON."""
        self.entries.append(entry)
        self._offsets.setdefault(entry.event_id, entry.offset)
        if self.as_json:
            print(entry.json(), flush=True)
        elif self.stream:
            cells = self._cells(entry)
            self._console = self._console or _console()
            self._console.print(f"{cells[0]:>7} {cells[1]:<12} {cells[2]:<2} {cells[3]:<23} {cells[4]:<9} "
                                f"{cells[5]:<9} {cells[6]:<8} {cells[7]}", style=_style(entry))

    def _cells(self, e: HistoryEntry) -> list[str]:
        """An entry's columns: offset, time, mark, kind, step, source, cause (← @offset), detail."""
        if e.causation_id is None:
            cause = ""
        else:
            at = self._offsets.get(e.causation_id)
            cause = f"← @{at}" if at is not None else "← ?"
        offset = f"dlq {e.offset}" if e.kind == "dead_letter" else str(e.offset)  # an offset of another topic
        mark = "⚠" if e.rejected is not None else _MARK.get(e.kind, "")
        return [offset, e.time[11:23], mark, e.kind, e.step or "",
                e.source.rsplit("/", 1)[-1], cause, detail(e)]

    def done(self) -> None:
        """Print the table of every entry added, unless each was printed as it came (or none was)."""
        if self.as_json or self.stream or not self.entries:
            return
        from rich import box
        from rich.table import Table

        first = self.entries[0]
        table = Table(title=f"workflow {first.workflow} {self.workflow_id} (partition {first.partition})",
                      box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for column in ("offset", "time", "", "kind", "step", "source", "cause", "detail"):
            table.add_column(column, no_wrap=column != "detail")
        for e in self.entries:
            table.add_row(*self._cells(e), style=_style(e))
        (self._console or _console()).print(table)


def print_state(report: dict[str, Any]) -> None:
    """A human summary of `choreo state`'s JSON (a snapshot, or a diff of two)."""
    console = _console()
    if "changes" in report:
        console.print(f"[bold]{report['workflow_id']}[/bold]: from offset {report['from']['at']['offset']} "
                      f"to {report['to']['at']['offset']}")
        for name, change in report["changes"].items():
            console.print(f"  {name}: {change}")
        for event in report["events"]:
            console.print(f"  @{event['offset']} {event['kind']} {event['step'] or ''}")
        return
    at = report.get("at") or {}
    console.print(f"[bold]{report['workflow']} {report['workflow_id']}[/bold] at offset {at.get('offset')} "
                  f"({at.get('time')}): [bold]{report['status']}[/bold], {report['events_folded']} events folded")
    for name in ("cancelled", "completed", "failed", "compensation_requested", "compensated", "compensation_failed"):
        if report.get(name):
            console.print(f"  {name}: {report[name]}")
    for decision in report["decided"]:
        console.print(f"  decided here: {decision['kind']} {decision['step'] or ''}")
    from ._agents import print_pending

    print_pending(console, report.get("pending") or [])


def print_replay(report: ReplayReport) -> None:
    """`choreo replay`'s report: identical, or a table of the events that differ."""
    console = _console()
    console.print(f"sandbox [bold]{report.sandbox}[/bold]: re-ran {', '.join(report.agents)}; fed {report.fed} "
                  f"recorded events; {len(report.recorded)} recorded, {len(report.rerun)} in the re-run")
    if report.identical:
        console.print("[green]identical[/green]: every recorded event was reproduced, id for id")
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("", "kind", "step", "field", "recorded", "re-run"):
        table.add_column(column)
    for d in report.differences:
        rows = list(d.fields.items()) or [("", {"recorded": "", "rerun": ""})]
        for name, values in rows:
            table.add_row(d.what, d.kind, d.step or "", name, str(values["recorded"]), str(values["rerun"]),
                          style="red" if d.what != "differs" else "yellow")
    console.print(table)
