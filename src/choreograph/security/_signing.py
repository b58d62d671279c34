"""Signatures on records: what is signed, and the two headers that carry it.

A signed record carries `ce_keyid` (the signer's key id) and `ce_signature` (base64 of the 64-byte
Ed25519 signature), CloudEvents extension attributes in binary mode. The signature covers:

    b"choreo-sig-1" | key | value | every header but ce_signature and ce_redrive, sorted

each part length-prefixed (4 bytes, big-endian; -1 for a null key or value), a header as its name
and its value. So the workflow id, the payload and every attribute that carries meaning (ce_id,
ce_type, ce_source, ce_kind, ce_step, ce_workflow, ce_causationid, ce_deadline, ce_goalid,
ce_keyid, traceparent) cannot change without breaking it, while a redrive count can be added to a
dead letter sent again. Sorted: header order is not a meaning, and a proxy may reorder them.
The topic is not signed: a record restored into another namespace keeps its signature.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..events._envelope import REDRIVE_HEADER
from ._keys import KeyPair

KEY_ID_HEADER = "ce_keyid"
SIGNATURE_HEADER = "ce_signature"
_UNSIGNED = frozenset({SIGNATURE_HEADER, REDRIVE_HEADER})
_MAGIC = b"choreo-sig-1"
_NULL = (0xFFFFFFFF).to_bytes(4, "big")


def signed_message(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> bytes:
    """The bytes a record's signature covers (see the module docstring)."""
    parts = [_MAGIC, _part(key), _part(value)]
    for name, data in sorted((n, v) for n, v in headers if n not in _UNSIGNED):
        encoded = name.encode()
        parts += [len(encoded).to_bytes(4, "big"), encoded, _part(data)]
    return b"".join(parts)


def _part(data: bytes | None) -> bytes:
    return _NULL if data is None else len(data).to_bytes(4, "big") + data


class Signer:
    """Signs what one identity publishes.

    Args:
        key: The identity's current key.
        remember: Called with each signature and the message it signs: a verifier in the same
            process then knows its own records when it reads them back (no verification needed).
    """

    __slots__ = ("_key_id", "_remember", "key")

    def __init__(self, key: KeyPair, remember: Callable[[bytes, bytes, str], None] | None = None) -> None:
        self.key = key
        self._key_id = key.key_id.encode()
        self._remember = remember

    def sign(self, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """`headers` with this identity's key id and signature appended (the list is changed and returned).

        A key id or signature already there (a record signed before) is replaced.
        """
        if any(n in (KEY_ID_HEADER, SIGNATURE_HEADER) for n, _ in headers):
            headers[:] = [(n, v) for n, v in headers if n not in (KEY_ID_HEADER, SIGNATURE_HEADER)]
        headers.append((KEY_ID_HEADER, self._key_id))
        message = signed_message(key, value, headers)
        signature = self.key.sign(message)
        headers.append((SIGNATURE_HEADER, base64.b64encode(signature)))
        if self._remember is not None:
            self._remember(signature, message, self.key.key_id)
        return headers


class Signature(NamedTuple):
    """A record's key id and signature, read from its headers."""

    key_id: str
    signature: bytes


def signature_of(headers: Sequence[tuple[str, bytes]]) -> Signature | str:
    """The record's signature, or why it has none that can be checked."""
    key_id = signature = None
    for name, data in headers:
        if name == KEY_ID_HEADER:
            key_id = data
        elif name == SIGNATURE_HEADER:
            signature = data
    if key_id is None or signature is None:
        return "unsigned (no ce_keyid or ce_signature)"
    try:
        raw = base64.b64decode(signature, validate=True)
        text = key_id.decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return "unreadable ce_keyid or ce_signature"
    if len(raw) != 64:
        return f"a signature has 64 bytes, this one {len(raw)}"
    return Signature(text, raw)
