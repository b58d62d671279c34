"""Replay and time travel: a workflow's history from the broker, recordings, the archive and its
archiver service, and a workflow's state at any point."""

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
