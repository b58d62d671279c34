"""The default partitioner of Kafka's Java clients (and aiokafka).

murmur2 of the key, made positive, modulo the partition count. Pure Python, so the in-memory log
needs no aiokafka.
"""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 as `org.apache.kafka.common.utils.Utils.murmur2` computes it.

    Args:
        data: The bytes to hash (a record key).

    Returns:
        The 32-bit hash, as an unsigned int (as aiokafka's `murmur2` returns it).
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for i in range(0, whole, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra >= 3:
        h ^= data[whole + 2] << 16
    if extra >= 2:
        h ^= data[whole + 1] << 8
    if extra >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition a keyed record goes to without an explicit partition.

    Args:
        key: The record key.
        partitions: The topic's partition count.

    Returns:
        A partition number in range(partitions).
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions
