"""The workflow index: one row per workflow (status, times, current or failed step), kept by a service.

`Indexer` (`choreo index run`, started by `choreo up`) folds the events topic into a SQLite file at
`<CHOREO_HOME>/index/<namespace>.sqlite`; `list_workflows` reads it (`choreo ls`) without a broker, and
`step_stats` each step's count, failure rate and p50/p95 duration over a recent window (`choreo stats`).
"""

from ._decode import Skip, indexed_event
from ._indexer import Indexer
from ._query import Listing, list_workflows, status_counts, workflow_row
from ._stats import StepStats, step_stats
from ._store import SCHEMA_VERSION, IndexStore, index_path
from ._summary import COMPENSATING, RUNNING, IndexedEvent, StepRun, Summary, fold

__all__ = [
    "COMPENSATING",
    "RUNNING",
    "SCHEMA_VERSION",
    "IndexStore",
    "IndexedEvent",
    "Indexer",
    "Listing",
    "Skip",
    "StepRun",
    "StepStats",
    "Summary",
    "fold",
    "index_path",
    "indexed_event",
    "list_workflows",
    "status_counts",
    "step_stats",
    "workflow_row",
]
