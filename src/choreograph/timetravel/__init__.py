"""Replay and time travel: workflow histories, recordings, the archive, and state at any point.

A workflow's history is read from the broker or from the archive its archiver service writes.
"""

from ._archive import Archive, restore, write_segment
from ._archiver import Archiver
from ._history import History, history
from ._recording import Recording, record
from ._state import state_report

__all__ = [
    "Archive",
    "Archiver",
    "History",
    "Recording",
    "history",
    "record",
    "restore",
    "state_report",
    "write_segment",
]
