"""Restore brackets: how a running service tells restored history from new work.

`choreo archive restore` writes RestoreStarted on a partition, then the archived records with their
original timestamps, then RestoreCompleted. Between the two markers, a record stamped no later than
the bracket's `until_timestamp` is history: services learn from it (tracking records, saga state)
and never act on it. Per-partition order makes this race-free for services already running, and a
service's commit stays pinned at an open bracket's start, so a restart re-reads the marker.
"""

from __future__ import annotations

from ..errors import DecodeError
from ..events._avro import SchemaStore
from ..events._envelope import RESTORE_SOURCE
from ..events._models import RestoreCompleted, RestoreStarted
from ._offsets import PartitionProgress

STARTED = RestoreStarted.type_name().encode()
COMPLETED = RestoreCompleted.type_name().encode()
MARKER_TYPES = frozenset((STARTED, COMPLETED))
SOURCE = RESTORE_SOURCE.encode()
_store = SchemaStore()
_store.add(RestoreStarted.avro)
_store.add(RestoreCompleted.avro)


def on_marker(progress: PartitionProgress, event_type: bytes, value: bytes | None, offset: int,
              source: bytes | None) -> bool:
    """Open or close the partition's bracket at a restore marker; False if it is not one.

    Only `choreo archive restore` (source choreo://restore) writes markers: a forged one would turn
    every later record of the partition into history, silently dropped, and pin every commit.
    """
    if source != SOURCE:
        return False
    if event_type == STARTED:
        try:
            started = RestoreStarted.decode(value or b"", _store)
        except DecodeError:
            return False
        if progress.bracket_at is None:
            progress.pin(offset)
            progress.bracket_at = offset
        progress.history_until = started.until_timestamp
        return True
    else:
        if progress.bracket_at is not None:
            progress.unpin(progress.bracket_at)
        progress.bracket_at = progress.history_until = None
    return True
