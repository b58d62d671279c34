"""The saga: step graphs, the coordinator's pure decision function `handle(state, fact)`, and replay.

`fold`, `diff` and `check` replay recorded workflows through `handle`. Pure: no broker, no I/O.
"""

from ._decide import Decision, Fact, SagaState, evolve, fact_of, handle, settle
from ._entries import HistoryEntry, entries_of, entry_of, is_outcome
from ._graph import Graph, goal_types
from ._replay import Mismatch, Point, Snapshot, catalog_for, check, diff, fold

__all__ = [
    "Decision",
    "Fact",
    "Graph",
    "HistoryEntry",
    "Mismatch",
    "Point",
    "SagaState",
    "Snapshot",
    "catalog_for",
    "check",
    "diff",
    "entries_of",
    "entry_of",
    "evolve",
    "fact_of",
    "fold",
    "goal_types",
    "handle",
    "is_outcome",
    "settle",
]
