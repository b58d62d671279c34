"""How large a record is on the wire, and the namespace's maximum event size.

One estimate for every producer: aiokafka's own (DefaultRecordBatchBuilder.estimate_size_in_bytes,
pinned by a test), so a size we accept is one aiokafka accepts.
"""

from __future__ import annotations

from collections.abc import Sequence

# The default of aiokafka's max_request_size and of Kafka's message.max.bytes (1048588 there).
DEFAULT_MAX_REQUEST_SIZE = 1_048_576
_BATCH_OVERHEAD = 61 + 21  # record batch header, and the most a record's own framing takes
# Room for an event's CloudEvents headers and framing: a size check costs one len() on the hot path
# and computes the exact size only for a value this close to the limit (headers are ~400 bytes).
HEADERS_ROOM = 4096


def _varint_size(n: int) -> int:
    zigzag, size = (n << 1) ^ (n >> 63), 1
    while zigzag >= 0x80:
        zigzag >>= 7
        size += 1
    return size


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> int:
    """Aiokafka's upper estimate of a record's size in a batch of its own.

    Args:
        key: The key.
        value: The value.
        headers: The headers.

    Returns:
        Bytes.
    """
    size = _BATCH_OVERHEAD + _varint_size(len(headers))
    for field in (key, value, *(h for name, v in headers for h in (name.encode(), v))):
        size += 1 if field is None else len(field) + _varint_size(len(field))
    return size
