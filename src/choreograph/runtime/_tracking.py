"""Tracking records: what a service has already done, so a redelivered or duplicated event is a no-op.

The effect's record is in the log (an agent's result, the coordinator's outcome) together
with the id of what caused it; a service keeps a bounded, recent set of those keys in memory and
re-reads them from the log when it takes over a partition.
"""

from __future__ import annotations

from collections import OrderedDict


class Done:
    """A bounded set of keys, oldest forgotten first.

    Args:
        capacity: How many keys to keep. A duplicate older than this many later keys is no longer
            recognised; the look-back read after a (re)assignment bounds what can be that old.
    """

    __slots__ = ("_capacity", "_keys")

    def __init__(self, capacity: int) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str) -> None:
        """Remember `key` as the newest."""
        keys = self._keys
        keys[key] = None
        keys.move_to_end(key)
        if len(keys) > self._capacity:
            keys.popitem(last=False)
